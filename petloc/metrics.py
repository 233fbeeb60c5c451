"""Localization metrics: paired IoU and the validation metric aggregate.

Boxes are ``[B, 4]`` tensors in normalized xyxy coordinates. Row ``i`` of the predictions belongs to
row ``i`` of the targets (one object per image), so IoU is computed pairwise in O(B) instead of the
B x B matrix ``torchvision.ops.box_iou`` builds.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


def _check_boxes(pred: Tensor, target: Tensor) -> None:
    """Fail on anything but two ``[B, 4]`` tensors of the same shape, which would otherwise broadcast."""
    if pred.ndim != 2 or pred.shape[-1] != 4 or pred.shape != target.shape:
        raise ValueError(
            f"expected pred and target boxes of the same shape [B, 4], got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )


def paired_box_iou(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Return per-row ``(iou, intersection, union)`` of ``pred[i]`` with ``target[i]``, each ``[B]`` float32.

    Computed in float32 whatever the input dtype, because bf16 areas of small boxes are too coarse to
    compare. Widths and heights are clamped at 0, so an inverted predicted box (``x1 < x0``, possible
    from an unconstrained head) has zero area and scores IoU 0 instead of a meaningless negative-area
    ratio. A pair of empty boxes has union 0 and is given IoU 0 rather than NaN. Intersection and union
    are returned too so callers can pool them across a dataset (``sum(inter) / sum(union)``).
    """
    _check_boxes(pred, target)
    pred = pred.float()
    target = target.float()
    pred_area = (pred[:, 2] - pred[:, 0]).clamp(min=0) * (pred[:, 3] - pred[:, 1]).clamp(min=0)
    target_area = (target[:, 2] - target[:, 0]).clamp(min=0) * (target[:, 3] - target[:, 1]).clamp(min=0)
    top_left = torch.maximum(pred[:, :2], target[:, :2])
    bottom_right = torch.minimum(pred[:, 2:], target[:, 2:])
    overlap = (bottom_right - top_left).clamp(min=0)
    intersection = overlap[:, 0] * overlap[:, 1]
    union = pred_area + target_area - intersection
    iou = intersection / union.clamp(min=torch.finfo(torch.float32).tiny)
    return iou, intersection, union


class LocalizationMetrics(Metric):
    """Dataset-level localization metrics from summed states, so batches and DDP ranks aggregate exactly.

    Every state is a running sum reduced with ``dist_reduce_fx="sum"``: the result after any split of
    the data into batches or ranks equals the result on all of it at once (up to float rounding), which
    averaging per-batch means would not give with uneven batches. ``update`` stays on the device with no
    host synchronisation because it runs every validation step.

    ``compute`` returns ``{"iou", "acc50", "acc75", "iou_pooled"}``: mean per-image IoU, share of images
    with IoU >= 0.5 / >= 0.75, and sum of intersections over sum of unions (the Keras prototype's final
    callback; it weights large boxes more than the per-image mean does). Before any update they are NaN.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    iou_sum: Tensor
    count: Tensor
    hits50: Tensor
    hits75: Tensor
    inter_sum: Tensor
    union_sum: Tensor

    def __init__(self, **kwargs: object) -> None:
        """Register the six summed states; ``kwargs`` go to ``torchmetrics.Metric`` (sync options)."""
        super().__init__(**kwargs)
        for name in ("iou_sum", "inter_sum", "union_sum"):
            self.add_state(name, default=torch.tensor(0.0), dist_reduce_fx="sum")
        for name in ("count", "hits50", "hits75"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred_boxes: Tensor, target_boxes: Tensor) -> None:
        """Add one batch of paired boxes to the running sums."""
        iou, intersection, union = paired_box_iou(pred_boxes.detach(), target_boxes.detach())
        self.iou_sum += iou.sum()
        self.inter_sum += intersection.sum()
        self.union_sum += union.sum()
        self.count += iou.numel()
        self.hits50 += (iou >= 0.5).sum()
        self.hits75 += (iou >= 0.75).sum()

    def compute(self) -> dict[str, Tensor]:
        """Turn the sums into the four reported metrics."""
        count = self.count.float()
        return {
            "iou": self.iou_sum / count,
            "acc50": self.hits50.float() / count,
            "acc75": self.hits75.float() / count,
            "iou_pooled": self.inter_sum / self.union_sum,
        }
