"""paired_box_iou and LocalizationMetrics against torchvision and hand-computed values.

(The mean-box baseline is checked where it is computed and logged: tests/test_train.py.)"""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou

from petloc.metrics import LocalizationMetrics, paired_box_iou


def boxes(*rows: tuple[float, float, float, float]) -> torch.Tensor:
    """Build a float32 ``[B, 4]`` tensor from literal rows."""
    return torch.tensor(rows, dtype=torch.float32)


def random_boxes(n: int, generator: torch.Generator) -> torch.Tensor:
    """Valid normalized xyxy boxes: sorted coordinate pairs in [0, 1], widths and heights > 0."""
    xs = torch.rand(n, 2, generator=generator).sort(dim=1).values
    ys = torch.rand(n, 2, generator=generator).sort(dim=1).values
    xs[:, 1] = torch.maximum(xs[:, 1], xs[:, 0] + 1e-3)
    ys[:, 1] = torch.maximum(ys[:, 1], ys[:, 0] + 1e-3)
    return torch.stack((xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]), dim=1)


def jittered(target: torch.Tensor, scale: float, generator: torch.Generator) -> torch.Tensor:
    """Predictions near ``target`` so IoUs spread over (0, 1] instead of being mostly 0."""
    noise = (torch.rand(target.shape, generator=generator) - 0.5) * scale
    x0, y0, x1, y1 = (target + noise).unbind(dim=1)
    return torch.stack((x0, y0, torch.maximum(x1, x0 + 1e-3), torch.maximum(y1, y0 + 1e-3)), dim=1)


# Hand-made pairs with their intersection, union and IoU:
# identical     [0.1, 0.1, 0.5, 0.5] vs itself: inter 0.16, union 0.16, IoU 1
# disjoint      [0, 0, 0.2, 0.2] vs [0.6, 0.6, 1, 1]: inter 0, union 0.04 + 0.16 = 0.2, IoU 0
# touching      [0, 0, 0.5, 0.5] vs [0.5, 0, 1, 0.5]: shared edge only, inter 0, union 0.5, IoU 0
# nested        [0.25, 0.25, 0.75, 0.75] in [0, 0, 1, 1]: inter 0.25, union 1, IoU 0.25
# half overlap  [0, 0, 0.5, 1] vs [0.25, 0, 0.75, 1]: inter 0.25, union 0.75, IoU 1/3
EDGE_PRED = boxes(
    (0.1, 0.1, 0.5, 0.5),
    (0.0, 0.0, 0.2, 0.2),
    (0.0, 0.0, 0.5, 0.5),
    (0.25, 0.25, 0.75, 0.75),
    (0.0, 0.0, 0.5, 1.0),
)
EDGE_TARGET = boxes(
    (0.1, 0.1, 0.5, 0.5),
    (0.6, 0.6, 1.0, 1.0),
    (0.5, 0.0, 1.0, 0.5),
    (0.0, 0.0, 1.0, 1.0),
    (0.25, 0.0, 0.75, 1.0),
)
EDGE_INTER = [0.16, 0.0, 0.0, 0.25, 0.25]
EDGE_UNION = [0.16, 0.2, 0.5, 1.0, 0.75]
EDGE_IOU = [1.0, 0.0, 0.0, 0.25, 1 / 3]


def test_paired_box_iou_matches_torchvision_diagonal_on_random_boxes() -> None:
    generator = torch.Generator().manual_seed(0)
    target = random_boxes(1000, generator)
    pred = torch.cat((random_boxes(500, generator), jittered(target[500:], 0.2, generator)))
    iou, intersection, union = paired_box_iou(pred, target)
    expected = box_iou(pred, target).diagonal()
    assert iou.shape == (1000,)
    torch.testing.assert_close(iou, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(intersection / union, expected, rtol=1e-5, atol=1e-6)
    # The jittered half must exercise the whole range, not only near-zero IoUs.
    assert (iou[500:] > 0.5).sum() > 100


def test_paired_box_iou_hand_made_edge_cases() -> None:
    iou, intersection, union = paired_box_iou(EDGE_PRED, EDGE_TARGET)
    torch.testing.assert_close(iou, torch.tensor(EDGE_IOU), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(intersection, torch.tensor(EDGE_INTER), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(union, torch.tensor(EDGE_UNION), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(iou, box_iou(EDGE_PRED, EDGE_TARGET).diagonal(), rtol=1e-6, atol=1e-7)


def test_paired_box_iou_computes_in_float32_from_bf16() -> None:
    iou, intersection, union = paired_box_iou(EDGE_PRED.bfloat16(), EDGE_TARGET.bfloat16())
    assert iou.dtype == intersection.dtype == union.dtype == torch.float32
    # Every coordinate except 0.1 / 0.2 / 0.6 is exact in bf16; the nested and half-overlap pairs are exact.
    assert iou[3].item() == 0.25
    assert iou[4].item() == pytest.approx(1 / 3, rel=1e-7)


def test_paired_box_iou_scores_inverted_and_empty_boxes_zero() -> None:
    # Inverted prediction (x1 < x0) against a real box: zero area, IoU 0 (raw arithmetic would give
    # a negative area and a meaningless ratio). Two empty boxes: union 0, IoU 0 rather than NaN.
    pred = boxes((0.6, 0.2, 0.4, 0.8), (0.3, 0.3, 0.3, 0.3))
    target = boxes((0.2, 0.2, 0.8, 0.8), (0.3, 0.3, 0.3, 0.3))
    iou, _, union = paired_box_iou(pred, target)
    assert iou.tolist() == [0.0, 0.0]
    assert union[0].item() == pytest.approx(0.36, rel=1e-6)


def test_paired_box_iou_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"\[B, 4\]"):
        paired_box_iou(EDGE_PRED, EDGE_TARGET[:3])


def test_localization_metrics_hand_checked() -> None:
    metric = LocalizationMetrics()
    metric.update(EDGE_PRED, EDGE_TARGET)
    result = metric.compute()
    assert set(result) == {"iou", "acc50", "acc75", "iou_pooled"}
    # Mean IoU: (1 + 0 + 0 + 0.25 + 1/3) / 5 = (19/12) / 5 = 19/60.
    assert result["iou"].item() == pytest.approx(19 / 60, rel=1e-6)
    # Only the identical pair reaches 0.5 (and 0.75): 1 of 5.
    assert result["acc50"].item() == pytest.approx(0.2)
    assert result["acc75"].item() == pytest.approx(0.2)
    # Pooled: (0.16 + 0 + 0 + 0.25 + 0.25) / (0.16 + 0.2 + 0.5 + 1 + 0.75) = 0.66 / 2.61.
    assert result["iou_pooled"].item() == pytest.approx(0.66 / 2.61, rel=1e-6)


def test_localization_metrics_thresholds_are_inclusive() -> None:
    # IoUs exactly 0.5 ([0, 0, 0.5, 1] vs [0, 0, 1, 1]) and 0.75 ([0, 0, 0.75, 1]) count as hits, and
    # 0.25 ([0, 0, 0.25, 1]) counts for neither: acc50 = 2/3, acc75 = 1/3, mean IoU 0.5.
    pred = boxes((0.0, 0.0, 0.5, 1.0), (0.0, 0.0, 0.75, 1.0), (0.0, 0.0, 0.25, 1.0))
    target = boxes((0.0, 0.0, 1.0, 1.0), (0.0, 0.0, 1.0, 1.0), (0.0, 0.0, 1.0, 1.0))
    metric = LocalizationMetrics()
    metric.update(pred, target)
    result = metric.compute()
    assert result["acc50"].item() == pytest.approx(2 / 3)
    assert result["acc75"].item() == pytest.approx(1 / 3)
    assert result["iou"].item() == pytest.approx(0.5)
    # Pooled differs from the mean when unions differ: (0.5 + 0.75 + 0.25) / 3 = 0.5 here as all unions are 1.
    assert result["iou_pooled"].item() == pytest.approx(0.5)


def _random_pairs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    target = random_boxes(n, generator)
    return jittered(target, 0.3, generator), target


def _assert_same_result(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert set(actual) == set(expected)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-6)


def test_uneven_batches_equal_one_batch() -> None:
    pred, target = _random_pairs(103, seed=1)
    whole = LocalizationMetrics()
    whole.update(pred, target)
    batched = LocalizationMetrics()
    for start, stop in [(0, 1), (1, 40), (40, 41), (41, 97), (97, 103)]:
        batched.update(pred[start:stop], target[start:stop])
    _assert_same_result(batched.compute(), whole.compute())
    # The per-image mean must not be a mean of per-batch means (which the 1-image batches would skew).
    iou = box_iou(pred, target).diagonal()
    assert batched.compute()["iou"].item() == pytest.approx(iou.mean().item(), rel=1e-5)
    assert batched.compute()["acc50"].item() == pytest.approx((iou >= 0.5).float().mean().item())


def test_reset_forgets_previous_updates() -> None:
    metric = LocalizationMetrics()
    metric.update(EDGE_PRED, EDGE_TARGET)
    metric.reset()
    metric.update(EDGE_PRED[:1], EDGE_TARGET[:1])
    result = metric.compute()
    assert result["iou"].item() == pytest.approx(1.0)
    assert result["acc50"].item() == pytest.approx(1.0)
    assert result["iou_pooled"].item() == pytest.approx(1.0)


def test_states_are_sum_reduced_for_ddp() -> None:
    # What DDP sync does: every state is reduced with a sum across ranks.
    metric = LocalizationMetrics()
    assert set(metric._defaults) == {"iou_sum", "count", "hits50", "hits75", "inter_sum", "union_sum"}
    for name in metric._defaults:
        reduce = metric._reductions[name]
        assert reduce is not None
        assert reduce(torch.tensor([2.0, 3.0])).item() == 5.0


def test_two_ranks_merged_equal_one_metric_fed_everything() -> None:
    pred, target = _random_pairs(77, seed=2)
    whole = LocalizationMetrics()
    whole.update(pred, target)
    rank0, rank1 = LocalizationMetrics(), LocalizationMetrics()
    rank0.update(pred[:30], target[:30])
    rank1.update(pred[30:50], target[30:50])
    rank1.update(pred[50:], target[50:])
    # Simulate the sum all-reduce by hand on a fresh metric ...
    summed = LocalizationMetrics()
    for name in summed._defaults:
        setattr(summed, name, getattr(rank0, name) + getattr(rank1, name))
    summed._update_count = 1
    _assert_same_result(summed.compute(), whole.compute())
    # ... and through torchmetrics' own state merge.
    rank0.merge_state(rank1)
    _assert_same_result(rank0.compute(), whole.compute())


def test_update_accepts_bf16_and_tensors_that_require_grad() -> None:
    metric = LocalizationMetrics()
    metric.update(EDGE_PRED.bfloat16().requires_grad_(), EDGE_TARGET.bfloat16())
    result = metric.compute()
    assert not result["iou"].requires_grad
    assert result["acc50"].item() == pytest.approx(0.2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host syncs are only observable on CUDA")
def test_update_does_not_synchronize_with_the_host() -> None:
    # update runs every validation step; an .item() or data-dependent shape there would stall the GPU.
    metric = LocalizationMetrics().to("cuda")
    pred, target = EDGE_PRED.cuda(), EDGE_TARGET.cuda()
    torch.cuda.set_sync_debug_mode("error")
    try:
        metric.update(pred, target)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert metric.compute()["acc50"].item() == pytest.approx(0.2)
