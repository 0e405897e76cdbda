"""meson test python: runs the package's pytest tests (python/tests) on the
package in the build tree. Exit 77 (skipped) when NumPy or pytest is
missing; a package that was built but does not import is a failure."""

import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
for mod in ("numpy", "pytest"):
    try:
        __import__(mod)
    except ImportError:
        print(f"python tests skipped: {sys.executable} has no {mod} "
              f"(Debian: python3-numpy, python3-pytest)")
        sys.exit(77)
import pytest  # noqa: E402

args = ["-q", "-p", "no:cacheprovider", "-rs", here] + sys.argv[1:]
rc = pytest.main(args)
sys.exit(77 if rc == pytest.ExitCode.NO_TESTS_COLLECTED else int(rc))
