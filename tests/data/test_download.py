"""Tests for petloc.data.download against a local HTTP server that we control.

The server is our own small handler (not http.server's file handler) because the behaviour under test
is how the client reacts to Range answers: honoured (206), ignored (200), unsatisfiable (416), wrong
(206 at another offset) and a connection that drops mid-body. It records every request so the tests
can see what the client asked for. Oracles are the bytes we packed and hashlib, never the module.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from petloc.data.download import DownloadError, download_oxford_pets

PREFIX = "/pets/"


@dataclass(frozen=True)
class Archives:
    """The served folder, its archives (name -> bytes) and what they extract to (relative path -> bytes)."""

    directory: Path
    blobs: dict[str, bytes]
    files: dict[str, bytes]

    def md5s(self) -> dict[str, str]:
        return {name: hashlib.md5(blob).hexdigest() for name, blob in self.blobs.items()}


@dataclass
class ServerState:
    """What the handler serves and how it misbehaves; ``requests`` is (path, Range header) per GET."""

    directory: Path
    honour_range: bool = True
    truncate_at: int | None = None
    shift_range: int = 0
    requests: list[tuple[str, str | None]] = field(default_factory=list)

    def ranges_for(self, name: str) -> list[str | None]:
        return [rng for path, rng in self.requests if path == PREFIX + name]


class _Server(ThreadingHTTPServer):
    state: ServerState


class _RangeHandler(BaseHTTPRequestHandler):
    """Serves ``state.directory`` under PREFIX with ``bytes=N-`` Range support."""

    server: _Server

    def do_GET(self) -> None:
        state = self.server.state
        range_header = self.headers.get("Range")
        state.requests.append((self.path, range_header))
        path = state.directory / self.path.removeprefix(PREFIX)
        if not self.path.startswith(PREFIX) or not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        status, start = 200, 0
        if range_header and state.honour_range:
            match = re.fullmatch(r"bytes=(\d+)-", range_header)
            assert match is not None, range_header
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        if status == 206:
            first = start + state.shift_range
            self.send_header("Content-Range", f"bytes {first}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body if state.truncate_at is None else body[: state.truncate_at])

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output quiet."""


def _jpeg(seed: int, size: int = 48) -> bytes:
    """A noise JPEG: incompressible, so the archives are big enough to split for resume tests."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _tar_gz(path: Path, files: dict[str, bytes]) -> bytes:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path.read_bytes()


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> Archives:
    """Two small archives in the Oxford layout, written to a folder the server serves."""
    xml = (
        b"<annotation><filename>Abyssinian_1.jpg</filename><size><width>48</width><height>48</height>"
        b"<depth>3</depth></size><object><name>cat</name><bndbox><xmin>5</xmin><ymin>6</ymin>"
        b"<xmax>40</xmax><ymax>41</ymax></bndbox></object></annotation>\n"
    )
    images = {"images/Abyssinian_1.jpg": _jpeg(1), "images/beagle_2.jpg": _jpeg(2)}
    annotations = {
        "annotations/list.txt": b"#Image CLASS-ID SPECIES BREED-ID\nAbyssinian_1 1 1 1\nbeagle_2 4 2 1\n",
        "annotations/trainval.txt": b"Abyssinian_1 1 1 1\n",
        "annotations/test.txt": b"beagle_2 4 2 1\n",
        "annotations/xmls/Abyssinian_1.xml": xml,
    }
    directory = tmp_path_factory.mktemp("served")
    blobs = {
        "images.tar.gz": _tar_gz(directory / "images.tar.gz", images),
        "annotations.tar.gz": _tar_gz(directory / "annotations.tar.gz", annotations),
    }
    return Archives(directory=directory, blobs=blobs, files={**images, **annotations})


@pytest.fixture
def server(archives: Archives, request: pytest.FixtureRequest) -> tuple[str, ServerState]:
    """A threaded server on 127.0.0.1 (any free port); yields its base URL and its state."""
    httpd = _Server(("127.0.0.1", 0), _RangeHandler)
    httpd.state = ServerState(directory=archives.directory)
    # A short poll interval keeps shutdown() (and so each test) fast.
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)

    request.addfinalizer(stop)
    # No trailing slash on purpose: the client must join base URL and name itself.
    return f"http://127.0.0.1:{httpd.server_address[1]}{PREFIX.rstrip('/')}", httpd.state


def _fetch(root: Path, base_url: str, archives: Archives, **kwargs: object) -> Path:
    return download_oxford_pets(root, base_url=base_url, archives=archives.md5s(), progress=False, **kwargs)


def _assert_dataset(root: Path, archives: Archives) -> None:
    """``root`` holds exactly the packed files under images/ and annotations/, byte for byte."""
    extracted = {
        path.relative_to(root).as_posix(): path.read_bytes()
        for top in ("images", "annotations")
        for path in (root / top).rglob("*")
        if path.is_file()
    }
    assert extracted == archives.files


def _write_part(root: Path, name: str, data: bytes) -> Path:
    part = root / "downloads" / f"{name}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data)
    return part


def test_downloads_verifies_and_extracts_the_oxford_layout(
    tmp_path: Path, server: tuple[str, ServerState], archives: Archives, capsys: pytest.CaptureFixture[str]
) -> None:
    base_url, state = server
    root = tmp_path / "pets"
    result = download_oxford_pets(root, base_url=base_url, archives=archives.md5s(), progress=True)
    assert result == root
    _assert_dataset(root, archives)
    assert sorted(state.requests) == [(PREFIX + "annotations.tar.gz", None), (PREFIX + "images.tar.gz", None)]
    for name, blob in archives.blobs.items():
        assert (root / "downloads" / name).read_bytes() == blob
    assert not list((root / "downloads").glob("*.part"))
    assert "images.tar.gz" in capsys.readouterr().err  # the progress bar is labelled by archive


def test_resumes_a_partial_file_with_a_range_request(
    tmp_path: Path, server: tuple[str, ServerState], archives: Archives
) -> None:
    base_url, state = server
    blob = archives.blobs["images.tar.gz"]
    k = len(blob) // 3
    _write_part(tmp_path, "images.tar.gz", blob[:k])
    _fetch(tmp_path, base_url, archives)
    assert state.ranges_for("images.tar.gz") == [f"bytes={k}-"]
    assert state.ranges_for("annotations.tar.gz") == [None]
    assert (
        hashlib.md5((tmp_path / "downloads" / "images.tar.gz").read_bytes()).hexdigest()
        == (archives.md5s()["images.tar.gz"])
    )
    _assert_dataset(tmp_path, archives)


def test_dropped_connection_keeps_the_part_and_a_rerun_resumes(
    tmp_path: Path, server: tuple[str, ServerState], archives: Archives
) -> None:
    base_url, state = server
    k = len(archives.blobs["images.tar.gz"]) // 2
    state.truncate_at = k
    with pytest.raises(DownloadError) as caught:
        _fetch(tmp_path, base_url, archives)
    message = str(caught.value)
    assert f"{base_url}/images.tar.gz" in message
    assert "petloc-data download" in message
    assert (tmp_path / "downloads" / "images.tar.gz.part").stat().st_size == k
    assert not (tmp_path / "downloads" / "images.tar.gz").exists()
    assert not (tmp_path / "images").exists()

    state.truncate_at = None
    _fetch(tmp_path, base_url, archives)
    assert state.ranges_for("images.tar.gz") == [None, f"bytes={k}-"]
    _assert_dataset(tmp_path, archives)


def test_checksum_mismatch_raises_deletes_the_file_and_extracts_nothing(
    tmp_path: Path, server: tuple[str, ServerState], archives: Archives
) -> None:
    base_url, _ = server
    wrong = "0123456789abcdef0123456789abcdef"
    actual = archives.md5s()["annotations.tar.gz"]
    expected = {**archives.md5s(), "annotations.tar.gz": wrong}
    with pytest.raises(DownloadError) as caught:
        download_oxford_pets(tmp_path, base_url=base_url, archives=expected, progress=False)
    message = str(caught.value)
    assert "annotations.tar.gz" in message
    assert wrong in message
    assert actual in message
    assert not (tmp_path / "images").exists()
    assert not (tmp_path / "annotations").exists()
    assert not (tmp_path / "downloads" / "annotations.tar.gz").exists()
    assert not (tmp_path / "downloads" / "annotations.tar.gz.part").exists()


def test_second_call_sends_no_request(
    tmp_path: Path, server: tuple[str, ServerState], archives: Archives
) -> None:
    base_url, state = server
    _fetch(tmp_path, base_url, archives)
    assert len(state.requests) == 2
    state.requests.clear()
    assert _fetch(tmp_path, base_url, archives) == tmp_path
    assert state.requests == []
    # The markers alone must suffice: the archives may be deleted to free space.
    for name in archives.blobs:
        (tmp_path / "downloads" / name).unlink()
    _fetch(tmp_path, base_url, archives)
    assert state.requests == []
    _assert_dataset(tmp_path, archives)


def test_deleted_folder_is_restored_from_the_kept_archive_without_network(
    tmp_path: Path, server: tuple[str, ServerState], archives: Archives
) -> None:
    base_url, state = server
    _fetch(tmp_path, base_url, archives)
    for path in sorted((tmp_path / "images").iterdir()):
        path.unlink()
    (tmp_path / "images").rmdir()
    state.requests.clear()
    _fetch(tmp_path, base_url, archives)
    assert state.requests == []
    _assert_dataset(tmp_path, archives)


def test_corrupted_kept_archive_is_downloaded_again(
    tmp_path: Path, server: tuple[str, ServerState], archives: Archives
) -> None:
    base_url, state = server
    _fetch(tmp_path, base_url, archives)
    (tmp_path / "downloads" / "images.tar.gz.extracted.json").unlink()
    (tmp_path / "downloads" / "images.tar.gz").write_bytes(b"not the archive")
    state.requests.clear()
    _fetch(tmp_path, base_url, archives)
    assert state.requests == [(PREFIX + "images.tar.gz", None)]
    assert (tmp_path / "downloads" / "images.tar.gz").read_bytes() == archives.blobs["images.tar.gz"]


def test_server_ignoring_range_restarts_cleanly(
    tmp_path: Path, server: tuple[str, ServerState], archives: Archives
) -> None:
    base_url, state = server
    state.honour_range = False
    k = len(archives.blobs["images.tar.gz"]) // 2
    # A prefix that is not the file's: appending the full 200 body to it would fail the md5.
    _write_part(tmp_path, "images.tar.gz", b"\xff" * k)
    _fetch(tmp_path, base_url, archives)
    assert state.ranges_for("images.tar.gz") == [f"bytes={k}-"]
    assert (tmp_path / "downloads" / "images.tar.gz").read_bytes() == archives.blobs["images.tar.gz"]
    _assert_dataset(tmp_path, archives)


def test_416_with_a_complete_part_needs_no_second_request(
    tmp_path: Path, server: tuple[str, ServerState], archives: Archives
) -> None:
    base_url, state = server
    blob = archives.blobs["images.tar.gz"]
    _write_part(tmp_path, "images.tar.gz", blob)
    _fetch(tmp_path, base_url, archives)
    assert state.ranges_for("images.tar.gz") == [f"bytes={len(blob)}-"]
    _assert_dataset(tmp_path, archives)


def test_416_with_an_oversized_part_starts_over(
    tmp_path: Path, server: tuple[str, ServerState], archives: Archives
) -> None:
    base_url, state = server
    blob = archives.blobs["images.tar.gz"]
    _write_part(tmp_path, "images.tar.gz", blob + b"junk")
    _fetch(tmp_path, base_url, archives)
    assert state.ranges_for("images.tar.gz") == [f"bytes={len(blob) + 4}-", None]
    _assert_dataset(tmp_path, archives)


def test_range_answer_at_the_wrong_offset_drops_the_part(
    tmp_path: Path, server: tuple[str, ServerState], archives: Archives
) -> None:
    base_url, state = server
    blob = archives.blobs["images.tar.gz"]
    k = len(blob) // 2
    part = _write_part(tmp_path, "images.tar.gz", blob[:k])
    state.shift_range = 1
    with pytest.raises(DownloadError, match="petloc-data download"):
        _fetch(tmp_path, base_url, archives)
    assert not part.exists()
    assert not (tmp_path / "images").exists()

    state.shift_range = 0
    _fetch(tmp_path, base_url, archives)
    assert state.ranges_for("images.tar.gz") == [f"bytes={k}-", None]
    _assert_dataset(tmp_path, archives)


def test_http_error_names_the_url_and_the_retry_command(
    tmp_path: Path, server: tuple[str, ServerState]
) -> None:
    base_url, _ = server
    with pytest.raises(DownloadError) as caught:
        download_oxford_pets(
            tmp_path, base_url=base_url, archives={"missing.tar.gz": "0" * 32}, progress=False
        )
    message = str(caught.value)
    assert f"{base_url}/missing.tar.gz" in message
    assert "404" in message
    assert "petloc-data download" in message


def test_archive_escaping_the_root_is_refused(tmp_path: Path, server: tuple[str, ServerState]) -> None:
    base_url, state = server
    state.directory = tmp_path / "served"
    state.directory.mkdir()
    blob = _tar_gz(state.directory / "evil.tar.gz", {"images/ok.jpg": b"x", "../escaped.txt": b"pwned"})
    root = tmp_path / "root"
    with pytest.raises(DownloadError, match=r"Could not extract .*evil\.tar\.gz"):
        download_oxford_pets(
            root, base_url=base_url, archives={"evil.tar.gz": hashlib.md5(blob).hexdigest()}, progress=False
        )
    assert not (tmp_path / "escaped.txt").exists()
    assert not (root / "downloads" / "evil.tar.gz.extracted.json").exists()
