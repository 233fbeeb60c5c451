"""Download, verify and extract The Oxford-IIIT Pet Dataset (Parkhi et al., CVPR 2012).

The two official archives are large (about 800 MB together) and the server is a university web site,
so a download must survive a dropped connection: bytes go to ``ROOT/downloads/<name>.part`` and a rerun
resumes with an HTTP ``Range`` request instead of starting over. An archive gets its final name only
once it is complete *and* its md5 matches, so a final name always means a verified file. Nothing is
extracted until every archive is verified, so a failed run never leaves a half-populated ``ROOT`` that
a later training run would silently accept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tarfile
from collections.abc import Mapping
from http.client import HTTPException, HTTPResponse
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from urllib.error import HTTPError
from urllib.request import Request, urlopen

from tqdm import tqdm

__all__ = ["OXFORD_PETS_ARCHIVES", "OXFORD_PETS_BASE_URL", "DownloadError", "download_oxford_pets"]

log = logging.getLogger(__name__)


def calculate_md5(path: Path) -> str:
    """md5 of a file read in chunks (hashlib; importing torchvision for this costs seconds)."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


OXFORD_PETS_BASE_URL = "https://www.robots.ox.ac.uk/~vgg/data/pets/data/"
# Read-only so that a caller cannot change the md5s every later call trusts.
OXFORD_PETS_ARCHIVES: Mapping[str, str] = MappingProxyType(
    {
        "images.tar.gz": "5c4f3ee8e5d25df40f4fd59a7f44e54c",
        "annotations.tar.gz": "95a8c909bbe2e81eed6a22bccdf3f68f",
    }
)

_CHUNK_BYTES = 1 << 20
# Some servers reject urllib's default agent; naming ourselves is also the polite thing to do.
_USER_AGENT = "petloc-data-download (python urllib)"
# "bytes 100-199/1000" (a 206 answer) or "bytes */1000" (a 416 answer); the total may be "*".
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*$", re.IGNORECASE)
_RETRY_HINT = "Run `petloc-data download` again: it resumes from the partial file."


class DownloadError(RuntimeError):
    """A download, checksum or extraction failure, with a message that says how to fix it."""


def download_oxford_pets(
    root: Path,
    base_url: str = OXFORD_PETS_BASE_URL,
    archives: Mapping[str, str] = OXFORD_PETS_ARCHIVES,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Make ``root`` hold the extracted dataset (``images/``, ``annotations/``) and return it.

    Each archive (file name -> expected md5) is fetched from ``base_url`` unless a marker in
    ``root/downloads`` says it was already verified and extracted and what it extracted is still there;
    a verified archive kept from an earlier run is re-extracted without touching the network. The
    archives stay in ``root/downloads`` after extraction; deleting them frees space and does not make a
    later call download again. ``timeout`` is per socket operation, not for a whole archive.

    Raises:
        DownloadError: on a network error (the partial file is kept, so rerunning resumes), an md5
            mismatch (the corrupt file is deleted and nothing is extracted) or an unreadable archive.
    """
    root = Path(root)
    downloads = root / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    to_extract: list[tuple[Path, Path, str]] = []
    for name, md5 in archives.items():
        archive, marker = downloads / name, downloads / f"{name}.extracted.json"
        if _already_extracted(marker, md5, root):
            log.info("%s: already downloaded, verified and extracted", name)
            continue
        if archive.is_file() and calculate_md5(archive) != md5:
            # Only a verified file is ever renamed to this name, so it was changed or truncated since.
            log.warning("%s: does not match its md5 any more; downloading it again", archive)
            archive.unlink()
        if not archive.is_file():
            _fetch_verified(f"{base_url.rstrip('/')}/{name}", archive, md5, progress, timeout)
        to_extract.append((archive, marker, md5))
    for archive, marker, md5 in to_extract:
        top_level = _extract(archive, root)
        marker.write_text(json.dumps({"md5": md5, "extracted": top_level}))
    return root


def _already_extracted(marker: Path, md5: str, root: Path) -> bool:
    """Whether ``marker`` records this md5 and the entries it extracted still exist.

    Checking the entries means that deleting ``images/`` by hand repairs itself on the next call
    instead of leaving a marker that claims a dataset which is gone.
    """
    try:
        record = json.loads(marker.read_text())
        return record["md5"] == md5 and all((root / entry).exists() for entry in record["extracted"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _fetch_verified(url: str, archive: Path, md5: str, progress: bool, timeout: float) -> None:
    """Download ``url`` to ``archive`` through its ``.part`` file, renaming it only once its md5 matches."""
    part = archive.with_name(f"{archive.name}.part")
    try:
        _download(url, part, progress, timeout)
    except (OSError, HTTPException) as error:  # HTTPError and URLError are OSErrors too
        raise DownloadError(f"Could not download {url}: {error}. {_RETRY_HINT}") from error
    actual = calculate_md5(part)
    if actual != md5:
        part.unlink()
        raise DownloadError(
            f"Checksum mismatch for {archive.name} downloaded from {url}: expected md5 {md5}, "
            f"got {actual}. The corrupt file was deleted and nothing was extracted. Run "
            "`petloc-data download` again to retry; if it fails the same way, check the URL "
            "(a proxy or a moved file may serve something else)."
        )
    part.replace(archive)


def _download(url: str, part: Path, progress: bool, timeout: float) -> None:
    """Complete ``part`` with the body of ``url``, resuming from its current size when it exists.

    A 416 answer to a resume means the range starts at or past the end: the part is either already
    complete (its size equals the total the server reports) or longer than the file, and then it
    cannot be trusted and the download restarts from zero.
    """
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, offset, timeout)
    except HTTPError as error:
        if error.code != 416 or offset == 0:
            raise
        total = _parse_content_range(error.headers.get("Content-Range"))[1]
        error.close()
        if total == offset:
            return
        log.warning("%s: partial file larger than the server's file; starting over", part.name)
        part.unlink()
        offset = 0
        response = _open(url, offset, timeout)
    with response:
        _write_body(url, response, part, offset, progress)


def _open(url: str, offset: int, timeout: float) -> HTTPResponse:
    """Send the GET, asking only for the bytes from ``offset`` on when some are already on disk."""
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urlopen(Request(url, headers=headers), timeout=timeout)


def _write_body(url: str, response: HTTPResponse, part: Path, offset: int, progress: bool) -> None:
    """Append a 206 body to ``part`` or, for any other answer, replace ``part`` with the whole body.

    A server that ignores ``Range`` answers 200 with the whole file, which must overwrite the stale
    prefix rather than follow it. The byte count is checked against the expected total because
    ``http.client`` returns a short body without error when the connection drops early.
    """
    if response.status == 206:
        start = _parse_content_range(response.headers.get("Content-Range"))[0]
        if start != offset:
            part.unlink()
            raise DownloadError(
                f"{url} answered a resume from byte {offset} with bytes from {start}; the partial file "
                "was deleted. Run `petloc-data download` again to start this file over."
            )
        mode = "ab"
    else:
        offset, mode = 0, "wb"
    total = None if response.length is None else offset + response.length
    received = offset
    with (
        part.open(mode) as out,
        tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=part.name.removesuffix(".part"),
            disable=not progress,
        ) as bar,
    ):
        while chunk := response.read(_CHUNK_BYTES):
            out.write(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    if total is not None and received != total:
        raise DownloadError(f"Connection to {url} closed after {received} of {total} bytes. {_RETRY_HINT}")


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """Return (first byte, total size) of a ``Content-Range`` header, None for what it does not state."""
    match = _CONTENT_RANGE.match(value or "")
    if match is None:
        return None, None
    start, total = match.groups()
    return (None if start is None else int(start)), (None if total == "*" else int(total))


def _extract(archive: Path, root: Path) -> list[str]:
    """Extract ``archive`` into ``root`` and return the top-level entries it created.

    The ``data`` filter refuses absolute paths, ``..`` components, links leaving ``root`` and device
    files, so a tampered archive cannot write outside ``root``.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(root, filter="data")
            return sorted({parts[0] for m in tar.getmembers() if (parts := PurePosixPath(m.name).parts)})
    except (tarfile.TarError, OSError) as error:
        raise DownloadError(
            f"Could not extract {archive}: {error}. Delete it and run `petloc-data download` again."
        ) from error
