"""Zoom-in refinement: frames, crops and the mapping back, against hand-computed values, and the
module's second look end to end with a stand-in network that finds a painted square exactly."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from petloc.models.heads import HeadOutput
from petloc.models.options import InferenceOptions
from petloc.models.refine import box_from_frame, crop_to_frame, refine_frame
from tests.helpers import HEADS, SIZE, assert_training_unaffected, make_batch, make_module


def test_refine_frame_scales_the_box_about_its_centre_and_clips() -> None:
    boxes = torch.tensor([[0.2, 0.3, 0.4, 0.5], [0.0, 0.0, 0.2, 0.2], [0.7, 0.1, 0.9, 0.9]])
    frames = refine_frame(boxes, margin=2.0)
    expected = torch.tensor([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 0.3, 0.3], [0.6, 0.0, 1.0, 1.0]])
    torch.testing.assert_close(frames, expected)


def test_a_nan_box_gives_an_empty_frame_that_crops_without_crashing() -> None:
    """roi_align segfaults on NaN coordinates; a diverged network's NaN box must not reach it."""
    boxes = torch.tensor([[float("nan"), 0.1, 0.5, 0.5], [0.2, 0.2, 0.6, 0.6]])
    frames = refine_frame(boxes, margin=1.6)
    assert torch.isfinite(frames).all() and frames[0, [0, 2]].eq(0).all()  # zero width
    assert crop_to_frame(torch.randn(2, 3, SIZE, SIZE), frames).shape == (2, 3, SIZE, SIZE)


def test_box_from_frame_maps_crop_coordinates_to_the_image() -> None:
    frame = torch.tensor([[0.1, 0.2, 0.5, 0.6]])  # 0.4 x 0.4 of the image
    crop_box = torch.tensor([[0.5, 0.5, 1.0, 1.0]])  # the crop's lower-right quarter
    torch.testing.assert_close(box_from_frame(crop_box, frame), torch.tensor([[0.3, 0.4, 0.5, 0.6]]))


def test_crop_to_frame_resamples_the_frame_bilinearly() -> None:
    """A horizontal ramp (value = column index) cropped to the middle half of the width: bilinear
    sampling of a linear function is exact, so output column j holds the source coordinate of its
    centre, 16 + (j + 0.5) * 0.5 - 0.5 (pixel centres at half-integers); rows are untouched."""
    ramp = torch.arange(SIZE, dtype=torch.float32).expand(2, 3, SIZE, SIZE).contiguous()
    frame = torch.tensor([[0.25, 0.0, 0.75, 1.0], [0.25, 0.0, 0.75, 1.0]])
    crop = crop_to_frame(ramp, frame)
    assert crop.shape == ramp.shape and crop.is_contiguous(memory_format=torch.channels_last)
    columns = torch.arange(SIZE, dtype=torch.float32)
    expected = (16 + (columns + 0.5) * 0.5 - 0.5).clamp(0, SIZE - 1)
    torch.testing.assert_close(crop[0, 1, 10], expected, rtol=0, atol=1e-4)
    torch.testing.assert_close(crop[1, 2, :, 20], torch.full((SIZE,), expected[20].item()), rtol=0, atol=1e-4)


@pytest.mark.parametrize("exporting", [False, True])
@pytest.mark.parametrize("size", [None, 32])
def test_crop_to_frame_equals_grid_sample(
    size: int | None, exporting: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Oracle: torch's grid_sample, bilinear, align_corners=False, border padding, on a grid of each
    output pixel's centre in the frame; random images, frames inside and touching the image's edges.
    Both ways of computing the crop: eager (grid_sample) and while exporting (matrix products)."""
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: exporting)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, SIZE, SIZE, generator=generator)
    corner = torch.rand(5, 2, generator=generator) * 0.6
    frame = torch.cat([corner, corner + 0.1 + torch.rand(5, 2, generator=generator) * 0.3], dim=1)
    frame[0] = torch.tensor([0.0, 0.0, 1.0, 1.0])  # the whole image
    frame[1] = torch.tensor([0.7, 0.0, 1.0, 0.2])  # a corner
    out = size or SIZE
    centres = (torch.arange(out) + 0.5) / out
    gx = frame[:, 0:1] + centres * (frame[:, 2:3] - frame[:, 0:1])  # [B, out], normalized
    gy = frame[:, 1:2] + centres * (frame[:, 3:4] - frame[:, 1:2])
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1) * 2 - 1
    expected = torch.nn.functional.grid_sample(x, grid, "bilinear", "border", align_corners=False)
    torch.testing.assert_close(crop_to_frame(x, frame, size), expected, rtol=0, atol=1e-5)


def _square_finder(module: torch.nn.Module, calls: list[Tensor]) -> None:
    """Replace the network by an exact detector of bright pixels that measures as a CNN trained at
    SIZE px does: the centre relative to its input, the width and height in units of SIZE (shown a
    smaller input, it reports the object smaller)."""

    def predict(x: Tensor) -> tuple[HeadOutput, None]:
        calls.append(x)
        bright = x.mean(dim=1) > 0  # normalized: > 0 is brighter than the mean pixel
        boxes = []
        for mask in bright:
            rows, cols = mask.any(dim=1).nonzero().flatten(), mask.any(dim=0).nonzero().flatten()
            h, w = mask.shape
            centre = torch.stack([(cols[0] + cols[-1] + 1) / (2 * w), (rows[0] + rows[-1] + 1) / (2 * h)])
            half = torch.stack([cols[-1] + 1 - cols[0], rows[-1] + 1 - rows[0]]) / (2 * SIZE)
            boxes.append(torch.cat([centre - half, centre + half]))
        return HeadOutput(box=torch.stack(boxes).float()), None

    module._predict = predict  # type: ignore[method-assign]


@pytest.mark.parametrize(("margin", "refine_size"), [(1.4, None), (1.6, None), (2.0, None), (1.6, 32)])
def test_refinement_looks_again_at_the_crop_and_maps_its_box_back(
    margin: float, refine_size: int | None
) -> None:
    """A white square on black, found exactly in both looks: the second look runs on the crop of the
    first box x margin, resampled to ``refine_size`` (None: SIZE), and its box mapped back is the
    square's true box (to a pixel of the crop), its size rescaled from the smaller look's units."""
    images = torch.zeros(2, SIZE, SIZE, 3, dtype=torch.uint8)
    images[0, 16:32, 24:40] = 255
    images[1, 40:60, 4:30] = 255
    truth = torch.tensor([[24, 16, 40, 32], [4, 40, 30, 60]], dtype=torch.float32) / SIZE
    module = make_module(
        "pooled",
        "inference.refine=true",
        f"inference.refine_margin={margin}",
        f"inference.refine_size={refine_size or 'null'}",
    ).eval()
    assert module.inference == InferenceOptions(
        flip=False, refine=True, refine_margin=margin, refine_size=refine_size
    )
    calls: list[Tensor] = []
    _square_finder(module, calls)

    with torch.no_grad():
        box = module.predict_boxes(images)["box"]

    assert len(calls) == 2  # the whole image, then the crops
    frame = refine_frame(truth, margin)
    torch.testing.assert_close(calls[1], crop_to_frame(calls[0], frame, refine_size))
    assert calls[1].shape[-1] == (refine_size or SIZE)
    crop_pixel = (frame[:, 2:] - frame[:, :2]).repeat(1, 2) / (refine_size or SIZE)  # in image units
    assert ((box - truth).abs() <= crop_pixel).all(), (box, truth)


@pytest.mark.parametrize("head", HEADS)
def test_refinement_changes_only_the_eval_box(head: str) -> None:
    """Training ignores it; in eval mode the refined output keeps the first look's dense maps, score
    and class logits, and only the box moves."""
    plain = make_module(head, mode="species", num_classes=2).eval()
    refined = make_module(head, "inference.refine=true", mode="species", num_classes=2).eval()
    images = make_batch(3)["image"]
    with torch.no_grad():
        (a, logits_a), (b, logits_b) = plain(images), refined(images)
    assert (a.box - b.box).abs().max() > 1e-4
    torch.testing.assert_close(logits_a, logits_b)
    for name in ("cell_logits", "cell_boxes", "score"):
        if getattr(a, name) is not None:
            torch.testing.assert_close(getattr(a, name), getattr(b, name))
    assert_training_unaffected(refined, plain, images)
