# Shared bootstrap for scripts/demo and scripts/test: make a virtualenv in
# .venv (installing Debian's python3-venv first if this Python lacks it) and
# install coap_trio into it with the extras given as arguments.
set -eu
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    if ! "$PYTHON" -m venv .venv >/dev/null 2>&1; then
        rm -rf .venv
        echo "installing python3-venv (this Python has no working venv module)" >&2
        as_root apt-get update
        as_root apt-get install -y python3-venv
        "$PYTHON" -m venv .venv
    fi
fi
VENV_PY=.venv/bin/python
"$VENV_PY" -m pip install --quiet --upgrade pip
