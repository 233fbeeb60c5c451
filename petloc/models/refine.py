"""Zoom-in refinement: a second look at the object through a crop around the first box.

At 128 px a pet's head spans a few cells of the stride-16 map, and the first pass places its edges
only as finely as that. Cropping the input around the first box (enlarged by ``margin``, so the
whole object and some context stay in view), resizing the crop to the input size and predicting
again sees the object two to three times larger; the second box, mapped back from the crop to the
image, is the prediction. The network needs no training for it: box-safe crops and scale jitter
already show it objects that fill most of the frame.

Everything here is tensor arithmetic, so the exported ONNX graph contains the refinement too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# The crop's size over the first box's: the default of ``inference.refine_margin`` (RESULTS.md).
DEFAULT_MARGIN = 1.6


def refine_frame(box: Tensor, margin: float) -> Tensor:
    """[B, 4] normalized xyxy frames: ``box`` scaled by ``margin`` about its centre, clipped to the image.

    A NaN coordinate (a diverged network) becomes 0, an empty frame, so the crop stays finite; the NaN
    box is reported by the metrics and the loss anyway.
    """
    frame = rescale_box(box, margin).clamp(0, 1)
    return torch.where(frame.isnan(), torch.zeros_like(frame), frame)


def _sample_centres(start: Tensor, end: Tensor, size_out: int) -> Tensor:
    """[B, size_out] normalized image coordinates of the output pixels' centres along one axis of
    the frames [``start``, ``end``]."""
    centres = (torch.arange(size_out, dtype=start.dtype, device=start.device) + 0.5) / size_out
    return start[:, None] + centres * (end - start)[:, None]


def _bilinear_weights(start: Tensor, end: Tensor, size_in: int, size_out: int) -> Tensor:
    """[B, size_out, size_in] bilinear interpolation weights along one axis: each output pixel
    samples the input at its centre (:func:`_sample_centres`); coordinates past the outer pixel
    centres take the edge pixel (grid_sample's border padding)."""
    source = (_sample_centres(start, end, size_out) * size_in - 0.5).clamp(0, size_in - 1)
    pixels = torch.arange(size_in, dtype=start.dtype, device=start.device)
    return (1 - (source[..., None] - pixels).abs()).clamp_min(0)  # the tent function: bilinear


def crop_to_frame(x: Tensor, frame: Tensor, size: int | None = None) -> Tensor:
    """Bilinear crops of the NCHW batch ``x`` to ``frame`` (normalized xyxy), each resampled to
    ``size`` x ``size`` (None: x's own size).

    One bilinear sample at each output pixel's centre (``grid_sample``, ``align_corners=False``,
    border padding); a zoom-in crop enlarges, so one sample per output pixel loses nothing. While
    exporting to ONNX the same samples are two batched matrix products (bilinear interpolation is
    separable): onnxruntime's GridSample and RoiAlign run a single-threaded loop that costs as much
    as a third of the network, its matrix products are multithreaded; in PyTorch the products cost
    more than grid_sample's gather.
    """
    _, _, h, w = x.shape
    out_h, out_w = size or h, size or w
    frame = frame.to(x.dtype)
    if torch.onnx.is_in_onnx_export():
        rows = _bilinear_weights(frame[:, 1], frame[:, 3], h, out_h)  # [B, out_h, h]
        cols = _bilinear_weights(frame[:, 0], frame[:, 2], w, out_w)  # [B, out_w, w]
        crops = rows.unsqueeze(1) @ x.contiguous() @ cols.transpose(1, 2).unsqueeze(1)
    else:
        gx = _sample_centres(frame[:, 0], frame[:, 2], out_w) * 2 - 1  # [B, out_w], grid units
        gy = _sample_centres(frame[:, 1], frame[:, 3], out_h) * 2 - 1  # [B, out_h]
        grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
        crops = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return crops.contiguous(memory_format=torch.channels_last)


def rescale_box(box: Tensor, factor: float) -> Tensor:
    """[B, 4] xyxy boxes with width and height times ``factor``, about their centres.

    A network measures box sizes in units of the input side it was trained at: shown a crop resampled
    to a smaller side, it sees the object smaller in pixels and reports it smaller by the sides' ratio
    (centres, which it places relative to its grid, are unaffected). ``factor`` = trained side over
    the side it was shown undoes that.
    """
    centre = (box[:, :2] + box[:, 2:]) / 2
    half = (box[:, 2:] - box[:, :2]) * (factor / 2)
    return torch.cat([centre - half, centre + half], dim=1)


def box_from_frame(box: Tensor, frame: Tensor) -> Tensor:
    """A box predicted on the crop of ``frame`` (normalized to the crop) -> normalized to the image."""
    origin = frame[:, :2].repeat(1, 2)
    size = (frame[:, 2:] - frame[:, :2]).repeat(1, 2)
    return origin + box * size
