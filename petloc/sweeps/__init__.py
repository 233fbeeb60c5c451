"""Sweeps: many runs of petloc-train, read back and compared (``petloc-compare``), and searched.

- :mod:`petloc.sweeps.runs`: the run folders below a folder, each read into a :class:`RunSummary`
  (its scalars by epoch, overrides, seed, per-image validation IoUs);
- :mod:`petloc.sweeps.configurations`: runs that differ only by ``seed`` grouped into configurations,
  and every configuration paired with a baseline on the same validation images;
- :mod:`petloc.sweeps.stats`: the statistics of both (t intervals, the paired bootstrap);
- :mod:`petloc.sweeps.report`: the comparison as CSV, Markdown and a plot of the val/iou curves;
- :mod:`petloc.sweeps.search`: the Hydra callback that resumes an Optuna search.
"""
