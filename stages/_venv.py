"""Imported first by every stage script: when ``python`` is not the project's environment (DVC
was started without ``source .venv/bin/activate``), stop with one line saying so, exit code 1,
before any import of the project's dependencies fails with a traceback. Importing is the check."""

import importlib.util
import sys

# the packages every stage needs (the project itself and its heavy dependencies)
_NEEDED = ("sceneseg", "numpy", "torch", "yaml", "sklearn")

_missing = [name for name in _NEEDED if importlib.util.find_spec(name) is None]
if _missing:
    print(f"error: {sys.executable} lacks the project's packages ({', '.join(_missing)}): "
          "activate .venv: source .venv/bin/activate (or run `make run` / `make exp`)", file=sys.stderr)
    sys.exit(1)
