"""petloc: single-object localization experiments (timm MobileNets, Lightning, Hydra, TensorBoard)."""

from pathlib import Path

from petloc.resolvers import register as _register_resolvers

__version__ = "0.1.0"

# The Hydra config tree (top-level conf/ of the repository, installed in editable mode).
CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"

# `${petloc.loader_workers:}` and the like must exist before any config of conf/ is resolved.
_register_resolvers()
