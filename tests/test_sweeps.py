"""Sweeps as a user runs them: ``petloc-train -m`` in a subprocess, with each launcher.

The slow tests train for real (tiny: 60 synthetic images at 64 px, two epochs) and check what a sweep
leaves behind: the job folders named from the overrides, each a complete run folder; petloc-compare and
the real TensorBoard over the sweep folder; CPU sharing between parallel jobs; and that one failing job
does not take the sweep's other jobs down. The SLURM test fakes only the cluster (``sbatch``), to read
the job script the real launcher would submit. Optuna's search: tests/sweeps/test_search.py.
"""

from __future__ import annotations

import csv
import os
import shlex
import subprocess
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import matplotlib.image
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from joblib import cpu_count

from petloc import CONFIG_DIR
from petloc.sweeps.configurations import group_runs
from petloc.sweeps.report import plot_iou_curves
from petloc.sweeps.runs import read_runs
from petloc.train import cpu_budget, limit_cpu_use
from tests.rendezvous import ENV_VAR
from tests.sweep_helpers import (
    SMALL,
    TINY,
    get_json,
    hparams_sessions,
    job_dirs,
    metrics_of,
    output_tail,
    petloc_train,
    tensorboard_run_names,
    tensorboard_server,
    wait_for,
    wait_for_scalar_tags,
)

PETLOC_COMPARE = Path(sys.executable).with_name("petloc-compare")
LOSSES = ("mse", "giou")
ALPHAS = ("0.25", "0.5")


@cache
def keys_left_out_of_names() -> frozenset[str]:
    """The override keys conf/hydra/default.yaml keeps out of job folder names (``exclude_keys``)."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", return_hydra_config=True)
    return frozenset(cfg.hydra.job.config.override_dirname.exclude_keys)


def override_dirname(*overrides: str) -> str:
    """A job folder's name as Hydra makes it: the job's overrides sorted and comma-joined."""
    left_out = keys_left_out_of_names()
    return ",".join(sorted(o for o in overrides if o.split("=", 1)[0] not in left_out))


# --- a. the acceptance sweep, petloc-compare and TensorBoard on it -----------------------------------


@pytest.fixture(scope="module")
def acceptance_sweep(tmp_path_factory: pytest.TempPathFactory, sweep_env: dict[str, str]) -> Path:
    """``petloc-train -m loss=mse,giou alpha=0.25,0.5``: four jobs, run once for the tests below."""
    cwd = tmp_path_factory.mktemp("acceptance")
    result = petloc_train(cwd, f"loss={','.join(LOSSES)}", f"alpha={','.join(ALPHAS)}", *SMALL, env=sweep_env)
    assert result.returncode == 0, output_tail(result)
    return cwd / "sweep"


def expected_job_names() -> dict[str, tuple[str, str]]:
    """Job folder name -> (loss, alpha) for the acceptance sweep."""
    return {
        override_dirname(f"loss={loss}", f"alpha={alpha}", *SMALL): (loss, alpha)
        for loss in LOSSES
        for alpha in ALPHAS
    }


@pytest.mark.slow
def test_sweep_jobs_are_complete_run_folders_named_by_overrides(acceptance_sweep: Path) -> None:
    jobs = job_dirs(acceptance_sweep)
    expected = expected_job_names()
    assert set(jobs) == set(expected)
    for name, (loss, alpha) in expected.items():
        job = jobs[name]
        assert list((job / "tensorboard").glob("events.out.tfevents.*")), name
        assert (job / "metrics.csv").is_file() and (job / "per_image_val.csv").is_file(), name
        assert (job / "checkpoints" / "best.ckpt").is_file(), name
        assert (job / "checkpoints" / "last.ckpt").is_file(), name
        metrics = metrics_of(job)
        assert metrics["epochs"] == 2
        assert 0.0 <= metrics["val/iou"] <= metrics["val/iou_best"] <= 1.0
        # the job really trained what its folder name says
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        choices = yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"]["choices"]
        assert (choices["loss"], config["alpha"]) == (loss, float(alpha))


@pytest.mark.slow
def test_compare_tabulates_and_plots_every_job(acceptance_sweep: Path) -> None:
    result = subprocess.run(
        [str(PETLOC_COMPARE), str(acceptance_sweep)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, output_tail(result)

    jobs = job_dirs(acceptance_sweep)
    best_ious = {name: metrics_of(job)["val/iou_best"] for name, job in jobs.items()}
    assert len(set(best_ious.values())) == len(jobs), "a row could then match another job's metrics"
    with (acceptance_sweep / "comparison_runs.csv").open(newline="") as handle:
        rows = {row["run"]: row for row in csv.DictReader(handle)}
    assert set(rows) == set(jobs)
    for name, row in rows.items():
        assert float(row["best_val_iou"]) == pytest.approx(best_ious[name], abs=1e-6)
    runs_table = (acceptance_sweep / "comparison.md").read_text().split("Runs, best first:")[1]
    table = [line for line in runs_table.splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(jobs)
    assert all(any(name in line for line in table) for name in jobs)

    height, width, _ = matplotlib.image.imread(acceptance_sweep / "iou_curves.png").shape
    assert width > 500 and height > 300
    # The same figure, built in-process: one two-epoch line per job, labelled by what differs.
    axes = plot_iou_curves(group_runs(read_runs([acceptance_sweep]))).axes[0]
    labels = [str(line.get_label()) for line in axes.get_lines()]
    assert [len(line.get_xdata()) for line in axes.get_lines()] == [2] * 4
    assert {frozenset(label.split(",")) for label in labels} == {
        frozenset({f"loss={loss}", f"alpha={alpha}"}) for loss, alpha in expected_job_names().values()
    }
    assert [text.get_text() for text in axes.get_legend().get_texts()] == labels


# --- seeds as a sweep axis: groups of three, compared on the same images ------------------------------

SEEDS = ("0", "1", "2")
# One epoch each, validated every second epoch (the default): the run a new user tries first.
ONE_EPOCH = (
    *(o for o in SMALL if not o.startswith(("trainer.check_val_every_n_epoch", "trainer.max_epochs"))),
    "trainer.max_epochs=1",
)


@pytest.fixture(scope="module")
def seeded_sweep(tmp_path_factory: pytest.TempPathFactory, sweep_env: dict[str, str]) -> Path:
    """``petloc-train -m seed=0,1,2 loss=giou,mse trainer.max_epochs=1``: six jobs, run once."""
    cwd = tmp_path_factory.mktemp("seeded")
    result = petloc_train(
        cwd, f"seed={','.join(SEEDS)}", f"loss={','.join(LOSSES)}", *ONE_EPOCH, env=sweep_env
    )
    assert result.returncode == 0, output_tail(result)
    return cwd / "sweep"


@pytest.mark.slow
def test_a_seeded_sweep_compares_groups_of_three(seeded_sweep: Path) -> None:
    jobs = job_dirs(seeded_sweep)
    expected = {
        override_dirname(f"seed={s}", f"loss={loss}", *ONE_EPOCH): (s, loss) for s in SEEDS for loss in LOSSES
    }
    assert set(jobs) == set(expected)  # the seed is part of every job's folder name
    for name, job in jobs.items():
        assert metrics_of(job)["epochs"] == 1
        assert {"metrics.csv", "per_image_val.csv"} <= {p.name for p in job.iterdir()}, name
        assert (job / "checkpoints" / "best.ckpt").is_file() and (job / "checkpoints" / "last.ckpt").is_file()

    command = [str(PETLOC_COMPARE), str(seeded_sweep), "--metric", "val/acc75", "--baseline", "loss=giou"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, output_tail(result)

    with (seeded_sweep / "comparison.csv").open(newline="") as handle:
        rows = {row["configuration"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {f"loss={loss}" for loss in LOSSES}
    for loss in LOSSES:
        row = rows[f"loss={loss}"]
        group = [metrics_of(jobs[name]) for name, (_, job_loss) in expected.items() if job_loss == loss]
        assert (row["runs"], row["seeds"], row["not_ranked"]) == ("3", " ".join(SEEDS), "")
        best = [m["val/iou_best"] for m in group]
        assert float(row["best_val_iou_mean"]) == pytest.approx(sum(best) / 3, abs=1e-6)
        assert float(row["val_acc75_mean"]) == pytest.approx(sum(m["val/acc75"] for m in group) / 3, abs=1e-6)
    assert rows["loss=giou"]["verdict"] == "baseline"
    assert rows["loss=mse"]["verdict"] in ("better", "worse", "not distinguishable")
    # every seed's mse run paired with the giou run of its seed: the same split, the same images
    with (
        seeded_sweep / override_dirname("seed=0", "loss=mse", *ONE_EPOCH) / "per_image_val.csv"
    ).open() as f:
        per_seed = len(list(csv.DictReader(f)))
    assert int(rows["loss=mse"]["paired_images"]) == 3 * per_seed


@pytest.fixture(scope="module")
def served_acceptance_sweep(acceptance_sweep: Path) -> Iterator[str]:
    """A real TensorBoard on 127.0.0.1 over the acceptance sweep folder."""
    with tensorboard_server(acceptance_sweep) as base_url:
        yield base_url


@pytest.mark.slow
def test_tensorboard_serves_every_job_and_its_hparams(
    acceptance_sweep: Path, served_acceptance_sweep: str
) -> None:
    base_url = served_acceptance_sweep
    runs = tensorboard_run_names(acceptance_sweep)
    expected = expected_job_names()
    assert runs == {f"{name}/tensorboard" for name in expected}

    wait_for_scalar_tags(base_url, runs, tag="val/iou")
    assert set(get_json(f"{base_url}/data/runs")) == runs
    for name in expected:
        query = urllib.parse.urlencode({"run": f"{name}/tensorboard", "tag": "val/iou"})
        points = get_json(f"{base_url}/data/plugin/scalars/scalars?{query}")
        assert len(points) == 2
        assert points[-1][2] == pytest.approx(metrics_of(acceptance_sweep / name)["val/iou"], abs=1e-6)

    def all_sessions() -> dict[str, dict[str, Any]] | None:
        sessions = hparams_sessions(base_url)  # the plugin may list the runs before all are loaded
        return sessions if set(sessions) == runs else None

    sessions = wait_for(all_sessions, f"{len(runs)} hparams sessions")
    for name, (loss, alpha) in expected.items():
        hparams = sessions[f"{name}/tensorboard"]
        assert (hparams["loss"], hparams["alpha"]) == (loss, float(alpha))
        assert hparams["image_size"] == 64
        # every override of the job is a session hparam: TensorBoard can filter and sort by each
        overrides = yaml.safe_load((acceptance_sweep / name / ".hydra" / "overrides.yaml").read_text())
        assert {override.split("=", 1)[0] for override in overrides} <= set(hparams)


# --- b, c. parallel jobs on one machine share its cores ----------------------------------------------


@pytest.fixture
def launched_with(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Make the job look as if Hydra launched it with the given overrides; undone after the test.

    ``joblib.cpu_count`` is pinned to 8 cores, so the shares do not depend on the test machine.
    """
    monkeypatch.setattr("joblib.cpu_count", lambda: 8)
    hydra_config = HydraConfig.instance()
    before, threads = hydra_config.cfg, torch.get_num_threads()

    def launch(*overrides: str) -> None:
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            hydra_config.set_config(compose("train", overrides=list(overrides), return_hydra_config=True))

    yield launch
    hydra_config.cfg = before
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    ("overrides", "budget"),
    [
        ((), None),  # the basic launcher runs one job at a time: torch's own default
        (("hydra/launcher=joblib", "hydra.launcher.n_jobs=1"), 8),
        (("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"), 4),
        (("hydra/launcher=joblib", "hydra.launcher.n_jobs=3"), 2),
        (("hydra/launcher=joblib", "hydra.launcher.n_jobs=16"), 1),
        (("hydra/launcher=joblib",), 1),  # the plugin's default n_jobs=-1: one job per core
        (("hydra/launcher=joblib", "hydra.launcher.n_jobs=-3"), 1),  # joblib's -3: 8 + 1 - 3 = 6 jobs
        (("hydra/launcher=submitit_local",), None),  # no cpus_per_task asked for
        (("hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=3"), 3),
        (("hydra/launcher=slurm",), 8),  # the preset's cpus_per_task
    ],
)
def test_cpu_budget_follows_the_launcher(
    overrides: tuple[str, ...], budget: int | None, launched_with: Callable[..., None]
) -> None:
    launched_with(*overrides)
    assert cpu_budget() == budget


def test_cpu_budget_sets_threads_and_caps_workers(launched_with: Callable[..., None]) -> None:
    launched_with("hydra/launcher=joblib", "hydra.launcher.n_jobs=4")
    assert limit_cpu_use(num_workers=4) == 1
    assert torch.get_num_threads() == 2
    assert limit_cpu_use(num_workers=0) == 0
    launched_with("hydra/launcher=joblib", "hydra.launcher.n_jobs=8")
    assert limit_cpu_use(num_workers=2) == 0  # one core: batches load in the training process
    assert torch.get_num_threads() == 1


RENDEZVOUS = "+callbacks.rendezvous._target_=tests.rendezvous.Rendezvous"


@pytest.fixture
def rendezvous_env(tmp_path: Path, sweep_env: dict[str, str]) -> dict[str, str]:
    """``sweep_env`` plus what the jobs need to meet in ``tests.rendezvous.Rendezvous``."""
    return {
        **sweep_env,
        ENV_VAR: str(tmp_path / "rendezvous"),
        "PYTHONPATH": os.pathsep.join(p for p in (str(CONFIG_DIR.parent), sweep_env.get("PYTHONPATH")) if p),
    }


@pytest.mark.slow
def test_rendezvous_fails_jobs_that_run_one_after_another(
    tmp_path: Path, rendezvous_env: dict[str, str]
) -> None:
    """The oracle of the two tests below can fail: the basic launcher runs jobs one at a time."""
    # job folders by number: these overrides would name a folder past the 255 bytes a file name may take
    overrides = (
        "seed=0,1",
        RENDEZVOUS,
        "+callbacks.rendezvous.timeout_s=1",
        *SMALL,
        "hydra.sweep.subdir=${hydra.job.num}",
    )
    result = petloc_train(tmp_path, *overrides, env=rendezvous_env)
    assert result.returncode != 0
    assert "only 1 of 2 jobs started" in result.stderr + result.stdout, output_tail(result)


@pytest.mark.slow
def test_joblib_jobs_split_the_cores(tmp_path: Path, rendezvous_env: dict[str, str]) -> None:
    # data.num_workers keeps its default (1) to show the cap: a 1-core share loads in the main process.
    overrides = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1", RENDEZVOUS, *TINY)
    result = petloc_train(tmp_path, *overrides, env=rendezvous_env)  # fails unless the jobs overlap
    assert result.returncode == 0, output_tail(result)

    jobs = list(job_dirs(tmp_path / "sweep").values())
    assert len(jobs) == 2
    share = max(cpu_count() // 2, 1)
    for job in jobs:
        metrics = metrics_of(job)
        assert metrics["epochs"] == 2
        assert (metrics["torch_threads"], metrics["num_workers"]) == (share, min(1, share - 1))


@pytest.mark.slow
def test_submitit_local_jobs_run_with_their_cpus_per_task(
    tmp_path: Path, rendezvous_env: dict[str, str]
) -> None:
    launcher = (
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        "hydra.launcher.cpus_per_task=1",
    )
    overrides = (*launcher, "seed=0,1", RENDEZVOUS, *SMALL)
    result = petloc_train(tmp_path, *overrides, env=rendezvous_env)  # fails unless the jobs overlap
    assert result.returncode == 0, output_tail(result)

    sweep = tmp_path / "sweep"
    jobs = list(job_dirs(sweep).values())
    names = [override_dirname(f"seed={seed}", RENDEZVOUS, *SMALL) for seed in (0, 1)]
    assert [job.name for job in jobs] == names
    for job in jobs:
        metrics = metrics_of(job)
        assert metrics["epochs"] == 2
        assert metrics["torch_threads"] == 1
    # submitit ran each job as its own process and kept its logs
    assert len(list((sweep / ".submitit").glob("*/*_log.out"))) == 2


# --- SLURM: the job script the launcher submits (no cluster here: a fake sbatch records it) ----------


@pytest.mark.slow
@pytest.mark.parametrize(
    "launcher",
    [
        ("hydra/launcher=slurm",),
        # the plugin's own launcher (README.md, docs/sweeps.md), with the preset's values given explicitly
        (
            "hydra/launcher=submitit_slurm",
            "hydra.launcher.gpus_per_node=2",
            "hydra.launcher.tasks_per_node=2",
            "hydra.launcher.cpus_per_task=8",
            "hydra.launcher.mem_gb=32",
            "hydra.launcher.timeout_min=120",
        ),
    ],
    ids=["slurm", "submitit_slurm"],
)
def test_slurm_launcher_asks_for_one_task_per_device(
    launcher: tuple[str, ...], tmp_path: Path, sweep_env: dict[str, str]
) -> None:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    script = tmp_path / "submitted.sh"
    # submitit checks that srun exists; sbatch keeps the job script and refuses, so nothing waits on it.
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 1\n")
    (fake_bin / "sbatch").write_text(
        f'#!/bin/sh\ncp "$1" {shlex.quote(str(script))}\necho "no cluster" >&2\nexit 1\n'
    )
    for tool in fake_bin.iterdir():
        tool.chmod(0o755)
    env = {**sweep_env, "PATH": f"{fake_bin}{os.pathsep}{sweep_env['PATH']}"}

    overrides = (
        *launcher,
        "hydra.launcher.partition=gpu",
        "trainer.devices=2",
        "+trainer.strategy=ddp",
        "seed=0,1",
    )
    result = petloc_train(tmp_path, *overrides, env=env)

    assert result.returncode != 0 and "no cluster" in result.stdout + result.stderr, output_tail(result)
    text = script.read_text()
    directives = {line.split(maxsplit=1)[1] for line in text.splitlines() if line.startswith("#SBATCH ")}
    assert {
        "--array=0-1%2",  # one array task per sweep job
        "--partition=gpu",
        "--nodes=1",
        "--gpus-per-node=2",
        "--ntasks-per-node=2",  # = trainer.devices: one DDP process per GPU, as Lightning expects
        "--cpus-per-task=8",
        "--mem=32GB",
        "--time=120",
        "--job-name=train",
    } <= directives
    # each task runs the submitted job with this interpreter: the venv on a shared file system
    assert "srun --unbuffered" in text and f"{sys.executable} -u -m submitit.core._submit" in text


# --- e. a failing job ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_others(tmp_path: Path, sweep_env: dict[str, str]) -> None:
    # lr=1e30 blows the weights up after one step: the next loss is not finite and nan_policy=stop raises.
    # (Written as Hydra writes a swept float back into the job's overrides and its folder name.)
    result = petloc_train(tmp_path, "optimizer.lr=1e+30,0.003", "nan_policy=stop", *SMALL, env=sweep_env)

    assert result.returncode != 0, output_tail(result)
    assert "Error executing job with overrides: ['optimizer.lr=1e+30'" in result.stderr, output_tail(result)
    assert "non-finite loss" in result.stderr, output_tail(result)
    jobs = job_dirs(tmp_path / "sweep")
    failed = jobs[override_dirname("optimizer.lr=1e+30", "nan_policy=stop", *SMALL)]
    finished = jobs[override_dirname("optimizer.lr=0.003", "nan_policy=stop", *SMALL)]
    assert not (failed / "metrics.json").exists()
    assert metrics_of(finished)["epochs"] == 2
