"""Box heads: valid boxes for any grid, and CenterHead's decoding and loss against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from petloc.losses import IoUBoxLoss, MSEBoxLoss
from petloc.models.heads import CenterHead, HeadOutput
from tests.helpers import HEADS

CHANNELS = [16, 32]
# (stride-16 grid, stride-32 grid): square, a single stride-32 cell, non-square with odd sides
GRIDS = [((4, 4), (2, 2)), ((2, 2), (1, 1)), ((3, 5), (2, 3))]


def features(
    grid16: tuple[int, int], grid32: tuple[int, int], batch: int = 3, scale: float = 1.0
) -> list[Tensor]:
    """Random stride-16 and stride-32 maps, as a backbone would hand them over."""
    return [
        torch.randn(batch, CHANNELS[0], *grid16) * scale,
        torch.randn(batch, CHANNELS[1], *grid32) * scale,
    ]


@pytest.mark.parametrize(("grid16", "grid32"), GRIDS)
@pytest.mark.parametrize("name", sorted(HEADS))
def test_boxes_are_ordered_and_finite(name: str, grid16: tuple[int, int], grid32: tuple[int, int]) -> None:
    torch.manual_seed(0)
    head = HEADS[name](in_channels=CHANNELS).eval()
    for scale in (1.0, 10.0):  # large activations push the sigmoids towards saturation
        with torch.no_grad():
            out = head(features(grid16, grid32, scale=scale))
        box = out.box
        assert box.shape == (3, 4)
        assert torch.isfinite(box).all()
        assert (box[:, 0] < box[:, 2]).all() and (box[:, 1] < box[:, 3]).all()


@pytest.mark.parametrize("name", sorted(HEADS))
def test_gradient_reaches_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    head = HEADS[name](in_channels=CHANNELS).train()
    target = torch.tensor([[0.1, 0.2, 0.6, 0.9], [0.4, 0.3, 0.8, 0.7], [0.0, 0.0, 1.0, 1.0]])
    out = head(features((4, 4), (2, 2)))
    head.loss(out, *one_object(target), IoUBoxLoss("giou", l1_weight=1.0)).backward()
    for pname, param in head.named_parameters():
        assert param.grad is not None, pname
        assert param.grad.abs().sum() > 0, pname


def one_object(target: Tensor) -> tuple[Tensor, Tensor]:
    """``[B, 4]`` boxes as the ``(boxes [B, 1, 4], valid [B, 1])`` pair that ``loss`` takes."""
    return target[:, None], torch.ones(target.shape[0], 1, dtype=torch.bool)


def center_head_with_constant_prediction(radius: int, bias: list[float]) -> CenterHead:
    """A CenterHead whose prediction layer ignores its input: every cell outputs the raw values ``bias``."""
    head = CenterHead(in_channels=CHANNELS, radius=radius).eval()
    nn.init.zeros_(head.pred.weight)
    with torch.no_grad():
        head.pred.bias.copy_(torch.tensor(bias))
    return head


def test_center_cell_boxes_sit_on_their_cells() -> None:
    """Raw outputs 0 mean offset 0 and size sigmoid(0) = 0.5: each cell's box is centred on the cell."""
    head = center_head_with_constant_prediction(radius=1, bias=[0.0] * 5)
    h, w = 3, 5
    with torch.no_grad():
        out = head(features((h, w), (2, 3), batch=2))
    assert out.cell_boxes is not None and out.cell_logits is not None
    assert out.cell_boxes.shape == (2, h, w, 4)
    assert out.cell_logits.shape == (2, h * w)
    for row in range(h):
        for col in range(w):
            cx, cy = (col + 0.5) / w, (row + 0.5) / h
            expected = torch.tensor([cx - 0.25, cy - 0.25, cx + 0.25, cy + 0.25])
            torch.testing.assert_close(out.cell_boxes[:, row, col], expected.expand(2, 4))


@pytest.mark.parametrize("radius", [0, 1, 2])
def test_center_offsets_reach_radius_plus_one_cells(radius: int) -> None:
    """Saturated offsets (+1 in x, -1 in y) move each centre ``radius + 1`` cells right and up."""
    head = center_head_with_constant_prediction(radius, bias=[0.0, 50.0, -50.0, 0.0, 0.0])
    h, w = 4, 4
    with torch.no_grad():
        out = head(features((h, w), (2, 2), batch=1))
    assert out.cell_boxes is not None
    reach = radius + 1
    for row in range(h):
        for col in range(w):
            cx, cy = (col + 0.5 + reach) / w, (row + 0.5 - reach) / h
            expected = torch.tensor([cx - 0.25, cy - 0.25, cx + 0.25, cy + 0.25])
            torch.testing.assert_close(out.cell_boxes[0, row, col], expected)


def cells_within(radius: int, cell: tuple[int, int], h: int, w: int) -> list[tuple[int, int]]:
    """The grid cells at Chebyshev distance <= ``radius`` from ``cell``, clipped to the grid."""
    rows = range(max(0, cell[0] - radius), min(h, cell[0] + radius + 1))
    cols = range(max(0, cell[1] - radius), min(w, cell[1] + radius + 1))
    return [(r, c) for r in rows for c in cols]


def hand_decode(logits: list[float], boxes: Tensor, hot: tuple[int, int], radius: int) -> Tensor:
    """Softmax-weighted mean of the boxes within ``radius`` of the ``hot`` cell."""
    h, w, _ = boxes.shape
    total = torch.zeros(4, dtype=torch.float64)
    norm = 0.0
    for row, col in cells_within(radius, hot, h, w):
        weight = math.exp(logits[row * w + col])  # the softmax denominator cancels
        total += weight * boxes[row, col].double()
        norm += weight
    return (total / norm).float()


@pytest.mark.parametrize("radius", [0, 1, 2])
@pytest.mark.parametrize("hot", [(1, 2), (0, 0), (1, 4), (2, 0)])
def test_center_decode_averages_the_best_cells_neighbourhood(hot: tuple[int, int], radius: int) -> None:
    """(1, 4) ends a row: its neighbourhood must not wrap onto the next row's first column."""
    h, w = 3, 5
    generator = torch.Generator().manual_seed(0)
    corners = torch.rand(h, w, 2, generator=generator) * 0.5
    boxes = torch.cat([corners, corners + 0.1 + torch.rand(h, w, 2, generator=generator) * 0.4], dim=-1)
    # distinct values everywhere so a wrong neighbourhood or weight cannot give the same average
    logits = [0.1 * i for i in range(h * w)]
    logits[hot[0] * w + hot[1]] = 5.0
    head = CenterHead(in_channels=CHANNELS, radius=radius)

    decoded, _ = head._decode(torch.tensor([logits]), boxes.unsqueeze(0))

    torch.testing.assert_close(decoded[0], hand_decode(logits, boxes, hot, radius))


def graded_cell_boxes(target: Tensor, h: int, w: int) -> Tensor:
    """Cell ``i`` (flat index) frames the target shifted by 0.01 * (i + 1): every cell errs differently."""
    shift = 0.01 * (torch.arange(h * w, dtype=torch.float32) + 1)
    return (target.view(1, 1, 4) + shift.view(-1, 1, 1)).view(1, h, w, 4)


def hand_loss(
    logits: list[float], true_cell: tuple[int, int], radius: int, h: int, w: int, weight: float
) -> float:
    """MSE over the cells within ``radius`` of the true one (graded boxes) + weight * cross-entropy."""
    near = cells_within(radius, true_cell, h, w)
    box_mse = sum((0.01 * (r * w + c + 1)) ** 2 for r, c in near) / len(near)
    flat = true_cell[0] * w + true_cell[1]
    cross_entropy = math.log(sum(math.exp(v) for v in logits)) - logits[flat]
    return box_mse + weight * cross_entropy


@pytest.mark.parametrize("radius", [0, 1])
def test_center_loss_uses_the_cell_holding_the_true_centre(radius: int) -> None:
    h, w = 3, 5
    # centre (0.55, 0.30): column floor(0.55 * 5) = 2, row floor(0.30 * 3) = 0
    target = torch.tensor([[0.45, 0.10, 0.65, 0.50]])
    logits = [0.3, -1.2, 0.7, 2.0, 0.0, 0.5, -0.4, 1.1, 0.2, -2.0, 0.9, 0.0, 0.4, -0.3, 1.5]
    out = HeadOutput(
        box=target, cell_logits=torch.tensor([logits]), cell_boxes=graded_cell_boxes(target, h, w)
    )
    head = CenterHead(in_channels=CHANNELS, cell_weight=2.0, radius=radius)

    loss = head.loss(out, *one_object(target), MSEBoxLoss())

    assert loss.item() == pytest.approx(hand_loss(logits, (0, 2), radius, h, w, 2.0), rel=1e-5)


def test_center_loss_puts_a_centre_on_the_far_edge_in_the_last_cell() -> None:
    """A centre at exactly 1.0 would index one past the grid; it belongs to the last row and column."""
    h, w = 2, 3
    target = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    logits = [0.0, 1.0, 2.0, 3.0, -1.0, 0.5]
    out = HeadOutput(
        box=target, cell_logits=torch.tensor([logits]), cell_boxes=graded_cell_boxes(target, h, w)
    )
    head = CenterHead(in_channels=CHANNELS, cell_weight=1.0, radius=0)

    loss = head.loss(out, *one_object(target), MSEBoxLoss())

    assert loss.item() == pytest.approx(hand_loss(logits, (1, 2), 0, h, w, 1.0), rel=1e-5)


def test_center_loss_splits_the_centre_mass_by_area_and_gives_cells_the_nearest_box() -> None:
    """A mosaic's objects: (row 0, col 1) and (row 1, col 3) on a 3x5 grid, radius 1, plus an empty
    slot with a box that must not count. The second is twice the first's area, so it gets 2/3 of the
    centre mass. Their neighbourhoods meet in columns 2 and 3; a cell takes the object at the smaller
    Chebyshev distance, the first on a tie."""
    h, w = 3, 5
    first = torch.tensor([0.25, 0.05, 0.35, 0.25])  # centre (0.30, 0.15): column 1, row 0; area 0.02
    second = torch.tensor([0.60, 0.40, 0.80, 0.60])  # centre (0.70, 0.50): column 3, row 1; area 0.04
    empty = torch.tensor([0.0, 0.9, 0.1, 1.0])  # centre in row 2, column 0: would add cells if counted
    boxes = torch.stack([first, second, empty]).unsqueeze(0)
    valid = torch.tensor([[True, True, False]])
    logits = [0.3, -1.2, 0.7, 2.0, 0.0, 0.5, -0.4, 1.1, 0.2, -2.0, 0.9, 0.0, 0.4, -0.3, 1.5]
    cell_boxes = torch.full((1, h, w, 4), 0.5)
    out = HeadOutput(box=first[None], cell_logits=torch.tensor([logits]), cell_boxes=cell_boxes)
    head = CenterHead(in_channels=CHANNELS, cell_weight=1.0, radius=1)

    loss = head.loss(out, boxes, valid, MSEBoxLoss())

    centres = {(0, 1): first, (1, 3): second}
    squared = []
    for row in range(h):
        for col in range(w):
            dists = {c: max(abs(row - c[0]), abs(col - c[1])) for c in centres}
            nearest = min(dists, key=lambda c: (dists[c], list(centres).index(c)))
            if dists[nearest] <= 1:
                squared += [((0.5 - v) ** 2) for v in centres[nearest].tolist()]
    log_z = math.log(sum(math.exp(v) for v in logits))
    cross_entropy = (log_z - logits[0 * w + 1]) / 3 + 2 * (log_z - logits[1 * w + 3]) / 3
    assert len(squared) == 4 * 13  # 6 cells around (0, 1) and 9 around (1, 3), 2 shared (ties: first)
    assert loss.item() == pytest.approx(sum(squared) / len(squared) + cross_entropy, rel=1e-5)


@pytest.mark.parametrize("name", [name for name, head in HEADS.items() if not head.multi_object])
def test_global_heads_are_trained_on_the_box_loss_alone(name: str) -> None:
    torch.manual_seed(0)
    head = HEADS[name](in_channels=CHANNELS).eval()
    with torch.no_grad():
        out = head(features((4, 4), (2, 2)))
    target = torch.tensor([[0.1, 0.2, 0.6, 0.9]]).expand(3, 4)
    expected = ((out.box - target) ** 2).mean()
    torch.testing.assert_close(head.loss(out, *one_object(target), MSEBoxLoss()), expected)


def test_center_loss_with_a_soft_centre_target_matches_a_hand_computed_gaussian() -> None:
    """centre_sigma=0.6: cell (r, c) gets exp(-d^2 / (2 * 0.6^2)) of the target, d the distance in cells
    from its centre (r + 0.5, c + 0.5) to the true centre; the box part is unchanged."""
    h, w, sigma = 3, 5, 0.6
    target = torch.tensor([[0.45, 0.10, 0.65, 0.50]])  # centre (0.55, 0.30): (x, y) = (2.75, 0.90) cells
    logits = [0.3, -1.2, 0.7, 2.0, 0.0, 0.5, -0.4, 1.1, 0.2, -2.0, 0.9, 0.0, 0.4, -0.3, 1.5]
    cell_boxes = graded_cell_boxes(target, h, w)
    out = HeadOutput(box=target, cell_logits=torch.tensor([logits]), cell_boxes=cell_boxes)
    head = CenterHead(in_channels=CHANNELS, cell_weight=2.0, radius=1, centre_sigma=sigma)

    loss = head.loss(out, *one_object(target), MSEBoxLoss())

    weights = [
        math.exp(-(((r + 0.5) - 0.9) ** 2 + ((c + 0.5) - 2.75) ** 2) / (2 * sigma**2))
        for r in range(h)
        for c in range(w)
    ]
    log_z = math.log(sum(math.exp(v) for v in logits))
    cross_entropy = sum(wt * (log_z - v) for wt, v in zip(weights, logits, strict=True)) / sum(weights)
    box_only = hand_loss(logits, (0, 2), 1, h, w, 0.0)
    assert loss.item() == pytest.approx(box_only + 2.0 * cross_entropy, rel=1e-5)


@pytest.mark.parametrize("name", sorted(HEADS))
def test_boxes_are_decoded_in_float32_under_bf16_autocast(name: str) -> None:
    """bf16 keeps 8 significant bits: a box decoded in it lies on a coarse grid. Under autocast the
    convolutions run in bf16, but the boxes must come out finer than that grid."""
    torch.manual_seed(0)
    head = HEADS[name](in_channels=CHANNELS).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        box = head(features((6, 6), (3, 3), batch=16)).box
    assert box.dtype == torch.float32
    off_the_bf16_grid = box != box.to(torch.bfloat16).float()
    assert off_the_bf16_grid.float().mean() > 0.9
