"""petloc.models.deployed: the deployed graph's outputs are predict_boxes's (to float rounding),
named in order, and its score is the centre head's neighbourhood softmax mass (1 for global heads),
computed here cell by cell from the head's logits.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from omegaconf import DictConfig

from petloc.checkpoint import load_model
from petloc.models.deployed import InferenceModel
from petloc.models.module import PetLocModule
from tests.helpers import TrainedRun


@pytest.mark.parametrize("radius", [1, 2])
def test_center_head_score_is_the_neighbourhood_softmax_mass(
    trained_run: TrainedRun, make_cfg: Callable[..., DictConfig], radius: int
) -> None:
    """The score sums the softmax over the cells within ``radius`` of the best cell (clipped to the grid)."""
    if radius == 1:
        module, _ = load_model(trained_run.best)
    else:  # an untrained head decoding over 5x5 cells
        module = PetLocModule(make_cfg("image_size=64", f"head.radius={radius}")).eval()
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8, generator=generator)
    with torch.inference_mode():
        out, _ = module(images)
        box, score, *class_prob = InferenceModel(module)(images)
        expected = module.predict_boxes(images)
    # the deployed graph folds the batch norms: the same outputs to float rounding
    torch.testing.assert_close(box, expected["box"], rtol=0, atol=1e-5)
    if class_prob:
        torch.testing.assert_close(class_prob[0], expected["class_prob"], rtol=0, atol=1e-5)
    _, h, w, _ = out.cell_boxes.shape
    for i in range(len(images)):
        probs = torch.softmax(out.cell_logits[i].double(), dim=0).reshape(h, w)
        row, col = divmod(int(probs.argmax()), w)
        mass = sum(
            float(probs[r, c])
            for r in range(max(row - radius, 0), min(row + radius + 1, h))
            for c in range(max(col - radius, 0), min(col + radius + 1, w))
        )
        assert float(score[i]) == pytest.approx(mass, abs=1e-6)
        assert 0 < float(score[i]) <= 1


def test_global_head_score_is_one(make_cfg: Callable[..., DictConfig]) -> None:
    cfg = make_cfg("head=pooled", "image_size=64")
    module = PetLocModule(cfg).eval()
    images = torch.zeros(2, 64, 64, 3, dtype=torch.uint8)
    with torch.inference_mode():
        outputs = InferenceModel(module)(images)
    assert len(outputs) == 2  # box mode: no class probabilities
    assert torch.equal(outputs[1], torch.ones(2))
