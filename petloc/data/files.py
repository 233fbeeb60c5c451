"""The one file index every reader lists its folders through, and the path helpers they share.

A dataset folder from the wild holds more than images and annotations: hidden files (``.git``, macOS
``._x.jpg``), names that are not UTF-8, links that loop or point nowhere. One rule for all formats:

- each folder is listed once (``os.scandir``, cached), so a reader never globs or stats per file;
- a name that is not UTF-8, or a link that points nowhere or loops, is reported as ``bad_name``
  (once, relative to ROOT) and is no file;
- a walk (:meth:`FileIndex.walk`) follows links to folders but enters each real folder once, so a
  link to a parent ends (reported), and it passes over hidden names: nobody annotates them. A name
  that an annotation states (a CSV row, a COCO ``file_name``) is looked up as written, hidden or not.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from petloc.data.records import DataReport, Labelled

Link = Literal["hardlink", "symlink", "copy"]
LINKS: tuple[Link, ...] = ("hardlink", "symlink", "copy")

# A Windows absolute path (``C:/...`` once ``\\`` is read as ``/``), written on an annotator's machine.
WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:/")


def is_absolute(name: str) -> bool:
    """Whether a file name as an annotation writes it (``/`` separators) is absolute, POSIX or Windows."""
    return posixpath.isabs(name) or WINDOWS_DRIVE.match(name) is not None


def local_name(name: str) -> str:
    """Where a name that :meth:`FileIndex.find` did not find is reported missing: an absolute
    name's last part, else the name."""
    return posixpath.basename(name) if is_absolute(name) else name


def clean_name(raw: str) -> str:
    """A file name as an annotation writes it, trimmed, with Windows separators as ``/``."""
    return raw.strip().replace("\\", "/")


def file_names(ids: Sequence[str], paths: Sequence[Path]) -> list[str]:
    """Each image's file name in a written set: its own, unless another image has the same stem
    (``train/a.jpg``, ``valid/a.jpg``); then its id with ``/`` as ``__`` (``train__a.jpg``)."""
    repeated = {stem for stem, n in Counter(p.stem for p in paths).items() if n > 1}
    return [
        i.replace("/", "__") + p.suffix if p.stem in repeated else p.name
        for i, p in zip(ids, paths, strict=True)
    ]


def place_image(image: Labelled, folder: Path, link: Link) -> str:
    """Put the image's file into ``folder`` under :attr:`Labelled.name` (a hard link falls back to a
    copy across file systems; a symbolic link points at the resolved file); returns the name."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / image.name
    if not target.exists() and not target.is_symlink():
        if link == "symlink":
            target.symlink_to(image.path.resolve())
            return target.name
        if link == "hardlink":
            try:
                os.link(image.path, target)
                return target.name
            except OSError:
                pass
        shutil.copy2(image.path, target)
    return target.name


def image_id(rel: str) -> str:
    """The id of an image from its path relative to ROOT (``/`` separators): the path without its
    suffix, so ids stay unique across folders (``train/a`` and ``valid/a``)."""
    return posixpath.splitext(rel)[0]


@dataclass
class Listing:
    """One folder's usable entries: file name -> full path, and the names of its subfolders."""

    files: dict[str, str] = field(default_factory=dict)
    folders: list[str] = field(default_factory=list)
    error: str | None = None  # why the folder could not be listed


class FileIndex:
    """The folders of one dataset ROOT, each listed once; bad names go to ``report`` (module doc)."""

    def __init__(self, root: Path, report: DataReport) -> None:
        self.root = str(root)
        self.report = report
        self._listings: dict[str, Listing] = {}

    def rel(self, path: str | Path) -> str:
        """``path`` relative to ROOT with ``/`` separators; as given when outside ROOT."""
        rel = os.path.relpath(path, self.root)
        return str(path) if rel.startswith("..") else rel.replace(os.sep, "/")

    def listing(self, folder: str | Path) -> Listing:
        """The entries of ``folder`` (an empty listing when it cannot be listed), sorted by name."""
        key = os.path.normpath(folder)
        found = self._listings.get(key)
        if found is not None:
            return found
        found = self._listings[key] = Listing()
        try:
            with os.scandir(key) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            found.error = exc.strerror or str(exc)
            return found
        except ValueError:  # a NUL in a name an annotation wrote: no such folder
            return found
        for entry in entries:
            try:
                entry.name.encode("utf-8")
            except UnicodeEncodeError:
                rel = os.fsencode(self.rel(entry.path))
                self.report.add("bad_name", repr(rel), "not UTF-8: rename it to a UTF-8 name")
                continue
            try:
                is_dir = entry.is_dir()  # follows links
                if not is_dir and entry.is_symlink():
                    os.stat(entry.path)  # raises on a link that loops or points nowhere
            except OSError as exc:
                self.report.add("bad_name", self.rel(entry.path), f"{exc.strerror or exc}")
                continue
            if is_dir:
                found.folders.append(entry.name)
            elif entry.is_file():
                found.files[entry.name] = entry.path
        return found

    def find(self, name: str, folders: Sequence[str | Path]) -> tuple[str, str] | None:
        """(folder, name) for the first of ``folders`` that holds ``name`` as written (``/``
        separators); a name written as an absolute path (an annotator's machine, POSIX or Windows) is
        itself where it exists, else its last part is looked up. None: nowhere."""
        for candidate in [name, posixpath.basename(name)] if is_absolute(name) else [name]:
            sub, leaf = posixpath.split(candidate)
            for folder in folders:
                if self.contains(os.path.join(folder, sub), leaf):
                    return str(folder), candidate
        return None

    def contains(self, folder: str | Path, name: str) -> bool:
        """Whether ``name`` is a file directly in ``folder`` (one listing per folder, not a stat per name)."""
        return name in self.listing(folder).files

    def files(self, folder: str | Path, suffixes: tuple[str, ...]) -> list[Path]:
        """The files directly in ``folder`` whose (lower-case) suffix is one of ``suffixes``, not hidden."""
        return [
            Path(path)
            for name, path in self.listing(folder).files.items()
            if not name.startswith(".") and name.lower().endswith(suffixes)
        ]

    def subfolders(self, folder: str | Path) -> list[Path]:
        """The folders directly in ``folder``, not hidden."""
        return [Path(folder, n) for n in self.listing(folder).folders if not n.startswith(".")]

    def walk(
        self, folder: str | Path | None = None, depth: int | None = None
    ) -> Iterator[tuple[str, Listing]]:
        """(folder relative to ROOT, ``""`` for ROOT; its listing) for ``folder`` (ROOT) and every
        folder below it (at most ``depth`` levels; None: all), depth first in name order, hidden
        ones passed over, each real folder once. Lazy: a caller that stops early lists no more."""
        seen: set[tuple[int, int]] = set()
        stack = [(os.path.normpath(folder if folder is not None else self.root), 0)]
        while stack:
            path, level = stack.pop()
            rel = self.rel(path)
            rel = "" if rel == "." else rel
            try:
                st = os.stat(path)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                why = "a link to a folder listed already (a loop or a copy): skipped"
                self.report.add("bad_name", rel, why)
                continue
            seen.add((st.st_dev, st.st_ino))
            listing = self.listing(path)
            if listing.error is not None:
                self.report.add("bad_name", rel or ".", f"folder cannot be listed: {listing.error}")
            visible = Listing(
                {n: p for n, p in listing.files.items() if not n.startswith(".")},
                [n for n in listing.folders if not n.startswith(".")],
            )
            yield rel, visible
            if depth is None or level < depth:
                stack.extend((os.path.join(path, n), level + 1) for n in reversed(visible.folders))
