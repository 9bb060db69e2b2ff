#!/usr/bin/env bash
# Builds fleetlet and the example component, makes a local Git repo from this folder, starts the
# agent for site store-berlin-01 and shows the component answering on localhost.
#   FLEETLET_DEMO_DIR  where the demo lives (default /tmp/fleetlet-demo)
#   FLEETLET_SITE      which site the agent plays (default store-berlin-01)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
demo=${FLEETLET_DEMO_DIR:-/tmp/fleetlet-demo}
site=${FLEETLET_SITE:-store-berlin-01}

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
echo "==> building fleetlet (release)"
cargo build --release -p fleetlet --manifest-path "$top/Cargo.toml"
fleetlet="$top/target/release/fleetlet"
echo "==> building the hello-http component"
cargo build --release --target wasm32-wasip2 --manifest-path "$here/components/hello-http/Cargo.toml"

if [ -f "$demo/agent.pid" ] && kill -0 "$(cat "$demo/agent.pid")" 2>/dev/null; then
  kill "$(cat "$demo/agent.pid")"; sleep 1
fi
rm -rf "$demo" && mkdir -p "$demo/fleet-repo"
(cd "$here" && tar --exclude='components/*/target' -cf - .) | tar -xf - -C "$demo/fleet-repo"
cp "$here/components/hello-http/target/wasm32-wasip2/release/hello_http.wasm" "$demo/fleet-repo/components/hello-http.wasm"
git -C "$demo/fleet-repo" init -q -b main
git -C "$demo/fleet-repo" add -A
git -C "$demo/fleet-repo" -c user.name=demo -c user.email=demo@example.com commit -qm "Fleet repo from fleet-repo-example"

"$fleetlet" validate --repo "$demo/fleet-repo"

cat > "$demo/agent.yaml" <<YAML
apiVersion: fleetlet.dev/v1alpha1
kind: AgentConfig
site: $site
stateDir: $demo/state
source:
  git:
    url: $demo/fleet-repo
    branch: main
    interval: 30s
runtimes:
  wasm:
    bindAddress: 127.0.0.1
listen:
  status: 127.0.0.1:9440
YAML

echo "==> starting the agent (log: $demo/agent.log)"
nohup "$fleetlet" agent --config "$demo/agent.yaml" >"$demo/agent.log" 2>&1 &
echo $! >"$demo/agent.pid"
port=8080
[ "$site" = turbine-north-07 ] && port=8081
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/" >/dev/null 2>&1 && break
  sleep 0.1
done
echo "==> curl http://127.0.0.1:$port/"
curl -fsS "http://127.0.0.1:$port/"
echo "==> fleetlet status"
"$fleetlet" status --state-dir "$demo/state" || true
cat <<MSG

The agent runs in the background (pid $(cat "$demo/agent.pid")). Try:
  cd $demo/fleet-repo && sed -i 's/"Hallo"/"Moin"/' apps/greeter.yaml && git commit -qam "Say Moin" && sleep 0.5 && curl http://127.0.0.1:$port/
Stop it with: kill \$(cat $demo/agent.pid)
MSG
