"""petloc.viz: boxes drawn on images (the true box green, the predicted one red) and the grids of them
that TensorBoard and petloc-eval show.

The oracle is the outline written out by hand: a normalized box on a W x H image is the rectangle of
pixel columns x0*W .. x1*W and rows y0*H .. y1*H (both ends included), and a line of width w covers
the w outermost columns and rows of it. The boxes sit on exact binary fractions of the image sides,
so no rounding is involved.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from petloc.viz import PRED_COLOR, TRUE_COLOR, box_grid, draw_pair

H, W = 32, 64
BOX = (0.25, 0.25, 0.75, 0.5)  # pixels x 16..48, y 8..16
OTHER = (0.5, 0.5, 0.875, 0.875)  # pixels x 32..56, y 16..28


def outline(box: tuple[float, ...], width: int, h: int = H, w: int = W) -> np.ndarray:
    """[h, w] bool: the pixels a ``width``-pixel outline of ``box`` covers."""
    x0, y0, x1, y1 = int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h)
    ys, xs = np.mgrid[:h, :w]
    inside = (x0 <= xs) & (xs <= x1) & (y0 <= ys) & (ys <= y1)
    ring = (xs < x0 + width) | (xs > x1 - width) | (ys < y0 + width) | (ys > y1 - width)
    return inside & ring


def colour_at(image: torch.Tensor, mask: np.ndarray) -> set[tuple[int, ...]]:
    """The colours (R, G, B) of a CHW image at the pixels of ``mask``."""
    return {tuple(c) for c in image.permute(1, 2, 0).numpy()[mask].tolist()}


@pytest.mark.parametrize("width", [1, 2, 3])
def test_a_true_box_is_a_green_outline_of_its_pixels(width: int) -> None:
    drawn = draw_pair(torch.zeros(H, W, 3, dtype=torch.uint8), None, torch.tensor(BOX), width=width)
    assert drawn.shape == (3, H, W) and drawn.dtype == torch.uint8
    expected = outline(BOX, width)
    assert np.array_equal(drawn.numpy().any(axis=0), expected)
    assert colour_at(drawn, expected) == {TRUE_COLOR}


def test_the_predicted_box_is_red_and_drawn_over_the_true_one() -> None:
    image = torch.full((H, W, 3), 7, dtype=torch.uint8)
    drawn = draw_pair(image, torch.tensor(OTHER), torch.tensor(BOX))
    pred, true = outline(OTHER, 2), outline(BOX, 2)
    assert colour_at(drawn, pred) == {PRED_COLOR}
    assert colour_at(drawn, true & ~pred) == {TRUE_COLOR}
    assert (true & pred).any()  # where the outlines cross, red is on top (checked above)
    assert colour_at(drawn, ~(true | pred)) == {(7, 7, 7)}


def test_chw_and_hwc_float_images_give_the_same_picture() -> None:
    """A CHW image (what a batch holds after preprocessing) and an HWC one (a decoded file) are the
    same picture; float pixel values are cast to uint8."""
    hwc = torch.randint(0, 256, (H, W, 3), dtype=torch.uint8)
    box = torch.tensor(BOX)
    from_hwc = draw_pair(hwc.float(), box, None)
    assert torch.equal(from_hwc, draw_pair(hwc.permute(2, 0, 1), box, None))
    mask = outline(BOX, 2)
    assert colour_at(from_hwc, mask) == {PRED_COLOR}
    assert torch.equal(from_hwc.permute(1, 2, 0)[torch.from_numpy(~mask)], hwc[torch.from_numpy(~mask)])


def test_without_boxes_the_image_comes_back_as_uint8_chw() -> None:
    hwc = torch.randint(0, 256, (H, W, 3), dtype=torch.uint8)
    assert torch.equal(draw_pair(hwc, None, None), hwc.permute(2, 0, 1))


def test_box_grid_puts_each_image_with_its_boxes_in_a_padded_grid() -> None:
    """Five images in rows of two: a 3 x 2 grid, each tile 2 px below and right of the previous
    one's end (make_grid's padding), black between tiles and in the unused sixth tile."""
    images = torch.zeros(5, H, W, 3, dtype=torch.uint8)
    pred = torch.tensor([BOX, OTHER, BOX, OTHER, BOX])
    target = torch.tensor([OTHER, BOX, OTHER, BOX, OTHER])
    grid = box_grid(images, pred, target, nrow=2)
    assert grid.shape == (3, 3 * (H + 2) + 2, 2 * (W + 2) + 2) and grid.dtype == torch.uint8
    drawn = np.zeros(grid.shape[1:], dtype=bool)
    for i in range(5):
        top, left = 2 + (i // 2) * (H + 2), 2 + (i % 2) * (W + 2)
        tile = grid[:, top : top + H, left : left + W]
        red = outline(tuple(pred[i].tolist()), 2)
        assert colour_at(tile, red) == {PRED_COLOR}, i
        assert colour_at(tile, outline(tuple(target[i].tolist()), 2) & ~red) == {TRUE_COLOR}, i
        drawn[top : top + H, left : left + W] = True
    assert not grid.numpy()[:, ~drawn].any()


def test_box_grid_without_predictions_draws_the_true_boxes_only() -> None:
    images = torch.zeros(2, H, W, 3, dtype=torch.uint8)
    grid = box_grid(images, None, torch.tensor([BOX, OTHER]))
    assert grid.shape == (3, H + 4, 2 * (W + 2) + 2)
    assert colour_at(grid, grid.numpy().any(axis=0)) == {TRUE_COLOR}
    no_boxes = box_grid(images, None, None)
    assert not no_boxes.any()
