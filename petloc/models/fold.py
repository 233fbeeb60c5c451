"""Batch-norm folding for the deployed model: each BatchNorm that directly follows a convolution
becomes that convolution's scale and bias.

In eval mode a BatchNorm is a fixed per-channel affine map, so folding it changes no output (to
float rounding) and saves a full pass over every activation map, which on a CPU costs about as much
as a depthwise convolution. timm's ``BatchNormAct2d`` carries its activation inside; folding keeps
that activation (and its dropout placeholder) in place of the norm. A convolution folds when it is
a plain ``Conv2d`` or timm's ``Conv2dSame`` (TensorFlow's padding, applied to the input before the
same convolution); other subclasses may transform their weights in ``forward`` and are left alone.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools

import torch
from timm.layers import Conv2dSame
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

# Convolutions whose forward uses their weight and bias as stored, so a folded copy computes the same.
FOLDABLE = (nn.Conv2d, Conv2dSame)


def _fold_children(parent: nn.Module) -> int:
    """Fold each (Conv2d, BatchNorm2d) pair of consecutive children of ``parent``; returns how many."""
    children = list(parent.named_children())
    folded = 0
    for (conv_name, conv), (bn_name, bn) in itertools.pairwise(children):
        if type(conv) not in FOLDABLE or not isinstance(bn, nn.BatchNorm2d) or bn.running_mean is None:
            continue
        setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
        tail = [m for m in bn.children() if not isinstance(m, nn.Identity)]  # timm: drop, act
        setattr(parent, bn_name, nn.Sequential(*tail) if tail else nn.Identity())
        folded += 1
    return folded


def fold_batchnorm(model: nn.Module, example: torch.Tensor, atol: float = 1e-4) -> nn.Module:
    """An eval-mode copy of ``model`` with its BatchNorms folded, checked on ``example``.

    Children are folded by registration order, which is the order timm's blocks and petloc's heads
    apply them; the check compares every output of the copy with the original's and raises
    ``RuntimeError`` above ``atol``, so a module that applies them in another order cannot pass.
    """
    model = model.eval()
    folded_model = copy.deepcopy(model)
    count = sum(_fold_children(module) for module in list(folded_model.modules()))
    with torch.inference_mode():
        expected, got = model(example), folded_model(example)
    for ref, out in zip(_flat(expected), _flat(got), strict=True):
        if not torch.allclose(ref.float(), out.float(), rtol=1e-3, atol=atol):
            raise RuntimeError(
                f"folding {count} batch norms changed an output by {(ref - out).abs().max():.3g} > {atol}"
            )
    return folded_model


def _flat(outputs: object) -> list[torch.Tensor]:
    """The tensors of a model's output: a tensor, a sequence or a dataclass of them (None skipped)."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, (list, tuple)):
        return [t for item in outputs for t in _flat(item)]
    if dataclasses.is_dataclass(outputs):
        return [t for f in dataclasses.fields(outputs) for t in _flat(getattr(outputs, f.name))]
    return []
