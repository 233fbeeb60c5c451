"""``petloc-data``: make the synthetic set, download the real one, check a dataset folder, convert one.

Usage (the format names are the registry's, :mod:`petloc.data.formats`)::

    petloc-data synth OUT [--format FORMAT] [--n N] [--seed S] [--decode]
    petloc-data download ROOT [--base-url URL] [--decode]
    petloc-data check ROOT [--format auto|FORMAT] [--decode]
    petloc-data convert SRC OUT --format FORMAT [--from auto|FORMAT] [--images hardlink|symlink|copy]

``convert`` prints the source's report and what the target has no place for (``not_carried``).
Every subcommand ends with the check (``convert``: of OUT): it names the format (detected unless
given), prints the reader's report (the counts and names of every file that was fixed up or left
out) and exits 0 when usable boxed images remain, 1 with the reason when none do. ``--decode`` also
decodes every usable image, which finds truncated and corrupt files that a header probe cannot see;
training does the same decode (the decode cache), so this is the way to learn about such files
before a run rather than at its start.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from petloc.data.cache import build_decode_cache
from petloc.data.convert import convert
from petloc.data.files import LINKS
from petloc.data.formats import FORMATS, detect_format, read_dataset, writable
from petloc.data.records import DatasetError
from petloc.data.synthetic import synthesize

# Side of the throw-away cache that `--decode` builds. A JPEG is still read to its last byte at a
# reduced DCT scale, so truncation and corruption are found while the cache stays small.
DECODE_CHECK_SIDE = 64


def check(root: Path, format: str = "auto", decode: bool = False) -> int:
    """Print the format and the dataset report; 0 when usable boxed images remain, else 1 with the
    reason on stderr."""
    try:
        name = detect_format(root) if format == "auto" else format
        print(f"format: {name}" + (" (detected)" if format == "auto" else ""))
        dataset = read_dataset(root, name)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if decode:
        with tempfile.TemporaryDirectory(prefix="petloc-decode-check-") as tmp:
            usable = build_decode_cache(dataset.records, DECODE_CHECK_SIDE, Path(tmp), dataset.report)[1]
        if not usable:
            print(f"error: no image of {root} decodes:\n{dataset.report.format_text()}", file=sys.stderr)
            return 1
    print(dataset.report.format_text())
    sets = [
        f"{key} ({len(names)}: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''})"
        for key, names in dataset.label_sets.items()
    ]
    print(f"label sets: {'; '.join(sets) or 'none (box only)'}")
    return 0


def convert_command(source: Path, out: Path, format: str, source_format: str, images: str) -> int:
    """Print the source's report and what was not carried over; 1 when nothing could be written."""
    try:
        dataset, lost = convert(source, out, format, images, source_format)  # type: ignore[arg-type]
    except (DatasetError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"read: {dataset.report.format_text()}")
    print(f"wrote: {lost.format_text()}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="petloc-data",
        description="Make the synthetic set, download the real one, check a dataset folder, convert one.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    decode = argparse.ArgumentParser(add_help=False)
    decode.add_argument(
        "--decode",
        action="store_true",
        help="also decode every usable image, to find truncated or corrupt files (slower)",
    )

    synth = sub.add_parser("synth", parents=[decode], help="generate the synthetic set, then check it")
    synth.add_argument("out", type=Path, help="folder to write")
    synth.add_argument(
        "--format",
        choices=list(FORMATS),
        help="format to write (default: the generator's own, Oxford-IIIT Pet's)",
    )
    synth.add_argument("--n", type=int, default=1200, help="number of images (default 1200)")
    synth.add_argument("--seed", type=int, default=0, help="generation seed (default 0)")

    download = sub.add_parser(
        "download", parents=[decode], help="download and verify the Oxford-IIIT Pet Dataset, then check it"
    )
    download.add_argument("root", type=Path, help="folder to download and extract into")
    download.add_argument("--base-url", help="where the two archives are (default: the official site)")

    check_ = sub.add_parser("check", parents=[decode], help="validate a dataset folder and report bad files")
    check_.add_argument("root", type=Path, help="dataset folder")
    check_.add_argument(
        "--format", default="auto", choices=["auto", *FORMATS], help="the folder's format (default: detect)"
    )

    convert_ = sub.add_parser(
        "convert", parents=[decode], help="write a dataset in another format, then check it"
    )
    convert_.add_argument("source", type=Path, help="dataset folder to read")
    convert_.add_argument("out", type=Path, help="new or empty folder to write")
    convert_.add_argument("--format", required=True, choices=writable(), help="the format to write")
    convert_.add_argument(
        "--from",
        dest="source_format",
        default="auto",
        choices=["auto", *FORMATS],
        help="SRC's format (default: detect)",
    )
    convert_.add_argument(
        "--images",
        default="hardlink",
        choices=LINKS,
        help="how OUT gets the images: hardlink (default; a copy across file systems), symlink or copy",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; the return value is the exit status."""
    args = _parser().parse_args(argv)
    fmt = getattr(args, "format", None) or "auto"
    if args.command == "synth":
        try:
            root = synthesize(args.out, args.format, n=args.n, seed=args.seed)
        except (ValueError, FileExistsError) as error:  # bad --n/--seed, or OUT holds something else
            print(f"error: {error}", file=sys.stderr)
            return 1
    elif args.command == "download":
        # Imported here: it pulls in torchvision (seconds of start-up) that `check` does not need.
        from petloc.data.download import DownloadError, download_oxford_pets

        base_url = {} if args.base_url is None else {"base_url": args.base_url}
        try:
            root = download_oxford_pets(args.root, **base_url)
        except DownloadError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    elif args.command == "convert":
        status = convert_command(args.source, args.out, args.format, args.source_format, args.images)
        if status:
            return status
        root = args.out
    else:
        root = args.root
    return check(root, fmt, decode=args.decode)


if __name__ == "__main__":
    sys.exit(main())
