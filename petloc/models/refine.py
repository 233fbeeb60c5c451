"""Zoom-in refinement: a second look at the object through a crop around the first box.

At 128 px a pet's head spans a few cells of the stride-16 map, and the first pass places its edges
only as finely as that. Cropping the input around the first box (enlarged by ``margin``, so the
whole object and some context stay in view), resizing the crop to the input size and predicting
again sees the object two to three times larger; the second box, mapped back from the crop to the
image, is the prediction. The network needs no training for it: box-safe crops and scale jitter
already show it objects that fill most of the frame.

Everything here is tensor arithmetic and ``torchvision.ops.roi_align``, so the exported ONNX graph
contains the refinement too.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import roi_align

# The crop's size over the first box's: the default of ``refine_margin`` (1.4-1.8 all gain on the
# real sample, RESULTS.md), also what checkpoints trained before the option existed get.
DEFAULT_MARGIN = 1.6


def refine_frame(box: Tensor, margin: float) -> Tensor:
    """[B, 4] normalized xyxy frames: ``box`` scaled by ``margin`` about its centre, clipped to the image.

    A NaN coordinate (a diverged network) becomes 0, an empty frame: roi_align reads memory out of
    bounds for NaN coordinates (a segfault, not an error), and the NaN box is reported by the metrics
    and the loss anyway.
    """
    centre = (box[:, :2] + box[:, 2:]) / 2
    half = (box[:, 2:] - box[:, :2]) * (margin / 2)
    frame = torch.cat([centre - half, centre + half], dim=1).clamp(0, 1)
    return torch.where(frame.isnan(), torch.zeros_like(frame), frame)


def crop_to_frame(x: Tensor, frame: Tensor) -> Tensor:
    """Bilinear crops of the NCHW batch ``x`` to ``frame`` (normalized xyxy), each resized to x's size."""
    b, _, h, w = x.shape
    scale = torch.tensor([w, h, w, h], dtype=x.dtype, device=x.device)
    index = torch.arange(b, dtype=x.dtype, device=x.device).view(b, 1)
    rois = torch.cat([index, frame.to(x.dtype) * scale], dim=1)
    crops = roi_align(x, rois, output_size=(h, w), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    return crops.contiguous(memory_format=torch.channels_last)


def box_from_frame(box: Tensor, frame: Tensor) -> Tensor:
    """A box predicted on the crop of ``frame`` (normalized to the crop) -> normalized to the image."""
    origin = frame[:, :2].repeat(1, 2)
    size = (frame[:, 2:] - frame[:, :2]).repeat(1, 2)
    return origin + box * size
