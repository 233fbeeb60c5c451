"""Tests for petloc.data.synthetic: the generated set must read like real Oxford pets and be reproducible.

Oracles are independent of the generator's bookkeeping: file layout and formats are checked by
parsing with ElementTree and PIL; the box is checked against the pixels (which pixels change when
the head is drawn, and where the JPEG on disk differs from the same scene without a head); ids are
recomputed from the breed names; reproducibility is checked byte for byte.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import petloc.data.synthetic as synthetic
from petloc.data.synthetic import SYNTHETIC_BREEDS, compose_scene, generate_synthetic_pets, image_rng

N = 24
SEED = 0
LINE = re.compile(r"^(\S+) (\d+) ([12]) (\d+)$")
K = len(SYNTHETIC_BREEDS)
OLD = 1_000_000_000 * 10**9  # a fixed past mtime (2001): any rewrite would set "now"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic_pets(tmp_path_factory.mktemp("synth") / "pets", n=N, seed=SEED, progress=False)


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if not line.startswith("#")]


def _names(path: Path) -> list[str]:
    return [line.split()[0] for line in _lines(path)]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _box(xml: Path) -> tuple[int, int, int, int]:
    bb = ET.parse(xml).getroot().find("object/bndbox")
    assert bb is not None
    return tuple(int(bb.findtext(k, "")) for k in ("xmin", "ymin", "xmax", "ymax"))  # type: ignore[return-value]


def _index(name: str) -> tuple[int, int]:
    """(image index, breed index) from a file name, per the documented naming."""
    breed, number = name.rsplit("_", 1)
    b = [n for n, _ in SYNTHETIC_BREEDS].index(breed)
    return (int(number) - 1) * K + b, b


def test_layout_and_lists(root: Path) -> None:
    ann = root / "annotations"
    header = [line for line in (ann / "list.txt").read_text().splitlines() if line.startswith("#")]
    assert header[0] == "#Image CLASS-ID SPECIES BREED ID"
    assert header[2] == "#SPECIES: 1:Cat 2:Dog"
    assert len(header) == 6
    for fname in ("list.txt", "trainval.txt", "test.txt"):
        for line in _lines(ann / fname):
            assert LINE.match(line), (fname, line)

    listed, trainval, test = (_names(ann / f) for f in ("list.txt", "trainval.txt", "test.txt"))
    images = sorted(p.stem for p in (root / "images").iterdir())
    assert all(p.suffix == ".jpg" for p in (root / "images").iterdir())
    assert len(listed) == len(set(listed)) == N
    assert sorted(listed) == images
    assert set(trainval).isdisjoint(test) and sorted(trainval + test) == images
    assert abs(len(test) - 0.1 * N) <= 1 and len(test) >= 1
    assert sorted(p.stem for p in (ann / "xmls").glob("*.xml")) == sorted(trainval)
    assert {name.rsplit("_", 1)[0] for name in listed} == {n for n, _ in SYNTHETIC_BREEDS}
    # every line of trainval/test is the same line as in list.txt
    full = dict(line.split(" ", 1) for line in _lines(ann / "list.txt"))
    for fname in ("trainval.txt", "test.txt"):
        assert all(full[line.split(" ", 1)[0]] == line.split(" ", 1)[1] for line in _lines(ann / fname))


def test_xml_matches_jpeg(root: Path) -> None:
    widths, sides = [], []
    for xml in sorted((root / "annotations" / "xmls").glob("*.xml")):
        ann = ET.parse(xml).getroot()
        assert ann.tag == "annotation"
        assert ann.findtext("filename") == xml.stem + ".jpg"
        assert ann.findtext("folder")
        objects = ann.findall("object")
        assert len(objects) == 1
        obj = objects[0]
        assert obj.findtext("name") in ("cat", "dog")
        assert obj.findtext("pose") == "Frontal"
        assert obj.findtext("truncated") in ("0", "1")
        assert obj.findtext("occluded") == obj.findtext("difficult") == "0"
        w, h, depth = (int(ann.findtext(f"size/{k}", "")) for k in ("width", "height", "depth"))
        with Image.open(root / "images" / (xml.stem + ".jpg")) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            assert im.size == (w, h)
        assert depth == 3
        assert 200 <= w <= 500 and 200 <= h <= 500
        xmin, ymin, xmax, ymax = _box(xml)
        assert 1 <= xmin < xmax <= w and 1 <= ymin < ymax <= h
        if obj.findtext("truncated") == "0":  # a head with its ears is roughly square; a body is not
            assert 0.55 <= (xmax - xmin + 1) / (ymax - ymin + 1) <= 1.8, xml.stem
        widths.append(w)
        sides.append(max(xmax - xmin + 1, ymax - ymin + 1) / min(w, h))
    assert len(set(widths)) > len(widths) // 2  # sizes vary
    # heads span about 10% to 60% of the short side (a body counted in would exceed it)
    assert min(sides) >= 0.05 and max(sides) <= 0.62 and max(sides) > 2 * min(sides)


def test_box_is_where_the_head_is_in_the_jpeg(root: Path) -> None:
    """The JPEG differs from the same scene without its head inside the XML box, not outside it."""
    for xml in sorted((root / "annotations" / "xmls").glob("*.xml")):
        i, b = _index(xml.stem)
        scene = compose_scene(image_rng(SEED, i), b)
        assert _box(xml) == scene.box()  # the XML holds the box that the pixel test below checks
        headless = scene.render(draw_head=False).astype(float)
        with Image.open(root / "images" / (xml.stem + ".jpg")) as im:
            jpeg = np.asarray(im, dtype=float)
        diff = np.abs(jpeg - headless).sum(-1)
        xmin, ymin, xmax, ymax = _box(xml)
        inside = np.zeros(diff.shape, bool)
        inside[ymin - 1 : ymax, xmin - 1 : xmax] = True
        assert diff[inside].mean() > 4 * diff[~inside].mean() + 20, xml.stem


def test_box_is_tight_around_the_drawn_head() -> None:
    """Pixels changed by drawing the head lie inside the box and reach each of its four sides."""
    for i in range(3 * K):
        scene = compose_scene(image_rng(SEED, i), i % K)
        changed = (scene.render(True) != scene.render(False)).any(-1)
        ys, xs = np.nonzero(changed)
        xmin, ymin, xmax, ymax = scene.box()
        tol = max(2, round(0.03 * max(xmax - xmin, ymax - ymin)))  # head colour may equal the background
        assert xmin - 1 <= xs.min() <= xmin - 1 + tol and xmax - 1 - tol <= xs.max() <= xmax - 1, i
        assert ymin - 1 <= ys.min() <= ymin - 1 + tol and ymax - 1 - tol <= ys.max() <= ymax - 1, i


def test_ids_follow_names(root: Path) -> None:
    """CLASS-ID alphabetical ignoring case, SPECIES from the first letter, BREED-ID within species."""
    rows = [LINE.match(line).groups() for line in _lines(root / "annotations" / "list.txt")]  # type: ignore[union-attr]
    breeds = sorted({name.rsplit("_", 1)[0] for name, *_ in rows}, key=str.lower)
    for name, cls, species, breed_id in rows:
        breed = name.rsplit("_", 1)[0]
        assert int(cls) == breeds.index(breed) + 1
        assert int(species) == (1 if breed[0].isupper() else 2)
        same = [x for x in breeds if x[0].isupper() == breed[0].isupper()]
        assert int(breed_id) == same.index(breed) + 1
        xml = root / "annotations" / "xmls" / f"{name}.xml"
        if xml.exists():
            assert ET.parse(xml).getroot().findtext("object/name") == ("cat" if species == "1" else "dog")
    assert sorted(s for _, s in SYNTHETIC_BREEDS) == ["cat"] * 3 + ["dog"] * 3
    assert all(name[0].isupper() == (species == "cat") for name, species in SYNTHETIC_BREEDS)


def test_same_seed_is_byte_identical_and_other_seed_differs(root: Path, tmp_path: Path) -> None:
    again = generate_synthetic_pets(tmp_path / "again", n=N, seed=SEED, progress=False)
    assert _files(again) == _files(root)
    other = _files(generate_synthetic_pets(tmp_path / "other", n=N, seed=SEED + 1, progress=False))
    mine = _files(root)
    jpgs = [k for k in mine if k.endswith(".jpg")]
    assert all(other[k] != mine[k] for k in jpgs)


def test_images_do_not_depend_on_n(root: Path, tmp_path: Path) -> None:
    small = _files(generate_synthetic_pets(tmp_path / "small", n=K, seed=SEED, progress=False))
    images = [k for k in small if k.endswith(".jpg")]
    assert len(images) == K
    assert all(small[k] == _files(root)[k] for k in images)


def _mtimes(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def _fail_after(monkeypatch: pytest.MonkeyPatch, calls: int, action: Callable[[], None]) -> None:
    """Make the generator's ``calls + 1``-th scene run ``action`` first (an interruption, a rival run)."""
    real = synthetic.compose_scene
    count = 0

    def patched(rng: np.random.Generator, breed_index: int) -> synthetic.SyntheticScene:
        nonlocal count
        count += 1
        if count == calls + 1:
            action()
        return real(rng, breed_index)

    monkeypatch.setattr(synthetic, "compose_scene", patched)


def test_cache_hit_does_not_rewrite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = generate_synthetic_pets(tmp_path / "pets", n=K, seed=3, progress=False)
    for p in out.rglob("*"):
        os.utime(p, ns=(OLD, OLD))
    assert (out / ".complete").is_file()

    def no_drawing() -> None:
        raise AssertionError("a cache hit must not draw anything")

    _fail_after(monkeypatch, 0, no_drawing)
    assert generate_synthetic_pets(out, n=K, seed=3, progress=False) == out
    assert set(_mtimes(out).values()) == {OLD}


def test_other_parameters_regenerate_without_stale_files(tmp_path: Path) -> None:
    out = generate_synthetic_pets(tmp_path / "pets", n=2 * K, seed=3, progress=False)
    generate_synthetic_pets(out, n=K, seed=4, progress=False)
    assert len(list((out / "images").iterdir())) == K
    assert len(_lines(out / "annotations" / "list.txt")) == K
    fresh = generate_synthetic_pets(tmp_path / "fresh", n=K, seed=4, progress=False)
    assert _files(out) == _files(fresh)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "pets"]  # old set and temp folders gone


def test_interrupted_generation_leaves_nothing_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt() -> None:
        raise KeyboardInterrupt

    _fail_after(monkeypatch, 3, interrupt)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic_pets(tmp_path / "pets", n=K, seed=5, progress=False)
    assert list(tmp_path.iterdir()) == []  # no half-written set, no leftovers
    monkeypatch.undo()
    out = generate_synthetic_pets(tmp_path / "pets", n=K, seed=5, progress=False)
    assert (out / ".complete").is_file()
    assert len(list((out / "images").iterdir())) == K
    assert [p.name for p in tmp_path.iterdir()] == ["pets"]


def test_concurrent_run_finishing_first_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A parallel job that installs the same set while we generate wins; we neither fail nor clobber it."""
    out = tmp_path / "pets"

    def rival() -> None:
        with monkeypatch.context() as m:
            m.setattr(synthetic, "compose_scene", real)
            generate_synthetic_pets(out, n=K, seed=6, progress=False)
        for p in out.rglob("*"):
            os.utime(p, ns=(OLD, OLD))

    real = synthetic.compose_scene
    _fail_after(monkeypatch, 2, rival)
    assert generate_synthetic_pets(out, n=K, seed=6, progress=False) == out
    assert set(_mtimes(out).values()) == {OLD}  # the rival's files, untouched
    assert [p.name for p in tmp_path.iterdir()] == ["pets"]
    monkeypatch.undo()
    assert _files(out) == _files(generate_synthetic_pets(tmp_path / "fresh", n=K, seed=6, progress=False))


def test_refuses_foreign_folder(tmp_path: Path) -> None:
    mine = tmp_path / "data" / "notes.txt"
    mine.parent.mkdir()
    mine.write_text("keep me")
    with pytest.raises(FileExistsError):
        generate_synthetic_pets(mine.parent, n=K, progress=False)
    assert mine.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["data", "notes.txt"]


def test_empty_folder_is_used(tmp_path: Path) -> None:
    (tmp_path / "pets").mkdir()
    out = generate_synthetic_pets(tmp_path / "pets", n=K, seed=7, progress=False)
    assert len(list((out / "images").iterdir())) == K
