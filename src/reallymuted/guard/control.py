"""The guard's control socket: one JSON request per connection, one JSON reply.

Request ``{"command": "mute" | "unmute" | "toggle" | "status"}``; reply ``{"ok": true,
"muted": …, "streams": […], …}`` once the command is applied to every stream the app has, or
``{"ok": false, "error": "…"}``.

Who may talk to it: the guard's own user and root, nobody else. The socket is by default an
abstract Unix socket (``@reallymuted-guard.<uid>``) that any local process can reach, so the
credential check is made by the guard itself on each connection (``SO_PEERCRED``: the
kernel's word for the peer's uid, not the peer's) and every refusal is logged with the peer's
uid and pid; a socket in a 0700 directory would be refused by the kernel before the guard saw
it, leaving no trace of the attempt. The client checks the guard's credentials the same way, so
another user who binds the name first cannot pose as the guard. ``--socket PATH`` gives a
filesystem socket instead (mode 0600; then only root and the user can even connect).
"""

from __future__ import annotations

import json
import os
import socket
import struct
from pathlib import Path
from typing import Any

COMMANDS = ("mute", "unmute", "toggle", "status")
MAX_REQUEST = 4096
MAX_REPLY = 1 << 20  # a status with many streams
CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class ControlError(RuntimeError):
    """The guard could not be reached, refused the request, or answered nonsense."""


def default_address(uid: int | None = None) -> str:
    """The abstract socket of ``uid``'s guard (the caller's by default)."""
    return f"\0reallymuted-guard.{os.getuid() if uid is None else uid}"


def shown(address: str) -> str:
    return "@" + address[1:] if address.startswith("\0") else address


def peer(conn: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end, as the kernel recorded it."""
    return CRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, CRED.size))


def listen(address: str) -> socket.socket:
    """The guard's listening socket (a filesystem one is made 0600 before it listens)."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if not address.startswith("\0"):
            Path(address).unlink(missing_ok=True)  # a stale socket of an earlier guard
            old = os.umask(0o177)
            try:
                server.bind(address)
            finally:
                os.umask(old)
        else:
            server.bind(address)
    except OSError as exc:
        server.close()
        raise ControlError(
            f"cannot listen on {shown(address)}: {exc} (is a guard running?)"
        ) from None
    server.listen(8)
    server.setblocking(False)
    return server


def _read_json_line(conn: socket.socket, limit: int, what: str) -> Any:
    """One newline-ended JSON value from ``conn`` (at most ``limit`` bytes)."""
    data = b""
    while not data.endswith(b"\n") and len(data) < limit:
        chunk = conn.recv(limit - len(data))
        if not chunk:
            break
        data += chunk
    try:
        return json.loads(data.decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ControlError(f"not {what}: {data[:80]!r}") from None


def read_request(conn: socket.socket) -> dict[str, Any]:
    """One request line; ControlError if it is not one of :data:`COMMANDS`."""
    request = _read_json_line(conn, MAX_REQUEST, "a JSON request")
    if not isinstance(request, dict) or request.get("command") not in COMMANDS:
        raise ControlError(f"unknown request {request!r}: commands are {', '.join(COMMANDS)}")
    return request


def reply(conn: socket.socket, body: dict[str, Any]) -> None:
    conn.sendall((json.dumps(body) + "\n").encode())


def request(command: str, address: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
    """Send ``command`` to the guard at ``address`` and return its reply."""
    if command not in COMMANDS:
        raise ControlError(f"unknown command {command!r}: commands are {', '.join(COMMANDS)}")
    address = address or default_address()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        try:
            conn.connect(address)
        except OSError as exc:
            raise ControlError(f"no guard at {shown(address)}: {exc}") from None
        _, uid, _ = peer(conn)
        if uid not in (os.getuid(), 0) and os.getuid() != 0:
            raise ControlError(
                f"{shown(address)} is held by uid {uid}, not by this user's guard: not sending"
            )
        conn.sendall((json.dumps({"command": command}) + "\n").encode())
        try:
            body = _read_json_line(conn, MAX_REPLY, "the guard's reply")
        except TimeoutError:
            raise ControlError(f"the guard did not answer within {timeout} s") from None
    if not body.get("ok"):
        raise ControlError(f"the guard refused: {body.get('error', body)}")
    return body
