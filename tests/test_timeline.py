"""The audit's pieces that need no desktop: whose session the app gets, and the timeline."""

from __future__ import annotations

import json
import pwd
from pathlib import Path

import pytest

from reallymuted.testbed.timeline import EventsFile, parse_phase, recorded_events
from reallymuted.testbed.user import AuditProblem, desktop_user


def test_the_app_gets_the_persons_session_not_roots() -> None:
    nobody = pwd.getpwnam("nobody")
    environ = {
        "SUDO_UID": str(nobody.pw_uid),
        "SUDO_GID": str(nobody.pw_gid),
        "HOME": "/root",  # what sudo leaves: root's, not the person's
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "DISPLAY": ":7",
        "PULSE_SERVER": "unix:/run/user/65534/pulse/native",
    }
    user = desktop_user(environ, extra_env={"LANG": "C.UTF-8"})
    assert (user.uid, user.gid, user.name) == (nobody.pw_uid, nobody.pw_gid, "nobody")
    assert user.env["HOME"] == nobody.pw_dir and user.env["USER"] == "nobody"
    assert user.env["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    assert user.env["DISPLAY"] == ":7" and user.env["PULSE_SERVER"].endswith("/native")
    assert user.env["XDG_RUNTIME_DIR"] == f"/run/user/{nobody.pw_uid}"
    assert user.env["LANG"] == "C.UTF-8"
    with pytest.raises(AuditProblem, match="whose desktop"):
        desktop_user({})


def test_join_is_where_the_microphone_opened_and_an_early_mute_holds_from_there() -> None:
    rows = [
        {"t": 0.1, "event": "client_start"},
        {"t": 0.5, "event": "mute", "via": "key"},  # muted in the app's lobby
        {"t": 6.0, "event": "unmute", "via": "key"},
        {"t": 9.0, "event": "leave"},
    ]
    events = recorded_events(rows, opened_t=2.0)
    assert [e["event"] for e in events] == [
        "client_start", "mute", "join", "mute", "unmute", "leave",
    ]  # fmt: skip
    join, repeated = events[2], events[3]
    assert join["t"] == 2.0 and join["microphone_opened"] is True
    assert repeated["t"] > join["t"] and repeated["repeated_at_join"] is True
    never = recorded_events(rows[:1] + rows[3:], opened_t=None)
    assert next(e for e in never if e["event"] == "join")["t"] == 0.1


def test_an_events_file_is_read_on_the_audits_clock_and_a_bad_line_is_named(
    tmp_path: Path,
) -> None:
    path = tmp_path / "timeline.jsonl"
    path.write_text(
        json.dumps({"event": "mute", "epoch": 1000.5}) + "\n\n"
        + json.dumps({"event": "unmute", "utc": "1970-01-01T00:16:50Z"}) + "\n"
    )  # fmt: skip
    rows = EventsFile(path).events_made_elsewhere(epoch0=1000.0)
    assert rows == [
        {"t": 0.5, "event": "mute", "via": "file"},
        {"t": 10.0, "event": "unmute", "via": "file"},
    ]
    path.write_text(json.dumps({"event": "mute", "utc": "1970-01-01T00:16:50"}) + "\n")
    with pytest.raises(ValueError, match=r"timeline.jsonl:1: .*time zone"):
        EventsFile(path).events_made_elsewhere(epoch0=0.0)
    path.write_text(json.dumps({"event": "talk", "epoch": 1}) + "\n")
    with pytest.raises(ValueError, match="mute, unmute or join"):
        EventsFile(path).events_made_elsewhere(epoch0=0.0)


def test_a_hotkey_schedule_phase_is_checked() -> None:
    assert parse_phase("muted:20") == {"state": "muted", "seconds": 20.0}
    for bad in ("silent:3", "muted:0", "muted:x", "muted"):
        with pytest.raises(ValueError, match="phase"):
            parse_phase(bad)


def test_the_command_line_refuses_what_cannot_be_audited(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from reallymuted.cli import main

    monkeypatch.delenv("SUDO_UID", raising=False)
    assert main(["audit", "--events=x.jsonl"]) == 2  # neither a command nor --pid
    assert "give the app to run after --" in capsys.readouterr().err
    # --pid with a registry app attaches to it: the registry's command is not started too
    assert main(["audit", "--pid=1", "--app=zoom", "--events=x.jsonl"]) == 2
    assert "whose desktop?" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="2"):  # argparse: one timeline at a time
        main(["audit", "--hotkey=m", "--events=x.jsonl", "--", "app"])
    assert "not allowed with" in capsys.readouterr().err
    assert main(["audit", "--hotkey=m", "--", "app"]) == 2
    assert "--hotkey needs its schedule" in capsys.readouterr().err
