"""Dataset formats: one module per format, each ending with ``register(Format(...))``.

Importing this package imports :mod:`.registry` and every format module, so the detection order, the
"cannot tell the format" message, the ``--format`` choices of ``petloc-data`` and the writers of
``convert``, ``synth`` and ``petloc-predict format=`` all come from the registry. A format module
imports :mod:`.registry`, never this package.
"""

from petloc.data.formats import coco, csv, oxford, voc, yolo  # noqa: F401 (each registers its format)
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
