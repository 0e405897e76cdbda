#!/usr/bin/env python3
"""Fail if library code calls a Vulkan entry point directly.

Every Vulkan call must go through a per-context table (ctx->vk.* for device
functions, ctx->vki.* for instance functions), never a global prototype.
usage: check_vk_calls.py SRC_DIR
"""
import pathlib
import re
import sys

call = re.compile(r"(?<![\w.>])(vk[A-Z]\w*)\s*\(")
bad = []
for path in sorted(pathlib.Path(sys.argv[1]).rglob("*.c")):
    if "cli" in path.parts:
        continue
    for no, line in enumerate(path.read_text().splitlines(), 1):
        code = line.split("//")[0]
        for m in call.finditer(code):
            bad.append(f"{path}:{no}: direct call to {m.group(1)}")
print("\n".join(bad) if bad else "no direct Vulkan calls")
sys.exit(1 if bad else 0)
