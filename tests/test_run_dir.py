"""petloc.run_dir: where a run's files are, by default and as each run's saved config says. Oracles: the
run folder layout docs/runs.md describes, written out as literal paths; configs written as Hydra saves them
(with yaml, interpolations left in); Lightning's own file name constants; and real runs' folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError

from petloc import CONFIG_DIR
from petloc.run_dir import NAMES, EvalDir, RunDir
from tests.helpers import HydraRun, TrainedRun


def layout(run: RunDir) -> dict[str, Path]:
    return {
        "tensorboard": run.tensorboard,
        "metrics_csv": run.metrics_csv,
        "best_ckpt": run.best_ckpt,
        "last_ckpt": run.last_ckpt,
        "per_image_val": run.per_image_val,
        "metrics_json": run.metrics_json,
        "config_yaml": run.config_yaml,
        "overrides_yaml": run.overrides_yaml,
    }


def default_layout(root: Path) -> dict[str, Path]:
    """docs/runs.md's "What a run leaves"."""
    return {
        "tensorboard": root / "tensorboard",
        "metrics_csv": root / "metrics.csv",
        "best_ckpt": root / "checkpoints" / "best.ckpt",
        "last_ckpt": root / "checkpoints" / "last.ckpt",
        "per_image_val": root / "per_image_val.csv",
        "metrics_json": root / "metrics.json",
        "config_yaml": root / ".hydra" / "config.yaml",
        "overrides_yaml": root / ".hydra" / "overrides.yaml",
    }


def save_config(folder: Path, config: dict[str, Any]) -> None:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))


def test_a_folder_without_a_saved_config_has_the_default_names(tmp_path: Path) -> None:
    run = RunDir.read(tmp_path)

    assert layout(run) == default_layout(tmp_path)
    assert run.log is None  # no Hydra job, no job log
    assert not run.has_scalars()


def test_the_composed_config_gives_the_default_names(tmp_path: Path) -> None:
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={tmp_path}"])

    assert layout(RunDir.from_config(cfg)) == default_layout(tmp_path)
    # ${petloc.run:NAME} in conf/ is NAMES
    assert cfg.logger.tensorboard.name == NAMES["tensorboard"]
    assert Path(cfg.callbacks.per_image_val.path) == tmp_path / NAMES["per_image_val"]


def test_the_names_lightning_decides_are_lightnings() -> None:
    assert NAMES["metrics_csv"] == ExperimentWriter.NAME_METRICS_FILE
    assert RunDir.read(Path("run")).best_ckpt.suffix == ModelCheckpoint.FILE_EXTENSION


def test_a_saved_config_decides_the_paths_in_the_folder_where_it_is_now(tmp_path: Path) -> None:
    """As Hydra saves it: ``paths.output_dir`` where the run was trained, interpolations unresolved."""
    config = {
        "paths": {"output_dir": "/where/it/was/trained"},
        "logger": {
            "tensorboard": {"save_dir": "${paths.output_dir}", "name": "tb", "version": 3, "sub_dir": "x"},
            "csv": {"save_dir": "${paths.output_dir}/logs", "name": "", "version": ""},
        },
        "callbacks": {
            "model_checkpoint": {"dirpath": "${paths.output_dir}/ckpt", "filename": "top"},
            "last_checkpoint": {
                "dirpath": "${paths.output_dir}/${petloc.run:checkpoints}",
                "filename": "end",
            },
            "per_image_val": {"path": "${paths.output_dir}/${petloc.run:per_image_val}"},
        },
    }
    save_config(tmp_path, config)

    assert layout(RunDir.read(tmp_path)) == {
        **default_layout(tmp_path),
        "tensorboard": tmp_path / "tb" / "version_3" / "x",
        "metrics_csv": tmp_path / "logs" / "metrics.csv",
        "best_ckpt": tmp_path / "ckpt" / "top.ckpt",
        "last_ckpt": tmp_path / "checkpoints" / "end.ckpt",
    }


def test_a_logger_without_a_version_writes_into_its_newest_version_folder(tmp_path: Path) -> None:
    save_config(
        tmp_path, {"logger": {"tensorboard": {"save_dir": str(tmp_path), "name": "tb", "version": None}}}
    )
    for version in (2, 10, 9):
        (tmp_path / "tb" / f"version_{version}").mkdir(parents=True)

    assert RunDir.read(tmp_path).tensorboard == tmp_path / "tb" / "version_10"


def test_a_config_that_cannot_say_where_the_files_are_is_named(tmp_path: Path) -> None:
    save_config(tmp_path, {"logger": {"tensorboard": {"save_dir": "${nowhere}", "name": "tb"}}})

    with pytest.raises(ValueError, match=rf"{tmp_path / '.hydra' / 'config.yaml'}: cannot tell where"):
        RunDir.read(tmp_path)


def test_an_unknown_name_is_an_error_naming_the_known_ones() -> None:
    cfg = OmegaConf.create({"name": "${petloc.run:tensorbord}"})

    with pytest.raises(
        InterpolationResolutionError, match=r"no such run folder name; known: tensorboard, checkpoints"
    ):
        _ = cfg.name


def test_eval_outputs() -> None:
    output = EvalDir(Path("out"))

    assert [output.metrics_json, output.per_image, output.iou_histogram, output.worst_k] == [
        Path("out/metrics.json"),
        Path("out/per_image.csv"),
        Path("out/iou_histogram.png"),
        Path("out/worst_k.png"),
    ]


def test_a_run_of_train_cfg_has_its_files_where_the_defaults_say(trained_run: TrainedRun) -> None:
    run = RunDir.read(trained_run.run_dir)

    assert run.has_scalars()
    for name, path in default_layout(trained_run.run_dir).items():
        assert path.exists() == (name not in ("config_yaml", "overrides_yaml")), name  # no Hydra: no .hydra/


@pytest.mark.slow
def test_a_hydra_run_is_read_from_its_saved_config(hydra_run: HydraRun) -> None:
    """petloc.api.train with the TensorBoard logger's folder renamed (and no CSV logger)."""
    root = hydra_run.run_dir
    run = RunDir.read(root)

    assert run.tensorboard == root / "tb" and any(run.tensorboard.glob("events.out.tfevents.*"))
    assert run.log == root / "train.log" and run.log.is_file()  # Hydra's job log
    for path in (run.best_ckpt, run.last_ckpt, run.per_image_val, run.metrics_json, run.overrides_yaml):
        assert path.is_file(), path
    assert not run.metrics_csv.exists()
