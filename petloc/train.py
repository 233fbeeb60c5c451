"""``train(cfg)``: build everything from the composed config, fit, and return the final metrics."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig
from torch.utils.tensorboard.summary import hparams as hparams_summary

from petloc.config import validate_config
from petloc.data.datamodule import PetsDataModule
from petloc.models.factory import build_module, num_classes_for

log = logging.getLogger(__name__)


def _overrides() -> dict[str, str]:
    """The run's command-line overrides (what tells a sweep's runs apart), or {} outside Hydra."""
    if not HydraConfig.initialized():
        return {}
    pairs = (o.split("=", 1) for o in HydraConfig.get().overrides.task if "=" in o)
    return {k.lstrip("+~"): v for k, v in pairs}


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path) -> str | None:
    """``last`` -> this run folder's checkpoints/last.ckpt if it exists (a fresh start otherwise)."""
    if ckpt_path != "last":
        return ckpt_path
    last = output_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        log.info("resuming from %s", last)
        return str(last)
    log.info("ckpt_path=last but %s does not exist yet: starting from scratch", last)
    return None


HPARAM_METRICS = ("val/iou_best", "val/iou", "val/acc50", "val/acc75")


def log_hparams(trainer: L.Trainer, hparams: dict[str, Any]) -> None:
    """Register the run's overrides with TensorBoard's HParams plugin against the final metrics.

    The plugin reads metric values from the scalars of the same names, so only the session (the
    hparams and the metric names) is written here: passing placeholder values to Lightning's
    ``log_hyperparams`` would plot a fake 0 at the start of every curve.
    """
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            writer = logger.experiment._get_file_writer()
            for summary in hparams_summary(hparams, dict.fromkeys(HPARAM_METRICS, 0.0)):
                writer.add_summary(summary)
        else:
            logger.log_hyperparams(hparams)


def train(cfg: DictConfig) -> dict[str, float]:
    """Train one run; writes metrics.json into the run folder and returns the metrics."""
    validate_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    datamodule: PetsDataModule = instantiate(cfg.data)
    datamodule.setup("fit")
    assert datamodule.dataset is not None
    print(datamodule.dataset.report.format())
    model = build_module(cfg, num_classes_for(cfg.mode.name, datamodule.num_breeds))

    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    log_hparams(trainer, {**_overrides(), "alpha": cfg.alpha, "image_size": cfg.image_size, "seed": cfg.seed})

    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=resolve_ckpt_path(cfg.get("ckpt_path"), output_dir))
    metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items()}
    metrics["train_time_s"] = time.perf_counter() - start
    metrics["epochs"] = trainer.current_epoch
    metrics["global_step"] = trainer.global_step
    if trainer.is_global_zero:
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        print("final metrics:", json.dumps({k: round(v, 4) for k, v in metrics.items()}, sort_keys=True))
    return metrics
