"""Tests for ``petloc-data`` (petloc.cli.data.main): what a user sees and the exit status.

Oracles: the sample README's list of quirks, crafted folders (empty, truncated files) whose report is
known by construction, and the files ``synth`` writes, counted on disk.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from petloc.cli.data import main
from tests.helpers import Pet, good, write_pets


def parse_sections(out: str) -> dict[str, list[str]]:
    """The report as {heading line (indented two spaces): names listed under it (four spaces, '- ')}."""
    sections: dict[str, list[str]] = {}
    heading = ""
    for line in out.splitlines():
        if line.startswith("    - "):
            sections[heading].append(line[6:])
        elif line.startswith("  "):
            heading = line.strip()
            sections[heading] = []
    return sections


@pytest.mark.realdata
def test_check_names_the_sample_quirks_and_succeeds(
    oxford_sample: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", str(oxford_sample)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("format: oxford (detected)\n")
    assert "1034 images, 730 usable boxed images" in out
    assert "label sets: class (37: Abyssinian, american_bulldog, " in out and "species (2: cat, dog)" in out
    expected = {
        "format_mismatch (fixed up, 2)": ["Abyssinian_34.jpg: is GIF", "Abyssinian_5.jpg: is PNG"],
        "color_mode (fixed up, 2)": ["Abyssinian_34.jpg: P", "Abyssinian_5.jpg: RGBA"],
        "multiple_objects (fixed up, 1)": ["Bengal_105.xml: 2 objects, the largest valid one is the box"],
        "not_in_list (left out, 2)": ["Abyssinian_34.jpg", "Abyssinian_82.jpg"],
        "missing_annotation (left out, 4)": [
            f"{stem}.jpg: listed in trainval.txt, no annotations/xmls/{stem}.xml"
            for stem in ("Abyssinian_104", "Bengal_111", "Bengal_175", "american_bulldog_202")
        ],
    }
    sections = parse_sections(out)
    test_line = "298 images in test.txt have no box (as in the original split): not used"
    assert sections.pop(test_line) == []  # a count, not a list of 298 names
    assert {heading.split(":")[0]: names for heading, names in sections.items()} == expected


def test_check_with_decode_reports_a_truncated_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_pets(tmp_path, [*good(), Pet("Bengal_1", size=(200, 150))])
    jpeg = root / "images" / "Bengal_1.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    assert main(["check", str(root)]) == 0
    assert "unreadable_image" not in capsys.readouterr().out  # the header alone looks fine
    assert main(["check", str(root), "--decode"]) == 0
    out = capsys.readouterr().out
    assert "3 images, 2 usable boxed images" in out
    assert "unreadable_image (left out, 1)" in out and "Bengal_1.jpg" in out


def test_check_fails_when_nothing_decodes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_pets(tmp_path, [Pet("Bengal_1", size=(200, 150))])
    jpeg = root / "images" / "Bengal_1.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    assert main(["check", str(root), "--decode"]) == 1
    err = capsys.readouterr().err
    assert "no image of" in err and "unreadable_image" in err


def test_check_fails_clearly_on_an_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"cannot tell the format of {tmp_path}" in captured.err and "--format NAME" in captured.err
    assert main(["check", str(tmp_path), "--format", "oxford"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "format: oxford\n"
    assert (
        "no usable boxed image" in captured.err and f"no image files in {tmp_path / 'images'}" in captured.err
    )
    assert main(["check", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_synth_writes_a_small_set_and_checks_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "synth"
    assert main(["synth", str(out_dir), "--n", "12", "--seed", "1"]) == 0
    images = list((out_dir / "images").glob("*.jpg"))
    xmls = list((out_dir / "annotations" / "xmls").glob("*.xml"))
    assert len(images) == 12
    out = capsys.readouterr().out
    assert f"12 images, {len(xmls)} usable boxed images" in out
    assert "no problems found" in out


def test_synth_rejects_a_bad_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", str(tmp_path / "synth"), "--n", "0"]) == 1
    assert "n must be at least 1" in capsys.readouterr().err


def test_download_failure_is_a_message_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty_server = tmp_path / "server"
    empty_server.mkdir()
    assert main(["download", str(tmp_path / "pets"), "--base-url", empty_server.as_uri()]) == 1
    err = capsys.readouterr().err
    assert "Could not download" in err and "images.tar.gz" in err


def test_no_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "synth" in capsys.readouterr().err
