"""``python -m reallymuted.artifact``: ``pack`` a study, or ``verify`` an archive by replay
(``make artifact``, ``make verify-artifact``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from reallymuted.artifact.common import ArtifactError, default_repo
from reallymuted.artifact.pack import pack
from reallymuted.artifact.verify import verify


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reallymuted.artifact",
        description="Pack a study for artifact evaluation, or verify an archive by replay.",
    )
    parser.add_argument("--repo", type=Path, default=None, help="the checkout (default: this one)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="pack results/ with raw evidence and provenance")
    p.add_argument("--workdir", type=Path, default=Path.cwd(), help="where the study ran")
    p.add_argument("--configfile", type=Path, nargs="*", default=[], help="as given to snakemake")
    p.add_argument("--out", type=Path, default=Path("dist"), help="directory of the archive")
    p.add_argument("--no-check", action="store_true", help="pack even if outputs are stale")
    p.add_argument(
        "--with-reference",
        action="store_true",
        help="also pack the authors' released data (unlicensed: for private archives only)",
    )
    v = sub.add_parser("verify", help="rebuild every output from an archive's raw evidence")
    v.add_argument("archive", type=Path)
    v.add_argument("--workdir", type=Path, default=None, help="default: a new temporary dir")
    v.add_argument("--cores", default="all")
    v.add_argument("--pixel-tolerance", type=int, default=0, help="0-255, PNG only (default 0)")
    args = parser.parse_args(argv)
    repo = (args.repo or default_repo()).resolve()
    try:
        if args.command == "pack":
            archive = pack(
                repo,
                args.workdir,
                args.configfile,
                args.out,
                check=not args.no_check,
                with_reference=args.with_reference,
            )
            size = archive.stat().st_size / 1e6
            print(f"artifact: {archive} ({size:.1f} MB)")
            print(f"verify it with: make verify-artifact ARCHIVE={archive}")
            return 0
        if args.command == "verify":
            result = verify(args.archive, repo, args.workdir, args.cores, args.pixel_tolerance)
            text = result.summary()
            Path(result.workdir, "verify-report.md").write_text(text)
            print(text, end="")
            print(f"(report: {Path(result.workdir, 'verify-report.md')})")
            return 0 if result.ok else 1
    except ArtifactError as exc:
        print(f"artifact: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
