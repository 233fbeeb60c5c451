"""Inference time: the options validation, eval, predict and export run the network with, and the
deployed graph.

- :class:`InferenceOptions` is the ``inference`` config node (``conf/inference/default.yaml``; the
  apps' ``conf/inference/keep.yaml`` keeps a checkpoint's values). A new option is a field here, a key
  in those two files and its use in :class:`petloc.models.module.PetLocModule`; nothing else passes
  options along.
- :class:`InferenceModel` is the graph predict runs and export writes as ONNX: uint8 NHWC images in,
  normalized boxes, a confidence score and class probabilities out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from petloc.models.fold import fold_batchnorm
from petloc.models.refine import DEFAULT_MARGIN

if TYPE_CHECKING:
    from petloc.models.module import PetLocModule


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


class InferenceModel(nn.Module):
    """The deployed graph: uint8 NHWC images -> ``(box [B, 4], score [B])`` (+ ``class_prob [B, C]``).

    Outputs are :meth:`PetLocModule.predict_boxes`'s, so predict and export return what evaluation
    scores (to float rounding: the graph runs on a copy of ``module`` with its batch norms folded into
    the convolutions, :mod:`petloc.models.fold`, a third less work per look on a CPU). ``options``
    replaces the run's inference options (export times the single look this way).
    """

    def __init__(self, module: PetLocModule, options: InferenceOptions | None = None) -> None:
        super().__init__()
        self.options = options
        side = module.config["image_size"]
        example = torch.randint(0, 256, (2, side, side, 3), dtype=torch.uint8, device=module.device)
        self.module = fold_batchnorm(module, example)
        self.eval()

    @property
    def output_names(self) -> list[str]:
        """Names of the outputs, in order (the ONNX graph's output names)."""
        return ["box", "score"] + (["class_prob"] if self.module.classifier is not None else [])

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        result = self.module.predict_boxes(images, self.options)
        return tuple(result[name] for name in self.output_names)
