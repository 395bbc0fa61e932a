"""The ``reallymuted`` command: study tools a researcher runs by hand on their own files.

Each stage adds one sub-command group: a function ``add_<group>_commands(subparsers)`` that
registers its commands, listed in :data:`COMMAND_GROUPS`. A command is a function taking the
parsed arguments and returning the exit status, so it is testable without a subprocess.

Exit status: 0 success, 2 usage error or unreadable input (argparse's convention), 3 the
command ran but some inputs were bad (e.g. telemetry records that failed to decode).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from reallymuted.guard.cli import add_guard_commands  # the session runner runs it alone
from reallymuted.policy.cli import add_policy_commands

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
# audit: the instrument around an app on the person's own desktop


def add_audit_commands(subparsers: Subparsers) -> None:
    audit = subparsers.add_parser(
        "audit",
        help="record what an app on your Linux desktop does with the microphone while muted",
        description=(
            "Run COMMAND as you (run this through sudo from your desktop session), in a network "
            "namespace of its own with a NAT uplink, and record its packets, its microphone "
            "reads (Frida in every process of the app) and its capture streams on your "
            "PulseAudio or PipeWire server, with the times you muted and unmuted; then print "
            "the verdict. Exit status 0: verdict written; 1: the audit failed (what was "
            "recorded is still written); 2: bad usage."
        ),
        epilog='example: sudo "$(command -v reallymuted)" audit --app meet --interactive '
        "-- chromium https://meet.google.com/",
    )
    audit.add_argument("command", nargs="*", metavar="COMMAND", help="the app, after --")
    audit.add_argument("--pid", type=int, help="attach to this running app instead (no isolation)")
    audit.add_argument("--app", help="registry id (see --apps) or a name for the app")
    audit.add_argument("--mode", default="app", help="label of the app's mute mode (default: app)")
    audit.add_argument("--out", type=Path, help="evidence folder (default: ./audit-APP-UTCTIME)")
    audit.add_argument("--apps", action="store_true", help="how to audit each of the ten apps")
    how = audit.add_mutually_exclusive_group()
    how.add_argument("--interactive", action="store_true", help="press m / u as you mute / unmute")
    how.add_argument("--hotkey", metavar="KEY", help="send the app's mute hotkey (xdotool syntax)")
    how.add_argument("--events", type=Path, metavar="FILE", help="mute timeline made elsewhere")
    audit.add_argument(
        "--phase", action="append", default=[], metavar="STATE:S", help="hotkey schedule phase"
    )
    audit.add_argument("--key-tool", choices=["xdotool", "ydotool"], default="xdotool")
    audit.add_argument("--duration", type=float, metavar="S", help="end the audit after S seconds")
    audit.add_argument("--user", type=int, metavar="UID", help="whose desktop (default: SUDO_UID)")
    audit.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra variable for the app",
    )
    audit.add_argument("--egress", metavar="IF", help="host interface of the uplink")
    audit.add_argument("--dns", action="append", default=[], metavar="IP", help="resolver to use")
    audit.add_argument(
        "--skip-trace",
        action="append",
        metavar="TEXT",
        help="do not trace processes whose command line has TEXT (default: Chromium's "
        "renderer, GPU, zygote, broker and storage-service processes)",
    )
    audit.add_argument("--json", action="store_true", help="print the verdict as JSON")
    audit.set_defaults(handler=run_audit)


def audit_timeline(args: argparse.Namespace, hotkey: str | None) -> Any:
    """The mute timeline the options ask for (ValueError for a bad combination)."""
    from reallymuted.testbed import timeline

    phases = [timeline.parse_phase(p) for p in args.phase]
    if phases and not hotkey:
        raise ValueError("--phase goes with --hotkey")
    if args.events:
        return timeline.EventsFile(args.events, args.duration)
    if hotkey:
        if not phases:
            raise ValueError("--hotkey needs its schedule: --phase unmuted:30 --phase muted:30 ...")
        return timeline.HotkeySchedule(hotkey, phases, args.key_tool, duration_s=args.duration)
    if not sys.stdin.isatty() and args.duration is None:
        raise ValueError("--interactive needs a terminal (or give --events FILE or --hotkey)")
    return timeline.Interactive(args.duration)


def run_audit(args: argparse.Namespace) -> int:
    import datetime as dt

    from reallymuted.analysis.verdict import screen, write_verdict
    from reallymuted.testbed import desktop
    from reallymuted.testbed.recipes import audit_recipes, recipe_table
    from reallymuted.testbed.user import AuditProblem, desktop_user

    recipes = audit_recipes()
    if args.apps:
        print(recipe_table(recipes))
        return EXIT_OK
    recipe = recipes.get(args.app or "")
    # the registry's command when none is given, unless attaching to a running app
    command = list(args.command) or (list(recipe.command) if recipe and not args.pid else [])
    if bool(command) == (args.pid is not None):
        return _fail("give the app to run after -- (or --app with a registry recipe), or --pid")
    hotkey = args.hotkey or None
    if args.hotkey == "registry":
        if recipe is None:
            return _fail("--hotkey registry needs --app with a registry id (see --apps)")
        hotkey = recipe.xdotool_key
    try:
        extra = dict(item.split("=", 1) for item in args.env)
    except ValueError:
        return _fail("--env takes NAME=VALUE")
    try:
        timeline = audit_timeline(args, hotkey)
        user = desktop_user(os.environ, args.user, extra)
    except (ValueError, AuditProblem) as exc:
        return _fail(str(exc))
    app = args.app or (Path(command[0]).name if command else f"pid{args.pid}")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    plan = desktop.AuditPlan(
        out=args.out or Path(f"audit-{app}-{stamp}"),
        app=app,
        mode=args.mode,
        user=user,
        command=command,
        pid=args.pid,
        egress=args.egress,
        dns=args.dns,
        skip=tuple(args.skip_trace) if args.skip_trace is not None else desktop.CHROMIUM_SKIP,
        passthrough_stdin=timeline.how != "key",  # the keys are the person's, not the app's
    )
    manifest = desktop.run_audit(plan, timeline)
    if "source" not in manifest:  # nothing was recorded
        print(f"reallymuted: the audit could not start: {manifest['failure']}", file=sys.stderr)
        return 1
    try:
        verdict = write_verdict(plan.out)
    except Exception as exc:  # the evidence is written: say where, and why no verdict
        print(f"reallymuted: no verdict ({type(exc).__name__}: {exc}); the evidence is in "
              f"{plan.out.resolve()}", file=sys.stderr)  # fmt: skip
        return 1
    finally:
        desktop.hand_over(plan.out, user)  # the verdict's files too
    print(json.dumps(verdict, indent=1) if args.json else screen(verdict))
    return 1 if manifest["status"] == "failed" else EXIT_OK


# ---------------------------------------------------------------------------------------------

# one registration function per sub-command group; later stages append theirs here
COMMAND_GROUPS: list[Callable[[Subparsers], None]] = [
    add_telemetry_commands,
    add_audit_commands,
    add_guard_commands,
    add_policy_commands,
]


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
