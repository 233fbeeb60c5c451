"""The files and folders a run leaves, named in one place: :class:`RunDir` (petloc-train's run folder)
and :class:`EvalDir` (petloc-eval's output folder).

A training run folder (``hydra.run.dir``, or a sweep job's folder) holds::

    .hydra/                 config.yaml (the composed config), overrides.yaml, hydra.yaml (Hydra's)
    train.log               Hydra's job log, the console's lines included
    tensorboard/            the TensorBoard event files (conf/logger/tensorboard.yaml)
    metrics.csv             every scalar as text, and hparams.yaml (conf/logger/csv.yaml)
    checkpoints/            best.ckpt and last.ckpt (conf/callbacks/default.yaml)
    per_image_val.csv       best.ckpt's validation image by image (conf/callbacks/default.yaml)
    metrics.json            the final metrics (petloc.train)

Where the loggers and callbacks write is the config's to decide: conf/ takes the default names of
:data:`NAMES` through the resolver ``${petloc.run:NAME}`` (petloc/resolvers.py), and :meth:`RunDir.read`
resolves the paths from each run's own composed config, so a run trained with
``logger.tensorboard.name=tb`` is read where it wrote. A folder without a saved config (a run of
:func:`petloc.train.train` called without Hydra) has the default names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

# Every name of a run folder that petloc chooses. conf/ reads them as ${petloc.run:KEY}.
NAMES: dict[str, str] = {
    "tensorboard": "tensorboard",  # the event files' folder in the run folder
    "checkpoints": "checkpoints",  # the checkpoints' folder
    "best": "best",  # the best epoch's checkpoint, without .ckpt
    "last": "last",  # the latest epoch's checkpoint, without .ckpt
    "per_image_val": "per_image_val.csv",
    "metrics_json": "metrics.json",  # the final metrics, of petloc-train and of petloc-eval
    # the file Lightning's CSVLogger writes into its folder (ExperimentWriter.NAME_METRICS_FILE)
    "metrics_csv": "metrics.csv",
    # petloc-eval's output folder
    "per_image_eval": "per_image.csv",
    "iou_histogram": "iou_histogram.png",
    "worst_k": "worst_k.png",
}
# Hydra's hydra.output_subdir (its default): where a Hydra job keeps its configs, and their files.
HYDRA_SUBDIR = ".hydra"
SAVED_CONFIG = f"{HYDRA_SUBDIR}/config.yaml"
SAVED_OVERRIDES = f"{HYDRA_SUBDIR}/overrides.yaml"
SAVED_HYDRA = f"{HYDRA_SUBDIR}/hydra.yaml"  # Hydra's own config of the job: its logging, its folder
CHECKPOINT_SUFFIX = ".ckpt"  # Lightning's ModelCheckpoint.FILE_EXTENSION
EVENT_FILE_GLOB = "events.out.tfevents.*"
# The config nodes of conf/logger and conf/callbacks that decide the paths.
TENSORBOARD_NODE = "logger.tensorboard"
CSV_NODE = "logger.csv"
BEST_NODE = "callbacks.model_checkpoint"
LAST_NODE = "callbacks.last_checkpoint"
PER_IMAGE_NODE = "callbacks.per_image_val"


def name(key: str) -> str:
    """``NAMES[key]``, the resolver ``${petloc.run:KEY}``; an unknown key fails naming the known ones."""
    if key not in NAMES:
        raise KeyError(f"${{petloc.run:{key}}}: no such run folder name; known: {', '.join(NAMES)}")
    return NAMES[key]


def _logger_dir(node: Any, root: Path, default_name: str) -> Path:
    """The folder a Lightning logger of ``node`` writes into: ``save_dir/name/version``.

    As Lightning names it: an empty ``name`` or ``version`` adds no level, an int version is
    ``version_N``, and no version is the newest ``version_N`` there (Lightning numbers a new one per run).
    """
    if node is None:
        return root / default_name
    folder = Path(node.get("save_dir") or root) / (node.get("name") or "")
    version = node.get("version")
    if version is None:
        numbered = [p for p in folder.glob("version_*") if re.fullmatch(r"version_\d+", p.name)]
        folder = max(numbered, key=lambda p: int(p.name.split("_")[1]), default=folder / "version_0")
    else:
        folder = folder / (f"version_{version}" if isinstance(version, int) else str(version))
    return folder / (node.get("sub_dir") or "")


def _checkpoint(node: Any, root: Path, default_stem: str) -> Path:
    """``dirpath/filename.ckpt`` of a ModelCheckpoint node (the defaults without one)."""
    dirpath = node.get("dirpath") if node is not None else None
    stem = node.get("filename") if node is not None else None
    folder = Path(dirpath) if dirpath else root / NAMES["checkpoints"]
    return folder / f"{stem or default_stem}{CHECKPOINT_SUFFIX}"


@dataclass(frozen=True)
class RunDir:
    """Where each file of one training run folder is; :meth:`from_config` and :meth:`read` make one."""

    root: Path
    tensorboard: Path  # the folder of the event files
    metrics_csv: Path
    best_ckpt: Path
    last_ckpt: Path
    per_image_val: Path
    # Hydra's job log (train.log); None for a run without Hydra's job logging
    log: Path | None
    # the composed config the paths come from (of a folder without a saved one: its paths.output_dir)
    config: DictConfig = field(compare=False, repr=False)

    @property
    def metrics_json(self) -> Path:
        """The final metrics, written by :func:`petloc.train.train` when training ends."""
        return self.root / NAMES["metrics_json"]

    @property
    def config_yaml(self) -> Path:
        """The composed config, as Hydra saves it (interpolations unresolved)."""
        return self.root / SAVED_CONFIG

    @property
    def overrides_yaml(self) -> Path:
        """The job's command-line overrides."""
        return self.root / SAVED_OVERRIDES

    def has_scalars(self) -> bool:
        """Whether a logger has written here: ``metrics.csv`` or a TensorBoard event file."""
        return self.metrics_csv.is_file() or any(self.tensorboard.glob(EVENT_FILE_GLOB))

    @classmethod
    def from_config(cls, cfg: DictConfig, root: Path | None = None, log: Path | None = None) -> RunDir:
        """The paths ``cfg`` (a composed train config) gives its loggers and callbacks; ``root``
        defaults to ``cfg.paths.output_dir``. A node the config lacks (``logger=csv`` has no
        TensorBoard logger) gets the default name."""
        root = Path(cfg.paths.output_dir) if root is None else root
        per_image = OmegaConf.select(cfg, PER_IMAGE_NODE, default=None)
        return cls(
            root=root,
            tensorboard=_logger_dir(
                OmegaConf.select(cfg, TENSORBOARD_NODE, default=None), root, NAMES["tensorboard"]
            ),
            metrics_csv=_logger_dir(OmegaConf.select(cfg, CSV_NODE, default=None), root, "")
            / NAMES["metrics_csv"],
            best_ckpt=_checkpoint(OmegaConf.select(cfg, BEST_NODE, default=None), root, NAMES["best"]),
            last_ckpt=_checkpoint(OmegaConf.select(cfg, LAST_NODE, default=None), root, NAMES["last"]),
            per_image_val=Path(per_image.path) if per_image is not None else root / NAMES["per_image_val"],
            log=log,
            config=cfg,
        )

    @classmethod
    def read(cls, folder: Path) -> RunDir:
        """A finished (or running) run folder: the paths its saved ``.hydra/config.yaml`` gives, with
        ``paths.output_dir`` taken as ``folder`` (so a moved folder is read where it is now); the
        default names without a saved config. Raises ValueError, naming the file, for a saved config
        that does not say where the files are.
        """
        folder = Path(folder)
        saved = folder / SAVED_CONFIG
        log = _job_log(folder / SAVED_HYDRA, folder)
        try:
            cfg = OmegaConf.load(saved) if saved.is_file() else OmegaConf.create()
            if not isinstance(cfg, DictConfig):
                raise ValueError("not a mapping of config keys")
            OmegaConf.update(cfg, "paths.output_dir", str(folder), force_add=True)
            return cls.from_config(cfg, folder, log)
        except (OmegaConfBaseException, yaml.YAMLError, ValueError) as err:
            raise ValueError(
                f"{saved}: cannot tell where the run's files are: {err}. petloc reads a run folder's "
                "file locations from the config Hydra saved there: fix that file, or remove it to read "
                "the default names"
            ) from err


def _job_log(hydra_yaml: Path, folder: Path) -> Path | None:
    """The file of Hydra's job logging, from the job's saved ``hydra.yaml`` (with ``folder`` as the job's
    output folder); None without one, or when the job logged to no file."""
    if not hydra_yaml.is_file():
        return None
    try:
        saved = OmegaConf.load(hydra_yaml)
        OmegaConf.update(saved, "hydra.runtime.output_dir", str(folder), force_add=True)
        filename = OmegaConf.select(saved, "hydra.job_logging.handlers.file.filename", default=None)
    except (OmegaConfBaseException, yaml.YAMLError) as err:
        raise ValueError(f"{hydra_yaml}: cannot tell where the job's log is: {err}") from err
    return Path(filename) if filename else None


@dataclass(frozen=True)
class EvalDir:
    """What petloc-eval writes into its ``output`` folder."""

    root: Path

    @property
    def metrics_json(self) -> Path:
        return self.root / NAMES["metrics_json"]

    @property
    def per_image(self) -> Path:
        """Every image's IoU and boxes, in the columns of :data:`petloc.callbacks.PER_IMAGE_COLUMNS`."""
        return self.root / NAMES["per_image_eval"]

    @property
    def iou_histogram(self) -> Path:
        return self.root / NAMES["iou_histogram"]

    @property
    def worst_k(self) -> Path:
        """The images with the lowest IoU, predicted box red, true box green."""
        return self.root / NAMES["worst_k"]
