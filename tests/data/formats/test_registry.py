"""The format registry: every list of formats comes from the registered modules, and a format that
is only registered (defined here, in the test) is detected, checked, synthesized and trained on with
no edit anywhere else: ``data=folder`` (the generic data config) reads it by detection."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from omegaconf import DictConfig

from petloc.cli.data import _parser
from petloc.cli.data import main as data_main
from petloc.data.files import Link, place_image
from petloc.data.formats import (
    FORMATS,
    Format,
    Parsed,
    detect_format,
    detection_order,
    read_dataset,
    register,
    registry,
    writable,
)
from petloc.data.records import Annotation, DataReport, DatasetError, Labelled, RawObject, class_name
from petloc.data.synthetic import SYNTHETIC_BREEDS
from petloc.train import train

TSV = "boxes.tsv"


def read_tsv(root: Path, report: DataReport) -> Parsed:
    """``boxes.tsv``: ``image<TAB>class<TAB>x0<TAB>y0<TAB>x1<TAB>y1`` per object, 0-based pixel edges."""
    objects: dict[str, list[RawObject]] = {}
    for lineno, line in enumerate((root / TSV).read_text().splitlines(), start=1):
        fields = line.split("\t")
        try:
            name, label, *box = fields[0], fields[1], *map(float, fields[2:6])
        except (IndexError, ValueError):
            report.add("malformed_entry", f"{TSV}:{lineno}", "expected image, class, x0, y0, x1, y1")
            continue
        objects.setdefault(name, []).append(RawObject(tuple(box), label))  # type: ignore[arg-type]
    report.n_images = len(objects)
    return Parsed([Annotation(root / "images" / n, f"{TSV}:{n}", objs) for n, objs in objects.items()])


def write_tsv(images: Sequence[Labelled], classes: Sequence[str], out: Path, link: Link) -> None:
    lines = []
    for im in images:
        name = place_image(im, out / "images", link)
        for (x0, y0, x1, y1), label in zip(im.boxes, im.labels, strict=True):
            pixels = (x0 * im.width, y0 * im.height, x1 * im.width, y1 * im.height)
            lines.append("\t".join([name, class_name(label), *(repr(v) for v in pixels)]) + "\n")
    out.mkdir(parents=True, exist_ok=True)
    (out / TSV).write_text("".join(lines))


TSV_FORMAT = Format(
    "tsv",
    read_tsv,
    lambda root: (root / TSV).is_file(),
    priority=0,
    looks_for="a boxes.tsv",
    write=write_tsv,
    keep_split=False,
)


@pytest.fixture
def tsv_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(FORMATS, "tsv", TSV_FORMAT)


def test_lists_of_formats_come_from_the_registry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    order = detection_order()
    assert [f.priority for f in order] == sorted(f.priority for f in order)
    assert set(writable()) == {f.name for f in order if f.write is not None}
    with pytest.raises(DatasetError) as info:
        detect_format(tmp_path)
    for fmt in order:
        assert fmt.looks_for in str(info.value) and repr(fmt.name) in str(info.value)
    with pytest.raises(SystemExit):
        _parser().parse_args(["convert", "a", "b", "--format", "nothing"])
    assert f"choose from {', '.join(map(repr, writable()))}" in capsys.readouterr().err


def test_register_replaces_a_format_of_the_same_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "FORMATS", dict(FORMATS))
    register(TSV_FORMAT)
    assert registry.FORMATS["tsv"] is TSV_FORMAT and "tsv" not in FORMATS
    assert detection_order()[0] is TSV_FORMAT  # priority 0 is tried first


def test_a_format_registered_in_a_test_is_detected_checked_synthesized_and_trained_on(
    tsv_registered: None,
    tmp_path: Path,
    make_cfg: Callable[..., DictConfig],
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "tsv"
    assert data_main(["synth", str(out), "--format", "tsv", "--n", "24", "--seed", "2"]) == 0
    assert capsys.readouterr().out.startswith("format: tsv\n")
    assert detect_format(out) == "tsv"
    assert data_main(["check", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("format: tsv (detected)\n")
    boxed = len((out / TSV).read_text().splitlines())
    assert boxed >= 20 and f"{boxed} usable boxed images" in printed  # 10% are the generator's test split
    dataset = read_dataset(out)
    assert dataset.format == "tsv" and set(dataset.classes) <= {b for b, _ in SYNTHETIC_BREEDS}

    (out / TSV).write_text((out / TSV).read_text() + "broken line\n")
    assert data_main(["check", str(out)]) == 0
    assert f"{TSV}:{boxed + 1}" in capsys.readouterr().out  # the format's own report, named

    metrics = train(make_cfg("data=folder", f"data.root={out}", "mode=class", "debug=fast"))
    assert 0 <= metrics["val/cls_acc"] <= 1
