#!/bin/sh
# A Python with PyPI gguf 0.19.0 (gguf-py, llama.cpp's Python package) and
# numpy, in a virtual environment at build-tools/py (ignored by git), for
# tests/test_formats.py (meson test formats-gguf), which compares the
# library's decoders and quantisers with gguf-py's, and tools/quant_error.py.
# Without it that test skips.
# usage: sh tools/py_tools.sh   (exit 0 also when PyPI is unreachable: the
#        test then says it skipped)
set -eu
cd "$(dirname "$0")/.."
dir=build-tools/py
if [ -x "$dir/bin/python" ] && "$dir/bin/python" - <<'PY' 2>/dev/null
import importlib.metadata, numpy
assert importlib.metadata.version("gguf") == "0.19.0"
PY
then
    exit 0
fi
sh tools/ensure_packages.sh py_tools python3-venv python3-pip
rm -rf "$dir"
python3 -m venv "$dir"
if ! "$dir/bin/pip" install -q --disable-pip-version-check gguf==0.19.0 numpy; then
    echo "py_tools: could not install gguf 0.19.0 and numpy from PyPI;" \
         "the gguf-py comparison (meson test formats-gguf) will skip" >&2
    rm -rf "$dir"
fi
exit 0
