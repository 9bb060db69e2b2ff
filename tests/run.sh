#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need when it is missing, then
# builds and runs every test of the workspace. CI runs exactly this (see .ci/run).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

# Real servers the integration tests start on loopback: git daemon (git), sshd, lighttpd (https),
# docker-registry (OCI).
need_apt=()
command -v git >/dev/null || need_apt+=(git)
command -v curl >/dev/null || need_apt+=(curl)
command -v openssl >/dev/null || need_apt+=(openssl)
[ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
command -v ssh-keyscan >/dev/null || need_apt+=(openssh-client)
command -v lighttpd >/dev/null || need_apt+=(lighttpd)
[ -e /usr/lib/lighttpd/mod_openssl.so ] || need_apt+=(lighttpd-mod-openssl)
# OCI: a real registry, and independent tools that make and read images.
command -v docker-registry >/dev/null || need_apt+=(docker-registry)
command -v skopeo >/dev/null || need_apt+=(skopeo)
command -v umoci >/dev/null || need_apt+=(umoci)
command -v htpasswd >/dev/null || need_apt+=(apache2-utils)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

# Integration tests run the real agent binary.
cargo build --locked -p fleetlet
# Built once here, so no test process runs cargo again to find it.
export FLEETLET_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/fleetlet"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --workspace --no-fail-fast
else
  cargo test --locked --workspace --no-fail-fast
fi
