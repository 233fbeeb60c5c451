"""Decode once: a memory-mapped cache of downsized uint8 images.

Decoding a full-size JPEG costs far more than a training step of a small MobileNet on a CPU, so
every image is decoded a single time (JPEG DCT-domain downscaling through ``PIL.Image.draft``), shrunk
so its longest side is ``max_side`` (about 1.25x the training size, enough for crops and scale jitter)
and stored in one ``.npy`` file that workers memory-map: pages are shared between processes, so
the cache costs its size once, not once per worker.

Files that fail to decode here (truncated, corrupt) are reported and dropped before training, which
is what keeps a bad file from crashing an epoch half-way.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from petloc.data.images import IMAGE_ERRORS, decode_image
from petloc.data.records import DataReport, Record
from petloc.processes import process_alive

CACHE_VERSION = 1


@dataclass
class DecodedImages:
    """Images padded into one [N, S, S, 3] uint8 array (memory-mapped) with their true sizes."""

    pixels: np.ndarray
    sizes: np.ndarray  # [N, 2] (height, width)
    index: dict[str, int]

    def get(self, image_id: str) -> np.ndarray:
        i = self.index[image_id]
        h, w = self.sizes[i]
        return self.pixels[i, :h, :w]


def _fingerprint(records: Sequence[Record], max_side: int) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}:{max_side}".encode())
    for r in sorted(records, key=lambda r: r.image_id):
        st = r.path.stat()
        h.update(f"{r.image_id}:{r.path.resolve()}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def build_decode_cache(
    records: Sequence[Record],
    max_side: int,
    cache_dir: Path,
    report: DataReport | None = None,
    progress: bool = True,
) -> tuple[DecodedImages, list[Record]]:
    """Return the cache (building it on first use) and the records that decoded.

    The cache folder name is a fingerprint of the files (path, size, mtime) and ``max_side``, so a
    changed dataset or image size builds a new cache instead of reading stale pixels. It is written
    to a temporary name and renamed, so a killed build never leaves a half-written cache behind.
    """
    folder = Path(cache_dir) / f"decoded-{max_side}-{_fingerprint(records, max_side)}"
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        _build(records, max_side, folder, progress)
    meta = json.loads(meta_path.read_text())
    for error in meta["failed"].values():
        if report is not None:
            name, _, detail = error.partition(": ")
            report.add("unreadable_image", name, detail)
    pixels = np.load(folder / "pixels.npy", mmap_mode="r")
    sizes = np.load(folder / "sizes.npy")
    index = {image_id: i for i, image_id in enumerate(meta["ids"])}
    usable = [r for r in records if r.image_id in index]
    if report is not None:
        report.n_usable = len(usable)
    return DecodedImages(pixels, sizes, index), usable


def _build(records: Sequence[Record], max_side: int, folder: Path, progress: bool) -> None:
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    pixels = np.lib.format.open_memmap(
        tmp / "pixels.npy", mode="w+", dtype=np.uint8, shape=(len(records), max_side, max_side, 3)
    )
    sizes = np.zeros((len(records), 2), dtype=np.int32)
    ids: list[str] = []
    failed: dict[str, str] = {}
    for record in tqdm(records, desc=f"decode cache ({max_side}px)", disable=not progress, unit="img"):
        try:
            image = decode_image(record.path, max_side)
        except IMAGE_ERRORS as exc:
            failed[record.image_id] = f"{record.path.name}: {exc}"[:200]
            continue
        h, w = image.shape[:2]
        pixels[len(ids), :h, :w] = image
        sizes[len(ids)] = (h, w)
        ids.append(record.image_id)
    pixels.flush()
    del pixels
    np.save(tmp / "sizes.npy", sizes[: len(ids)])
    (tmp / "meta.json").write_text(json.dumps({"ids": ids, "failed": failed, "max_side": max_side}))
    _remove_stale(folder)
    try:
        tmp.rename(folder)
    except OSError:
        if not (folder / "meta.json").is_file():
            raise
        shutil.rmtree(tmp)  # another process finished the same cache first: keep theirs


def _remove_stale(folder: Path) -> None:
    """Delete what killed builds left: a final folder without meta.json, temp folders of dead pids."""
    if folder.exists() and not (folder / "meta.json").is_file():
        shutil.rmtree(folder)
    for tmp in folder.parent.glob(folder.name + ".tmp*"):
        pid = tmp.name.rsplit(".tmp", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)
