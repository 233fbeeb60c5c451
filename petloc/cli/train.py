"""``petloc-train [overrides] [-m]``: the Hydra app around :func:`petloc.train.train`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from petloc import CONFIG_DIR
from petloc.train import train


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Train; return the metric a sweeper optimizes (``optimized_metric``)."""
    metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric") or "")


if __name__ == "__main__":
    main()
