"""``train(cfg)``: build everything from the composed config, fit, and return the final metrics."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.model_summary import get_human_readable_count
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard.summary import hparams as hparams_summary

from petloc import console
from petloc.checkpoint import CheckpointMismatchError, config_from_checkpoint, read_checkpoint
from petloc.config import describe_model, validate_training_config
from petloc.data.datamodule import LocalizationDataModule
from petloc.models.module import PetLocModule
from petloc.run_dir import RunDir

log = logging.getLogger(__name__)


def _overrides() -> dict[str, str]:
    """The run's command-line overrides (what tells a sweep's runs apart), or {} outside Hydra."""
    if not HydraConfig.initialized():
        return {}
    pairs = (o.split("=", 1) for o in HydraConfig.get().overrides.task if "=" in o)
    return {k.lstrip("+~"): v for k, v in pairs}


def resolve_ckpt_path(ckpt_path: str | None, last: Path) -> str | None:
    """``last`` -> this run folder's ``last`` checkpoint (checkpoints/last.ckpt) if it exists (a fresh
    start otherwise)."""
    if ckpt_path != "last":
        return ckpt_path
    if last.is_file():
        log.info("resuming from %s", last)
        return str(last)
    log.info("ckpt_path=last but %s does not exist yet: starting from scratch", last)
    return None


# What init_from copies: the network (BatchNorm statistics included), never the run's metric states.
NETWORK_PREFIXES = ("backbone.", "head.", "classifier.")


def init_weights(model: PetLocModule, path: str) -> None:
    """Initialize ``model``'s network from a petloc checkpoint (a fresh run: new optimizer, schedule
    and counters, unlike ``ckpt_path``, which resumes).

    Every backbone and head tensor must fit, or the checkpoint was trained with another architecture
    and the error names both; a classifier of another mode or class count is left out (logged), so a
    box-only model can start a class-aware run.
    """
    checkpoint = read_checkpoint(path)
    own = model.state_dict()
    state = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith(NETWORK_PREFIXES)}
    misfit = [
        k
        for k in own
        if k.startswith(NETWORK_PREFIXES[:2]) and getattr(state.get(k), "shape", None) != own[k].shape
    ]
    if misfit:
        raise CheckpointMismatchError(
            f"init_from={path}: its weights do not fit this run's network ({len(misfit)} tensors, e.g. "
            f"{misfit[0]}).\n  checkpoint: {describe_model(config_from_checkpoint(checkpoint))}\n"
            f"  this run:   {describe_model(OmegaConf.create(model.config))}"
        )
    loaded = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(loaded, strict=False)
    left_out = sorted(set(state) - set(loaded))
    log.info(
        "init_from=%s: %d tensors loaded%s", path, len(loaded), f", left out: {left_out}" if left_out else ""
    )


def cpu_budget() -> int | None:
    """CPU cores this job may use when its launcher shares the machine or allots cores; else None.

    A joblib sweep trains ``n_jobs`` runs at once on one machine, and torch would give each of them a
    thread per core: k jobs on n cores then fight over k*n threads and all run slower than one after
    another. Each job gets its share, ``cores // n_jobs`` (joblib's meaning of n_jobs: -1 is one job per
    core). A submitit job (SLURM or local) gets the ``cpus_per_task`` it asked for, when it asked.
    """
    if not HydraConfig.initialized():
        return None
    launcher = HydraConfig.get().launcher
    target = str(launcher.get("_target_", ""))
    if target.endswith(".JoblibLauncher"):
        from joblib import cpu_count  # what joblib sizes its pool by: affinity and cgroup quotas count

        cores = cpu_count()
        n_jobs = int(launcher.n_jobs)
        parallel = n_jobs if n_jobs > 0 else max(cores + 1 + n_jobs, 1)
        return max(cores // parallel, 1)
    if target.startswith("hydra_plugins.hydra_submitit_launcher.") and launcher.get("cpus_per_task"):
        return int(launcher.cpus_per_task)
    return None


def limit_cpu_use(num_workers: int) -> int:
    """Fit this job's torch threads and DataLoader workers into :func:`cpu_budget`; return the workers.

    The training process keeps one core of the budget and the loader workers get at most the rest,
    so a 1-core share loads batches in the training process itself (``num_workers=0``).
    """
    budget = cpu_budget()
    if budget is None:
        return num_workers
    torch.set_num_threads(budget)
    capped = min(num_workers, budget - 1)
    log.info("%d CPU core(s) for this job: torch threads %d, data.num_workers %d", budget, budget, capped)
    return capped


HPARAM_METRICS = ("val/iou_best", "val/iou", "val/acc50", "val/acc75")


@rank_zero_only
def log_hparams(trainer: L.Trainer, hparams: dict[str, Any]) -> None:
    """Register the run's overrides with TensorBoard's HParams plugin against the final metrics.

    The plugin reads metric values from the scalars of the same names, so only the session (the
    hparams and the metric names) is written here: passing placeholder values to Lightning's
    ``log_hyperparams`` would plot a fake 0 at the start of every curve. Rank zero only: under DDP
    the other ranks' loggers have no writer.
    """
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            writer = logger.experiment._get_file_writer()
            for summary in hparams_summary(hparams, dict.fromkeys(HPARAM_METRICS, 0.0)):
                writer.add_summary(summary)
        else:
            logger.log_hyperparams(hparams)


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """The Trainer of ``cfg.trainer`` with the callbacks of ``cfg.callbacks`` and the loggers of
    ``cfg.logger`` (none: no logging)."""
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    if not cfg.trainer.get("enable_progress_bar", True):
        # Lightning refuses a progress bar callback beside enable_progress_bar=false: the switch wins.
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)


def train(cfg: DictConfig) -> dict[str, float]:
    """Train one run; writes metrics.json into the run folder (:class:`petloc.run_dir.RunDir`) and
    returns the metrics.

    Prints (rank zero only) the config at the start, the dataset report and the model, and at the
    end the metrics, the run folder and the TensorBoard command for it (:mod:`petloc.console`).
    """
    console.silence_library_noise()
    validate_training_config(cfg)
    console.run_start(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # the seed is in the config printed above
    run = RunDir.from_config(cfg)
    run.root.mkdir(parents=True, exist_ok=True)

    num_workers = limit_cpu_use(cfg.data.num_workers)
    datamodule: LocalizationDataModule = instantiate(cfg.data, num_workers=num_workers)
    datamodule.setup("fit")
    assert datamodule.dataset is not None
    console.say(datamodule.dataset.report.format_text())
    model = PetLocModule(cfg, datamodule.class_names)
    if cfg.get("init_from"):
        init_weights(model, cfg.init_from)
    parameters = get_human_readable_count(sum(p.numel() for p in model.parameters()))
    console.say(f"model: {describe_model(cfg)}: {parameters} parameters")

    trainer = build_trainer(cfg)
    log_hparams(trainer, {**_overrides(), "alpha": cfg.alpha, "image_size": cfg.image_size, "seed": cfg.seed})

    start = time.perf_counter()
    trainer.fit(
        model, datamodule=datamodule, ckpt_path=resolve_ckpt_path(cfg.get("ckpt_path"), run.last_ckpt)
    )
    metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items()}
    metrics["train_time_s"] = time.perf_counter() - start
    metrics["epochs"] = trainer.current_epoch
    metrics["global_step"] = trainer.global_step
    # what the job ran with, so a parallel sweep's CPU sharing can be checked afterwards
    metrics["torch_threads"] = torch.get_num_threads()
    metrics["num_workers"] = num_workers
    if trainer.is_global_zero:
        run.metrics_json.write_text(json.dumps(metrics, indent=2, sort_keys=True))
        console.say(
            "final metrics: " + json.dumps({k: round(v, 4) for k, v in metrics.items()}, sort_keys=True)
        )
        console.run_end(run.root)
    return metrics
