"""``reallymuted guard``'s commands, in a module of their own: the testbed's session runner
starts the guard as ``python -m reallymuted.guard.cli run ...``, so a session's code (what
reruns it, :mod:`reallymuted.codegraph`) is the guard's, not every command's of
:mod:`reallymuted.cli`, which registers these with the others."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_OK, EXIT_USAGE = 0, 2  # as reallymuted.cli's


def _fail(message: str) -> int:
    print(f"reallymuted: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def add_guard_commands(subparsers: argparse._SubParsersAction) -> None:
    guard = subparsers.add_parser(
        "guard",
        help="mute an app's microphone at the sound server while you are muted",
        description=(
            "Guard one app: while you are muted its capture streams are muted at your "
            "PulseAudio or PipeWire server, so what it reads is silence. Run it as yourself "
            "(not root) in your desktop session. See docs/guard.md."
        ),
    )
    commands = guard.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="start COMMAND (or take --pid) and guard it until it exits",
        epilog="example: reallymuted guard run --muted -- baresip",
    )
    run.add_argument("app_command", nargs="*", metavar="COMMAND", help="the app, after --")
    run.add_argument(
        "--pid",
        type=int,
        action="append",
        help="guard this running app and its children (repeat for an app of several roots)",
    )
    run.add_argument("--app", help="the app's name in the status (default: the command's)")
    state = run.add_mutually_exclusive_group()
    state.add_argument("--muted", action="store_true", help="start muted")
    state.add_argument("--live", action="store_true", help="start unmuted")
    run.add_argument("--socket", metavar="PATH", help="filesystem control socket (default: "
                     "the abstract socket @reallymuted-guard.UID)")  # fmt: skip
    run.add_argument("--status", type=Path, metavar="FILE", help="status file (default: "
                     "$XDG_RUNTIME_DIR/reallymuted-guard/status.json)")  # fmt: skip
    run.add_argument("--events", type=Path, metavar="FILE", help="append what it did (JSON lines)")
    run.add_argument(
        "--app-hotkey",
        metavar="KEY",
        help="hotkey mode: on each mute or unmute also send the app's own mute hotkey to its "
        "window (xdotool syntax, e.g. ctrl+d; see `reallymuted audit --apps`); bind a key of "
        "your desktop to `reallymuted guard toggle` and one key mutes both",
    )
    run.set_defaults(handler=guard_run)
    for name, what in (
        ("mute", "mute the guarded app at the sound server"),
        ("unmute", "let the guarded app's microphone through again"),
        ("toggle", "mute if live, unmute if muted"),
        ("status", "print the guard's status as JSON"),
    ):
        command = commands.add_parser(name, help=what)
        command.add_argument("--socket", metavar="PATH", help="the guard's socket")
        command.set_defaults(handler=guard_request)


def guard_run(args: argparse.Namespace) -> int:
    from reallymuted.guard import control, service
    from reallymuted.testbed.soundserver import SoundServerError

    if bool(args.app_command) == bool(args.pid):
        return _fail("give the app to run after --, or --pid")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if args.status is None and not runtime:
        return _fail("no XDG_RUNTIME_DIR: run from your desktop session, or give --status")
    status = args.status or Path(runtime or ".") / "reallymuted-guard" / "status.json"
    app = args.app or (Path(args.app_command[0]).name if args.app_command else f"pid{args.pid[0]}")
    muted = True if args.muted else False if args.live else None
    try:
        return service.run_guard(
            app,
            args.app_command,
            args.pid,
            address=args.socket or control.default_address(),
            status_path=status,
            events_path=args.events,
            muted=muted,
            app_hotkey=args.app_hotkey,
            terminal=sys.stdout,
        )
    except (control.ControlError, SoundServerError) as exc:
        print(f"reallymuted: guard: {exc}", file=sys.stderr)
        return 1


def guard_request(args: argparse.Namespace) -> int:
    from reallymuted.guard import control

    try:
        reply = control.request(args.command, args.socket)
    except control.ControlError as exc:
        print(f"reallymuted: guard: {exc}", file=sys.stderr)
        return 1
    if args.command == "status":
        print(json.dumps(reply, indent=1))
    else:
        print(f"{reply['app']}: {'muted' if reply['muted'] else 'live'}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m reallymuted.guard.cli COMMAND ...``: the guard's commands alone."""
    parser = argparse.ArgumentParser(prog="reallymuted guard")
    commands = parser.add_subparsers(dest="group", required=True)
    add_guard_commands(commands)
    args = parser.parse_args(["guard", *(sys.argv[1:] if argv is None else argv)])
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
