"""``petloc-export ckpt_path=PATH [output=FILE.onnx]``: the inference graph as ONNX, checked.

The exported graph is :class:`petloc.models.deployed.InferenceModel`: a uint8 NHWC image batch (any
batch size) in, ``box`` [B, 4] normalized xyxy and ``score`` [B] (+ ``class_prob`` [B, C]) out, with
the ImageNet normalization inside, so a deployment only resizes images as
:class:`petloc.data.images.ImageReader` does. The file is then run with onnxruntime on real images
(``check_input``, else the checkpoint's dataset folder) and compared with PyTorch: a box that moves
by more than ``atol_px`` pixels of the model's input, or a score or class probability that differs
by more than ``atol_prob``, is an error, not a warning. Batch-1 median latencies of both are printed,
with the same network's single look (inference options off) beside them: the inference options'
cost as a ratio, in PyTorch and in onnxruntime.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import onnxruntime as ort
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from petloc import CONFIG_DIR
from petloc.checkpoint import load_model
from petloc.data.formats import read_dataset
from petloc.data.images import IMAGE_ERRORS, ImageReader, list_images
from petloc.data.records import DatasetError
from petloc.models.deployed import InferenceModel
from petloc.models.options import InferenceOptions

log = logging.getLogger(__name__)


class OnnxMismatchError(RuntimeError):
    """onnxruntime's outputs differ from PyTorch's by more than the tolerance."""


def export_onnx(model: InferenceModel, example: torch.Tensor, path: Path) -> None:
    """Export with a dynamic batch axis; weights inline (one self-contained file).

    ``example`` must have a batch of at least 2: torch.export specializes a size-1 dimension.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # Hydra logs at INFO; the exporter's graph passes log a line per rewrite they consider.
    for name in ("onnx_ir", "onnxscript"):
        logging.getLogger(name).setLevel(logging.WARNING)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=["images"],
        output_names=model.output_names,
        dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
        external_data=False,
        verbose=False,
    )


def dataset_images(data_cfg: DictConfig, n: int) -> list[Path]:
    """The first ``n`` usable images of the dataset a model was trained on; [] when it is gone."""
    try:
        dataset = read_dataset(data_cfg.root, data_cfg.format, data_cfg.multi_object, **data_cfg.options)
    except DatasetError as exc:
        log.warning("trained dataset unavailable: %s", str(exc).splitlines()[0])
        return []
    return [r.path for r in dataset.records[:n]]


def load_check_images(cfg: DictConfig, model_cfg: DictConfig, reader: ImageReader) -> torch.Tensor:
    """Up to ``n_check`` preprocessed images: ``check_input``, else the trained dataset's images.

    Seeded noise stands in only when that dataset is gone; real images are preferred because the
    centre head's arg-max over cells is what a tiny numeric difference could flip.
    """
    source = cfg.check_input or model_cfg.data.root
    files = list_images(cfg.check_input) if cfg.check_input else dataset_images(model_cfg.data, cfg.n_check)
    images = []
    for path in files:
        try:
            images.append(reader(path)[0])
        except IMAGE_ERRORS as exc:
            log.warning("check image %s skipped: %s", path, exc)
        if len(images) == cfg.n_check:
            break
    if len(images) >= 2:
        return torch.from_numpy(np.stack(images))
    log.warning("no check images in %s: comparing on seeded random images", source)
    size = model_cfg.image_size
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (cfg.n_check, size, size, 3), dtype=torch.uint8, generator=generator)


def check_onnx(
    session: ort.InferenceSession,
    model: InferenceModel,
    images: torch.Tensor,
    atol_px: float,
    atol_prob: float,
) -> dict[str, float]:
    """Largest differences between onnxruntime and PyTorch, on the batch and on its first image alone
    (batch 1): ``box_px`` (box coordinates, in pixels of the model's input) and ``prob`` (score and
    class probabilities). Raises :class:`OnnxMismatchError` above ``atol_px`` or ``atol_prob``."""
    side = images.shape[1]  # square input: a normalized coordinate times the side is pixels
    worst = {"box_px": 0.0, "prob": 0.0}
    for batch in (images, images[:1]):
        with torch.inference_mode():
            expected = [t.numpy() for t in model(batch)]
        got = session.run(None, {"images": batch.numpy()})
        for name, ref, out in zip(model.output_names, expected, got, strict=True):
            if ref.shape != out.shape:
                raise OnnxMismatchError(f"output {name}: onnxruntime shape {out.shape}, PyTorch {ref.shape}")
            kind, scale, atol = ("box_px", side, atol_px) if name == "box" else ("prob", 1.0, atol_prob)
            diff = float(np.abs(ref - out).max()) * scale
            if not diff <= atol:
                limit = f"atol_px={atol} px" if kind == "box_px" else f"atol_prob={atol}"
                raise OnnxMismatchError(
                    f"output {name} (batch {len(batch)}): onnxruntime differs from PyTorch by {diff:.3g} > "
                    f"{limit}; the exported graph does not compute what the model does"
                )
            worst[kind] = max(worst[kind], diff)
    return worst


def median_ms(fns: dict[str, Callable[[], Any]], runs: int, warmup: int = 5) -> dict[str, float]:
    """Median wall-clock milliseconds of each ``fn()`` over ``runs`` calls after ``warmup`` calls.

    The calls take turns (one of each per round), so a machine whose speed drifts during the
    measurement slows them alike and their ratios stay meaningful.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def torch_call(model: InferenceModel, images: torch.Tensor) -> Callable[[], Any]:
    """One eager PyTorch batch of ``images``, without autograd."""

    def run() -> Any:
        with torch.inference_mode():
            return model(images)

    return run


def onnx_call(
    model: InferenceModel, example: torch.Tensor, path: Path, images: torch.Tensor
) -> Callable[[], Any]:
    """``model`` exported to ``path`` (traced on ``example``), run by onnxruntime on ``images``."""
    export_onnx(model, example, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = images.numpy()
    return lambda: session.run(None, {"images": batch})


def export(cfg: DictConfig) -> dict[str, Any]:
    """Export ``cfg.ckpt_path`` to ``cfg.output``, check it, time it; returns the check's numbers."""
    module, model_cfg = load_model(cfg.ckpt_path, cfg)
    model = InferenceModel(module)
    reader = instantiate(model_cfg.data).image_reader()  # the datamodule only reads its config here
    images = load_check_images(cfg, model_cfg, reader)
    output = Path(cfg.output)
    export_onnx(model, images, output)
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    diffs = check_onnx(session, model, images, cfg.atol_px, cfg.atol_prob)
    one, one_np = images[:1], images[:1].numpy()
    # the same network without inference options, timed in turns with it: what the options cost
    single = InferenceModel(module, InferenceOptions())
    # one engine at a time: each keeps its threads spinning for a while after a call, which would
    # slow the other engine's next call
    latency = median_ms(
        {"torch_latency_ms": torch_call(model, one), "torch_single_look_ms": torch_call(single, one)},
        cfg.latency_runs,
    )
    with tempfile.TemporaryDirectory() as tmp:
        latency |= median_ms(
            {
                "onnxruntime_latency_ms": lambda: session.run(None, {"images": one_np}),
                "onnxruntime_single_look_ms": onnx_call(single, images, Path(tmp) / "single.onnx", one),
            },
            cfg.latency_runs,
        )
    report = {
        "onnx": str(output),
        "outputs": model.output_names,
        "inference": dataclasses.asdict(module.inference),
        "n_check_images": len(images),
        "max_box_diff_px": diffs["box_px"],
        "max_prob_diff": diffs["prob"],
        **latency,
        "torch_ratio": latency["torch_latency_ms"] / latency["torch_single_look_ms"],
        "onnxruntime_ratio": latency["onnxruntime_latency_ms"] / latency["onnxruntime_single_look_ms"],
    }
    print(f"exported {cfg.ckpt_path} -> {output}")
    print(
        f"onnxruntime vs PyTorch on {len(images)} images: boxes within {diffs['box_px']:.2g} px "
        f"(atol_px {cfg.atol_px}), probabilities within {diffs['prob']:.2g} (atol_prob {cfg.atol_prob})"
    )
    print(
        f"batch-1 median latency: PyTorch {latency['torch_latency_ms']:.2f} ms "
        f"({report['torch_ratio']:.2f}x a single look's {latency['torch_single_look_ms']:.2f} ms), "
        f"onnxruntime {latency['onnxruntime_latency_ms']:.2f} ms "
        f"({report['onnxruntime_ratio']:.2f}x a single look's {latency['onnxruntime_single_look_ms']:.2f} ms)"
    )
    print(json.dumps(report))
    return report


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="export")
def main(cfg: DictConfig) -> None:
    """Console script ``petloc-export``."""
    export(cfg)


if __name__ == "__main__":
    main()
