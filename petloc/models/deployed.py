"""The deployed graph: what petloc-predict and the API run and petloc-export writes as ONNX.

uint8 NHWC images in; normalized boxes, a confidence score and class probabilities out. It wraps a
trained :class:`~petloc.models.module.PetLocModule` rather than being one, so training never carries
the deployment's changes (folded batch norms).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from petloc.models.fold import fold_batchnorm
from petloc.models.module import PetLocModule
from petloc.models.options import InferenceOptions


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
