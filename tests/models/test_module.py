"""PetLocModule: training signal, input normalization, class branch, logged metrics and the share of
the training budget used (what the LR schedule follows: tests/models/test_schedulers.py).

The logged validation metrics are checked against ``torchvision.ops.box_iou`` run independently on
the same predictions.
"""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Timer
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision.ops import box_area, box_iou

from petloc.models.module import PetLocModule
from tests.helpers import HEADS, assert_training_unaffected, make_batch, make_module, make_samples

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def first_conv(module: nn.Module) -> nn.Conv2d:
    return next(m for m in module.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("head", HEADS)
def test_one_step_updates_the_backbones_first_conv(head: str) -> None:
    module = make_module(head, backbone="mobilenetv1", loss="giou")
    optimizer = module.configure_optimizers()
    stem = first_conv(module.backbone).weight
    before = stem.detach().clone()

    loss = module.training_step(make_batch(4), 0)
    loss.backward()
    optimizer.step()

    assert stem.grad is not None and stem.grad.abs().sum() > 0
    assert not torch.equal(stem.detach(), before)


@pytest.mark.parametrize(
    ("backbone", "mean", "std"),
    [("mobilenetv3_small", IMAGENET_MEAN, IMAGENET_STD), ("mobilenetv1", (0.5,) * 3, (0.5,) * 3)],
)
def test_preprocess_normalizes_with_the_backbones_mean_and_std(
    backbone: str, mean: tuple[float, ...], std: tuple[float, ...]
) -> None:
    module = make_module(backbone=backbone)
    images = torch.zeros(2, 8, 8, 3, dtype=torch.uint8)
    images[1, 3, 5] = torch.tensor([200, 100, 50], dtype=torch.uint8)

    x = module.preprocess(images)

    assert x.shape == (2, 3, 8, 8) and x.dtype == torch.float32
    assert x.is_contiguous(memory_format=torch.channels_last)
    expected = [(v / 255 - m) / s for v, m, s in zip((200, 100, 50), mean, std, strict=True)]
    torch.testing.assert_close(x[1, :, 3, 5], torch.tensor(expected))
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([-m / s for m, s in zip(mean, std, strict=True)]))


def test_box_mode_has_no_class_branch() -> None:
    module = make_module(mode="box")
    assert module.classifier is None
    _, logits = module(make_batch(2)["image"])
    assert logits is None


@pytest.mark.parametrize(("mode", "num_classes"), [("species", 2), ("breed", 37)])
def test_class_modes_add_a_classifier_and_its_cross_entropy(mode: str, num_classes: int) -> None:
    module = make_module(mode=mode, num_classes=num_classes).eval()
    assert module.mode.cls_weight == 0.5
    channels = module.backbone.feature_info.channels()[-1]
    assert isinstance(module.classifier, nn.Linear)
    assert (module.classifier.in_features, module.classifier.out_features) == (channels, num_classes)

    batch = make_batch(4)
    with torch.no_grad():
        out, logits = module(batch["image"])
        total = module.training_step(batch, 0)
    assert logits is not None and logits.shape == (4, num_classes)

    box_only = F.mse_loss(out.box, batch["box"])
    labels = batch["label"]
    cross_entropy = (torch.logsumexp(logits, dim=1) - logits[torch.arange(4), labels]).mean()
    torch.testing.assert_close(total, box_only + 0.5 * cross_entropy)


def test_mosaic_samples_train_the_boxes_but_not_the_classifier() -> None:
    """A mosaic carries one image's label for several pets: only single images enter the cross-entropy."""
    module = make_module(mode="species", num_classes=2).eval()
    batch = make_batch(4)
    batch["mosaic"] = torch.tensor([True, False, True, False])
    with torch.no_grad():
        out, logits = module(batch["image"])
        total = module.training_step(batch, 0)
    assert logits is not None
    single = torch.tensor([1, 3])
    labels = batch["label"][single]
    cross_entropy = (torch.logsumexp(logits[single], dim=1) - logits[single, labels]).mean()
    torch.testing.assert_close(total, F.mse_loss(out.box, batch["box"]) + 0.5 * cross_entropy)


def validate(module: PetLocModule, samples: list[dict[str, Tensor]], batch_size: int) -> dict[str, float]:
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.validate(module, dataloaders=DataLoader(samples, batch_size=batch_size))
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def targets_around(pred: Tensor) -> Tensor:
    """Targets shifted ever further from the predictions, so IoUs spread from 1 down past 0.5."""
    shift = torch.linspace(0.0, 0.3, pred.shape[0]).unsqueeze(1)
    return (pred + torch.cat([shift, shift / 2, shift, shift / 2], dim=1)).clamp(0, 1)


def test_logged_validation_metrics_match_torchvision() -> None:
    module = make_module(mode="species", num_classes=2).eval()
    samples = make_samples(10)
    images = torch.stack([s["image"] for s in samples])
    with torch.no_grad():
        pred = module.predict_boxes(images)["box"]
        _, logits = module(images)
    target = targets_around(pred)
    for sample, box in zip(samples, target, strict=True):
        sample["box"] = box
    mean_box = torch.tensor([0.3, 0.2, 0.7, 0.9])
    module.mean_box.copy_(mean_box)

    logged = validate(module, samples, batch_size=4)  # batches of 4, 4, 2

    iou = box_iou(pred, target).diagonal()
    assert (iou >= 0.75).any() and ((iou >= 0.5) & (iou < 0.75)).any() and (iou < 0.5).any()
    intersection = iou * (box_area(pred) + box_area(target)) / (1 + iou)
    union = box_area(pred) + box_area(target) - intersection
    labels = torch.stack([s["label"] for s in samples])
    expected = {
        "val/iou": iou.mean(),
        "val/iou_best": iou.mean(),
        "val/acc50": (iou >= 0.5).float().mean(),
        "val/acc75": (iou >= 0.75).float().mean(),
        "val/iou_pooled": intersection.sum() / union.sum(),
        "val/iou_mean_box": box_iou(mean_box.unsqueeze(0), target)[0].mean(),
        "val/cls_acc": (logits.argmax(dim=1) == labels).float().mean(),
    }
    for key, value in expected.items():
        assert logged[key] == pytest.approx(float(value), abs=1e-5), key


def test_logged_validation_loss_is_the_per_image_mean() -> None:
    module = make_module().eval()
    samples = make_samples(5)
    images = torch.stack([s["image"] for s in samples])
    target = torch.stack([s["box"] for s in samples])
    with torch.no_grad():
        out, _ = module(images)
    squared = ((out.box - target) ** 2).mean(dim=1)  # MSE per image

    logged = validate(module, samples, batch_size=4)  # batches of 4 and 1

    assert logged["val/loss"] == pytest.approx(float(squared.mean()), rel=1e-5)


def test_best_iou_survives_a_checkpoint_round_trip() -> None:
    samples = make_samples(4)
    images = torch.stack([s["image"] for s in samples])
    module = make_module().eval()
    with torch.no_grad():
        pred = module.predict_boxes(images)["box"]
    for sample, box in zip(samples, pred, strict=True):
        sample["box"] = box  # perfect predictions: IoU 1
    best = validate(module, samples, batch_size=4)["val/iou_best"]
    assert best == pytest.approx(1.0)

    resumed = make_module()
    resumed.load_state_dict(module.state_dict())
    for sample, box in zip(samples, targets_around(pred), strict=True):
        sample["box"] = box  # a worse epoch
    logged = validate(resumed.eval(), samples, batch_size=4)
    assert logged["val/iou"] < best
    assert logged["val/iou_best"] == pytest.approx(best)


def test_progress_is_the_share_of_the_closer_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps and trainer.max_time's Timer (read through its public time_elapsed/time_remaining): the
    schedule follows whichever budget is used up more."""
    clock = {"now": 1000.0}
    monkeypatch.setattr("lightning.pytorch.callbacks.timer.time.monotonic", lambda: clock["now"])
    module = make_module()
    timer = Timer(duration=timedelta(seconds=100))
    trainer = SimpleNamespace(estimated_stepping_batches=40, global_step=0, callbacks=[timer])
    module.trainer = trainer  # type: ignore[assignment]
    timer.on_train_start(trainer, module)  # type: ignore[arg-type]
    clock["now"] += 25
    assert module.training_progress() == pytest.approx(0.25)  # a quarter of the time, no step yet
    trainer.global_step = 20
    assert module.training_progress() == pytest.approx(0.5)  # half the steps
    clock["now"] += 100
    assert module.training_progress() == 1.0  # past max_time: capped
    trainer.callbacks = []  # no max_time: steps only
    assert module.training_progress() == pytest.approx(0.5)


def mirrored(boxes: Tensor) -> Tensor:
    return torch.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], dim=1)


@pytest.mark.parametrize("head", HEADS)
def test_the_flip_makes_predictions_mirror_with_the_image(head: str) -> None:
    """A CNN's prediction for a mirrored image is not the mirrored prediction; with the test-time flip
    both views vote, so mirroring the input mirrors the output exactly. Training is unaffected."""
    plain = make_module(head, mode="species", num_classes=2).eval()
    tta = make_module(head, mode="species", num_classes=2, flip=True).eval()
    assert tta.inference.flip and not plain.inference.flip
    images = make_batch(3)["image"]
    flipped = images.flip(2)  # NHWC: mirror the width
    with torch.no_grad():
        a, b = tta.predict_boxes(images), tta.predict_boxes(flipped)
        p, q = plain.predict_boxes(images), plain.predict_boxes(flipped)
    torch.testing.assert_close(a["box"], mirrored(b["box"]), rtol=0, atol=1e-5)
    torch.testing.assert_close(a["class_prob"], b["class_prob"], rtol=0, atol=1e-5)
    assert (p["box"] - mirrored(q["box"])).abs().max() > 1e-3  # the plain model is not symmetric
    if head != "center":  # global heads: the mean of the two views' boxes
        torch.testing.assert_close(a["box"], (p["box"] + mirrored(q["box"])) / 2, rtol=0, atol=1e-6)
    assert_training_unaffected(tta, plain, images)


@pytest.mark.parametrize("scale", [1.0, 0.1])
def test_the_backbone_learns_at_its_share_of_the_rate(scale: float) -> None:
    """Fine-tuning: two parameter groups, the backbone's at backbone_lr_scale x optimizer.lr."""
    module = make_module("conv", f"backbone_lr_scale={scale}")
    optimizer = module.configure_optimizers()
    backbone, head = optimizer.param_groups
    assert {id(p) for p in backbone["params"]} == {id(p) for p in module.backbone.parameters()}
    assert len(backbone["params"]) + len(head["params"]) == len(list(module.parameters()))
    assert head["lr"] == pytest.approx(0.1) and backbone["lr"] == pytest.approx(0.1 * scale)
