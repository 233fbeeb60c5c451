"""petloc: single-object localization experiments (timm MobileNets, Lightning, Hydra, TensorBoard)."""

from pathlib import Path

from petloc.resolvers import register as _register_resolvers

__version__ = "0.1.0"

_PACKAGE = Path(__file__).resolve().parent
# The Hydra config tree: petloc/conf in an installed wheel, the checkout's top-level conf/ in an
# editable install (pyproject.toml maps one onto the other).
CONFIG_DIR = _PACKAGE / "conf" if (_PACKAGE / "conf").is_dir() else _PACKAGE.parent / "conf"

# `${petloc.loader_workers:}` and the like must exist before any config of conf/ is resolved.
_register_resolvers()
