"""The training part of petloc's split, written as a dataset of its own: recipes are tuned on it (an
inner train/val split of the training photos), so the validation photos judge them untouched.

    python scripts/inner_split.py OUT -- data=voc data.root=../shared/data/raccoon
    petloc-train data=yolo data.root=OUT data.split=random ...   # tunes on 80/20 of the training photos

The arguments after ``--`` are petloc-train overrides naming the data and the outer split (``seed``);
OUT is written in YOLO's layout (``--format`` picks another) with every kept object of each image
(images hard-linked or copied).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from petloc import CONFIG_DIR
from petloc.data.convert import labelled
from petloc.data.formats import FORMATS, writable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write the training photos to (YOLO layout)")
    parser.add_argument("overrides", nargs="*", help="petloc-train overrides naming the data and split")
    parser.add_argument(
        "--format", default="yolo", choices=writable(), help="the format to write (default yolo)"
    )
    args = parser.parse_args()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=args.overrides)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    # one class and no split: the photos are a box-only set that petloc splits anew
    images = [replace(image, split=None) for image in labelled(datamodule.train_records, None)]
    FORMATS[args.format].write(images, [], args.out, "hardlink")  # type: ignore[misc]
    train, val = datamodule.train_records, datamodule.val_records
    print(f"{len(train)} training photos -> {args.out} ({len(val)} validation photos held out)")


if __name__ == "__main__":
    main()
