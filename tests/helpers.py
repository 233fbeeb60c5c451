"""Test helpers shared by several test modules: crafted datasets in the Oxford layout, and report
accessors. Oracles stay independent of petloc: images are written with PIL, XMLs and lists as text."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import numpy as np
from PIL import Image

from petloc.data.records import DataReport

Box = tuple[float, float, float, float]

# A box well inside the default 80x60 crafted image, VOC style (1-based, inclusive).
GOOD_BOX: Box = (11, 6, 50, 40)
LIST_HEADER = "#Image CLASS-ID SPECIES BREED ID\n#ID: 1:37 Class ids\n#SPECIES: 1:Cat 2:Dog\n"


@dataclass
class Pet:
    """One crafted image: its file, its XML (``boxes=None``: no XML) and the list it is in."""

    stem: str
    fmt: str = "JPEG"
    mode: str = "RGB"
    size: tuple[int, int] = (80, 60)
    boxes: list[Box] | None = field(default_factory=lambda: [GOOD_BOX])
    xml_size: tuple[int, int] | None = None  # <size> written in the XML; default: the image's size
    split: str | None = "trainval"  # "trainval", "test" or None (in no list)
    ext: str = ".jpg"
    class_id: int = 1
    species: int = 1


def image_bytes(fmt: str, mode: str = "RGB", size: tuple[int, int] = (80, 60), seed: int = 0) -> bytes:
    """Noise (so a JPEG has real entropy-coded data to cut), converted to ``mode``, encoded as ``fmt``."""
    rgb = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).convert(mode).save(buf, format=fmt)
    return buf.getvalue()


def voc_xml(size: tuple[int, int], boxes: list[Box]) -> str:
    objects = "".join(
        f"<object><name>cat</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for b in boxes
    )
    return (
        f"<annotation><size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
        f"{objects}</annotation>"
    )


def write_pets(root: Path, pets: list[Pet], extra_list_lines: tuple[str, ...] = ()) -> Path:
    """Write ``pets`` into ``root`` in the Oxford layout and return ``root``."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "xmls").mkdir(parents=True, exist_ok=True)
    lists: dict[str, list[str]] = {"list": list(extra_list_lines), "trainval": [], "test": []}
    for i, pet in enumerate(pets):
        (root / "images" / f"{pet.stem}{pet.ext}").write_bytes(image_bytes(pet.fmt, pet.mode, pet.size, i))
        if pet.boxes is not None:
            xml = voc_xml(pet.xml_size or pet.size, pet.boxes)
            (root / "annotations" / "xmls" / f"{pet.stem}.xml").write_text(xml)
        if pet.split is not None:
            line = f"{pet.stem} {pet.class_id} {pet.species} 1"
            lists["list"].append(line)
            lists[pet.split].append(line)
    for name, lines in lists.items():
        header = LIST_HEADER if name == "list" else ""
        (root / "annotations" / f"{name}.txt").write_text(header + "".join(f"{x}\n" for x in lines))
    return root


def good(n: int = 2) -> list[Pet]:
    """Clean images, so that a dataset with one quirk still has something usable."""
    return [Pet(f"Abyssinian_{i}") for i in range(1, n + 1)]


def names(report: DataReport, kind: str) -> list[str]:
    """The file names of one problem kind, without the details after ': '."""
    return [entry.split(": ")[0] for entry in report.problems.get(kind, [])]


def kinds(report: DataReport) -> set[str]:
    return {kind for kind, entries in report.problems.items() if entries}


def expected_box(box: Box, width: int, height: int) -> Box:
    """The documented normalization, written out: ((xmin-1)/W, (ymin-1)/H, xmax/W, ymax/H)."""
    return ((box[0] - 1) / width, (box[1] - 1) / height, box[2] / width, box[3] / height)


def run_export(checkpoint: Path, folder: Path) -> tuple[Path, dict, list[str]]:
    """``petloc-export`` through its console entry, as a user runs it: (ONNX file in ``folder``, the
    JSON report it prints last, every printed line)."""
    from petloc.cli.export import main

    onnx_path = folder / "model.onnx"
    argv = ["petloc-export", f"ckpt_path={checkpoint}", f"output={onnx_path}", "latency_runs=10"]
    printed = io.StringIO()
    with (
        mock.patch.object(sys, "argv", [*argv, f"hydra.run.dir={folder / 'run'}"]),
        contextlib.redirect_stdout(printed),
    ):
        main()
    lines = printed.getvalue().splitlines()
    return onnx_path, json.loads(lines[-1]), lines
