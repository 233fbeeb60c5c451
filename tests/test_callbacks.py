"""petloc's callbacks: EMA (the live weights until averaging begins, the average after) and CloseMosaic."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from petloc.cli.evaluate import evaluate
from petloc.train import train
from tests.conftest import event_scalars

TINY = (
    "image_size=64",
    "data.synthetic.n=60",
    "data.batch_size=8",
    "data.num_workers=0",
    "trainer.max_time=null",
    "trainer.max_epochs=2",
    "trainer.check_val_every_n_epoch=1",  # one validation per epoch (the default is every second)
    "trainer.enable_progress_bar=false",
)


def tensors_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("start", [100, 0], ids=["before-averaging", "averaging"])
def test_checkpoint_holds_the_weights_that_were_validated(
    start: int, make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    """About 10 steps of `callbacks=ema`: with averaging from step 100 (its default) nothing is averaged
    yet, so validation and best.ckpt must use the trained live weights (Lightning's callback would give
    the initial copy); with averaging from step 0 they use the average, which differs from the live
    weights."""
    metrics = train(make_cfg(*TINY, "callbacks=ema", f"callbacks.ema.update_starting_at_step={start}"))
    assert 0 < metrics["global_step"] < 100
    best = torch.load(tmp_path / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    live_is_saved = tensors_equal(best["state_dict"], best["current_model_state"])
    assert live_is_saved == (start == 100)

    # the saved state_dict is what validation scored: petloc-eval reproduces the logged best val/iou
    scored = evaluate(make_cfg(f"ckpt_path={tmp_path / 'checkpoints' / 'best.ckpt'}", config_name="eval"))
    assert scored["val/iou"] == pytest.approx(metrics["val/iou_best"], abs=1e-4)


def test_mosaics_stop_after_their_share_of_the_budget(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    """4 epochs, mosaics until half the budget: epochs 0 and 1 start at progress 0 and 0.25 and train
    on mosaics, epochs 2 and 3 (0.5, 0.75) on single images; train/mosaic logs the share per epoch."""
    train(make_cfg(*TINY, "trainer.max_epochs=4", "augment.mosaic=1.0", "augment.mosaic_until=0.5"))
    shares = [value for _, value in event_scalars(tmp_path / "tensorboard")["train/mosaic"]]
    assert len(shares) == 4
    assert min(shares[:2]) > 0.9 and max(shares[2:]) == 0.0, shares
