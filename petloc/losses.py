"""Box regression losses for single-object localization.

Every loss is an ``nn.Module`` that Hydra builds from ``conf/loss/*.yaml`` via ``_target_`` and whose
``forward(pred, target)`` returns a scalar averaged over the batch. Boxes are ``[B, 4]`` tensors in
normalized xyxy coordinates (``x0, y0, x1, y1`` in ``[0, 1]``).

Inputs are upcast to float32 before any arithmetic. petloc's heads decode in float32, but a box
handed over in bf16 (a head of one's own under bf16 autocast) cannot represent coordinate differences
below ~0.004 near 1.0, so squared errors, square roots and IoU ratios computed in bf16 would be mostly
rounding noise. The upcast is differentiable, so gradients still reach bf16 predictions. Class
cross-entropy is deliberately absent: the LightningModule adds it in the class-aware modes, so these
modules stay box-only and reusable.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import complete_box_iou_loss, distance_box_iou_loss, generalized_box_iou_loss

IoUKind = Literal["giou", "diou", "ciou"]

_IOU_LOSSES = {
    "giou": generalized_box_iou_loss,
    "diou": distance_box_iou_loss,
    "ciou": complete_box_iou_loss,
}


def _as_float32_pair(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Check both tensors are ``[B, 4]`` boxes and return them as float32.

    A shape mismatch would otherwise broadcast silently (e.g. ``[B, 4]`` against ``[4]``) and train on
    the wrong objective, so it fails loudly here; the check reads only shapes, never device values.
    """
    if pred.ndim != 2 or pred.shape[-1] != 4 or pred.shape != target.shape:
        raise ValueError(
            f"expected pred and target boxes of the same shape [B, 4], got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )
    return pred.float(), target.float()


class MSEBoxLoss(nn.Module):
    """Mean squared error over the 4 coordinates: the Keras prototype's loss, kept as the reference.

    Being quadratic in coordinate error, its gradient fades as boxes get close, which is why the other
    losses exist; it is still the baseline every comparison is made against.
    """

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Return the mean over batch and coordinates of the squared coordinate error."""
        pred, target = _as_float32_pair(pred, target)
        return F.mse_loss(pred, target)


class SmoothL1BoxLoss(nn.Module):
    """Smooth L1 (Huber) loss on the 4 coordinates, averaged over batch and coordinates.

    Smooth L1 is quadratic for errors below ``beta`` and linear above. Detection code usually uses
    ``beta = 1`` with coordinates in pixels, but here coordinates live in ``[0, 1]``, so every error is
    below 1 and ``beta = 1`` would make the loss plain MSE / 2. A small ``beta`` (default 0.05, about 6
    pixels on a 128 px input) keeps the robust linear regime for real mistakes and the smooth quadratic
    one only for nearly-correct boxes.
    """

    def __init__(self, beta: float = 0.05) -> None:
        """Store ``beta``, the error (in normalized units) where the loss turns from quadratic to linear."""
        super().__init__()
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.beta = beta

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Return the mean smooth-L1 coordinate error."""
        pred, target = _as_float32_pair(pred, target)
        return F.smooth_l1_loss(pred, target, beta=self.beta)


def _signed_sqrt(x: Tensor, eps: float) -> Tensor:
    """Odd, monotone square root ``sign(x) * (sqrt(|x| + eps) - sqrt(eps))`` with a finite slope everywhere.

    Plain ``sqrt`` has an infinite gradient at 0 and is NaN for the negative widths an unconstrained head
    can predict; clamping at 0 would instead give such boxes no gradient back towards valid. The
    magnitude is taken with ``where`` rather than ``abs`` so the slope at exactly 0 is ``1 / (2 sqrt(eps))``
    instead of ``abs``'s zero subgradient. Subtracting ``sqrt(eps)`` keeps the map continuous at 0; for
    two non-negative widths it cancels in their difference, leaving ``sqrt(w + eps)`` differences.
    """
    positive = x >= 0
    magnitude = torch.where(positive, x, -x)
    root = torch.sqrt(magnitude + eps) - eps**0.5
    return torch.where(positive, root, -root)


class SqrtWHLoss(nn.Module):
    """MSE on ``(cx, cy, sqrt(w), sqrt(h))``: YOLOv1's trick for weighting small objects more.

    A 0.02 width error is a small miss on a box 0.8 wide but a large one on a box 0.1 wide; plain MSE on
    coordinates scores both the same. The square root's slope ``1 / (2 sqrt(w))`` grows as ``w`` shrinks,
    so the same absolute size error costs more on small boxes, roughly tracking its effect on IoU.
    """

    def __init__(self, eps: float = 1e-6) -> None:
        """Store ``eps``, which bounds the square root's slope at zero width (see ``_signed_sqrt``)."""
        super().__init__()
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.eps = eps

    def _encode(self, boxes: Tensor) -> Tensor:
        """Map xyxy boxes to ``(cx, cy, sqrt(w), sqrt(h))``."""
        x0, y0, x1, y1 = boxes.unbind(dim=-1)
        centre_x = (x0 + x1) / 2
        centre_y = (y0 + y1) / 2
        sqrt_w = _signed_sqrt(x1 - x0, self.eps)
        sqrt_h = _signed_sqrt(y1 - y0, self.eps)
        return torch.stack((centre_x, centre_y, sqrt_w, sqrt_h), dim=-1)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Return the mean squared error between the encoded boxes."""
        pred, target = _as_float32_pair(pred, target)
        return F.mse_loss(self._encode(pred), self._encode(target))


class IoUBoxLoss(nn.Module):
    """IoU-family loss (GIoU, DIoU or CIoU from ``torchvision.ops``) plus an optional L1 term.

    IoU losses optimise the evaluation metric directly and are scale-invariant, but plain ``1 - IoU`` has
    no gradient for disjoint boxes; GIoU adds an enclosing-box penalty, DIoU a centre-distance penalty and
    CIoU also an aspect-ratio one, so all three still pull disjoint boxes together. Adding an L1 term on
    the coordinates is DETR's combination: it steadies early training when IoU gradients are weak.

    The L1 term follows DETR's normalisation, summed over the 4 coordinates and averaged over boxes, so
    DETR's weights (L1 5 : GIoU 2, i.e. ``l1_weight=2.5`` here) carry over unchanged.
    """

    def __init__(self, kind: IoUKind, l1_weight: float = 0.0) -> None:
        """Pick the IoU variant by name (Hydra passes a string) and the weight of the L1 term."""
        super().__init__()
        allowed = get_args(IoUKind)
        if kind not in allowed:
            raise ValueError(f"kind must be one of {', '.join(map(repr, allowed))}; got {kind!r}")
        if l1_weight < 0:
            raise ValueError(f"l1_weight must be >= 0, got {l1_weight}")
        self.kind = kind
        self.l1_weight = l1_weight
        self._iou_loss = _IOU_LOSSES[kind]

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Return the mean IoU-family loss, plus ``l1_weight`` times the per-box summed L1 error."""
        pred, target = _as_float32_pair(pred, target)
        loss = self._iou_loss(pred, target, reduction="mean")
        if self.l1_weight > 0:
            loss = loss + self.l1_weight * (pred - target).abs().sum(dim=-1).mean()
        return loss

    def extra_repr(self) -> str:
        """Show the configuration when the model is printed (the loss function itself is not a module)."""
        return f"kind={self.kind!r}, l1_weight={self.l1_weight}"
