#!/bin/sh
# Build and install the Python package as a user would (`pip install .`,
# meson-python from PyPI) into a virtual environment at build-tools/moevk-py
# (ignored by git; it sees Debian's NumPy and pytest), then run the package's
# tests (python/tests) on the installed package, from outside the source tree.
# usage: sh tools/py_package.sh [pytest args]
set -eu
cd "$(dirname "$0")/.."
root=$(pwd)
sh tools/ensure_packages.sh py_package python3-dev python3-venv python3-pip python3-numpy \
    python3-pytest
venv=build-tools/moevk-py
[ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv --system-site-packages "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check .
cd /tmp
MOEVK_FIXTURES="$root/tests/fixtures" MOEVK_GGUF_FIXTURES="$root/tests/gguf" \
    "$root/$venv/bin/python" -c 'import moevk, sys; print("moevk", moevk.__version__, "from", moevk.__file__)'
MOEVK_FIXTURES="$root/tests/fixtures" MOEVK_GGUF_FIXTURES="$root/tests/gguf" \
    exec "$root/$venv/bin/python" "$root/python/tests/run_tests.py" "$@"
