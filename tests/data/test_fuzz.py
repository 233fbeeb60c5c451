"""Fuzzing the data path with real files: corrupted JPEGs and XMLs never crash an epoch, and exactly
the files that cannot be decoded or parsed are dropped.

tests/data/formats/test_oxford.py and test_voc.py cover each quirk on hand-made files; here real
photographs and their XMLs get seeded random damage (bit flips in the JPEG entropy-coded data,
truncation, byte corruption in the XML markup, truncated XMLs), and an independent oracle (a plain
PIL full decode, a plain ElementTree parse) decides which files are broken. Many bit flips leave a
JPEG decodable (garbled but whole): the oracle says so, and those images must stay in.
"""

from __future__ import annotations

import random
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from petloc.data.datamodule import LocalizationDataModule

pytestmark = pytest.mark.realdata

N_IMAGES = 40
# per seed: how many files get each kind of damage (disjoint sets of images)
N_FLIPPED, N_TRUNCATED_IMAGES, N_BAD_XML_BYTES, N_TRUNCATED_XMLS = 10, 4, 4, 3


@dataclass
class Damage:
    """Which files were damaged, by kind (image stems)."""

    flipped: list[str] = field(default_factory=list)
    truncated_images: list[str] = field(default_factory=list)
    bad_xml_bytes: list[str] = field(default_factory=list)
    truncated_xmls: list[str] = field(default_factory=list)

    @property
    def images(self) -> list[str]:
        return self.flipped + self.truncated_images

    @property
    def xmls(self) -> list[str]:
        return self.bad_xml_bytes + self.truncated_xmls


def is_jpeg(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(2) == b"\xff\xd8"


def copy_subset(sample: Path, root: Path, rng: random.Random) -> list[str]:
    """Copy ``N_IMAGES`` boxed JPEG photographs with their XMLs and list lines into ``root``."""
    xmls = sample / "annotations" / "xmls"
    trainval = {
        line.split(" ", 1)[0] for line in (sample / "annotations" / "trainval.txt").read_text().splitlines()
    }
    stems = sorted(
        p.stem
        for p in (sample / "images").glob("*.jpg")
        if p.stem in trainval and (xmls / f"{p.stem}.xml").is_file() and is_jpeg(p)
    )
    chosen = sorted(rng.sample(stems, N_IMAGES))
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "xmls").mkdir(parents=True)
    for stem in chosen:
        shutil.copy(sample / "images" / f"{stem}.jpg", root / "images")
        shutil.copy(xmls / f"{stem}.xml", root / "annotations" / "xmls")
    keep = set(chosen)
    for name in ("list.txt", "trainval.txt"):
        lines = (sample / "annotations" / name).read_text().splitlines()
        kept = [line for line in lines if line.startswith("#") or line.split(" ", 1)[0] in keep]
        (root / "annotations" / name).write_text("\n".join(kept) + "\n")
    return chosen


def flip_bits(path: Path, rng: random.Random) -> None:
    """Flip 1-200 random bits of the entropy-coded data (after the SOS header, before EOI)."""
    data = bytearray(path.read_bytes())
    sos = data.index(b"\xff\xda")
    start = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
    for _ in range(rng.randint(1, 200)):
        data[rng.randrange(start, len(data) - 2)] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))


def truncate(path: Path, rng: random.Random) -> None:
    """Keep a random 1-90% prefix of the file (a torn download or copy)."""
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * rng.uniform(0.01, 0.9)))])


def corrupt_markup(path: Path, rng: random.Random) -> None:
    """Replace 1-3 random bytes inside tags (``<...>``) with random bytes.

    Only markup is hit, never the numbers between tags, so a file that still parses carries its
    original box: whether a record survives depends on parseability alone, which the oracle checks.
    """
    data = bytearray(path.read_bytes())
    markup = []
    inside = False
    for i, byte in enumerate(data):
        if byte == ord("<"):
            inside = True
        if inside:
            markup.append(i)
        if byte == ord(">"):
            inside = False
    for i in rng.sample(markup, rng.randint(1, 3)):
        data[i] = rng.choice([b for b in range(256) if b != data[i]])
    path.write_bytes(bytes(data))


def damage(root: Path, stems: list[str], rng: random.Random) -> Damage:
    """Damage disjoint random subsets of images and XMLs in place."""
    picked = rng.sample(stems, N_FLIPPED + N_TRUNCATED_IMAGES + N_BAD_XML_BYTES + N_TRUNCATED_XMLS)
    done = Damage(
        flipped=picked[:N_FLIPPED],
        truncated_images=picked[N_FLIPPED : N_FLIPPED + N_TRUNCATED_IMAGES],
        bad_xml_bytes=picked[N_FLIPPED + N_TRUNCATED_IMAGES : -N_TRUNCATED_XMLS],
        truncated_xmls=picked[-N_TRUNCATED_XMLS:],
    )
    images, xmls = root / "images", root / "annotations" / "xmls"
    for stem in done.flipped:
        flip_bits(images / f"{stem}.jpg", rng)
    for stem in done.truncated_images:
        truncate(images / f"{stem}.jpg", rng)
    for stem in done.bad_xml_bytes:
        corrupt_markup(xmls / f"{stem}.xml", rng)
    for stem in done.truncated_xmls:
        truncate(xmls / f"{stem}.xml", rng)
    return done


# ---- the oracle: plain PIL and ElementTree, none of petloc's code ------------------------------
def image_decodes(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            im.load()
    except Exception:  # the oracle only asks "does PIL decode it", whatever the failure
        return False
    return True


def xml_has_a_box(path: Path) -> bool:
    try:
        root = ET.fromstring(path.read_bytes())
    except ET.ParseError:
        return False
    size, box = root.find("size"), root.find("object/bndbox")
    if size is None or box is None:
        return False
    try:
        int(size.findtext("width", "")), int(size.findtext("height", ""))
        [float(box.findtext(k, "")) for k in ("xmin", "ymin", "xmax", "ymax")]
    except ValueError:
        return False
    return True


def datamodule(root: Path, cache: Path) -> LocalizationDataModule:
    dm = LocalizationDataModule(
        str(root), image_size=64, batch_size=8, num_workers=0, val_fraction=0.2, cache_dir=str(cache)
    )
    dm.setup("fit")
    return dm


def usable_ids(dm: LocalizationDataModule) -> set[str]:
    return {r.image_id for r in dm.train_records + dm.val_records}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_corrupted_files_are_dropped_exactly_and_epochs_run(
    seed: int, oxford_sample: Path, tmp_path: Path
) -> None:
    rng = random.Random(seed)
    root = tmp_path / "pets"
    stems = copy_subset(oxford_sample, root, rng)
    clean = usable_ids(datamodule(root, tmp_path / "cache-clean"))
    assert clean == set(stems)  # the chosen photographs are all usable before the damage

    done = damage(root, stems, rng)
    bad_images = {s for s in done.images if not image_decodes(root / "images" / f"{s}.jpg")}
    bad_xmls = {s for s in done.xmls if not xml_has_a_box(root / "annotations" / "xmls" / f"{s}.xml")}
    # the fuzz must break files and must also leave damaged-but-decodable ones
    assert bad_images and bad_xmls and set(done.images) - bad_images

    dm = datamodule(root, tmp_path / "cache")
    assert clean - usable_ids(dm) == bad_images | bad_xmls
    assert usable_ids(dm) <= clean
    assert dm.dataset is not None
    report = dm.dataset.report
    reported_images = {n.split(": ", 1)[0] for n in report.problems.get("unreadable_image", [])}
    unboxed = report.problems.get("bad_annotation", []) + report.problems.get("no_object", [])
    reported_xmls = {n.split(": ", 1)[0] for n in unboxed}
    assert reported_images == {f"{s}.jpg" for s in bad_images}
    assert reported_xmls == {f"{s}.xml" for s in bad_xmls}

    seen = 0
    for batch in dm.train_dataloader():
        assert batch["image"].shape[1:] == (64, 64, 3)
        seen += len(batch["image"])
    assert seen == len(dm.train_records) * dm.train_passes // 8 * 8  # drop_last
    val = [batch["index"] for batch in dm.val_dataloader()]
    assert sum(len(v) for v in val) == len(dm.val_records)
