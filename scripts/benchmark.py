"""Throughput and memory of the training pipeline against the model-only ceiling.

    python scripts/benchmark.py [hydra overrides]     # e.g. alpha=1.0 image_size=224

Prints one JSON object (the names BENCHMARKS.md records its figures under):
- ``model_train_ips``: images/s of Lightning training steps on one real batch held in memory
  (forward + backward + optimizer step, no data loading): the ceiling;
- ``e2e_train_ips``: images/s of the same Lightning steps fed by the real DataModule (real images,
  decode cache, augmentation, workers);
- ``ratio_e2e_model``: e2e / model; 1.0 means the data pipeline costs nothing. The two are timed in
  turns within one training run (``--chunk`` steps of one, then of the other), so the ratio holds
  while the machine's speed drifts;
- ``loader_ips``: images/s of the training DataLoader alone (cache warm, workers started);
- ``infer_ips`` (batch 32) and ``infer_latency_ms`` (batch 1, median) of the deployed graph
  (:class:`petloc.models.deployed.InferenceModel`) with the run's inference options, and
  ``infer_by_options``: the same two figures for those options, the single look and flip + zoom-in;
- ``cache_build_s``/``cache_images``: a cold build of the decode cache (one-time cost);
- ``peak_rss_mb``: peak resident memory of this process and of its loader workers.
Warm-up steps are excluded and every figure is a median over steps or repeats.

By default it measures ``data=oxford_pets`` on the shared real sample (``../shared/data/...``).

    python scripts/benchmark.py --fit 120 [hydra overrides]

instead runs petloc-train's whole loop (validation, checkpoints and logs included) for that many
seconds of wall clock and prints what the budget bought: ``fit_steps``, ``fit_epochs``,
``fit_steps_per_s``, ``fit_train_ips`` (training images/s; the model-only ceiling above, less
loading, validation and per-epoch work) and ``fit_step_share``, the share of the wall clock spent
inside training steps (a ratio within the run, unlike the speeds).

    python scripts/benchmark.py --step-forms [hydra overrides]

instead times the model-only training step (one real batch held, the run's ``trainer.precision``) in
three forms, in turns of ``--chunk`` steps: ``channels_last`` (petloc's: the input, and so every
activation, in NHWC memory), ``contiguous`` (NCHW) and ``compiled`` (``torch.compile`` of the
forward pass, channels-last); prints ``step_ms`` (median per form) and ``compile_s``, what the
compiled form's first step took.

    python scripts/benchmark.py --readers 100000

instead times each dataset reader's parse (annotations only: no image is opened or decoded) on a
generated set of that many images in every format (Oxford's included), and prints ``reader_ips``
(images/s per format) and ``reader_s`` (seconds per format).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader, IterableDataset

from petloc import CONFIG_DIR
from petloc.data.datamodule import LocalizationDataModule
from petloc.data.formats import FORMATS, writable
from petloc.data.records import DataReport, Labelled
from petloc.data.synthetic import SYNTHETIC_BREEDS, Head, write_annotations
from petloc.models.deployed import InferenceModel
from petloc.models.module import PetLocModule
from petloc.models.options import InferenceOptions
from petloc.train import train

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ["data=oxford_pets", f"data.root={REPO.parent / 'shared/data/oxford-pets-sample'}"]


class StepTimer(L.Callback):
    """Wall-clock stamps of training-batch ends: the gaps between them include waiting for data."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_train_batch_end(self, *args: Any) -> None:
        self.stamps.append(time.perf_counter())


class StepShare(L.Callback):
    """Seconds inside training steps (forward, backward, optimizer step) of the run it joins; the rest
    of the run's wall clock is loading, validation, checkpoints and per-epoch work. A ratio within one
    run, so it holds while the machine's speed drifts. ``latest``: the instance Hydra last built."""

    latest: StepShare | None = None

    def __init__(self) -> None:
        self.seconds = 0.0
        self._start = 0.0
        StepShare.latest = self

    def on_train_batch_start(self, *args: Any) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        self.seconds += time.perf_counter() - self._start


class _Interleaved(IterableDataset):
    """Training batches in turns: ``chunk`` times the held ``batch`` (no loading), then the next
    ``chunk`` batches of the real ``loader``, ``rounds`` times, after ``warmup`` held ones.
    ``sources`` says which fed each step, in order."""

    def __init__(
        self, batch: dict[str, Any], loader: DataLoader, chunk: int, rounds: int, warmup: int
    ) -> None:
        self.batch, self.loader, self.chunk, self.rounds, self.warmup = batch, loader, chunk, rounds, warmup
        self.sources: list[str] = []

    def __len__(self) -> int:
        return self.warmup + 2 * self.chunk * self.rounds

    def __iter__(self) -> Iterator[dict[str, Any]]:
        real = iter(self.loader)
        for _ in range(self.warmup):
            self.sources.append("warmup")
            yield self.batch
        for _ in range(self.rounds):
            for _ in range(self.chunk):
                self.sources.append("model")
                yield self.batch
            for _ in range(self.chunk):
                try:
                    batch = next(real)
                except StopIteration:  # next epoch of the real loader
                    real = iter(self.loader)
                    batch = next(real)
                self.sources.append("e2e")
                yield batch


def measure_training(
    module: PetLocModule, batch: dict[str, Any], loader: DataLoader, steps: int, warmup: int, chunk: int
) -> tuple[float, float]:
    """(model-only, end-to-end) training images/s, timed in turns in one Lightning run.

    A step's time is the gap between two training-batch ends, so it includes fetching its batch.
    The first and last steps of each turn are not counted: Lightning fetches one batch ahead, so
    they pay for the other source's batch; so are the first ``2 * num_workers`` of a turn, which
    loader workers prefetched while the held batch was training.
    """
    skip = 1 + 2 * loader.num_workers
    counted = chunk - skip - 1
    if counted < 1:
        raise ValueError(f"--chunk {chunk} leaves no step to count: use at least {skip + 2}")
    rounds = -(-steps // counted)
    batches = _Interleaved(batch, loader, chunk, rounds, warmup)
    timer = StepTimer()
    _trainer(len(batches), timer).fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    gaps: dict[str, list[float]] = {"model": [], "e2e": []}
    for i in range(warmup + 1, len(timer.stamps)):
        position = (i - warmup) % chunk
        if skip <= position < chunk - 1:
            gaps[batches.sources[i]].append(timer.stamps[i] - timer.stamps[i - 1])
    size = len(batch["box"])
    return size / statistics.median(gaps["model"]), size / statistics.median(gaps["e2e"])


def _trainer(steps: int, timer: StepTimer) -> L.Trainer:
    return L.Trainer(
        max_steps=steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        accelerator="auto",
        devices=1,
    )


def compose_config(overrides: list[str], tmp: Path) -> DictConfig:
    has_data = any(o.startswith("data=") or o.startswith("data.root") for o in overrides)
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose(
            "train", overrides=[*([] if has_data else DEFAULT_DATA), f"paths.output_dir={tmp}", *overrides]
        )


def measure_cache_build(cfg: DictConfig, tmp: Path) -> tuple[float, int]:
    """A cold decode-cache build into an empty folder (what the first run on a dataset pays)."""
    dm: LocalizationDataModule = instantiate(cfg.data, cache_dir=str(tmp / "cold-cache"))
    start = time.perf_counter()
    dm.setup("fit")
    return time.perf_counter() - start, len(dm.train_records) + len(dm.val_records)


def measure_loader(dm: LocalizationDataModule, batches: int) -> float:
    loader = dm.train_dataloader()
    times, seen = [], 0
    while seen < batches + 3:
        last = time.perf_counter()
        for batch in loader:
            now = time.perf_counter()
            if seen >= 3:  # warm-up: worker start, first pages of the memory map
                times.append((now - last) / len(batch["box"]))
            last, seen = now, seen + 1
            if seen >= batches + 3:
                break
    return 1.0 / statistics.median(times)


# The inference options timed beside the run's own: the single look and the flip + zoom-in pair.
COMPARED_OPTIONS = {
    "single_look": InferenceOptions(),
    "flip_refine": InferenceOptions(flip=True, refine=True),
}


def measure_inference(model: InferenceModel, image_size: int, repeats: int) -> tuple[float, float]:
    """(images/s at batch 32, median batch-1 latency in ms) of the deployed graph ``model``."""
    device = next(model.parameters()).device
    x32 = torch.randint(0, 256, (32, image_size, image_size, 3), dtype=torch.uint8, device=device)
    x1 = x32[:1]
    with torch.inference_mode():
        for _ in range(5):
            model(x32)
            model(x1)
        t32, t1 = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            model(x32)
            t32.append(time.perf_counter() - start)
        for _ in range(repeats * 10):
            start = time.perf_counter()
            model(x1)
            t1.append(time.perf_counter() - start)
    return 32 / statistics.median(t32), 1000 * statistics.median(t1)


def measure_all_inference(module: PetLocModule, image_size: int, repeats: int) -> dict[str, Any]:
    """The deployed graph (:class:`InferenceModel`) with the run's inference options and with each of
    :data:`COMPARED_OPTIONS`, one after another."""
    results = {}
    for name, options in {"default": None, **COMPARED_OPTIONS}.items():
        ips, latency = measure_inference(InferenceModel(module, options), image_size, repeats)
        results[name] = {"infer_ips": round(ips, 1), "infer_latency_ms": round(latency, 3)}
    return results


def peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024  # ru_maxrss is in KiB on Linux


def run(overrides: list[str], steps: int, warmup: int, repeats: int, chunk: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        cfg = compose_config(overrides, tmp)
        L.seed_everything(cfg.seed, workers=True)
        cache_build_s, cache_images = measure_cache_build(cfg, tmp)

        dm: LocalizationDataModule = instantiate(cfg.data)
        dm.setup("fit")
        batch_size = cfg.data.batch_size
        loader_ips = measure_loader(dm, batches=steps)

        # the model-only ceiling (one real batch kept in memory) and the real pipeline, in turns
        loader = dm.train_dataloader()
        batch = next(iter(loader))
        model_ips, e2e_ips = measure_training(
            PetLocModule(cfg, dm.class_names), batch, loader, steps, warmup, chunk
        )

        module = PetLocModule(cfg, dm.class_names)  # a module without a Trainer, as deployment builds it
        inference = measure_all_inference(module, cfg.image_size, repeats)
    return {
        "model_train_ips": round(model_ips, 1),
        "e2e_train_ips": round(e2e_ips, 1),
        "ratio_e2e_model": round(e2e_ips / model_ips, 3),
        "loader_ips": round(loader_ips, 1),
        "infer_ips": inference["default"]["infer_ips"],
        "infer_latency_ms": inference["default"]["infer_latency_ms"],
        "infer_by_options": inference,
        "cache_build_s": round(cache_build_s, 2),
        "cache_images": cache_images,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "config": {
            "overrides": overrides,
            "inference": dataclasses.asdict(module.inference),
            "backbone": cfg.backbone.name,
            "alpha": cfg.alpha,
            "image_size": cfg.image_size,
            "head": cfg.head._target_.rsplit(".", 1)[-1],
            "batch_size": batch_size,
            "num_workers": cfg.data.num_workers,
            "steps": steps,
            "warmup": warmup,
            "chunk": chunk,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
    }


def measure_step_forms(overrides: list[str], steps: int, chunk: int) -> dict[str, Any]:
    """Median training-step time of the model in three forms (:func:`main`'s ``--step-forms``)."""
    with tempfile.TemporaryDirectory() as tmp_name:
        cfg = compose_config(overrides, Path(tmp_name))
        L.seed_everything(cfg.seed, workers=True)
        dm: LocalizationDataModule = instantiate(cfg.data)
        dm.setup("fit")
        # the GPU when there is one, as the Lightning measurements above (accelerator="auto")
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        batch = {k: v.to(device) for k, v in next(iter(dm.train_dataloader())).items()}
        forms = {
            name: PetLocModule(cfg, dm.class_names).to(device).train()
            for name in ("channels_last", "contiguous", "compiled")
        }
        nchw = forms["contiguous"]
        nchw.preprocess = lambda images: PetLocModule.preprocess(nchw, images).contiguous()  # type: ignore[method-assign]
        forms["compiled"].compile()
        optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, m in forms.items()}
        bf16 = str(cfg.trainer.precision).startswith("bf16")

        def step(name: str) -> float:
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss, _, _ = forms[name]._step(batch)
            loss.backward()
            optimizers[name].step()
            optimizers[name].zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()  # the step's kernels, not only their launch
            return time.perf_counter() - start

        compile_s = step("compiled")
        times: dict[str, list[float]] = {name: [] for name in forms}
        for _ in range(-(-steps // chunk)):
            for name in forms:
                step(name)  # the first step of a turn is not counted: caches and threads settle
                times[name].extend(step(name) for _ in range(chunk))
    return {
        "step_ms": {name: round(1000 * statistics.median(t), 1) for name, t in times.items()},
        "compile_s": round(compile_s, 1),
        "config": {
            "overrides": overrides,
            "batch_size": cfg.data.batch_size,
            "precision": cfg.trainer.precision,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
            "torch": torch.__version__,
        },
    }


def measure_fit(overrides: list[str], seconds: int) -> dict[str, Any]:
    """``petloc-train`` for ``seconds`` of wall clock (:func:`petloc.train.train`, every callback on):
    the steps a time budget buys once validation, checkpoints and per-epoch work take their share."""
    with tempfile.TemporaryDirectory() as tmp_name:
        budget = f"00:00:{seconds // 60:02d}:{seconds % 60:02d}"
        extra = [
            f"trainer.max_time={budget}",
            "trainer.enable_progress_bar=false",
            f"+callbacks.step_share._target_={__name__}.StepShare",
        ]
        cfg = compose_config([*overrides, *extra], Path(tmp_name))
        with contextlib.redirect_stdout(sys.stderr):  # the run's own report: stdout holds the JSON alone
            metrics = train(cfg)
    steps, train_s = int(metrics["global_step"]), metrics["train_time_s"]
    assert StepShare.latest is not None, "the run built no StepShare callback"
    return {
        "fit_steps": steps,
        "fit_epochs": int(metrics["epochs"]),
        "fit_steps_per_s": round(steps / train_s, 2),
        "fit_train_ips": round(steps * cfg.data.batch_size / train_s, 1),
        "fit_seconds": round(train_s, 1),
        "fit_step_share": round(StepShare.latest.seconds / train_s, 3),
        "config": {"overrides": overrides, "batch_size": cfg.data.batch_size},
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
    }


def write_annotation_sets(n: int, root: Path) -> dict[str, Path]:
    """``n`` images in every format petloc writes, under ``root``, by the formats' own writers, and in
    the Oxford layout, which petloc reads only, by the synthetic set's writer; annotations only: image
    files are empty (the readers list them but never open them) and every image has one box."""
    images = root / "images"
    images.mkdir(parents=True)
    labelled = []
    for i in range(n):
        path = images / f"img_{i:06d}.jpg"
        path.touch()
        box = (10 / 320, 20 / 240, 240 / 320, 180 / 240)  # VOC pixels (11, 21, 240, 180) of 320x240
        labelled.append(Labelled(path.name, path, 320, 240, (box,), ("ab"[i % 2],)))
    folders = {fmt: root / fmt for fmt in writable()}
    for fmt, folder in folders.items():
        FORMATS[fmt].write(labelled, ["a", "b"], folder, "hardlink")  # type: ignore[misc]
    folders["oxford"] = root / "oxford"
    (folders["oxford"] / "images").mkdir(parents=True)
    heads = []
    for i in range(n):
        breed = i % len(SYNTHETIC_BREEDS)
        head = Head(f"{SYNTHETIC_BREEDS[breed][0]}_{i + 1}", breed, 320, 240, (11, 21, 240, 180))
        os.link(images / f"img_{i:06d}.jpg", folders["oxford"] / "images" / f"{head.name}.jpg")
        heads.append(head)
    write_annotations(folders["oxford"], heads)
    return folders


def measure_readers(n: int) -> dict[str, Any]:
    """Seconds and images/s of each reader's parse on ``n`` images (one run each, one at a time)."""
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="petloc-readers-") as tmp:
        for fmt, folder in write_annotation_sets(n, Path(tmp)).items():
            report = DataReport(folder)
            start = time.perf_counter()
            parsed = FORMATS[fmt].read(folder, report)
            seconds[fmt] = time.perf_counter() - start
            boxed = sum(1 for a in parsed.annotations if a.objects)
            if boxed != n:
                raise RuntimeError(f"{fmt}: parsed {boxed} boxed images of {n}:\n{report.format_text()}")
    return {
        "images": n,
        "reader_s": {k: round(v, 2) for k, v in seconds.items()},
        "reader_ips": {k: round(n / v) for k, v in seconds.items()},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/train.yaml")
    parser.add_argument("--steps", type=int, default=60, help="counted training steps per source")
    parser.add_argument("--chunk", type=int, default=10, help="training steps per turn of one source")
    parser.add_argument("--warmup", type=int, default=10, help="steps excluded before measuring")
    parser.add_argument("--repeats", type=int, default=20, help="inference repeats (batch 32)")
    parser.add_argument("--readers", type=int, help="time the dataset readers on this many images instead")
    parser.add_argument("--fit", type=int, help="run petloc-train for this many seconds instead (1-3599)")
    parser.add_argument(
        "--step-forms", action="store_true", help="time the training step channels-last, NCHW and compiled"
    )
    args = parser.parse_args(argv)
    if args.fit:
        if not 0 < args.fit < 3600:
            parser.error(f"--fit {args.fit}: give seconds between 1 and 3599")
        print(json.dumps(measure_fit(args.overrides, args.fit), indent=2))
        return 0
    if args.step_forms:
        print(json.dumps(measure_step_forms(args.overrides, args.steps, args.chunk), indent=2))
        return 0
    if args.readers:
        print(json.dumps(measure_readers(args.readers), indent=2))
        return 0
    print(json.dumps(run(args.overrides, args.steps, args.warmup, args.repeats, args.chunk), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
