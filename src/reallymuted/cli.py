"""The ``reallymuted`` command: study tools a researcher runs by hand on their own files.

Each stage adds one sub-command group: a function ``add_<group>_commands(subparsers)`` that
registers its commands, listed in :data:`COMMAND_GROUPS`. A command is a function taking the
parsed arguments and returning the exit status, so it is testable without a subprocess.

Exit status: 0 success, 2 usage error or unreadable input (argparse's convention), 3 the
command ran but some inputs were bad (e.g. telemetry records that failed to decode).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_PARTIAL = 3

Subparsers = argparse._SubParsersAction  # the type argparse returns from add_subparsers()


def _fail(message: str) -> int:
    print(f"reallymuted: error: {message}", file=sys.stderr)
    return EXIT_USAGE


# ---------------------------------------------------------------------------------------------
# telemetry


def add_telemetry_commands(subparsers: Subparsers) -> None:
    group = subparsers.add_parser(
        "telemetry",
        help="Webex wmequality telemetry records",
        description="Find and decode Webex wmequality telemetry records.",
    )
    commands = group.add_subparsers(dest="command", required=True, metavar="COMMAND")
    decode = commands.add_parser(
        "decode",
        help="decode every record in JSON files, HTTP dumps or logs into one CSV",
        description=(
            "Find every wmequality record in the given files (whole-file JSON, JSON lines, raw "
            "HTTP requests, logs with POST bodies embedded, plain or JSON-escaped) and write one "
            "row per interval: source file and line, wrapper entry index, record timestamp, "
            "interval number, the three gains, the three volumes and the capture packet rate. "
            "Records that do not decode are listed with file, line and reason in the problems "
            "file. Exit status 0: all records decoded; 3: some failed (the others are still "
            "written); 2: bad usage or an unreadable file."
        ),
    )
    decode.add_argument("files", nargs="+", metavar="FILE", help="input file ('-' for stdin)")
    decode.add_argument("-o", "--output", required=True, metavar="OUT.csv", help="rows, as CSV")
    decode.add_argument(
        "--problems",
        metavar="PATH",
        help="warnings and errors, as CSV (default: OUT.problems.csv beside the output)",
    )
    decode.set_defaults(handler=telemetry_decode)


def problems_path(output: str | Path) -> Path:
    """``OUT.csv`` → ``OUT.problems.csv`` (any other name gets ``.problems.csv`` appended)."""
    output = Path(output)
    stem = output.name.removesuffix(".csv")
    return output.with_name(f"{stem}.problems.csv")


def telemetry_decode(args: argparse.Namespace) -> int:
    from reallymuted.analysis import telemetry
    from reallymuted.io import DataError, write_csv

    # pipes such as <(zcat capture.log.gz) are fine; directories and missing paths are not
    unreadable = [
        f
        for f in args.files
        if f != "-" and (not Path(f).exists() or Path(f).is_dir() or not os.access(f, os.R_OK))
    ]
    if unreadable:
        return _fail("not a readable file: " + ", ".join(unreadable))
    if args.files.count("-") > 1:
        return _fail("stdin ('-') can be read only once")
    output = Path(args.output)
    problems = Path(args.problems) if args.problems else problems_path(output)
    inputs = {Path(f).resolve() for f in args.files if f != "-"}
    if output.resolve() == problems.resolve() or {output.resolve(), problems.resolve()} & inputs:
        return _fail("the output and problems files must differ from each other and the inputs")
    try:
        report = telemetry.decode_files(args.files)
        write_csv(output, report.table())
        write_csv(problems, report.problems_table())
    except (DataError, OSError) as exc:
        return _fail(str(exc))
    print(report.summary(), file=sys.stderr)
    if not report.records_found:
        print("  no wmequality record found in the input", file=sys.stderr)
    print(f"wrote {output} ({report.intervals} rows) and {problems}", file=sys.stderr)
    return EXIT_PARTIAL if report.errors else EXIT_OK


# ---------------------------------------------------------------------------------------------

# one registration function per sub-command group; later stages append theirs here
COMMAND_GROUPS: list[Callable[[Subparsers], None]] = [add_telemetry_commands]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reallymuted",
        description="Tools of the reallymuted study (the study itself runs with snakemake).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    groups = parser.add_subparsers(dest="group", required=True, metavar="GROUP")
    for add_commands in COMMAND_GROUPS:
        add_commands(groups)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``reallymuted`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
