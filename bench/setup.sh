#!/usr/bin/env bash
# Bench-only tools, never installed by scripts/bootstrap.sh:
#   py-spy   sampling profiler behind `python -m bench.overhead --profile`, into the project's
#            virtualenv (the `bench` extra)
#   --peers  the other gateways `python -m bench.overhead` measures beside the sidecar, each
#            outside the project's virtualenv, under bench/.peers/ (git-ignored):
#              bench/.peers/litellm/venv   LiteLLM's proxy, litellm[proxy]==$LITELLM_VERSION (pip)
#              bench/.peers/portkey        Portkey's AI gateway, @portkey-ai/gateway@$PORTKEY_VERSION
#                                          (npm; needs node >= 18 on PATH)
# Idempotent: a tool already installed at its pinned version is left alone (delete its folder
# under bench/.peers/ to force a reinstall). PYTHON names the project venv's interpreter;
# PEER_PYTHON the interpreter LiteLLM's own venv is made from (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
PEER_PYTHON=${PEER_PYTHON:-python3}
BIN_DIR=$(dirname "$PYTHON")
PEERS_DIR=bench/.peers
LITELLM_VERSION=1.108.7
PORTKEY_VERSION=1.15.2

peers=0
for arg in "$@"; do
  case "$arg" in
    --peers) peers=1 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "bench/setup.sh: unknown option $arg (try --peers)" >&2; exit 2 ;;
  esac
done

say() { echo "bench/setup.sh: $*" >&2; }

if [ ! -x "$BIN_DIR/py-spy" ]; then
  say "installing py-spy into $BIN_DIR"
  "$PYTHON" -m pip install -q -e ".[bench]"  # the project's `bench` extra
fi

[ "$peers" = 1 ] || exit 0

# A marker holds the version installed; it is written last, so an interrupted install is redone.
installed() { [ "$(cat "$1/.installed" 2>/dev/null)" = "$2" ]; }

install_litellm() {
  local dir=$PEERS_DIR/litellm
  if installed "$dir" "$LITELLM_VERSION"; then
    say "LiteLLM proxy $LITELLM_VERSION already in $dir"
    return
  fi
  say "installing LiteLLM proxy $LITELLM_VERSION into $dir/venv (a few minutes)"
  rm -rf "$dir"
  mkdir -p "$dir" || return 1
  "$PEER_PYTHON" -m venv "$dir/venv" || return 1
  "$dir/venv/bin/python" -m pip install -q --upgrade pip || return 1
  "$dir/venv/bin/python" -m pip install -q "litellm[proxy]==$LITELLM_VERSION" || return 1
  echo "$LITELLM_VERSION" > "$dir/.installed"
}

install_portkey() {
  local dir=$PEERS_DIR/portkey
  if ! command -v node > /dev/null || ! command -v npm > /dev/null; then
    say "node and npm are needed for Portkey's gateway; skipping it"
    return 1
  fi
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  if [ "$major" -lt 18 ]; then
    say "Portkey's gateway needs node >= 18 (found $(node --version)); skipping it"
    return 1
  fi
  if installed "$dir" "$PORTKEY_VERSION"; then
    say "Portkey gateway $PORTKEY_VERSION already in $dir"
    return
  fi
  say "installing Portkey gateway $PORTKEY_VERSION into $dir"
  rm -rf "$dir"
  mkdir -p "$dir" || return 1
  # The npm package ships no lockfile, so its dependencies would resolve to today's releases;
  # the overrides pin them to the versions of the gateway's own package-lock.json at its
  # v$PORTKEY_VERSION tag. Without that pin streaming breaks: @hono/node-server 1.14 and later
  # hand back a fetched response's immutable headers, which the gateway then appends to
  # ("TypeError: immutable", a 500 on every stream).
  cat > "$dir/package.json" <<EOF
{
  "name": "holdfast-bench-portkey",
  "private": true,
  "description": "Portkey's gateway as a peer of bench/overhead.py; written by bench/setup.sh",
  "dependencies": { "@portkey-ai/gateway": "$PORTKEY_VERSION" },
  "overrides": {
    "@aws-crypto/sha256-js": "5.2.0",
    "@cfworker/json-schema": "4.0.3",
    "@hono/node-server": "1.13.5",
    "@hono/node-ws": "1.2.0",
    "@portkey-ai/mustache": "2.1.3",
    "@smithy/signature-v4": "2.1.1",
    "async-retry": "1.3.3",
    "avsc": "5.7.7",
    "hono": "4.9.7",
    "ioredis": "5.8.0",
    "jose": "6.0.11",
    "patch-package": "8.0.1",
    "ws": "8.18.3",
    "zod": "3.25.76"
  }
}
EOF
  # --ignore-scripts: its only install script runs patch-package, and the package ships no
  # patches.
  (cd "$dir" && npm install --ignore-scripts --no-audit --no-fund --omit=dev --loglevel=error) \
    || return 1
  echo "$PORTKEY_VERSION" > "$dir/.installed"
}

# Each installer returns 1 on a failure (set -e does not reach inside a function called in an
# `||` list); one failed peer does not keep the other from being installed.
status=0
install_litellm || { say "LiteLLM proxy not installed"; status=1; }
install_portkey || { say "Portkey gateway not installed"; status=1; }
exit "$status"
