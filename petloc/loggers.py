"""The CSV logger of a run folder (``conf/logger/csv.yaml``): ``metrics.csv`` beside TensorBoard."""

from __future__ import annotations

import csv

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _ContinuingWriter(ExperimentWriter):
    """Lightning's CSV writer, continuing an existing ``metrics.csv`` instead of deleting it."""

    def _check_log_dir_exists(self) -> None:
        # Lightning warns about any file in the folder and deletes metrics.csv here. The existing
        # header becomes the known columns: new rows are appended under it, and a new scalar widens
        # it (the writer rewrites the file with the wider header, old rows kept).
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
                self.metrics_keys = next(csv.reader(handle), [])


class RunCSVLogger(CSVLogger):
    """Lightning's CSVLogger for a run folder: ``metrics.csv`` (one row per logged step or epoch, with
    its ``epoch`` and ``step``) and ``hparams.yaml``, written into a folder that already holds files.

    A run folder always holds ``.hydra/`` before training starts, and a run resumed with
    ``ckpt_path=last`` holds the rows of its first part: Lightning's logger would warn on every run
    and delete those rows. Here a resumed run appends to them, so the file keeps the whole run in
    logging order, as the TensorBoard event files do (epochs trained again appear twice, the later
    rows last).
    """

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        """The writer, created on first use (rank zero only; other ranks get a no-op)."""
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment
