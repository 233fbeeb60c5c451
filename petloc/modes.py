"""Modes: box only, or box + a class branch over one of the dataset's label sets.

The modes are the files of ``conf/mode/``: each one names its label set (``labels``: null for box
only, else the key of :attr:`petloc.data.records.RecordSet.label_sets` its classes come from, which
the datamodule reads through ``data.label_set: ${mode.labels}``) and the weight of its
cross-entropy. A new mode is a new file there. :class:`Mode` is one of them as the code sees it; the
class names it is trained on come from the datamodule and travel in the checkpoint, so a class-aware
model names its classes without its data.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from petloc import CONFIG_DIR


@functools.cache
def mode_names() -> tuple[str, ...]:
    """The modes petloc knows: the options of the ``mode`` config group."""
    return tuple(sorted(path.stem for path in (CONFIG_DIR / "mode").glob("*.yaml")))


@dataclass(frozen=True)
class Mode:
    """A mode: its ``name``, the label set its class branch trains (``labels``; None: no class
    branch) and ``cls_weight``, the cross-entropy's weight in the loss. Invalid values raise
    ``ValueError`` naming the key."""

    name: str
    labels: str | None = None
    cls_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in mode_names():
            raise ValueError(f"mode.name={self.name!r}: allowed values are {list(mode_names())}")
        if self.labels is not None and (not isinstance(self.labels, str) or not self.labels):
            raise ValueError(f"mode.labels={self.labels!r}: a label set's name (e.g. class, species) or null")
        weight = self.cls_weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise ValueError(f"mode.cls_weight={weight!r}: the cross-entropy's weight must be a number >= 0")

    @classmethod
    def from_config(cls, node: Mapping[str, Any]) -> Mode:
        """The ``mode`` node of a run's config."""
        return cls(name=node.get("name"), labels=node.get("labels"), cls_weight=node.get("cls_weight", 0.0))

    @property
    def classifies(self) -> bool:
        """Whether this mode has a class branch."""
        return self.labels is not None

    def check_class_names(self, names: Sequence[str] | None) -> list[str]:
        """The class names the class branch predicts, in label order: ``names`` (the datamodule's, or
        a checkpoint's), which a class-aware mode needs two or more of and box mode none of."""
        names = list(names or [])
        if not self.classifies and names:
            raise ValueError(f"mode={self.name!r} has no class branch, but was given class names {names!r}")
        if self.classifies and len(names) < 2:
            raise ValueError(
                f"mode={self.name!r} trains the label set {self.labels!r} and needs at least two class "
                f"names, got {names!r}"
            )
        return names
