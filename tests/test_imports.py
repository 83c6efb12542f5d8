"""Every module imports on its own: no import circle is hidden by the order of imports.

Each module is imported with none of the package loaded before it (its ``deva.*`` entries
dropped from ``sys.modules``; third-party libraries stay loaded, which does not change the
order in which the package's own modules import each other), in a fresh interpreter.
"""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import importlib, pkgutil, sys
import deva
names = sorted(m.name for m in pkgutil.walk_packages(deva.__path__, "deva."))
failed = []
for name in names:
    for loaded in [m for m in sys.modules if m == "deva" or m.startswith("deva.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as error:  # report every module that fails, not only the first
        failed.append(f"{name}: {type(error).__name__}: {error}")
print(len(names))
print("\\n".join(failed))
"""


def test_every_module_imports_alone() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    count, *failures = done.stdout.strip().splitlines()
    assert int(count) > 80  # the whole package was walked
    assert not [f for f in failures if f], failures
