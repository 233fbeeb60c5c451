"""The inference options: what validation, eval, predict and export run on top of the network.

:class:`InferenceOptions` is the ``inference`` config node (``conf/inference/default.yaml``; the
apps' ``conf/inference/keep.yaml`` keeps a checkpoint's values). A new option is a field here, a key
in those two files and its use in :meth:`petloc.models.module.PetLocModule.forward`; nothing else
passes options along.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from petloc.models.refine import DEFAULT_MARGIN


@dataclass(frozen=True)
class InferenceOptions:
    """What runs on top of the network in eval mode (training never uses these).

    ``flip``: the test-time flip, the image and its mirror image vote. ``refine``: the zoom-in
    refinement, a second look at a crop around the first box (:mod:`petloc.models.refine`).
    ``refine_margin``: that crop's size over the first box's. ``refine_size``: the side in pixels
    the crop is resampled to (None: the model's image_size). The defaults are the plain single-pass
    model; a run's values come from its config. Invalid values raise ``ValueError`` naming the key.
    """

    flip: bool = False
    refine: bool = False
    refine_margin: float = DEFAULT_MARGIN
    refine_size: int | None = None

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(field.default, bool) and not isinstance(value, bool):
                raise ValueError(f"inference.{field.name}={value!r}: must be true or false")
        margin = self.refine_margin
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin >= 1:
            raise ValueError(
                f"inference.refine_margin={margin!r}: the zoom-in crop is the first box times this factor "
                f"and must hold it: a number >= 1 (default {DEFAULT_MARGIN}), or inference.refine=false "
                "to turn the refinement off"
            )
        size = self.refine_size
        if size is not None and (
            isinstance(size, bool) or not isinstance(size, int) or size < 32 or size % 32
        ):
            raise ValueError(
                f"inference.refine_size={size!r}: the side in pixels of the zoom-in look's input, a multiple "
                "of 32 (the backbone's stride), or null for the model's image_size"
            )

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None) -> InferenceOptions:
        """The ``inference`` node of a run's config; a key it lacks takes the default above."""
        if node is None:
            raise ValueError("inference: the config has no inference node (conf/inference/default.yaml)")
        known = [field.name for field in fields(cls)]
        unknown = sorted(set(node) - set(known))
        if unknown:
            raise ValueError(f"inference.{unknown[0]}: not an inference option; the options are {known}")
        return cls(**{key: node[key] for key in node})
