"""petloc.sweeps.search and the Optuna preset as a user runs them: ``petloc-train -m
hparams_search=optuna_iou`` in a subprocess (tiny jobs: 60 synthetic images at 64 px). Oracles: the
job folders' metrics.json, Optuna's own result file, and its study database read with sqlite3 and
Optuna's loader; the resumed study after a real SIGKILL."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tests.sweep_helpers import (
    PETLOC_TRAIN,
    SMALL,
    SWEEP_TIMEOUT_S,
    job_dirs,
    metrics_of,
    output_tail,
    petloc_train,
)


@pytest.mark.slow
def test_optuna_search_reports_its_best_trial(tmp_path: Path, sweep_env: dict[str, str]) -> None:
    result = petloc_train(
        tmp_path, "hparams_search=optuna_iou", "hydra.sweeper.n_trials=3", *SMALL, env=sweep_env
    )
    assert result.returncode == 0, output_tail(result)

    sweep = tmp_path / "sweep"
    jobs = list(job_dirs(sweep).values())
    assert len(jobs) == 3
    best_ious = {job: metrics_of(job)["val/iou_best"] for job in jobs}
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna"
    assert results["best_value"] == pytest.approx(max(best_ious.values()), abs=1e-6)
    best_job = max(best_ious, key=best_ious.__getitem__)
    overrides = yaml.safe_load((best_job / ".hydra" / "overrides.yaml").read_text())
    assert set(results["best_params"]) == {"optimizer.lr", "alpha", "loss", "augment"}
    assert {f"{key}={value}" for key, value in results["best_params"].items()} <= set(overrides)


@pytest.mark.slow
def test_optuna_search_goes_on_after_a_failed_trial(tmp_path: Path, sweep_env: dict[str, str]) -> None:
    # lr is a choice of a diverging 1e+30 and a sane 0.003; with this sampler seed (and the pinned
    # optuna) the first trial draws 1e+30, so the second one runs only if the search survives the first.
    search = (
        "hparams_search=optuna_iou",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.seed=2",
        'hydra.sweeper.params={optimizer.lr:"choice(1e+30,0.003)"}',
    )
    result = petloc_train(tmp_path, *search, *SMALL, env=sweep_env)
    assert result.returncode == 0, output_tail(result)

    log = result.stdout + result.stderr
    first, second = log.index("#0 : optimizer.lr="), log.index("#1 : optimizer.lr=")
    assert log[first:].startswith("#0 : optimizer.lr=1e+30"), "the seed no longer draws 1e+30 first"
    assert first < log.index("Failed experiment: non-finite loss") < second
    sweep = tmp_path / "sweep"
    finished = [job for job in job_dirs(sweep).values() if (job / "metrics.json").is_file()]
    assert len(job_dirs(sweep)) == 2 and len(finished) == 1
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_params"]["optimizer.lr"] == 0.003
    assert results["best_value"] == pytest.approx(metrics_of(finished[0])["val/iou_best"], abs=1e-6)


def completed_trials(database: Path) -> int:
    """COMPLETE trials in an Optuna database, read with sqlite3 (0 while it does not exist yet)."""
    if not database.is_file():
        return 0
    try:
        with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1)) as db:
            return db.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.OperationalError:  # no tables yet, or the sweep holds a write lock
        return 0


@pytest.mark.slow
def test_optuna_search_resumes_after_a_kill(tmp_path: Path, sweep_env: dict[str, str]) -> None:
    """4 trials, SIGKILL once the second has finished, the same command again: 4 complete trials."""
    sweep = tmp_path / "sweep"
    database = sweep / "optuna.db"  # where conf/hparams_search/optuna_iou.yaml keeps the study
    one_epoch = (*SMALL, "trainer.max_epochs=1", "data.synthetic.n=48")
    command = [str(PETLOC_TRAIN), "-m", f"hydra.sweep.dir={sweep}", "hparams_search=optuna_iou"]
    command += ["hydra.sweeper.n_trials=4", *one_epoch]
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen(command, cwd=tmp_path, env=sweep_env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + SWEEP_TIMEOUT_S
            while completed_trials(database) < 2 and first.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
    assert completed_trials(database) == 2, (tmp_path / "first.log").read_text()[-3000:]
    storage = f"sqlite:///{database}"
    before = optuna.load_study(study_name="petloc_iou", storage=storage).trials

    result = subprocess.run(
        command, cwd=tmp_path, env=sweep_env, capture_output=True, text=True, timeout=SWEEP_TIMEOUT_S
    )
    assert result.returncode == 0, output_tail(result)

    after = optuna.load_study(study_name="petloc_iou", storage=storage).trials
    complete = [t for t in after if t.state == TrialState.COMPLETE]
    assert len(complete) == 4
    # the first run's trials are kept as they were; the new ones are numbered after them
    assert [(t.number, t.state, t.values) for t in after[: len(before)]] == [
        (t.number, t.state, t.values) for t in before
    ]
    assert [t.number for t in after[len(before) :]] == list(range(len(before), len(before) + 2))
    # a trial the kill interrupted stays as Optuna left it and does not count
    assert all(t.state == TrialState.RUNNING for t in before if t.state != TrialState.COMPLETE)
    # the sweep's result covers the whole study
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(max(t.value for t in complete), abs=1e-6)
