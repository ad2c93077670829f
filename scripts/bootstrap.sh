#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: an etcd binary, a virtualenv, the package with its dev and
# docs extras.
# Re-running it is cheap: each step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${HOLDFAST_VENV:-.venv}

need_etcd() { ! command -v etcd >/dev/null 2>&1; }
# promtool checks the alerting rules; it is extracted from Debian's prometheus package into the
# venv rather than installed, which would start a Prometheus server as a system service.
need_promtool() { ! command -v promtool >/dev/null 2>&1 && [ ! -x "$VENV/bin/promtool" ]; }
# The console's browser test drives Debian's Chromium through its chromedriver.
need_chromium() { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; }

if command -v apt-get >/dev/null 2>&1 && { need_etcd || need_promtool || need_chromium; }; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  packages=()
  if need_etcd; then packages+=(etcd-server etcd-client); fi
  if need_chromium; then packages+=(chromium chromium-driver); fi
  if [ ${#packages[@]} -gt 0 ]; then
    echo "bootstrap: installing Debian's ${packages[*]} with apt-get" >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      "${packages[@]}" >/dev/null
  fi
  if need_promtool; then
    echo "bootstrap: extracting promtool from Debian's prometheus package into $VENV/bin" >&2
    mkdir -p "$VENV/bin"
    deb_dir=$(mktemp -d)
    (cd "$deb_dir" && apt-get download -qq prometheus >/dev/null 2>&1 \
      && dpkg-deb -x prometheus_*.deb root) \
      && install -m 0755 "$deb_dir/root/usr/bin/promtool" "$VENV/bin/promtool"
    rm -rf "$deb_dir"
  fi
fi
if need_etcd; then
  cat >&2 <<'MSG'
bootstrap: no etcd binary on PATH and apt-get is not usable here.
Install etcd 3.4 or newer from your distribution (Debian/Ubuntu: apt-get install etcd-server;
Fedora: dnf install etcd; macOS: brew install etcd) and run this again.
MSG
  exit 1
fi

EXTRAS="dev,docs,otel"
stamp="$VENV/.holdfast-installed"
# The stamp covers the extras too: installing another set must not be skipped as done already.
want=$({ cat pyproject.toml devtools/pyproject.toml; echo "extras=$EXTRAS"; } | sha256sum | cut -c1-16)
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log="$VENV/install.log"
  if ! { "$VENV/bin/python" -m pip install -q --upgrade pip \
         && "$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]" -e ./devtools; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "bootstrap: installing the package failed (log above, kept in $log)" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
