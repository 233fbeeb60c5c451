"""``petloc-data``: make the synthetic set, download the real one, and check a dataset folder.

Usage::

    petloc-data synth OUT [--format oxford|voc|coco|yolo|csv] [--n N] [--seed S] [--decode]
    petloc-data download ROOT [--base-url URL] [--decode]
    petloc-data check ROOT [--format auto|oxford|voc|coco|yolo|csv] [--decode]

Every subcommand ends with the check: it names the format (detected unless given), prints the
reader's report (the counts and names of every file that was fixed up or left out) and exits 0 when
usable boxed images remain, 1 with the reason when none do. ``--decode`` also decodes every usable
image, which finds truncated and corrupt files that a header probe cannot see; training does the
same decode (the decode cache), so this is the way to learn about such files before a run rather
than at its start.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from petloc.data.cache import build_decode_cache
from petloc.data.formats import FORMATS, detect_format, read_dataset
from petloc.data.records import DatasetError
from petloc.data.synthetic import generate_synthetic_pets
from petloc.data.writers import WRITERS

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


def synth(out: Path, format: str, n: int, seed: int) -> Path:
    """The synthetic set in ``format``: generated in the Oxford layout (the generator's own), then,
    for another format, its boxed images written by :data:`WRITERS` into ``out`` (which must not
    hold anything yet). Class = breed."""
    if format == "oxford":
        return generate_synthetic_pets(out, n=n, seed=seed)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: choose a new folder for the {format} set")
    out.parent.mkdir(parents=True, exist_ok=True)
    # beside OUT, so that images are hard-linked rather than copied
    with tempfile.TemporaryDirectory(prefix=".petloc-synth-", dir=out.parent) as tmp:
        dataset = read_dataset(generate_synthetic_pets(Path(tmp) / "oxford", n=n, seed=seed), "oxford")
        WRITERS[format](dataset.records, dataset.classes, out)
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="petloc-data",
        description="Make the synthetic set, download the real one, and check a dataset folder.",
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
        "--format", default="oxford", choices=["oxford", *WRITERS], help="layout to write (default oxford)"
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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; the return value is the exit status."""
    args = _parser().parse_args(argv)
    fmt = getattr(args, "format", "auto")
    if args.command == "synth":
        try:
            root = synth(args.out, args.format, n=args.n, seed=args.seed)
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
    else:
        root = args.root
    return check(root, fmt, decode=args.decode)


if __name__ == "__main__":
    sys.exit(main())
