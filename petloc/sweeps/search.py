"""A resumable Optuna search: the Hydra callback that continues a study kept in a database.

``hparams_search=optuna_iou`` keeps its study in a SQLite file in the sweep folder. The Optuna sweeper
(hydra-optuna-sweeper 1.3.0) then loads the study again when the same command runs again, but it would
run ``n_trials`` *more* trials, and its seeded sampler would propose the first run's parameters again.
:class:`ResumeStudy` runs before the sweeper is built and turns the config into what is left to do:

- ``n_trials`` becomes the number of trials still to run for the study to hold ``n_trials`` finished
  ones (complete, pruned or failed). A trial still marked running was interrupted (the sweeper runs
  one study per process and marks every trial it launched as finished): it does not count and is
  left as Optuna left it;
- a seeded sampler gets ``seed + number of trials so far``: a different sequence from the first run's,
  still reproducible.

The sweeper's own code is unchanged; Optuna's trial numbers go on from the first run's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, read_write

log = logging.getLogger(__name__)


class ResumeStudy(Callback):
    """Continue the sweeper's study when its database already holds it (see the module docstring)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        import optuna
        from optuna.trial import TrialState
        from sqlalchemy.engine import make_url

        sweeper = config.hydra.sweeper
        storage = sweeper.get("storage")
        if not storage:
            return
        url = make_url(storage)
        if url.get_backend_name() == "sqlite" and url.database:
            # SQLite creates the file but not its folder; Hydra makes the sweep folder only later.
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        try:
            study = optuna.load_study(study_name=sweeper.study_name, storage=storage)
        except KeyError:
            return  # a new study: the sweeper creates it
        trials = study.get_trials(deepcopy=False)
        finished = sum(t.state != TrialState.RUNNING for t in trials)
        complete = sum(t.state == TrialState.COMPLETE for t in trials)
        to_run = max(sweeper.n_trials - finished, 0)
        log.info(
            "study %s in %s: %d trials so far (%d complete, %d interrupted): %d more for %d",
            sweeper.study_name,
            storage,
            len(trials),
            complete,
            len(trials) - finished,
            to_run,
            sweeper.n_trials,
        )
        with read_write(sweeper):
            sweeper.n_trials = to_run
            if sweeper.sampler.get("seed") is not None:
                sweeper.sampler.seed = sweeper.sampler.seed + len(trials)
