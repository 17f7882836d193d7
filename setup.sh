#!/usr/bin/env bash
# Installs everything twin needs on a fresh Debian (12+) or Ubuntu (24.04+) machine:
# the system libraries the Python wheels load at run time (libusb and OpenMP for open3d),
# Node.js and npm (for the CesiumJS build the viewer serves and the test tools), Chromium and a
# font (the browser the viewer's test drives and the HTML reports are rendered in), then a
# virtual environment in .venv holding twin, its dependencies and its test tools, and
# node_modules from package-lock.json.
# Safe to run again: each step only does what is missing.
set -euo pipefail
cd "$(dirname "$0")"

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

system_packages=(libusb-1.0-0 libgomp1 libgl1 chromium fonts-dejavu-core)
python3 -c "import ensurepip, venv" 2>/dev/null || system_packages+=(python3-venv python3-pip)
command -v node >/dev/null || system_packages+=(nodejs)
command -v npm >/dev/null || system_packages+=(npm)

missing=()
for package in "${system_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing system packages: ${missing[*]}"
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
stamp=.venv/.twin-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing twin and its dependencies into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[test]"
    touch "$stamp"
fi

# node_modules is rebuilt only when package-lock.json changed since the last `npm ci`.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "setup: installing the Node packages (CesiumJS, glTF validator, Playwright) into node_modules"
    npm ci --no-audit --no-fund --loglevel=error
fi
