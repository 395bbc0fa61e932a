"""Native (Windows/macOS) and web drivers, tested as far as this Linux machine allows.

None of these drivers can run a real session here: the native ones need a Windows or macOS
host with the vendor's app, the web one needs the internet and an account. What is tested:

* the Frida agents: loaded into a local process they report that WASAPI/CoreAudio are absent;
  their platform-independent core (sample statistics, flag names, WAVEFORMATEX/ASBD parsing,
  GUIDs) runs on bytes written into that process; and their platform bindings run for real —
  vtable discovery, Interceptor hooks, out-parameter decoding, row format — against stand-in
  APIs built in that process (tests/data/native/selftest.js), called the way an app calls them.
  The stand-ins share the agents' reading of the Windows/macOS ABIs, so an ABI misread would
  pass here: only a real host can catch that;
* the host tracer mapping agent rows onto the session clock, on a local process;
* hotkey parsing against every hotkey of the registry, key-event and command construction;
* the web driver against a local page that mimics an app's controls (a fake app, not a fake
  driver): join, shortcut, fallback to the button, join-muted, a stuck button;
* the refusals: a native session here, a web session without internet, each fails at preflight
  with a failure manifest that says why and carries its source;
* the workflow: ``snakemake -n`` with each overlay lists one session job per app x mode x
  stimulus x repetition, and running one fails with the message.
"""

from __future__ import annotations

import ctypes
import http.server
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from reallymuted.io import read_jsonl
from reallymuted.paths import FAILED
from reallymuted.testbed import audio, uplink
from reallymuted.testbed.drivers import (
    DriverError,
    SessionContext,
    get_driver,
    hotkeys,
    native,
    web,
)
from reallymuted.testbed.host_tracer import HostTracer, agent_source, session_row
from reallymuted.testbed.netns import ProcessSet
from reallymuted.testbed.spec import SessionSpec
from reallymuted.testbed.stimuli import make_stimulus
from reallymuted.testbed.supervisor import run_session

REPO = Path(__file__).resolve().parents[1]
AGENTS = REPO / "src/reallymuted/testbed/agents"
SELFTEST = REPO / "tests/data/native/selftest.js"
FAKE_APP = REPO / "tests/data/native/fake_web_app.html"
REGISTRY = yaml.safe_load((REPO / "workflow/apps.yaml").read_text())["apps"]


# --- the agents in a local process ----------------------------------------------------------


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    """A process of our own with a name nobody else uses: (pid, name)."""
    name = f"rmfake{secrets.token_hex(3)}"
    exe = tmp_path_factory.mktemp("target") / name
    shutil.copy("/bin/sleep", exe)
    proc = subprocess.Popen([str(exe), "600"])
    time.sleep(0.3)
    yield proc.pid, name
    proc.kill()
    proc.wait()


class Loaded:
    """One agent bundle loaded into the target, with the messages it sent."""

    def __init__(self, pid: int, files: list[Path]) -> None:
        import frida

        self.messages: list[dict] = []
        self.session = frida.attach(pid)
        self.script = self.session.create_script("\n".join(f.read_text() for f in files))
        self.script.on("message", lambda m, _d: self.messages.append(m))
        self.script.load()
        self.rpc = self.script.exports_sync

    def payloads(self, kind: str) -> list[dict]:
        return [m["payload"] for m in self.messages if m.get("payload", {}).get("type") == kind]

    def close(self) -> None:
        self.script.unload()
        self.session.detach()


@pytest.fixture
def load(target: tuple[int, str]) -> Iterator:
    loaded: list[Loaded] = []

    def _load(binding: str, selftest: bool = True) -> Loaded:
        files = [AGENTS / "native_core.js", AGENTS / binding]
        loaded.append(Loaded(target[0], files + ([SELFTEST] if selftest else [])))
        return loaded[-1]

    yield _load
    for item in loaded:
        item.close()


@pytest.mark.parametrize(
    ("binding", "api", "os_name"),
    [("wasapi.js", "wasapi", "Windows"), ("coreaudio.js", "coreaudio", "macOS")],
)
def test_agents_load_on_linux_and_report_their_api_absent(load, binding, api, os_name) -> None:
    agent = load(binding, selftest=False)  # exactly what the host tracer loads
    (platform,) = agent.payloads("platform")
    assert platform["api"] == api and platform["present"] is False
    assert platform["platform"] == "linux"
    assert f"exists only on {os_name}" in platform["reason"]
    assert not agent.payloads("hook") and not [m for m in agent.messages if m["type"] == "error"]
    # the clock is CLOCK_MONOTONIC on Linux: the same as this process's time.monotonic
    clock = agent.rpc.clock()
    assert clock["name"] == "CLOCK_MONOTONIC"
    assert abs(clock["t"] - time.monotonic()) < 1.0
    assert agent.rpc.flush() == []
    assert agent.rpc.probe()["ok"] is False


def _expected_levels(samples: np.ndarray, scale: float, offset: float = 0.0) -> tuple:
    x = (samples.astype(float) - offset) / scale
    return float(np.abs(x).max()), float(np.sqrt(np.mean(x**2)))


@pytest.mark.parametrize("layout", ["u8", "s16", "s24", "s32", "f32", "f64"])
def test_core_levels_match_numpy_on_bytes_in_the_process(load, layout) -> None:
    agent = load("wasapi.js")
    rng = np.random.default_rng(7)
    x = rng.uniform(-0.7, 0.7, 257)
    if layout == "u8":
        raw = np.round(x * 127 + 128).astype(np.uint8)
        data, expected = raw.tobytes(), _expected_levels(raw, 128, 128)
    elif layout == "s16":
        raw = np.round(x * 32767).astype("<i2")
        data, expected = raw.tobytes(), _expected_levels(raw, 32768)
    elif layout == "s24":
        raw = np.round(x * 8388607).astype("<i4")
        data = b"".join(int(v).to_bytes(4, "little", signed=True)[:3] for v in raw)
        expected = _expected_levels(raw, 8388608)
    elif layout == "s32":
        raw = np.round(x * 2147483647).astype("<i4")
        data, expected = raw.tobytes(), _expected_levels(raw, 2147483648)
    else:
        raw = x.astype("<f4" if layout == "f32" else "<f8")
        data, expected = raw.tobytes(), _expected_levels(raw, 1.0)
    peak, rms = agent.rpc.levels(layout, data.hex())
    assert peak == pytest.approx(expected[0], rel=1e-6)
    assert rms == pytest.approx(expected[1], rel=1e-6)
    assert agent.rpc.levels("s16", "") == [None, None]


def test_core_decodes_flags_guids_and_formats(load) -> None:
    agent = load("wasapi.js")
    assert agent.rpc.flags(0, "wasapi") == []
    assert agent.rpc.flags(2, "wasapi") == ["SILENT"]
    # unknown bits are kept, in hex, after the named ones
    assert agent.rpc.flags(1 | 4 | 0x10, "wasapi") == [
        "DATA_DISCONTINUITY",
        "TIMESTAMP_ERROR",
        "0x10",
    ]
    # module names compare case-insensitively (Windows reports KERNEL32.DLL)
    assert agent.rpc.find_module("LIBC.SO.6") == "libc.so.6"
    assert agent.rpc.find_module("kernel32.dll") is None
    iid = "C8ADBD64-E71E-48A0-A4DE-185C395CD317"
    assert agent.rpc.guid(iid.lower()) == iid
    f32 = agent.rpc.waveformat(
        {"float": True, "bits": 32, "channels": 2, "rate": 48000, "extensible": True}
    )
    assert f32["layout"] == "f32" and f32["blockAlign"] == 8 and f32["tag"] == 0xFFFE
    assert f32["subformat"] == "00000003-0000-0010-8000-00AA00389B71"
    pcm = agent.rpc.waveformat(
        {"float": False, "bits": 16, "channels": 1, "rate": 16000, "extensible": False}
    )
    assert (pcm["layout"], pcm["blockAlign"], pcm["rate"]) == ("s16", 2, 16000)
    s24 = agent.rpc.waveformat(
        {"float": False, "bits": 24, "channels": 2, "rate": 48000, "extensible": True}
    )
    assert s24["layout"] == "s24"
    core = load("coreaudio.js")
    assert core.rpc.flags(16 | 64, "coreaudio") == ["OutputIsSilence", "Render"]
    planar = core.rpc.asbd(
        {"float": True, "bits": 32, "channels": 2, "rate": 44100, "interleaved": False}
    )
    assert planar["formatID"] == "lpcm" and planar["layout"] == "f32"
    assert planar["interleaved"] is False and planar["bytesPerFrame"] == 4
    s16 = core.rpc.asbd({"float": False, "bits": 16, "channels": 2, "rate": 48000,
                         "interleaved": True})  # fmt: skip
    assert (s16["layout"], s16["bytesPerFrame"]) == ("s16", 4)


def _sine(frames: int, channels: int, level: float) -> np.ndarray:
    return np.repeat(level * np.sin(np.arange(frames) / 7.0), channels).astype("<f4")


WASAPI_FORMAT = {"float": True, "bits": 32, "channels": 2, "rate": 48000, "extensible": True}


def _packets() -> list[dict]:
    signal_ = _sine(480, 2, 0.5).tobytes().hex()
    return [
        {"hex": signal_, "frames": 480, "flags": 0, "position": 0},
        {"hex": signal_, "frames": 480, "flags": 2, "position": 480},  # SILENT
        {"hex": signal_, "frames": 480, "flags": 5, "position": 960},
    ]


def test_wasapi_binding_follows_the_com_chain_and_reports_every_capture_call(load) -> None:
    agent = load("wasapi.js")
    result = agent.rpc.simulate_wasapi(
        {"format": WASAPI_FORMAT, "packets": _packets(), "lateAttach": False}
    )
    rows = result["rows"]
    assert [r["api"] for r in rows] == [
        "wasapi:Initialize",
        "wasapi:Start",
        *["wasapi:GetBuffer", "wasapi:ReleaseBuffer"] * 3,
        "wasapi:Stop",
    ]
    assert {r["kind"] for r in rows if r["api"] == "wasapi:GetBuffer"} == {"read"}
    assert {r["kind"] for r in rows if r["api"] != "wasapi:GetBuffer"} == {"call"}
    init = rows[0]
    assert init["share_mode"] == "shared" and init["format"]["layout"] == "f32"
    assert init["format_source"] == "initialize" and init["loopback"] is False
    reads = [r for r in rows if r["kind"] == "read"]
    expected_peak, expected_rms = _expected_levels(_sine(480, 2, 0.5), 1.0)
    assert [r["flags"] for r in reads] == [
        [],
        ["SILENT"],
        ["DATA_DISCONTINUITY", "TIMESTAMP_ERROR"],
    ]
    assert [r["silent"] for r in reads] == [False, True, False]
    assert [r["frames"] for r in reads] == [480] * 3
    assert [r["bytes"] for r in reads] == [480 * 8] * 3
    assert [r["device_position"] for r in reads] == [0, 480, 960]
    # a SILENT buffer holds nothing the app may use: no level is computed from it
    assert reads[1]["peak"] is None and reads[1]["rms"] is None
    for read in (reads[0], reads[2]):
        assert read["peak"] == pytest.approx(expected_peak, rel=1e-6)
        assert read["rms"] == pytest.approx(expected_rms, rel=1e-6)
    assert len({r["client"] for r in rows}) == 1
    assert [r["t"] for r in rows] == sorted(r["t"] for r in rows)
    assert {"IAudioCaptureClient::GetBuffer", "IAudioClient::Start", "CoCreateInstance"} <= set(
        result["hooks"]
    )


def test_wasapi_probe_finds_a_stream_set_up_before_the_agent(load) -> None:
    agent = load("wasapi.js")
    result = agent.rpc.simulate_wasapi(
        {"format": WASAPI_FORMAT, "packets": _packets(), "lateAttach": True}
    )
    probe = result["probe"]
    assert probe["ok"] is True
    assert [s["step"] for s in probe["steps"]][-1] == "GetService"
    rows = result["rows"]
    # the probe's own calls are not the app's: no Initialize, and only the app's Stop
    assert [r["api"] for r in rows] == [
        *["wasapi:GetBuffer", "wasapi:ReleaseBuffer"] * 3,
        "wasapi:Stop",
    ]
    reads = [r for r in rows if r["kind"] == "read"]
    # the stream's owner is unknown: the default device's mix format, and the row says so
    assert {r["format_source"] for r in reads} == {"probe-default-device"}
    assert reads[0]["peak"] == pytest.approx(0.5, abs=0.01)
    assert rows[-1]["client"] is not None  # classified as capture when it was stopped


def test_coreaudio_binding_reports_ioprocs_blocks_and_input_renders(load) -> None:
    agent = load("coreaudio.js")
    tone = _sine(512, 1, 0.25)
    spec = {
        "deviceFormat": {"float": True, "bits": 32, "channels": 2, "rate": 48000,
                         "interleaved": True},
        "unitFormat": {"float": True, "bits": 32, "channels": 2, "rate": 48000,
                       "interleaved": False},
        "packets": [{"hex": [_sine(512, 2, 0.25).tobytes().hex()], "channels": 2}],
        "blockPacket": {"hex": [_sine(256, 2, 0.5).tobytes().hex()], "channels": 2},
        "renders": [
            {"bus": 1, "frames": 512, "flags": 0, "hex": [tone.tobytes().hex()] * 2},
            {"bus": 1, "frames": 512, "flags": 16, "hex": [bytes(2048).hex()] * 2},
            {"bus": 0, "frames": 512, "flags": 0, "hex": [tone.tobytes().hex()]},
        ],
    }  # fmt: skip
    rows = agent.rpc.simulate_coreaudio(spec)["rows"]
    assert [r["api"] for r in rows] == [
        "coreaudio:AudioDeviceCreateIOProcID",
        "coreaudio:AudioDeviceStart",
        "coreaudio:IOProc",
        "coreaudio:AudioDeviceStop",
        "coreaudio:AudioDeviceCreateIOProcID",
        "coreaudio:IOProc",
        "coreaudio:AudioUnitRender",
        "coreaudio:AudioUnitRender",  # the output bus (0) is not a microphone read
    ]
    ioproc, block = (r for r in rows if r["api"] == "coreaudio:IOProc")
    assert (ioproc["device"], ioproc["frames"], ioproc["bytes"]) == (73, 512, 4096)
    assert ioproc["peak"] == pytest.approx(_expected_levels(tone, 1.0)[0], rel=1e-6)
    assert (block["device"], block["frames"]) == (74, 256)
    assert block["peak"] == pytest.approx(0.5, abs=0.01)
    first, silent = (r for r in rows if r["api"] == "coreaudio:AudioUnitRender")
    assert first["flags"] == [] and first["silent"] is False and first["bus"] == 1
    assert first["bytes"] == 2 * 512 * 4 and first["rms"] == pytest.approx(
        _expected_levels(tone, 1.0)[1], rel=1e-6
    )
    assert silent["flags"] == ["OutputIsSilence"] and silent["silent"] is True
    assert silent["peak"] == 0
    assert {r["kind"] for r in rows if r["api"].endswith(("IOProc", "Render"))} == {"read"}


def test_host_tracer_attaches_by_name_and_calibrates_the_agent_clock(target) -> None:
    pid, name = target
    events: list[tuple[str, dict]] = []
    tracer = HostTracer(
        [name], agent_source("wasapi.js"), time.monotonic(), lambda e, **f: events.append((e, f))
    )
    tracer.start()
    info = tracer.stop()
    assert [(e, f["pid"], f["comm"]) for e, f in events if e == "trace_attach"] == [
        ("trace_attach", pid, name)
    ]
    (platform,) = [f for e, f in events if e == "trace_platform"]
    assert platform["present"] is False and platform["api"] == "wasapi"
    assert not [e for e, _ in events if e == "trace_probe"]  # nothing to probe without WASAPI
    assert info["attached"] == [pid] and info["names"] == [name]
    calibration = info["calibration"][str(pid)]
    # both clocks are CLOCK_MONOTONIC here: the measured offset must be about zero
    assert calibration["agent_clock"] == "CLOCK_MONOTONIC" and calibration["rtt_s"] < 0.5
    assert abs(calibration["offset"]) < calibration["rtt_s"] + 0.01
    assert abs(info["clock_drift_s"][str(pid)]) < 0.05
    row = session_row(
        {"t": 10.0, "api": "wasapi:GetBuffer", "kind": "read", "tid": 3, "frames": 480,
         "flags": ["SILENT"], "silent": True, "peak": None, "rms": None},
        pid, offset=2.0, t0=5.0,
    )  # fmt: skip
    assert row["t"] == 7.0 and row["pid"] == pid and row["flags"] == ["SILENT"]
    assert row["bytes"] is None and row["silent"] is True and row["kind"] == "read"


def test_host_tracer_keeps_rows_the_agent_flushes_itself(target) -> None:
    """Rows that reach the tracer as messages (the agent's timer) land on the session clock."""
    pid, name = target
    t0 = time.monotonic()
    # emit() batches rows and a 200 ms timer sends them: feed rows through emit, not rpc
    extra = (
        "rpc.exports.emitRows = function (n) {"
        " for (let i = 0; i < n; i++) emit(row('wasapi:GetBuffer', 'read', clock.now(), 1,"
        " {frames: 480, flags: [], silent: false})); };"
    )
    tracer = HostTracer([name], agent_source("wasapi.js") + extra, t0, lambda e, **f: 0.0)
    tracer.start()
    try:
        tracer.sessions[pid][1].exports_sync.emit_rows(5)
        sent = time.monotonic() - t0
        time.sleep(0.6)  # > FLUSH_MS
        with tracer.lock:
            rows = list(tracer.rows)
    finally:
        tracer.stop()
    assert len(rows) == 5
    assert all(abs(r["t"] - sent) < 0.1 and r["pid"] == pid for r in rows)
    assert tracer.activity_since(0.0)["api"] == "wasapi:GetBuffer"


# --- hotkeys and commands -------------------------------------------------------------------


def test_every_registry_hotkey_parses_for_its_platform() -> None:
    parsed = 0
    for app, entry in REGISTRY.items():
        for platform in ("windows", "macos", "web"):
            spec = entry["platforms"][platform]
            if spec["offer"] in ("native", "web") and "mute_hotkey" in spec:
                hotkey = hotkeys.parse_hotkey(spec["mute_hotkey"], platform)
                assert hotkey.text == spec["mute_hotkey"], app
                parsed += 1
    assert parsed == 7 + 7 + 10


@pytest.mark.parametrize(
    ("text", "platform", "message"),
    [
        ("Ctrl+Foo", "windows", "unknown key 'Foo'"),
        ("Hyper+A", "windows", "unknown modifier 'Hyper'"),
        ("Cmd+A", "windows", "Cmd does not exist on windows"),
        ("Meta+A", "macos", "Meta does not exist on macos"),
        ("Ctrl+Ctrl+A", "windows", "repeated modifier"),
        ("Ctrl+", "windows", "empty part"),
        ("F25", "windows", "unknown key 'F25'"),
        ("Ctrl+é", "web", "unknown key"),
        ("Alt+A", "linux", "hotkey platform 'linux'"),
    ],
)
def test_hotkey_parser_rejects_what_it_cannot_send(text, platform, message) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        hotkeys.parse_hotkey(text, platform)


def test_windows_key_events_and_send_input_structures() -> None:
    events = hotkeys.windows_key_events(hotkeys.parse_hotkey("Ctrl+Shift+M", "windows"))
    assert events == [(0x11, False), (0x10, False), (0x4D, False), (0x4D, True),
                      (0x10, True), (0x11, True)]  # fmt: skip
    assert hotkeys.windows_key_events(hotkeys.parse_hotkey("Alt+a", "windows"))[1] == (0x41, False)
    assert hotkeys.windows_key_events(hotkeys.parse_hotkey("F5", "windows")) == [
        (0x74, False),
        (0x74, True),
    ]
    assert hotkeys.windows_key_events(hotkeys.parse_hotkey("Ctrl+Space", "windows"))[1][0] == 0x20
    # the layout SendInput expects: 40 bytes on 64-bit Windows, 28 on 32-bit
    assert ctypes.sizeof(hotkeys.INPUT) == (40 if ctypes.sizeof(ctypes.c_void_p) == 8 else 28)
    array = hotkeys.windows_inputs([(0x5B, False), (0x5B, True)])
    assert [i.type for i in array] == [hotkeys.INPUT_KEYBOARD] * 2
    assert [i.u.ki.dwFlags for i in array] == [0x1, 0x3]  # the Windows key is extended
    assert array[0].u.ki.wVk == 0x5B


def test_macos_keystroke_commands() -> None:
    hotkey = hotkeys.parse_hotkey("Cmd+Shift+A", "macos")
    assert hotkeys.osascript_hotkey(hotkey, "zoom.us") == [
        "osascript",
        "-e",
        'tell application "zoom.us" to activate',
        "-e",
        'tell application "System Events" to keystroke "a" using {command down, shift down}',
    ]
    space = hotkeys.osascript_hotkey(hotkeys.parse_hotkey("Cmd+Shift+Space", "macos"), "Slack")
    assert space[-1].endswith("keystroke space using {command down, shift down}")
    f1 = hotkeys.osascript_hotkey(hotkeys.parse_hotkey("Alt+F1", "macos"), "Webex")
    assert f1[-1] == 'tell application "System Events" to key code 122 using {option down}'
    with pytest.raises(ValueError, match="quotes"):
        hotkeys.osascript_hotkey(hotkey, 'zoom" to quit')


def test_join_urls_and_launch_commands() -> None:
    zoom = native.registry_entry({"registry_app": "zoom"}, "windows")
    url, via = native.join_url(zoom, {"meeting": "123 456", "password": "s3cr&t"})
    assert via == "protocol"
    assert url == "zoommtg://zoom.us/join?action=join&confno=123%20456&pwd=s3cr%26t"
    assert native.redact(url, {"password": "s3cr&t"}).endswith("&pwd=<password>")
    assert native.open_url_command(url, "windows") == [
        "rundll32.exe",
        "url.dll,FileProtocolHandler",
        url,
    ]
    assert native.open_url_command(url, "macos") == ["open", url]
    teams = native.registry_entry({"registry_app": "teams"}, "macos")
    assert native.join_url(teams, {"meeting": "19:abc@thread.v2/0"})[0] == (
        "msteams://teams.microsoft.com/l/meetup-join/19:abc@thread.v2/0"
    )
    webex = native.registry_entry({"registry_app": "webex"}, "macos")
    assert native.join_url(webex, {"site": "acme", "meeting": "jdoe"}) == (
        "https://acme.webex.com/meet/jdoe",
        "vendor page",
    )
    assert (
        native.join_url(webex, {"join_url": "webexteams://meet?sip={meeting}", "meeting": "x"})[1]
        == "config"
    )
    with pytest.raises(ValueError, match="no URL handler"):
        native.open_url_command(url, "linux")


@pytest.mark.parametrize(
    ("driver", "options", "message"),
    [
        ("native-windows", {}, "registry_app is required"),
        ("native-windows", {"registry_app": "zoom", "meetnig": "1"}, "unknown option(s) meetnig"),
        ("native-macos", {"registry_app": "meet"}, "meet is not offered as a native app on macos"),
        ("native-windows", {"registry_app": "skype"}, "'skype' is not in workflow/apps.yaml"),
        ("native-windows", {"registry_app": "zoom", "leave_hotkey": "Cmd+Q"}, "Cmd does not"),
        ("web", {"registry_app": "zoom", "interface": "en0"}, "unknown option(s) interface"),
    ],
)
def test_driver_checks_refuse_bad_configs_before_any_job(driver, options, message) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        get_driver(driver).check("hotkey", options)


def test_drivers_declare_source_modes_and_runner() -> None:
    for name in ("native-windows", "native-macos"):
        cls = get_driver(name)
        assert (cls.source, cls.modes, cls.runner) == ("native", ("hotkey",), "host")
        cls.check("hotkey", {"registry_app": "zoom"})
        with pytest.raises(ValueError, match="mode 'button'"):
            cls.check("button", {"registry_app": "zoom"})
    cls = get_driver("web")
    assert (cls.source, cls.modes, cls.network) == ("web", ("hotkey", "button"), "internet")
    for app in REGISTRY:
        cls.check("button", {"registry_app": app})


def test_playwright_keys_and_button_labels() -> None:
    keys = {t: web.playwright_keys(hotkeys.parse_hotkey(t, "web")) for t in REGISTRY_WEB_HOTKEYS}
    assert keys == {
        "Alt+A": "Alt+KeyA",
        "Ctrl+Shift+Space": "Control+Shift+Space",
        "Ctrl+Shift+M": "Control+Shift+KeyM",
        "Ctrl+D": "Control+KeyD",
        "Ctrl+M": "Control+KeyM",
        "m": "KeyM",
        "Ctrl+Shift+A": "Control+Shift+KeyA",
        "Ctrl+Alt+M": "Control+Alt+KeyM",
    }
    assert web.playwright_keys(hotkeys.parse_hotkey("Cmd+1", "web")) == "Meta+Digit1"
    labels = {
        "Turn off microphone (ctrl + d)": False,
        "Turn on microphone (ctrl + d)": True,
        "Mute": False,
        "Unmute": True,
        "Mute microphone": False,
        "Unmute my microphone": True,
        "Microphone settings": None,
        None: None,
    }
    for label, state in labels.items():
        assert web.button_state(label) is state, label


REGISTRY_WEB_HOTKEYS = sorted(
    {e["platforms"]["web"]["mute_hotkey"] for e in REGISTRY.values()}, key=str
)


def test_uplink_plan_commands_and_resolvers(tmp_path: Path) -> None:
    p = uplink.plan("reallymuted-1234-abcdef")
    assert p == uplink.plan("reallymuted-1234-abcdef")  # deterministic
    assert len(p.host_if) < 16 and len(uplink.NS_IF) < 16  # IFNAMSIZ
    assert p.host_addr.endswith("/30") and p.gateway.startswith("10.231.")
    assert int(p.source.split(".")[-1]) == int(p.gateway.split(".")[-1]) + 1
    commands = uplink.up_commands(p, "eth0")
    assert commands[0][:4] == ["ip", "link", "add", p.host_if]
    assert commands[0][-2:] == ["netns", "reallymuted-1234-abcdef"]
    assert ["ip", "-n", p.netns, "route", "add", "default", "via", p.gateway] in commands
    masquerade = next(c for c in commands if c[-1] == "masquerade")
    assert masquerade[masquerade.index("saddr") + 1] == p.source
    assert masquerade[masquerade.index("oifname") + 1] == "eth0"
    assert uplink.down_commands(p) == [
        ["nft", "delete", "table", "ip", p.table],
        ["ip", "link", "del", p.host_if],
    ]
    loopback = tmp_path / "resolv.conf"
    loopback.write_text("nameserver 127.0.0.53\n")
    assert uplink.resolvers({"dns": ["9.9.9.9"]}, loopback) == ["9.9.9.9"]
    upstream = tmp_path / "upstream.conf"
    upstream.write_text("# x\nnameserver ::1\nnameserver 192.0.2.53\n")
    assert uplink.resolvers({}, upstream) == ["192.0.2.53"]
    if not Path("/run/systemd/resolve/resolv.conf").exists():
        with pytest.raises(uplink.UplinkProblem, match="loopback only"):
            uplink.resolvers({}, loopback)


def test_internet_probe_names_what_failed() -> None:
    problem = uplink.internet_problem(["meeting.invalid"])  # .invalid never resolves (RFC 2606)
    assert problem is not None and problem.startswith("cannot resolve meeting.invalid")


# --- refusals -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stimuli") / "tone.wav"
    make_stimulus({"kind": "tone", "seconds": 2, "freq_hz": 440, "level": 0.5}, path)
    return path


def _spec(tone: Path, driver: str, options: dict) -> SessionSpec:
    return SessionSpec(
        app="x",
        driver=driver,
        mode="hotkey",
        stimulus="tone",
        stimulus_path=str(tone),
        rep=1,
        schedule=[{"state": "unmuted", "seconds": 1}, {"state": "muted", "seconds": 1}],
        options=options,
    )


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="tests the refusal on Linux")
@pytest.mark.parametrize(
    ("driver", "app", "message"),
    [
        ("native-windows", "zoom", "driver native-windows runs on Windows hosts with Zoom "
         "installed; this host is Linux"),
        ("native-macos", "webex", "driver native-macos runs on macOS hosts with Cisco Webex "
         "installed; this host is Linux"),
    ],
)  # fmt: skip
def test_a_native_session_refuses_at_once_here(tone, tmp_path, driver, app, message) -> None:
    out = tmp_path / "out"
    options = {"registry_app": app, "interface": "en0", "meeting": "1", "password": "hunter2"}
    started = time.monotonic()
    manifest = run_session(_spec(tone, driver, options), out)
    assert time.monotonic() - started < 10
    assert manifest["status"] == "failed" and manifest["source"] == "native"
    assert manifest["failure"] == {"step": "preflight", "component": "host", "error": message}
    assert sorted(p.name for p in out.iterdir()) == [FAILED]
    on_disk = json.loads((out / FAILED).read_text())
    assert on_disk["source"] == "native" and on_disk["driver"] == driver
    assert on_disk["options"]["password"] == "<redacted>"
    assert "hunter2" not in (out / FAILED).read_text()


def test_a_web_session_refuses_without_internet(tone, tmp_path) -> None:
    out = tmp_path / "out"
    options = {
        "registry_app": "jitsi",
        "meeting": "x",
        "join_url": "https://meeting.invalid/{meeting}",
    }
    manifest = run_session(_spec(tone, "web", options), out)
    assert manifest["status"] == "failed" and manifest["source"] == "web"
    failure = manifest["failure"]
    assert failure["step"] == "preflight"
    assert failure["error"].startswith(
        "UplinkProblem: driver web needs internet access: cannot resolve meeting.invalid"
    )
    assert sorted(p.name for p in out.iterdir()) == [FAILED]
    # a meeting id is needed before anything else is worth checking
    manifest = run_session(_spec(tone, "web", {"registry_app": "jitsi"}), tmp_path / "none")
    assert "set the option `meeting` for Jitsi Meet" in manifest["failure"]["error"]


# --- the web driver against a fake app ---------------------------------------------------------


@pytest.fixture(scope="module")
def fake_app() -> Iterator[str]:
    """The fake app's meeting pages on 127.0.0.1: any /room/... path serves it."""
    page = FAKE_APP.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = 200 if self.path.startswith("/room/") else 404
            self.send_response(status)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            if status == 200:
                self.wfile.write(page)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/room/{{meeting}}"
    server.shutdown()


@pytest.fixture(scope="module")
def microphone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private PulseAudio with the testbed's pipe microphone: its PULSE_SERVER."""
    if shutil.which("pulseaudio") is None:
        pytest.skip("pulseaudio is not installed")
    paths = audio.prepare_pulse(tmp_path_factory.mktemp("pulse"), 48000, 1, 1)
    proc = subprocess.Popen(
        audio.pulse_command(paths, paths.root / "pulse.log"),
        env=audio.pulse_env(paths),
        start_new_session=True,
    )
    try:
        audio.wait_pulse_ready(paths, lambda: proc.poll() is None)
        yield paths.server
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A scratch directory with a short path: Chromium's singleton socket path must fit in
    sun_path (the session runner's scratch is short too)."""
    path = Path(tempfile.mkdtemp(prefix="rmw-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _web_driver(tmp_path: Path, server: str, url: str, mode: str, query: str = ""):
    events: list[tuple[str, dict]] = []
    options = {
        "registry_app": "meet",  # hotkey Ctrl+D, button[aria-label*='microphone' i]
        "meeting": "abc-defg-hij",
        "display_name": "reallymuted",
        "join_url": url + query,
        "join_timeout_s": 20,
        "cdp_port": 9300 + secrets.randbelow(500),
    }
    ctx = SessionContext(
        app="meet-web",
        mode=mode,
        options=options,
        workdir=tmp_path,
        logdir=tmp_path,
        procs=ProcessSet(tmp_path / "pids.jsonl"),
        env={"PULSE_SERVER": server, "PATH": os.environ["PATH"]},
        event=lambda name, **fields: events.append((name, fields)) or 0.0,
    )
    return get_driver("web")(ctx), events


@pytest.mark.testbed
@pytest.mark.parametrize(
    ("mode", "query", "methods"),
    [
        ("hotkey", "", ["shortcut", "shortcut"]),
        ("hotkey", "?noshortcut", ["button", "button"]),  # the shortcut does nothing: fallback
        ("button", "", ["button", "button"]),
    ],
)
def test_web_driver_joins_mutes_and_confirms_on_a_fake_app(
    microphone, fake_app, short_dir, mode, query, methods
) -> None:
    driver, events = _web_driver(short_dir, microphone, fake_app, mode, query)
    driver.start()
    try:
        driver.prepare()
        assert events[0][0] == "page_ready" and events[0][1]["via"] == "config"
        joined = driver.join()
        assert joined["url"].endswith("/room/abc-defg-hij" + query)
        assert joined["state"]["muted"] is False and "unmuted_at_join" not in joined
        muted = driver.set_muted(True)
        assert muted["confirmed"] is True and muted["state"]["muted"] is True
        assert muted["fallback"] is (query == "?noshortcut")
        assert muted["method"] == ("button" if query or mode == "button" else "hotkey")
        # the WebRTC sender's track is disabled: soft mute, seen independently of the UI
        senders = muted["state"]["webrtc"]["senders"]
        assert [s["enabled"] for s in senders] == [False]
        unmuted = driver.set_muted(False)
        assert unmuted["state"]["muted"] is False
        assert [s["enabled"] for s in unmuted["state"]["webrtc"]["senders"]] == [True]
        log = driver.page.evaluate("window.log")
        assert [entry["via"] for entry in log] == methods
        assert {entry["name"] for entry in log} == {"reallymuted"}
        assert driver.leave() == {"method": "navigate away"}
    finally:
        driver.stop()


@pytest.mark.testbed
def test_web_driver_unmutes_an_app_that_joins_muted_and_fails_on_a_stuck_one(
    microphone, fake_app, short_dir
) -> None:
    tmp_path = short_dir
    (tmp_path / "a").mkdir()
    driver, _ = _web_driver(tmp_path / "a", microphone, fake_app, "hotkey", "?joinmuted")
    driver.start()
    try:
        driver.prepare()
        joined = driver.join()
        assert joined["state"]["muted"] is True
        assert joined["unmuted_at_join"]["confirmed"] is True
        assert driver.state()["muted"] is False
    finally:
        driver.stop()
    (tmp_path / "b").mkdir()
    driver, _ = _web_driver(tmp_path / "b", microphone, fake_app, "hotkey", "?stuck")
    driver.start()
    try:
        driver.prepare()
        driver.join()
        with pytest.raises(DriverError, match=r"did not reach muted=True \(tried hotkey, button"):
            driver.set_muted(True)
    finally:
        driver.stop()


# --- the workflow ------------------------------------------------------------------------


def _expected_sessions(overlay: str) -> set[tuple[str, str, str, int]]:
    """From the registry: every app offered that way there, except discontinued ones."""
    config = yaml.safe_load((REPO / "config" / f"{overlay}.yaml").read_text())
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    reps = config["sessions"]["repetitions"]
    stimuli = [s for s, spec in base["sessions"]["stimuli"].items() if "apps" not in spec]
    platform, offer, modes = {
        "native-windows": ("windows", "native", ["hotkey"]),
        "native-macos": ("macos", "native", ["hotkey"]),
        "web": ("web", "web", ["hotkey", "button"]),
    }[overlay]
    suffix = platform if platform != "web" else "web"
    apps = [
        f"{app}-{suffix}"
        for app, entry in REGISTRY.items()
        if entry["platforms"][platform]["offer"] == offer
        and "discontinued" not in entry.get("status", "")
    ]
    return {(a, m, s, r) for a in apps for m in modes for s in stimuli for r in range(1, reps + 1)}


@pytest.mark.workflow
@pytest.mark.parametrize("overlay", ["native-windows", "native-macos", "web"])
def test_dry_run_plans_one_session_job_per_app_mode_stimulus_rep(tmp_path, overlay) -> None:
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")  # the base the overlay merges on
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-s", str(REPO / "Snakefile"), "-d",
         str(tmp_path), "--configfile", str(REPO / "config" / f"{overlay}.yaml")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    table = dict(re.findall(r"^(\w+)\s+(\d+)$", output, flags=re.M))
    planned = set()
    for block in output.split("rule session:")[1:]:
        wildcards = re.search(r"wildcards: (.*)", block).group(1)
        fields = dict(item.split("=") for item in wildcards.split(", "))
        planned.add((fields["app"], fields["mode"], fields["stimulus"], int(fields["rep"])))
    expected = _expected_sessions(overlay)
    assert planned == expected
    assert int(table["session"]) == len(expected)
    # stages.reference is off: no job of the released data
    assert "userstudy" not in output and "classifier_" not in output


@pytest.mark.workflow
def test_running_a_native_session_job_here_fails_with_the_reason(tmp_path) -> None:
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    target = "results/raw/zoom-windows/hotkey-speech/rep1/manifest.json"
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", target, "-c1", "-s", str(REPO / "Snakefile"), "-d",
         str(tmp_path), "--configfile", str(REPO / "config/native-windows.yaml")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode != 0, run.stderr[-2000:]
    log = (tmp_path / "logs/sessions/zoom-windows/hotkey-speech/rep1.log").read_text()
    assert "driver native-windows runs on Windows hosts with Zoom installed; this host is" in log
    failed = json.loads((tmp_path / target).with_name(FAILED).read_text())
    assert failed["source"] == "native" and failed["failure"]["step"] == "preflight"
    assert not (tmp_path / target).exists()


# --- the host runner, on Linux -----------------------------------------------------------------


class LinuxHostDriver(native.NativeDriver):
    """A native driver for *this* host, to run the host runner here: the "app" is the target
    process, its "capture API" a test agent (see `host_agent`). Tests the runner, not a driver."""

    name = "test-linux-host"
    platform = "linux"
    audio_api = "test"
    agent = "wasapi.js"

    @classmethod
    def check(cls, mode: str, options: dict) -> None:
        if mode not in cls.modes:
            raise ValueError(f"mode {mode!r}")

    @classmethod
    def host_problem(cls, options: dict) -> str | None:
        return None

    def process_names(self) -> list[str]:
        return [self.ctx.options["process"]]

    @property
    def hotkey(self) -> hotkeys.Hotkey:
        return hotkeys.parse_hotkey("Ctrl+M", "windows")

    def join(self) -> dict:
        return {"url": "test:", "confirmed": False}

    def press(self, hotkey: hotkeys.Hotkey) -> dict:
        return {"pressed": hotkey.text}

    def quit_app(self) -> None:
        pass


def host_agent(reads_after_s: float | None) -> str:
    """native_core.js plus a stand-in capture API that reports itself present and, from
    ``reads_after_s`` after loading, one 10 ms read every 10 ms."""
    snippet = "reportPlatform('test', true);\n"
    if reads_after_s is not None:
        snippet += (
            f"setTimeout(() => setInterval(() => emit(row('test:read', 'read', clock.now(),"
            f" Process.getCurrentThreadId(), {{frames: 480, bytes: 960, peak: 0.5, rms: 0.25}}"
            f")), 10), {int(reads_after_s * 1000)});\n"
        )
    return (AGENTS / "native_core.js").read_text() + snippet


@pytest.fixture
def host_runner(monkeypatch, target):
    from reallymuted.testbed import drivers, host

    monkeypatch.setitem(drivers.REGISTRY, "test-linux-host", f"{__name__}:LinuxHostDriver")
    monkeypatch.setattr(host, "player_command", lambda wav, host, s: ["sleep", str(int(s))])

    def run(tone: Path, out: Path, reads_after_s: float | None, **options) -> dict:
        monkeypatch.setattr(host, "agent_source", lambda agent: host_agent(reads_after_s))
        spec = SessionSpec(
            app="fake-host",
            driver="test-linux-host",
            mode="hotkey",
            stimulus="tone",
            stimulus_path=str(tone),
            rep=1,
            schedule=[
                {"state": "unmuted", "seconds": 1},
                {"state": "muted", "seconds": 1},
                {"state": "unmuted", "seconds": 0.5},
            ],
            options={"process": target[1], "interface": "lo", "password": "pw", **options},
            lead_s=0.3,
            tail_s=0.3,
        )
        return run_session(spec, out)

    return run


@pytest.mark.testbed
def test_host_runner_records_the_evidence_contract(host_runner, tone, tmp_path, target) -> None:
    out = tmp_path / "out"
    manifest = host_runner(tone, out, reads_after_s=0.0, join_timeout_s=5)
    assert manifest["status"] == "ok", manifest["failure"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["manifest.json", "events.jsonl", "mic_trace.jsonl", "traffic.pcapng", "client.log"]
    )
    assert manifest["source"] == "native" and manifest["netns"] is None
    assert manifest["capture"]["interface"] == "lo" and manifest["capture"]["isolated"] is False
    assert manifest["options"]["password"] == "<redacted>"
    assert manifest["tracer"]["attached"] == [target[0]]
    events = read_jsonl(out / "events.jsonl")
    names = [e["event"] for e in events]
    for name in ("session_start", "capture_start", "stimulus_start", "trace_attach", "join",
                 "mute", "unmute", "leave", "session_end"):  # fmt: skip
        assert name in names, name
    assert names.index("trace_attach") < names.index("join") < names.index("mute")
    join = next(e for e in events if e["event"] == "join")
    assert join["audio_started_api"] == "test:read" and join["audio_started_t"] >= join["t"]
    mute = next(e for e in events if e["event"] == "mute")
    assert mute["pressed"] == "Ctrl+M" and mute["confirmed"] is False
    reads = read_jsonl(out / "mic_trace.jsonl")
    assert {r["api"] for r in reads} == {"test:read"} and {r["kind"] for r in reads} == {"read"}
    assert {r["pid"] for r in reads} == {target[0]}
    end = next(e["t"] for e in events if e["event"] == "session_end")
    assert reads[0]["t"] >= 0 and reads[-1]["t"] <= end + 0.1  # on the session clock
    assert 50 < len(reads) < 400  # about 100/s for a few seconds
    assert "==> commands <==" not in (out / "client.log").read_text()  # no command was run


@pytest.mark.testbed
def test_host_runner_fails_when_the_app_never_opens_the_microphone(
    host_runner, tone, tmp_path
) -> None:
    out = tmp_path / "out"
    manifest = host_runner(tone, out, reads_after_s=None, join_timeout_s=1)
    assert manifest["status"] == "failed" and manifest["source"] == "native"
    assert manifest["failure"]["step"] == "join"
    assert "did not open the microphone within 1 s of the join URL" in manifest["failure"]["error"]
    assert sorted(p.name for p in out.iterdir()) == [FAILED]


def test_select_keeps_only_the_overlay_apps() -> None:
    from reallymuted.study import matrix

    sessions = {
        "repetitions": 2,
        "stimuli": {"speech": {"kind": "speech"}},
        "apps": {
            "control-stops": {"driver": "control", "modes": ["ctrl"], "policy": "stops"},
            "zoom-windows": {"driver": "native-windows", "modes": ["hotkey"],
                             "registry_app": "zoom"},
        },
    }  # fmt: skip
    assert len(matrix(sessions)) == 4
    sessions["select"] = ["zoom-windows"]
    assert matrix(sessions) == [
        ("zoom-windows", "hotkey", "speech", 1),
        ("zoom-windows", "hotkey", "speech", 2),
    ]
    sessions["select"] = ["zoom-macos"]
    with pytest.raises(ValueError, match=r"sessions.select: \['zoom-macos'\] not in sessions.apps"):
        matrix(sessions)
