"""val/iou of one checkpoint validated at other input sides than it was trained at (RESULTS.md, "The
input side a checkpoint runs at"): why petloc refuses a ``data.image_size`` other than ``image_size``.

    python scripts/input_sides.py RUN/checkpoints/best.ckpt 160 192 224 256

Lightning validates the module directly on the run's own data config with only the side changed
(petloc-eval would refuse it).
"""

from __future__ import annotations

import argparse

import lightning as L
from hydra.utils import instantiate

from petloc.checkpoint import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a petloc checkpoint")
    parser.add_argument("sides", type=int, nargs="+", help="input sides to validate at")
    args = parser.parse_args()
    module, cfg = load_model(args.checkpoint)
    for side in args.sides:
        cfg.data.image_size = side
        trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
        metrics = trainer.validate(module, datamodule=instantiate(cfg.data), verbose=False)[0]
        print(side, round(metrics["val/iou"], 4))


if __name__ == "__main__":
    main()
