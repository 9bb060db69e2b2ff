#!/usr/bin/env bash
# Installs fleetlet as a systemd service on this host.
#   deploy/install.sh [path/to/fleetlet]   (default: target/release/fleetlet, built if missing)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$top/target/dist/fleetlet}
if [ ! -x "$bin" ]; then
  cargo build --profile dist -p fleetlet --manifest-path "$top/Cargo.toml"
fi
install -m 0755 "$bin" /usr/local/bin/fleetlet
install -d -m 0750 /etc/fleetlet /var/lib/fleetlet
[ -f /etc/fleetlet/agent.yaml ] || install -m 0640 "$top/deploy/agent.yaml.example" /etc/fleetlet/agent.yaml
install -m 0644 "$top/deploy/systemd/fleetlet.service" /etc/systemd/system/fleetlet.service
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  echo "Edit /etc/fleetlet/agent.yaml, then: systemctl enable --now fleetlet"
else
  echo "systemd is not running here; start the agent with: fleetlet agent --config /etc/fleetlet/agent.yaml"
fi
