"""Whose desktop an audit runs on, and what the app inherits from their session.

``reallymuted audit`` runs as root through sudo; the app must run as the person who called it,
with their display, sound server, session bus and home. sudo resets most of those variables,
so they are read back from the person's own shell (the nearest ancestor process running as
them); the audit's own environment and ``--env`` win over that.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# What the app may inherit from the person's session: display, sound server, session bus.
SESSION_VARIABLES = (
    "DISPLAY",
    "XAUTHORITY",
    "WAYLAND_DISPLAY",
    "XDG_RUNTIME_DIR",
    "XDG_SESSION_TYPE",
    "XDG_CURRENT_DESKTOP",
    "DBUS_SESSION_BUS_ADDRESS",
    "PULSE_SERVER",
    "PIPEWIRE_RUNTIME_DIR",
)
PERSONAL_VARIABLES = ("HOME", "PATH", "LANG")


class AuditProblem(RuntimeError):
    """The audit cannot run as asked (not root, no user, a missing program)."""


@dataclass(frozen=True)
class DesktopUser:
    """Whose desktop the app runs on, and the environment it gets from their session."""

    uid: int
    gid: int
    name: str
    env: dict[str, str]


def _session_environ(uid: int) -> dict[str, str]:
    """The environment of the nearest ancestor running as ``uid`` (the shell sudo ran from):
    sudo resets DISPLAY and the like, the person's shell still has them."""
    pid = os.getppid()
    while pid > 1:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            owner = int(next(ln for ln in status.splitlines() if ln.startswith("Uid:")).split()[1])
            if owner == uid:
                raw = Path(f"/proc/{pid}/environ").read_bytes()
                pairs = (item.partition(b"=") for item in raw.split(b"\0") if b"=" in item)
                return {k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs}
            pid = int(next(ln for ln in status.splitlines() if ln.startswith("PPid:")).split()[1])
        except (OSError, StopIteration, ValueError):
            break
    return {}


def desktop_user(
    environ: Mapping[str, str], uid: int | None = None, extra_env: Mapping[str, str] = {}
) -> DesktopUser:
    """The invoking user (``--user``, else sudo's ``SUDO_UID``) and their session's variables.

    For the display, sound-server and bus variables our own environment wins over the
    session's (``sudo --preserve-env`` or the caller set them); HOME, PATH and LANG come from
    the session or the user's passwd entry only; ``extra_env`` (``--env``) wins over all.
    """
    sudo = uid is None
    if uid is None:
        if "SUDO_UID" not in environ:
            raise AuditProblem(
                "whose desktop? run the audit through sudo from your desktop session, "
                "or give --user"
            )
        uid = int(environ["SUDO_UID"])
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        raise AuditProblem(f"no user with uid {uid}") from None
    gid = int(environ["SUDO_GID"]) if sudo and "SUDO_GID" in environ else entry.pw_gid
    session = _session_environ(uid)
    env = {"HOME": entry.pw_dir, "USER": entry.pw_name, "LOGNAME": entry.pw_name}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    env["XDG_RUNTIME_DIR"] = f"/run/user/{uid}"
    for name in PERSONAL_VARIABLES:  # sudo's HOME and PATH are root's, not the person's
        if session.get(name):
            env[name] = session[name]
    for name in SESSION_VARIABLES:
        for origin in (session, environ):
            if origin.get(name):
                env[name] = origin[name]
    env.update(extra_env)
    bus = Path(env["XDG_RUNTIME_DIR"]) / "bus"
    if "DBUS_SESSION_BUS_ADDRESS" not in env and bus.exists():
        env["DBUS_SESSION_BUS_ADDRESS"] = f"unix:path={bus}"
    return DesktopUser(uid, gid, entry.pw_name, env)


def as_user(user: DesktopUser, argv: Sequence[str]) -> list[str]:
    """``argv`` run with the user's uid, gid and groups (for the helpers that talk to their
    sound server or display; the app itself is started by the reaper)."""
    return [
        "setpriv",
        f"--reuid={user.uid}",
        f"--regid={user.gid}",
        "--init-groups",
        "--",
        *argv,
    ]
