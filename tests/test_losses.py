"""Box losses against hand-computed values, plus zero-at-identity, gradient and dtype behaviour."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from petloc import CONFIG_DIR
from petloc.losses import IoUBoxLoss, MSEBoxLoss, SmoothL1BoxLoss, SqrtWHLoss
from tests.helpers import compose_config


def boxes(*rows: tuple[float, float, float, float]) -> torch.Tensor:
    """Build a float32 ``[B, 4]`` tensor from literal rows."""
    return torch.tensor(rows, dtype=torch.float32)


# Every loss a run can pick, as conf/loss/*.yaml configures it (the IoU losses with their L1 term), and
# the IoU losses without the L1 term: the behaviour tests below cover a new loss's config file as it is.
LOSSES: dict[str, nn.Module] = {
    **{
        path.stem: instantiate(compose_config(f"loss={path.stem}").loss)
        for path in sorted((CONFIG_DIR / "loss").glob("*.yaml"))
    },
    **{f"{kind}_no_l1": IoUBoxLoss(kind) for kind in ("giou", "diou", "ciou")},
}


# Overlapping pair: intersection [0.25, 0.25, 0.5, 0.5] = 0.0625, union 0.25 + 0.25 - 0.0625 = 0.4375,
# IoU = 0.0625 / 0.4375 = 1/7; enclosing box [0, 0, 0.75, 0.75] has area 0.5625 and diagonal² 1.125.
OVERLAP_PRED = (0.0, 0.0, 0.5, 0.5)
OVERLAP_TARGET = (0.25, 0.25, 0.75, 0.75)
# Disjoint pair: intersection 0, union 0.04 + 0.16 = 0.2, IoU 0;
# enclosing box [0, 0, 1, 1]: area 1, diagonal² 2.
DISJOINT_PRED = (0.0, 0.0, 0.2, 0.2)
DISJOINT_TARGET = (0.6, 0.6, 1.0, 1.0)


def test_mse_hand_computed() -> None:
    # Row 1 differences (-0.1, 0, 0.1, -0.2) -> squares 0.01 + 0 + 0.01 + 0.04 = 0.06; row 2 identical.
    # Mean over 8 numbers: 0.06 / 8 = 0.0075.
    pred = boxes((0.1, 0.2, 0.5, 0.6), (0.0, 0.0, 1.0, 1.0))
    target = boxes((0.2, 0.2, 0.4, 0.8), (0.0, 0.0, 1.0, 1.0))
    assert MSEBoxLoss()(pred, target).item() == pytest.approx(0.0075, abs=1e-7)


def test_smooth_l1_hand_computed() -> None:
    # beta = 0.05. Row 1 |d| = (0.1, 0, 0.1, 0.2): linear regime |d| - beta/2 for d >= beta ->
    # 0.075 + 0 + 0.075 + 0.175 = 0.325. Row 2 |d| = (0, 0, 0, 0.02) < beta: quadratic 0.5 * d² / beta =
    # 0.5 * 0.0004 / 0.05 = 0.004. Mean over 8 numbers: 0.329 / 8 = 0.041125.
    pred = boxes((0.1, 0.2, 0.5, 0.6), (0.1, 0.2, 0.5, 0.62))
    target = boxes((0.2, 0.2, 0.4, 0.8), (0.1, 0.2, 0.5, 0.6))
    assert SmoothL1BoxLoss(beta=0.05)(pred, target).item() == pytest.approx(0.041125, abs=1e-6)


def test_smooth_l1_default_beta_is_small() -> None:
    # With beta = 1 a 0.2 error would be quadratic (0.5 * 0.04 = 0.02); the default keeps it linear: 0.175.
    pred = boxes((0.0, 0.0, 0.5, 0.5))
    target = boxes((0.0, 0.0, 0.5, 0.7))
    assert SmoothL1BoxLoss()(pred, target).item() == pytest.approx(0.175 / 4, abs=1e-6)


def test_sqrt_wh_hand_computed() -> None:
    # pred [0.2, 0.1, 0.45, 0.74]: cx 0.325, cy 0.42, w 0.25 (sqrt 0.5), h 0.64 (sqrt 0.8).
    # target [0.3, 0.3, 0.39, 0.46]: cx 0.345, cy 0.38, w 0.09 (sqrt 0.3), h 0.16 (sqrt 0.4).
    # Differences (-0.02, 0.04, 0.2, 0.4) -> squares 0.0004 + 0.0016 + 0.04 + 0.16 = 0.202, mean 0.0505.
    # (eps = 1e-6 shifts the square roots by < 2e-6, far inside the tolerance.)
    pred = boxes((0.2, 0.1, 0.45, 0.74))
    target = boxes((0.3, 0.3, 0.39, 0.46))
    assert SqrtWHLoss()(pred, target).item() == pytest.approx(0.0505, abs=1e-5)


def test_sqrt_wh_weights_small_boxes_more() -> None:
    # The same 0.05 width error: sqrt(0.09) - sqrt(0.04) = 0.1 on a small box, sqrt(0.81) - sqrt(0.76) ~ 0.028
    # on a large one; plain MSE cannot tell them apart.
    small = SqrtWHLoss()(boxes((0.4, 0.4, 0.49, 0.5)), boxes((0.4, 0.4, 0.44, 0.5)))
    large = SqrtWHLoss()(boxes((0.1, 0.1, 0.91, 0.9)), boxes((0.1, 0.1, 0.86, 0.9)))
    assert small.item() > 5 * large.item()
    # cx differs by 0.025 in both (0.445 vs 0.42, 0.505 vs 0.48); sqrt-width terms 0.1² vs (0.9 - sqrt 0.76)².
    assert small.item() == pytest.approx((0.025**2 + 0.1**2) / 4, abs=1e-5)
    assert large.item() == pytest.approx((0.025**2 + (0.9 - math.sqrt(0.76)) ** 2) / 4, abs=1e-5)


def test_giou_hand_computed_with_disjoint_pair() -> None:
    # Overlap: GIoU = 1/7 - (0.5625 - 0.4375) / 0.5625 = 1/7 - 2/9 = -5/63 -> loss 1 + 5/63 = 68/63.
    # Disjoint: GIoU = 0 - (1 - 0.2) / 1 = -0.8 -> loss 1.8.
    pred = boxes(OVERLAP_PRED, DISJOINT_PRED)
    target = boxes(OVERLAP_TARGET, DISJOINT_TARGET)
    expected = (68 / 63 + 1.8) / 2
    assert IoUBoxLoss("giou")(pred, target).item() == pytest.approx(expected, abs=1e-6)


def test_diou_hand_computed_with_disjoint_pair() -> None:
    # DIoU loss = 1 - IoU + d² / c² (centre distance² over enclosing diagonal²).
    # Overlap: centres (0.25, 0.25), (0.5, 0.5): d² = 0.125, c² = 1.125 -> 1 - 1/7 + 1/9 = 61/63.
    # Disjoint: centres (0.1, 0.1), (0.8, 0.8): d² = 0.98, c² = 2 -> 1 - 0 + 0.49 = 1.49.
    pred = boxes(OVERLAP_PRED, DISJOINT_PRED)
    target = boxes(OVERLAP_TARGET, DISJOINT_TARGET)
    expected = (61 / 63 + 1.49) / 2
    assert IoUBoxLoss("diou")(pred, target).item() == pytest.approx(expected, abs=1e-6)


def test_ciou_adds_aspect_term_only_when_aspects_differ() -> None:
    # Both squares: aspect term v = 0, so CIoU equals DIoU (see the DIoU test).
    square_pred = boxes(OVERLAP_PRED, DISJOINT_PRED)
    square_target = boxes(OVERLAP_TARGET, DISJOINT_TARGET)
    assert IoUBoxLoss("ciou")(square_pred, square_target).item() == pytest.approx(
        (61 / 63 + 1.49) / 2, abs=1e-6
    )
    # pred 0.5 x 0.25, target 0.25 x 0.5 sharing corner (0, 0): intersection 0.0625, union 0.1875, IoU 1/3.
    # Centres (0.25, 0.125), (0.125, 0.25): d² = 0.03125; enclosing [0, 0, 0.5, 0.5]: c² = 0.5 -> 0.0625.
    # v = 4/pi² (atan(0.25/0.5) - atan(0.5/0.25))², alpha = v / (1 - IoU + v);
    # loss = 1 - IoU + 0.0625 + alpha v.
    v = 4 / math.pi**2 * (math.atan(0.5) - math.atan(2.0)) ** 2
    alpha = v / (1 - 1 / 3 + v)
    expected = 1 - 1 / 3 + 0.0625 + alpha * v
    pred = boxes((0.0, 0.0, 0.5, 0.25))
    target = boxes((0.0, 0.0, 0.25, 0.5))
    assert IoUBoxLoss("ciou")(pred, target).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("kind", ["giou", "diou", "ciou"])
def test_iou_losses_equal_one_minus_iou_for_concentric_nested_boxes(kind: str) -> None:
    # pred [0.25, 0.25, 0.75, 0.75] inside target [0, 0, 1, 1]: IoU = 0.25 / 1. The enclosing box is the
    # target (GIoU penalty 0), the centres coincide (DIoU penalty 0), both are squares (CIoU penalty 0).
    pred = boxes((0.25, 0.25, 0.75, 0.75))
    target = boxes((0.0, 0.0, 1.0, 1.0))
    assert IoUBoxLoss(kind)(pred, target).item() == pytest.approx(0.75, abs=1e-6)


def test_iou_loss_l1_term_sums_coordinates_and_averages_boxes() -> None:
    # Overlap pair: every coordinate is off by 0.25 -> per-box L1 sum 1.0. Identical second pair: 0.
    # Mean over the 2 boxes: 0.5. GIoU losses 68/63 and 0 -> mean 34/63. Total 34/63 + 2 * 0.5.
    pred = boxes(OVERLAP_PRED, (0.0, 0.0, 1.0, 1.0))
    target = boxes(OVERLAP_TARGET, (0.0, 0.0, 1.0, 1.0))
    assert IoUBoxLoss("giou", l1_weight=2.0)(pred, target).item() == pytest.approx(34 / 63 + 1.0, abs=1e-6)


def test_iou_loss_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match=r"'giou', 'diou', 'ciou'.*'iou'"):
        IoUBoxLoss("iou")  # type: ignore[arg-type]


def test_losses_reject_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"\[B, 4\]"):
        MSEBoxLoss()(boxes(OVERLAP_PRED, DISJOINT_PRED), torch.tensor(OVERLAP_TARGET))


@pytest.mark.parametrize("loss", list(LOSSES.values()), ids=list(LOSSES))
def test_identical_boxes_give_zero_loss(loss: nn.Module) -> None:
    # torchvision's IoU losses divide by union + 1e-7, so identical boxes score eps / area: 2e-5 for the
    # 0.05 x 0.1 box here, hence the tolerance; a real mismatch costs orders of magnitude more.
    target = boxes((0.1, 0.2, 0.5, 0.9), (0.3, 0.3, 0.35, 0.4))
    assert loss(target.clone(), target).item() == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("loss", list(LOSSES.values()), ids=list(LOSSES))
def test_gradient_is_finite_and_nonzero(loss: nn.Module) -> None:
    pred = boxes(OVERLAP_PRED, DISJOINT_PRED).requires_grad_()
    target = boxes(OVERLAP_TARGET, DISJOINT_TARGET)
    loss(pred, target).backward()
    assert pred.grad is not None
    assert torch.isfinite(pred.grad).all()
    assert pred.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("loss", list(LOSSES.values()), ids=list(LOSSES))
def test_tiny_width_boxes_and_bf16_give_finite_loss_and_gradient(loss: nn.Module, dtype: torch.dtype) -> None:
    # Widths of 1e-4 (exactly 0 once rounded to bf16 near 0.5) with normal heights: degenerate but valid.
    pred = torch.tensor([[0.5, 0.2, 0.5001, 0.6], [0.1, 0.1, 0.4, 0.3]], dtype=dtype).requires_grad_()
    target = torch.tensor([[0.5002, 0.25, 0.5003, 0.55], [0.1, 0.1, 0.1001, 0.3]], dtype=dtype)
    value = loss(pred, target)
    value.backward()
    assert value.ndim == 0
    assert torch.isfinite(value)
    assert pred.grad is not None
    assert pred.grad.dtype == dtype
    assert torch.isfinite(pred.grad.float()).all()


@pytest.mark.parametrize("loss", list(LOSSES.values()), ids=list(LOSSES))
def test_bf16_matches_float32_on_representable_boxes(loss: nn.Module) -> None:
    # Coordinates that are exact in bf16, so any difference would come from doing the arithmetic in bf16.
    pred = boxes((0.125, 0.25, 0.5, 0.75), (0.0, 0.0, 0.25, 0.25))
    target = boxes((0.25, 0.125, 0.625, 0.875), (0.5, 0.5, 1.0, 1.0))
    expected = loss(pred, target)
    actual = loss(pred.bfloat16(), target.bfloat16())
    assert actual.dtype == torch.float32
    assert actual.item() == pytest.approx(expected.item(), rel=1e-6)


def test_sqrt_wh_pushes_inverted_width_back_to_positive() -> None:
    # An inverted prediction (x1 < x0) must still get a gradient that widens it, not NaN or zero.
    pred = boxes((0.5, 0.2, 0.45, 0.6)).requires_grad_()
    target = boxes((0.4, 0.2, 0.6, 0.6))
    SqrtWHLoss()(pred, target).backward()
    assert pred.grad is not None
    assert torch.isfinite(pred.grad).all()
    # Increasing x1 widens the box: the loss must decrease, i.e. d loss / d x1 < 0.
    assert pred.grad[0, 2] < 0


def test_sqrt_wh_gradient_at_exactly_zero_width_is_nonzero() -> None:
    # Centres coincide (cx 0.5), so only the width term acts: a collapsed prediction must be pushed wider.
    # abs() there would give a zero subgradient at w = 0 and leave the box stuck.
    pred = boxes((0.5, 0.2, 0.5, 0.6)).requires_grad_()
    target = boxes((0.4, 0.2, 0.6, 0.6))
    SqrtWHLoss()(pred, target).backward()
    assert pred.grad is not None
    assert pred.grad[0, 2] < 0
    assert pred.grad[0, 0] > 0
