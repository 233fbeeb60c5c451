"""Pictures of boxes: predicted in red, ground truth in green, as the Keras prototype's results."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, make_grid

PRED_COLOR = (255, 0, 0)
TRUE_COLOR = (0, 255, 0)


def draw_pair(image: Tensor, pred: Tensor | None, target: Tensor | None, width: int = 2) -> Tensor:
    """``image`` uint8 HWC or CHW; boxes normalized xyxy [4]; returns uint8 CHW with the boxes drawn."""
    chw = image if image.shape[0] == 3 else image.permute(2, 0, 1)
    chw = chw.detach().to("cpu", torch.uint8).contiguous()
    h, w = chw.shape[1:]
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    boxes, colors = [], []
    for box, color in ((target, TRUE_COLOR), (pred, PRED_COLOR)):
        if box is not None:
            boxes.append(box.detach().float().cpu() * scale)
            colors.append(color)
    if not boxes:
        return chw
    return draw_bounding_boxes(chw, torch.stack(boxes), colors=colors, width=width)


def box_grid(images: Tensor, pred: Tensor | None, target: Tensor | None, nrow: int = 8) -> Tensor:
    """A grid (uint8 CHW) of images with their predicted (red) and true (green) boxes."""
    drawn = [
        draw_pair(img, None if pred is None else pred[i], None if target is None else target[i])
        for i, img in enumerate(images)
    ]
    return make_grid(torch.stack(drawn), nrow=nrow, padding=2)
