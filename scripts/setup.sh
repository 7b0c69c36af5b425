#!/usr/bin/env bash
# Installs batchtrain and what it needs on a fresh Debian/Ubuntu machine with Python 3.11:
# a virtual environment in .venv with the pinned requirements, and the Fashion-MNIST files.
#   scripts/setup.sh            install, and make Fashion-MNIST available (fail if impossible)
#   scripts/setup.sh --tests    install, and try to make Fashion-MNIST available (warn if impossible)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
MODE=${1:-run}

# apt-get as root, or through password-less sudo; fails (returns 1) where neither is possible.
apt_install() {
    command -v apt-get >/dev/null || return 1
    local sudo=""
    if [ "$(id -u)" != 0 ]; then sudo -n true 2>/dev/null || return 1; sudo="sudo -n"; fi
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@"
}

# Ubuntu and Debian ship venv's pip bootstrap separately (python3-venv).
if ! "$PYTHON" -c "import ensurepip, venv" 2>/dev/null; then apt_install python3-venv; fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .

have_data() {
    .venv/bin/python -c "from batchtrain.data.builtin import load_dataset as l; l('fashion-mnist', download=False)" 2>/dev/null
}
if ! have_data; then
    echo "Fashion-MNIST not found: installing the Debian package dataset-fashion-mnist, else downloading it"
    apt_install dataset-fashion-mnist || .venv/bin/batchtrain download fashion-mnist || {
        if [ "$MODE" = "--tests" ]; then
            echo "warning: Fashion-MNIST is not available; the test that reads it will be skipped" >&2
        else
            echo "error: could not install or download Fashion-MNIST; see README.md, 'Data'" >&2
            exit 1
        fi
    }
fi
