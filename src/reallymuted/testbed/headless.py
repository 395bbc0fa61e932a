"""A headless desktop: an X display and a real sound server, as a user (tests and benchmarks).

``reallymuted audit`` and ``reallymuted guard`` work on a person's own desktop session. The
tests and ``make bench`` make one of their own, run as an unprivileged user (``nobody`` by
default, so nothing is added to the system): ``Xvfb`` on a free display (``-displayfd`` picks
it and says when it is ready), and the sound server in a private runtime directory with a
virtual microphone as the default source, fed in real time from a WAV by the project's paced
writer (``python -m reallymuted.testbed.audio``):

* ``pulseaudio``: a real ``pulseaudio`` daemon with a small default.pa (the native protocol on
  its default socket, ``$XDG_RUNTIME_DIR/pulse/native`` with cookie auth as on a desktop, a null
  sink, ``module-pipe-source`` as the default source, ``module-suspend-on-idle`` and, as in
  a desktop's default.pa, ``module-stream-restore``, which remembers a client's stream mute);
* ``pipewire``: ``pipewire``, ``wireplumber`` and ``pipewire-pulse`` with their packaged
  configuration. With no systemd user session they are simply started in that order;
  wireplumber 0.4 exits at once without a D-Bus session bus ("Cannot autolaunch D-Bus without
  X11 $DISPLAY"), so a private ``dbus-daemon --session`` comes first (Debian package
  ``dbus-daemon``, priority optional: not in a minimal install). The microphone is
  pipewire-pulse's own ``module-pipe-source`` (``pactl load-module``, as a user would; it is
  PipeWire's pipe-tunnel module: a real ``Audio/Source`` node), made the default source with
  ``pactl set-default-source``, which wireplumber applies. That node reads the FIFO only in the
  graph cycles of a linked client; with nobody recording it drains nothing (the writer's
  ticks are refused). It reads at most what the pipe holds once per cycle, and a cycle is up
  to 2048 frames (42.7 ms) here, so the writer's 4096-byte pipe (one 20 ms tick per read)
  would let through only about half of real time: the writer gets a 16 KiB pipe.

All processes run as the user through ``setpriv`` (which execs, so each PID is the program's
own). On exit only those PIDs and their descendants are stopped, and the runtime directory
and home are removed; the logs stay in ``root_dir/logs-<kind>``. ``root_dir`` must be
reachable by the user (pytest's tmp_path, under a 0700 directory of root's, is not).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

from reallymuted.testbed.audio import PulsePaths, pulse_command
from reallymuted.testbed.netns import children_map, descendants

RATE, CHANNELS = 48000, 1
PIPE_BYTES = {"pulseaudio": 4096, "pipewire": 16384}  # see the module's docstring
REQUIRED = {  # programs each kind of desktop runs
    "pulseaudio": ["Xvfb", "setpriv", "pulseaudio", "pactl"],
    "pipewire": [
        "Xvfb",
        "setpriv",
        "dbus-daemon",
        "pipewire",
        "wireplumber",
        "pipewire-pulse",
        "pactl",
        "pw-dump",
        "pw-metadata",
    ],
}


class DesktopError(RuntimeError):
    """A part of the headless desktop did not start or did not become ready."""


def as_user(uid: int, gid: int, argv: Sequence[str]) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *argv]


@dataclass
class Desktop:
    """A running headless desktop: its user, display, environment and processes."""

    kind: str
    uid: int
    gid: int
    base: Path  # runtime directory and home (removed on exit)
    logs: Path  # logs and the writer's tick log (kept)
    t0: float  # time.monotonic() origin of the writer's tick log
    env: dict[str, str] = field(default_factory=dict)
    display: str = ""
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items()}

    @property
    def runtime(self) -> Path:
        return self.base / "run"

    @property
    def fifo(self) -> Path:
        return self.runtime / "mic.fifo"

    @property
    def feed_log(self) -> Path:
        return self.logs / "feed.jsonl"

    def command(self, argv: Sequence[str]) -> list[str]:
        return as_user(self.uid, self.gid, argv)

    def run(self, argv: Sequence[str], timeout: float = 10.0) -> str:
        """Run a client as the user; its stdout, or DesktopError with its stderr."""
        done = subprocess.run(
            self.command(argv), env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise DesktopError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
        return done.stdout

    def start(self, name: str, argv: Sequence[str], **popen: object) -> subprocess.Popen[bytes]:
        """Start a program as the user, logged to ``logs/<name>.log``, stopped on exit."""
        if name in self.procs:
            raise ValueError(f"{name} already started")
        with (self.logs / f"{name}.log").open("ab") as log:
            kwargs: dict = {"stdout": log, "stderr": subprocess.STDOUT, **popen}
            proc = subprocess.Popen(
                self.command(argv),
                env=self.env,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                **kwargs,
            )
        self.procs[name] = proc
        return proc

    def stop(self, name: str, timeout: float = 5.0) -> None:
        """Stop one started program (SIGTERM, then SIGKILL) and whatever it started."""
        proc = self.procs.pop(name)
        family = descendants([proc.pid], children_map()) - {proc.pid}
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)  # a test may have stopped it
                proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in family:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.logs / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def wait_for(self, what: str, ready: Callable[[], bool], parts: Sequence[str]) -> None:
        """Poll ``ready`` for up to 15 s; fail with the logs of ``parts`` if a part dies."""
        deadline = time.monotonic() + 15.0
        while True:
            dead = [n for n in parts if n in self.procs and self.procs[n].poll() is not None]
            if dead:
                raise DesktopError(
                    f"{dead[0]} exited while waiting for {what}:\n{self.log_tail(dead[0])}"
                )
            with contextlib.suppress(DesktopError, OSError, ValueError, subprocess.TimeoutExpired):
                if ready():
                    return
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {n}:\n{self.log_tail(n)}" for n in parts)
                raise DesktopError(f"{what}: not ready after 15 s\n{logs}")
            time.sleep(0.05)


def _pulse_config(fifo: Path) -> str:
    return "\n".join(
        [
            ".fail",
            "load-module module-native-protocol-unix",
            "load-module module-stream-restore",
            f"load-module module-null-sink sink_name=speaker rate={RATE}",
            f"load-module module-pipe-source source_name=mic file={fifo} format=s16le "
            f"rate={RATE} channels={CHANNELS} source_properties=device.description=TestbedMic",
            "set-default-source mic",
            "set-default-sink speaker",
            "load-module module-suspend-on-idle",
            "",
        ]
    )


def _start_xvfb(desktop: Desktop) -> None:
    x11 = Path("/tmp/.X11-unix")  # made at boot on a real system; Xvfb as a user cannot
    if not x11.exists():
        x11.mkdir()
        x11.chmod(0o1777)
    read, write = os.pipe()
    try:
        argv = [
            "Xvfb",
            "-displayfd",
            str(write),
            *["-nolisten", "tcp", "-noreset", "-screen", "0", "1280x720x24"],
        ]
        desktop.start("xvfb", argv, pass_fds=(write,))
        os.close(write)
        # Xvfb writes the number and the newline in two write()s and dies ("Cannot write
        # display number") if the pipe is closed between them: read up to the newline
        data, deadline = b"", time.monotonic() + 15.0
        while not data.endswith(b"\n") and time.monotonic() < deadline:
            ready, _, _ = select.select([read], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(read, 64) if ready else b""
            if not chunk:
                break
            data += chunk
        number = data.decode().strip()
    finally:
        os.close(read)
    if not number.isdigit():
        raise DesktopError(f"Xvfb reported no display:\n{desktop.log_tail('xvfb')}")
    desktop.display = f":{number}"
    desktop.env["DISPLAY"] = desktop.display


def _pw_objects(desktop: Desktop) -> list[dict]:
    return json.loads(desktop.run(["pw-dump", "-N"]))


def _start_pipewire(desktop: Desktop) -> None:
    bus = desktop.runtime / "bus"
    desktop.env["DBUS_SESSION_BUS_ADDRESS"] = f"unix:path={bus}"
    desktop.start(
        "dbus",
        ["dbus-daemon", "--session", "--nofork", "--nopidfile", f"--address=unix:path={bus}"],
    )
    desktop.wait_for("the D-Bus session bus", bus.is_socket, ["dbus"])
    # as on a PipeWire desktop: no client may autospawn a PulseAudio beside pipewire-pulse
    config = Path(desktop.env["HOME"]) / ".config" / "pulse"
    config.mkdir(parents=True, exist_ok=True)
    (config / "client.conf").write_text("autospawn = no\n")
    for path in (config.parent, config, config / "client.conf"):
        os.chown(path, desktop.uid, desktop.gid)
    desktop.start("pipewire", ["pipewire"])
    desktop.wait_for("pipewire", lambda: bool(_pw_objects(desktop)), ["pipewire"])
    desktop.start("wireplumber", ["wireplumber"])
    desktop.wait_for(  # (pw-dump 0.3.65 leaves out metadata with no entries yet)
        "wireplumber's default metadata",
        lambda: 'Found "default" metadata' in desktop.run(["pw-metadata", "-n", "default"]),
        ["pipewire", "wireplumber"],
    )
    desktop.start("pipewire-pulse", ["pipewire-pulse"])
    # pactl only once the socket is there: a client finding no server may autospawn a
    # PulseAudio, whose runtime directory then makes pipewire-pulse exit ("File exists")
    socket = desktop.runtime / "pulse" / "native"
    desktop.wait_for(
        "pipewire-pulse",
        lambda: socket.exists() and bool(desktop.run(["pactl", "info"])),
        ["pipewire-pulse"],
    )
    options = f"format=s16le rate={RATE} channels={CHANNELS} source_name=mic".split()
    options.append("source_properties=device.description=TestbedMic")
    desktop.run(["pactl", "load-module", "module-pipe-source", f"file={desktop.fifo}", *options])
    desktop.run(["pactl", "set-default-source", "mic"])
    desktop.wait_for(
        "the pipe source as default source",
        lambda: desktop.run(["pactl", "get-default-source"]).strip() == "mic",
        ["pipewire", "wireplumber", "pipewire-pulse"],
    )


def _start_pulseaudio(desktop: Desktop) -> None:
    paths = PulsePaths(desktop.base)
    paths.config.write_text(_pulse_config(desktop.fifo))
    log = desktop.logs / "pulseaudio.log"
    log.touch()
    os.chown(log, desktop.uid, desktop.gid)
    desktop.start("pulseaudio", pulse_command(paths, log))
    desktop.wait_for(
        "pulseaudio",
        lambda: desktop.fifo.exists() and bool(desktop.run(["pactl", "info"])),
        ["pulseaudio"],
    )


@contextlib.contextmanager
def headless_desktop(
    kind: str, root_dir: Path, stimulus: Path, uid: int = 65534, gid: int = 65534
) -> Iterator[Desktop]:
    """Start a headless desktop of ``kind`` ("pipewire" or "pulseaudio") as ``uid``."""
    if kind not in REQUIRED:
        raise ValueError(f"unknown kind {kind!r}")
    if os.geteuid() != 0:
        raise DesktopError("the headless desktop needs root (it starts programs as another user)")
    missing = [p for p in REQUIRED[kind] if shutil.which(p) is None]
    if missing:
        raise DesktopError(f"missing program(s) for a {kind} desktop: {', '.join(missing)}")
    info = sf.info(str(stimulus))
    if (info.samplerate, info.channels) != (RATE, CHANNELS):
        raise DesktopError(
            f"{stimulus}: need {RATE} Hz mono, got {info.samplerate} Hz x {info.channels}"
        )
    base = root_dir / f"desktop-{kind}"
    logs = root_dir / f"logs-{kind}"
    desktop = Desktop(kind, uid, gid, base, logs, time.monotonic())
    try:
        for d in (base, base / "run", base / "home", logs):
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, uid, gid)
        desktop.runtime.chmod(0o700)
        shutil.copyfile(stimulus, base / "stimulus.wav")
        (base / "stimulus.wav").chmod(0o644)
        desktop.env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(base / "home"),
            "LANG": "C.UTF-8",
            "XDG_RUNTIME_DIR": str(desktop.runtime),
        }
        reach = desktop.command(["test", "-w", str(logs)])
        if subprocess.run(reach, env=desktop.env, check=False).returncode:
            raise DesktopError(
                f"uid {uid} cannot reach {root_dir}: use a directory every "
                "user can traverse (e.g. tempfile.mkdtemp() chmod 0o755)"
            )
        _start_xvfb(desktop)
        (_start_pipewire if kind == "pipewire" else _start_pulseaudio)(desktop)
        feed = [sys.executable, "-m", "reallymuted.testbed.audio", "feed", "--fifo", desktop.fifo]
        feed += ["--stimulus", base / "stimulus.wav", "--out", desktop.feed_log]
        feed += ["--t0", repr(desktop.t0), "--pipe-bytes", PIPE_BYTES[kind]]
        desktop.start("feed", [str(a) for a in feed])
        desktop.wait_for(
            "the microphone's writer",
            lambda: desktop.feed_log.exists() and desktop.feed_log.stat().st_size > 0,
            ["feed"],
        )
        yield desktop
    finally:
        xvfb = desktop.pids.get("xvfb")
        for name in reversed(list(desktop.procs)):
            desktop.stop(name)
        if desktop.display:  # Xvfb removes its lock and socket on SIGTERM, not on SIGKILL
            lock = Path(f"/tmp/.X{desktop.display[1:]}-lock")
            with contextlib.suppress(OSError, ValueError):
                if int(lock.read_text().strip()) == xvfb:
                    Path(f"/tmp/.X11-unix/X{desktop.display[1:]}").unlink(missing_ok=True)
                    lock.unlink()
        shutil.rmtree(base, ignore_errors=True)
