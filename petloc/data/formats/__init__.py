"""Dataset formats: one module per format, each ending with ``register(Format(...))``.

Importing this package imports :mod:`.registry` and every other module in this folder (found, not
named: a new format is its module alone), so the detection order, the
"cannot tell the format" message, the ``--format`` choices of ``petloc-data`` and the writers of
``convert``, ``synth`` and ``petloc-predict format=`` all come from the registry. A format module
imports :mod:`.registry`, never this package.
"""

import importlib
import pkgutil

from petloc.data.formats.registry import (
    FORMATS,
    Format,
    Parsed,
    detect_format,
    detection_order,
    read_dataset,
    register,
    writable,
)

__all__ = [
    "FORMATS",
    "Format",
    "Parsed",
    "detect_format",
    "detection_order",
    "read_dataset",
    "register",
    "writable",
]

# Each module of this folder registers its format when imported.
for _module in pkgutil.iter_modules(__path__):
    if _module.name != "registry":
        importlib.import_module(f"{__name__}.{_module.name}")
