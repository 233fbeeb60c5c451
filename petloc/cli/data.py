"""``petloc-data``: make the synthetic set, download the real one, and check a dataset folder.

Usage::

    petloc-data synth OUT [--n N] [--seed S] [--decode]
    petloc-data download ROOT [--base-url URL] [--decode]
    petloc-data check ROOT [--decode]

Every subcommand ends with the check: it prints the reader's report (the counts and names of every
file that was fixed up or left out) and exits 0 when usable boxed images remain, 1 with the reason
when none do. ``--decode`` also decodes every usable image, which finds truncated and corrupt files
that a header probe cannot see; training does the same decode (the decode cache), so this is the
way to learn about such files before a run rather than at its start.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from petloc.data.cache import build_decode_cache
from petloc.data.oxford import DatasetError, read_oxford_pets
from petloc.data.synthetic import generate_synthetic_pets

# Side of the throw-away cache that `--decode` builds. A JPEG is still read to its last byte at a
# reduced DCT scale, so truncation and corruption are found while the cache stays small.
DECODE_CHECK_SIDE = 64


def check(root: Path, decode: bool = False) -> int:
    """Print the dataset report; 0 when usable boxed images remain, else 1 with the reason on stderr."""
    try:
        pets = read_oxford_pets(root)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if decode:
        with tempfile.TemporaryDirectory(prefix="petloc-decode-check-") as tmp:
            usable = build_decode_cache(pets.records, DECODE_CHECK_SIDE, Path(tmp), pets.report)[1]
        if not usable:
            print(f"error: no image of {root} decodes:\n{pets.report.format()}", file=sys.stderr)
            return 1
    print(pets.report.format())
    return 0


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
    synth.add_argument("out", type=Path, help="folder to write (Oxford layout)")
    synth.add_argument("--n", type=int, default=1200, help="number of images (default 1200)")
    synth.add_argument("--seed", type=int, default=0, help="generation seed (default 0)")

    download = sub.add_parser(
        "download", parents=[decode], help="download and verify the Oxford-IIIT Pet Dataset, then check it"
    )
    download.add_argument("root", type=Path, help="folder to download and extract into")
    download.add_argument("--base-url", help="where the two archives are (default: the official site)")

    check_ = sub.add_parser("check", parents=[decode], help="validate a dataset folder and report bad files")
    check_.add_argument("root", type=Path, help="folder in the Oxford layout")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; the return value is the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "synth":
        try:
            root = generate_synthetic_pets(args.out, n=args.n, seed=args.seed)
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
    return check(root, decode=args.decode)


if __name__ == "__main__":
    sys.exit(main())
