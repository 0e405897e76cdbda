#!/usr/bin/env python3
"""Compile one GLSL compute shader to SPIR-V and validate it.

usage: compile_shader.py GLSLANG SPIRV_VAL INPUT OUTPUT DEPFILE [-DNAME=VALUE ...] [--vulkan1.3]

Runs glslangValidator (Vulkan 1.1 target, MVK_GLSL defined for interface.h),
then spirv-val on the result; any error fails the build. Writes a
Makefile-style depfile listing the includes.
"""
import os
import subprocess
import sys


def main():
    glslang, spirv_val, src, out, depfile, *defines = sys.argv[1:]
    env = "vulkan1.1"
    if "--vulkan1.3" in defines:  # extensions beyond 1.1 (cooperative matrices)
        defines.remove("--vulkan1.3")
        env = "vulkan1.3"
    inc = os.path.dirname(os.path.abspath(src))
    cmd = [glslang, "--target-env", env, "-V", "-I" + inc, "-DMVK_GLSL=1", *defines, src,
           "-o", out]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout + r.stderr)
        sys.exit(f"glslangValidator failed on {src}")
    r = subprocess.run([spirv_val, "--target-env", env, out], capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout + r.stderr)
        os.unlink(out)
        sys.exit(f"spirv-val rejected {out}")
    deps = [os.path.join(inc, f) for f in sorted(os.listdir(inc)) if f.endswith((".glsl", ".h"))]
    with open(depfile, "w") as f:
        f.write(out.replace(" ", "\\ ") + ": " + " ".join(d.replace(" ", "\\ ") for d in deps) + "\n")


if __name__ == "__main__":
    main()
