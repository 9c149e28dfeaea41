"""``python -m crve``: the ``crve`` command (see :mod:`crve.cli`); with no arguments, the demo."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
