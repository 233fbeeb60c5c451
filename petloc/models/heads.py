"""Box heads: from backbone feature maps to one normalized xyxy box per image.

Every head maps ``features`` (the stride-16 and stride-32 maps) to a :class:`HeadOutput` and owns
its training loss, because dense heads (``center``) need more than a box regression: they also
learn *where* the object is. Boxes are parameterized as centre + size through a sigmoid, so
``x0 < x1`` and ``y0 < y1`` hold for any network output.

Boxes are decoded in float32 whatever the autocast dtype: bf16 keeps 8 significant bits, so a
coordinate of a 12-cell grid would round by up to about 1/400 of the side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class HeadOutput:
    """``box``: decoded [B, 4] xyxy in [0, 1]; ``cell_logits``: [B, H*W] (dense heads only)."""

    box: Tensor
    cell_logits: Tensor | None = None
    cell_boxes: Tensor | None = None  # [B, H, W, 4] per-cell boxes (dense heads only)
    score: Tensor | None = None  # [B] confidence of ``box`` (dense heads only; global heads have none)


def cxcywh_to_xyxy(raw: Tensor) -> Tensor:
    """Sigmoid-parameterized (cx, cy, w, h) -> float32 xyxy; width and height are always positive."""
    c = torch.sigmoid(raw.float())
    half = c[..., 2:] / 2
    return torch.cat([c[..., :2] - half, c[..., :2] + half], dim=-1)


def mirror_boxes(boxes: Tensor) -> Tensor:
    """xyxy boxes (any leading shape) of the horizontally flipped image: x -> 1 - x."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([1 - x1, y0, 1 - x0, y1], dim=-1)


def conv_bn_act(cin: int, cout: int, kernel: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class BoxHead(nn.Module):
    """Base: a head regressing one box globally, trained with the box loss alone.

    ``loss`` takes ``boxes`` [B, K, 4] and ``valid`` [B, K]: the objects in view (K > 1 only in a
    mosaic). A global head sees one object per image, the first; only dense heads (``multi_object``)
    can learn from images that show several.
    """

    multi_object: ClassVar[bool] = False

    def loss(self, out: HeadOutput, boxes: Tensor, valid: Tensor, box_loss: nn.Module) -> Tensor:
        return box_loss(out.box, boxes[:, 0])

    def merge_mirrored(self, out: HeadOutput, mirrored: HeadOutput) -> HeadOutput:
        """Test-time flip: the mean of ``out`` and the unmirrored output for the mirrored image."""
        return HeadOutput(box=(out.box + mirror_boxes(mirrored.box)) / 2)


class DWSepHead(BoxHead):
    """The Keras prototype's head: one more depthwise-separable block, a max-pool, a 1x1 conv to 4."""

    def __init__(self, in_channels: list[int], width: int | None = None) -> None:
        super().__init__()
        c = in_channels[-1]
        width = width or c
        self.block = nn.Sequential(conv_bn_act(c, c, 3, groups=c), conv_bn_act(c, width, 1))
        self.out = nn.Conv2d(width, 4, 1)

    def forward(self, features: list[Tensor]) -> HeadOutput:
        x = F.adaptive_max_pool2d(self.block(features[-1]), 1)
        return HeadOutput(box=cxcywh_to_xyxy(self.out(x).flatten(1)))


class ConvHead(BoxHead):
    """The later Keras version: one 3x3 conv to 4 channels on the last feature map, averaged."""

    def __init__(self, in_channels: list[int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels[-1], 4, 3, padding=1)

    def forward(self, features: list[Tensor]) -> HeadOutput:
        return HeadOutput(box=cxcywh_to_xyxy(self.conv(features[-1]).mean(dim=(2, 3))))


class PooledHead(BoxHead):
    """Global average pool + a small MLP: the usual classification-style regressor."""

    def __init__(self, in_channels: list[int], hidden: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_channels[-1], hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, 4),
        )

    def forward(self, features: list[Tensor]) -> HeadOutput:
        return HeadOutput(box=cxcywh_to_xyxy(self.mlp(features[-1].mean(dim=(2, 3)))))


class CenterHead(BoxHead):
    """Dense single-object head: which cell holds the object's centre, and the box seen from there.

    The stride-32 map is upsampled onto the stride-16 map (a one-step FPN) so an image of 128 px
    gives an 8x8 grid. Each cell predicts the object's centre as an offset of up to ``radius + 1``
    cells from its own centre, and the box size; a softmax over all cells says where the centre is.
    Training: cross-entropy on the cell holding the true centre, plus the box loss on every cell
    within ``radius`` of it (several positives per object, as FCOS/YOLO centre sampling: more box
    supervision per image and neighbours that agree). Decoding: the score-weighted average of the
    boxes within ``radius`` of the best cell, the same cells training made accurate.
    """

    multi_object: ClassVar[bool] = True

    def __init__(
        self,
        in_channels: list[int],
        width: int = 96,
        cell_weight: float = 0.3,
        radius: int = 1,
        centre_sigma: float = 0.0,
    ) -> None:
        super().__init__()
        self.radius = radius
        self.centre_sigma = centre_sigma
        c16, c32 = in_channels[-2], in_channels[-1]
        self.lateral16 = conv_bn_act(c16, width, 1)
        self.lateral32 = conv_bn_act(c32, width, 1)
        self.tower = nn.Sequential(
            conv_bn_act(width, width, 3, groups=width),
            conv_bn_act(width, width, 1),
            conv_bn_act(width, width, 3, groups=width),
            conv_bn_act(width, width, 1),
        )
        self.pred = nn.Conv2d(width, 5, 1)  # cell logit + (dx, dy, w, h)
        self.cell_weight = cell_weight

    def forward(self, features: list[Tensor]) -> HeadOutput:
        f16, f32 = features[-2], features[-1]
        x = self.lateral16(f16) + F.interpolate(self.lateral32(f32), size=f16.shape[-2:], mode="nearest")
        p = self.pred(self.tower(x)).float()  # [B, 5, H, W]
        b, _, h, w = p.shape
        ys, xs = torch.meshgrid(
            torch.arange(h, device=p.device, dtype=p.dtype),
            torch.arange(w, device=p.device, dtype=p.dtype),
            indexing="ij",
        )
        t = torch.sigmoid(p[:, 1:])
        reach = self.radius + 1
        cx = (xs + 0.5 + (t[:, 0] * 2 - 1) * reach) / w
        cy = (ys + 0.5 + (t[:, 1] * 2 - 1) * reach) / h
        bw, bh = t[:, 2], t[:, 3]
        boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=-1)  # [B, H, W, 4]
        logits = p[:, 0].reshape(b, h * w)
        box, score = self._decode(logits, boxes)
        return HeadOutput(box=box, cell_logits=logits, cell_boxes=boxes, score=score)

    def merge_mirrored(self, out: HeadOutput, mirrored: HeadOutput) -> HeadOutput:
        """Test-time flip: average the cell log-probabilities and the cell boxes of both views (the
        mirrored view's maps flipped back), then decode once, so both views vote on the cell."""
        assert out.cell_logits is not None and out.cell_boxes is not None
        assert mirrored.cell_logits is not None and mirrored.cell_boxes is not None
        b, h, w, _ = out.cell_boxes.shape
        flipped = mirrored.cell_logits.float().view(b, h, w).flip(-1).reshape(b, h * w)
        logits = (F.log_softmax(out.cell_logits.float(), dim=1) + F.log_softmax(flipped, dim=1)) / 2
        boxes = (out.cell_boxes + mirror_boxes(mirrored.cell_boxes.flip(2))) / 2
        box, score = self._decode(logits, boxes)
        return HeadOutput(box=box, cell_logits=logits, cell_boxes=boxes, score=score)

    @staticmethod
    def _cell_distance(row: Tensor, col: Tensor, h: int, w: int) -> Tensor:
        """[..., H, W] Chebyshev distance, in cells, from every cell of the grid to the cell
        (``row``, ``col``) of shape [...]: what "within ``radius``" means in training and decoding."""
        yy = torch.arange(h, device=row.device).view(h, 1)
        xx = torch.arange(w, device=row.device).view(1, w)
        return torch.maximum((yy - row[..., None, None]).abs(), (xx - col[..., None, None]).abs())

    def _near(self, cell: Tensor, h: int, w: int) -> Tensor:
        """[B, H, W] mask of the cells within ``radius`` of each sample's flat ``cell`` index."""
        return self._cell_distance(cell // w, cell % w, h, w) <= self.radius

    def _decode(self, logits: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
        """(box, score): the neighbourhood's score-weighted box, and its softmax mass as confidence."""
        b, h, w, _ = boxes.shape
        scores = torch.softmax(logits.float(), dim=1).reshape(b, h, w)
        weights = scores * self._near(logits.argmax(dim=1), h, w)
        mass = weights.sum(dim=(1, 2))
        weights = weights / mass.clamp_min(1e-12).view(b, 1, 1)
        box = (boxes * weights.unsqueeze(-1)).sum(dim=(1, 2))
        return box, mass

    def loss(self, out: HeadOutput, boxes: Tensor, valid: Tensor, box_loss: nn.Module) -> Tensor:
        """Cross-entropy towards the centre cells of the objects in view, plus the box loss on every
        cell within ``radius`` of an object's centre cell, each cell learning the box of its nearest
        object.

        The objects share the target probability in proportion to their areas (one object: one
        cell), so the best cell, which decoding picks, is the largest object's: the object a
        single-object dataset labels. With ``centre_sigma`` > 0 each object's share spreads over the
        cells as a Gaussian of their centres' distance to its centre (sigma in cells)."""
        assert out.cell_logits is not None and out.cell_boxes is not None
        _, h, w, _ = out.cell_boxes.shape
        b, k, _ = boxes.shape
        centre = (boxes[..., :2] + boxes[..., 2:]) / 2  # [B, K, 2]
        size = (boxes[..., 2:] - boxes[..., :2]).clamp_min(0).float()
        weight = (size[..., 0] * size[..., 1]).clamp_min(1e-6) * valid  # [B, K]; a point still counts
        col = (centre[..., 0] * w).long().clamp(0, w - 1)
        row = (centre[..., 1] * h).long().clamp(0, h - 1)
        if self.centre_sigma > 0:  # a soft target: near a cell border the centre is in both cells
            cells_y = (torch.arange(h, device=boxes.device) + 0.5).view(1, 1, h, 1)
            cells_x = (torch.arange(w, device=boxes.device) + 0.5).view(1, 1, 1, w)
            ys = cells_y - centre[..., 1, None, None] * h
            xs = cells_x - centre[..., 0, None, None] * w
            gauss = torch.exp(-(ys**2 + xs**2) / (2 * self.centre_sigma**2)).float()  # [B, K, H, W]
            gauss = gauss / gauss.sum(dim=(2, 3), keepdim=True) * weight.view(b, k, 1, 1)
            share = gauss.sum(dim=1).view(b, h * w)
        else:
            share = torch.zeros(b, h * w, device=boxes.device).scatter_add_(1, row * w + col, weight)
        share = share / share.sum(dim=1, keepdim=True)
        cell_loss = -(share * F.log_softmax(out.cell_logits.float(), dim=1)).sum(dim=1).mean()
        dist = self._cell_distance(row, col, h, w).masked_fill(~valid.view(b, k, 1, 1), h + w)  # [B, K, H, W]
        nearest_dist, nearest = dist.min(dim=1)  # [B, H, W]; ties go to the first object
        positive = nearest_dist <= self.radius
        targets = boxes.gather(1, nearest.view(b, h * w, 1).expand(b, h * w, 4)).view(b, h, w, 4)
        return box_loss(out.cell_boxes[positive], targets[positive]) + self.cell_weight * cell_loss
