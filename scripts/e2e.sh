#!/usr/bin/env bash
# The WPS end-to-end suite (tests/e2e): real PyWPS servers behind the roost binary that
# `cargo build` / `cargo test` left in target/debug, driven by OWSLib and birdy. Builds nothing:
# it creates (or reuses) a venv at target/e2e-venv with tests/e2e/requirements.txt and runs
# pytest. Arguments go to pytest (e.g. `scripts/e2e.sh -k upgrade -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
export ROOST_BIN="${ROOST_BIN:-$target/debug/roost}"
if [ ! -x "$ROOST_BIN" ]; then
    echo "e2e: $ROOST_BIN is missing: build it first (make e2e does)" >&2
    exit 1
fi

python="${E2E_PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "e2e: $("$python" --version 2>&1) is too old: birdy needs Python >= 3.11 (set E2E_PYTHON)" >&2
    exit 1
fi
venv="$target/e2e-venv"
requirements=tests/e2e/requirements.txt
# Rebuilt when the pins or the Python change; reused otherwise (no network then).
want="$( (cat "$requirements"; "$python" --version) | sha256sum | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.requirements" 2>/dev/null)" != "$want" ]; then
    echo "e2e: creating $venv"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements"
    echo "$want" > "$venv/.requirements"
fi
cd tests/e2e
exec "$venv/bin/python" -m pytest -p no:cacheprovider "$@"
