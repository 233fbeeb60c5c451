"""Batch-norm folding of the deployed graph, over every registered backbone and head: no norm left,
the same boxes as the training module's eval mode, and a wrongly ordered pair refused."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from petloc import CONFIG_DIR
from petloc.models.backbone import BACKBONES
from petloc.models.deployed import InferenceModel
from petloc.models.fold import fold_batchnorm
from petloc.models.options import InferenceOptions
from tests.helpers import HEADS, SIZE, make_batch, make_module

EXPORT = OmegaConf.load(CONFIG_DIR / "export.yaml")


def _randomize_norms(module: nn.Module) -> None:
    """Running statistics and affine parameters far from the identity, so a fold that skipped or
    misapplied one would move the outputs (a fresh network's norms are nearly the identity)."""
    generator = torch.Generator().manual_seed(0)
    for norm in module.modules():
        if isinstance(norm, nn.BatchNorm2d):
            c = norm.num_features
            norm.running_mean.copy_(torch.randn(c, generator=generator) * 0.5)
            norm.running_var.copy_(torch.rand(c, generator=generator) * 2 + 0.2)
            norm.weight.data.copy_(torch.rand(c, generator=generator) + 0.5)
            norm.bias.data.copy_(torch.randn(c, generator=generator) * 0.2)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_the_deployed_graph_has_no_batch_norm_and_the_same_outputs(backbone: str, head: str) -> None:
    module = make_module(head, backbone=backbone, mode="species", num_classes=3).eval()
    _randomize_norms(module)
    images = make_batch(4)["image"]
    options = InferenceOptions(refine=True)
    deployed = InferenceModel(module, options)
    assert not [m for m in deployed.modules() if isinstance(m, nn.BatchNorm2d)]
    assert any(isinstance(m, nn.BatchNorm2d) for m in module.modules())  # the training module keeps its own
    with torch.inference_mode():
        box, score, class_prob = deployed(images)
        expected = module.predict_boxes(images, options)
    # the oracle is the unfolded module in eval mode, at the tolerances petloc-export checks ONNX at
    # (boxes in pixels of the SIZE-px input): folding moves outputs by float rounding only
    torch.testing.assert_close(box * SIZE, expected["box"] * SIZE, rtol=0, atol=EXPORT.atol_px)
    torch.testing.assert_close(score, expected["score"], rtol=0, atol=EXPORT.atol_prob)
    torch.testing.assert_close(class_prob, expected["class_prob"], rtol=0, atol=EXPORT.atol_prob)


class _NormFirst(nn.Module):
    """Registers a conv before a norm but applies the norm first: registration order lies."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.bn(x))


def test_a_norm_applied_before_its_convolution_is_refused() -> None:
    model = _NormFirst()
    _randomize_norms(model)
    with pytest.raises(RuntimeError, match="folding 1 batch norms changed an output"):
        fold_batchnorm(model, torch.randn(2, 3, 8, 8))
