"""The guarded app's capture streams on the sound server, and muting them there.

Both servers are reached through the PulseAudio protocol (``pactl``): PulseAudio itself, or
PipeWire's pipewire-pulse, which lists every capture node (Pulse and native PipeWire clients
alike) as a source-output and maps a source-output's mute to the node's own ``mute`` property.
A muted source-output is filled with silence by the server before the app can read it
(PulseAudio: ``pa_source_output_push`` hands out a silence chunk; PipeWire: the stream's
volume stage multiplies by zero), so the app's reads go on but carry zeros: the app cannot
tell a muted stream from a silent room, and cannot undo it except by unmuting the
source-output itself, which any client of the server may do; the guard watches for that and
mutes again (:mod:`.service`).

A stream belongs to the app when its client's ``application.process.id`` is one of the app's
processes (the guard's process tree of the app). A client in another PID namespace (a
Flatpak's) reports a PID the guard cannot match.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from reallymuted.testbed.soundserver import SoundServerError, run_client

# `pactl subscribe`: "Event 'new' on source-output #12"
EVENT = re.compile(r"Event '(?P<what>\w+)' on (?P<facility>[\w-]+) #(?P<index>\d+)")


@dataclass(frozen=True)
class Stream:
    """One capture stream (a source-output) as the server reported it."""

    id: int
    pid: int | None
    app: str
    muted: bool
    corked: bool

    def row(self) -> dict[str, Any]:
        return {"id": self.id, "pid": self.pid, "app": self.app, "muted": self.muted}


def _pid(props: Mapping[str, Any]) -> int | None:
    try:
        return int(props.get("application.process.id", ""))
    except ValueError:
        return None


def capture_streams(env: Mapping[str, str]) -> list[Stream]:
    """Every capture stream on the server that ``env`` reaches."""
    found = []
    for out in run_client(["pactl", "-f", "json", "list", "source-outputs"], env):
        props = out.get("properties") or {}
        found.append(
            Stream(
                id=int(out["index"]),
                pid=_pid(props),
                app=str(props.get("application.name", "")),
                muted=bool(out.get("mute")),
                corked=bool(out.get("corked")),
            )
        )
    return found


def split(streams: Iterable[Stream], pids: set[int]) -> tuple[list[Stream], list[Stream]]:
    """(the app's streams, every other app's)."""
    mine, others = [], []
    for stream in streams:
        (mine if stream.pid in pids else others).append(stream)
    return mine, others


def set_mute(env: Mapping[str, str], stream_id: int, muted: bool) -> bool:
    """Mute or unmute one source-output; False if it is gone (closed meanwhile)."""
    try:
        run_client(
            ["pactl", "set-source-output-mute", str(stream_id), "1" if muted else "0"],
            env,
            parse=False,
        )
    except SoundServerError as exc:
        if "No such" in str(exc):  # pactl: "No such entity"
            return False
        raise
    return True


def subscribe(env: Mapping[str, str]) -> subprocess.Popen[str]:
    """``pactl subscribe``: one line per server event, read by the guard's loop."""
    return subprocess.Popen(
        ["pactl", "subscribe"],
        env={**env, "LC_ALL": "C"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        bufsize=1,
    )


def stream_event(line: str) -> tuple[str, int] | None:
    """("new" | "change" | "remove", index) for a source-output event, else None."""
    match = EVENT.search(line)
    if match is None or match["facility"] != "source-output":
        return None
    return match["what"], int(match["index"])
