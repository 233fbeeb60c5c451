"""petloc: single-object localization experiments (timm MobileNets, Lightning, Hydra, TensorBoard)."""

import os
from pathlib import Path

# albumentations asks PyPI for a newer release on import (a network request, up to 2 s offline, and a
# warning) unless this is set. Every way into petloc (the console scripts, the API, scripts/, the
# tests' conftest.py) imports this package before albumentations, and child processes (DDP, sweep
# jobs, the tests' subprocesses) inherit the variable. setdefault: NO_ALBUMENTATIONS_UPDATE=0 in the
# environment turns the check back on.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from petloc.resolvers import register as _register_resolvers

__version__ = "0.1.0"

_PACKAGE = Path(__file__).resolve().parent
# The Hydra config tree: petloc/conf in an installed wheel, the checkout's top-level conf/ in an
# editable install (pyproject.toml maps one onto the other).
CONFIG_DIR = _PACKAGE / "conf" if (_PACKAGE / "conf").is_dir() else _PACKAGE.parent / "conf"

# `${petloc.loader_workers:}` and the like must exist before any config of conf/ is resolved.
_register_resolvers()
