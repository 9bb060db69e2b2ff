#!/usr/bin/env bash
# Builds fleetlet and the example component, makes the operator's keys, publishes the component
# as a signed OCI artifact (in a local OCI layout, as a technician would carry it), makes a local
# Git repo from this folder with signed commits, starts the agent for site store-berlin-01 with
# `require: signed` for commits and artifacts, and shows the component answering on localhost.
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
rm -rf "$demo" && mkdir -p "$demo/fleet-repo" "$demo/keys"

echo "==> operator keys: an artifact signing key (cosign format) and an SSH key for commits"
export FLEETLET_PASSWORD=${FLEETLET_PASSWORD:-demo-passphrase}
"$fleetlet" keygen --out "$demo/keys/release" >/dev/null
ssh-keygen -q -t ed25519 -N "" -C ops@example.com -f "$demo/keys/ops"
echo "ops@example.com namespaces=\"git\" $(cut -d' ' -f1,2 "$demo/keys/ops.pub")" >"$demo/keys/allowed_signers"

echo "==> publishing the component as an OCI artifact and signing it"
component="oci:$demo/artifacts:hello-http-1"
"$fleetlet" push "$here/components/hello-http/target/wasm32-wasip2/release/hello_http.wasm" "$component"
"$fleetlet" sign "$component" --key "$demo/keys/release.key"
"$fleetlet" verify "$component" --key "$demo/keys/release.pub"

(cd "$here" && tar --exclude='components/*/target' -cf - .) | tar -xf - -C "$demo/fleet-repo"
# The greeter runs the signed artifact instead of a file in the repo.
sed -i "s|component: components/hello-http.wasm .*|component: $component|" "$demo/fleet-repo/apps/greeter.yaml"
git -C "$demo/fleet-repo" init -q -b main
# Every commit of the demo repo is signed with the operator's SSH key.
git -C "$demo/fleet-repo" config user.name "Demo Operator"
git -C "$demo/fleet-repo" config user.email ops@example.com
git -C "$demo/fleet-repo" config gpg.format ssh
git -C "$demo/fleet-repo" config user.signingkey "$demo/keys/ops"
git -C "$demo/fleet-repo" config commit.gpgsign true
git -C "$demo/fleet-repo" add -A
git -C "$demo/fleet-repo" commit -qm "Fleet repo from fleet-repo-example"

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
registries:
  localLayouts: [$demo/artifacts]
runtimes:
  wasm:
    bindAddress: 127.0.0.1
listen:
  status: 127.0.0.1:9440
# Trust lives on the site: commits and artifacts must be signed (the default).
trust:
  keys:
    release: keys/release.pub
  commitSigners:
    allowedSigners: keys/allowed_signers
  artifacts:
    require: signed
    signers: [release]
  commits:
    require: signed
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
(commits in the demo repo are signed automatically; \`git -c commit.gpgsign=false commit\` makes one the agent refuses)
Stop it with: kill \$(cat $demo/agent.pid)
MSG
