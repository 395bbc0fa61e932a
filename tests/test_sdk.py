"""The vendors' own client libraries (drivers sdk and sdk-preview), on the real page.

Three kinds of test:

* set-up: what ``make setup`` built is what the lock pins, is recorded with its integrity
  hash, is refused when changed, and is never committed;
* the harness, in Chromium on this machine's loopback: a track change is attributed to the
  script that made it (so a page that mutes by itself is told from the vendor's code), and
  every request to another host lands at the local collector, none elsewhere;
* one real session per SDK and mode through the session runner: each mute was done by the
  vendor's own code (the session fails otherwise), and what it did is what the evidence shows.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from reallymuted.io import read_jsonl
from reallymuted.paths import REPO
from reallymuted.testbed import sdk as vendor
from reallymuted.testbed.drivers import get_driver
from reallymuted.testbed.drivers.chromium import BINARY, FLAGS, WEB
from reallymuted.testbed.drivers.sdk import SdkDriver, foreign_operations
from reallymuted.testbed.spec import SessionSpec
from reallymuted.testbed.stimuli import make_stimulus
from reallymuted.testbed.summary import summarise
from reallymuted.testbed.supervisor import run_session

PHASES = [{"state": "unmuted", "seconds": 3}, {"state": "muted", "seconds": 6}]
PHASES.append({"state": "unmuted", "seconds": 3})


# -- set-up ---------------------------------------------------------------------------------


def test_the_bundles_are_the_locked_packages_with_their_integrity() -> None:
    pins = json.loads((vendor.SDK_ENV / "package.json").read_text())["dependencies"]
    assert all(v[0].isdigit() for v in pins.values()), "exact versions only, no ranges"
    locked = vendor.locked_packages()
    for name, sdk in vendor.SDKS.items():
        record = vendor.provenance(name)
        packages = {p["name"]: p for p in record["packages"]}
        for package in sdk.namespaces.values():
            assert packages[package]["version"] == pins[package]
            assert packages[package]["integrity"] == locked[package]["integrity"]
            assert packages[package]["integrity"].startswith("sha512-")
        assert record["source"] == sdk.source and record["scope"] == sdk.scope


def test_a_changed_bundle_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "dist"
    shutil.copytree(vendor.BUNDLES, copy, ignore=shutil.ignore_patterns("zoom-lib"))
    monkeypatch.setattr(vendor, "BUNDLES", copy)
    monkeypatch.setattr(vendor, "PROVENANCE", copy / "provenance.json")
    assert vendor.provenance("twilio")["bundle"] == "twilio.js"
    with (copy / "twilio.js").open("a") as fh:
        fh.write("\n// changed\n")
    with pytest.raises(vendor.SdkSetupError, match="differs from its build record"):
        vendor.provenance("twilio")


def test_no_vendor_code_is_committed() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "envs/sdk"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    assert sorted(tracked) == ["envs/sdk/package-lock.json", "envs/sdk/package.json"]
    for built in (vendor.NODE_MODULES, vendor.BUNDLES):
        ignored = subprocess.run(["git", "check-ignore", "-q", str(built)], cwd=REPO, check=False)
        assert ignored.returncode == 0, f"{built} is not ignored by git"


def test_each_sdk_runs_as_the_driver_of_its_source() -> None:
    get_driver("sdk").check("stop-on-mute", {"sdk": "livekit"})
    get_driver("sdk-preview").check("sdk", {"sdk": "zoom"})
    with pytest.raises(ValueError, match="runs as driver sdk-preview"):
        get_driver("sdk").check("sdk", {"sdk": "zoom"})
    with pytest.raises(ValueError, match="has modes"):
        get_driver("sdk").check("analyser", {"sdk": "webex"})
    with pytest.raises(ValueError, match="is the code of 'webex'"):
        get_driver("sdk").check("sdk", {"sdk": "webex", "registry_app": "zoom"})


# -- the harness, in Chromium ---------------------------------------------------------------

# A stand-in vendor and its glue, served beside the real harness: the "vendor" mutes by
# flipping `enabled`; the glue either calls it or (mode page-mutes) flips it itself, and at
# join asks for four kinds of request to a host that is not this machine.
PROBE_VENDOR = "window.ProbeSdk = { mute(track, muted) { track.enabled = !muted; } };\n"
PROBE_GLUE = """
(function () {
  let track = null;
  reallymuted.register({
    name: 'probe', modes: ['sdk', 'page-mutes'],
    async join(ctx) {
      track = (await navigator.mediaDevices.getUserMedia({audio: true})).getAudioTracks()[0];
      const far = 'https://telemetry.example.com/upload';
      await fetch(far, {method: 'POST', body: '{"level": 0.5}'}).catch(() => {});
      const xhr = new XMLHttpRequest(); xhr.open('POST', far + '?xhr'); xhr.send('x');
      navigator.sendBeacon(far + '?beacon', 'b');
      try { new WebSocket('wss://media.example.com/socket'); } catch (e) {}
      return {transport: null};
    },
    async setMuted(muted, ctx) {
      if (ctx.mode === 'page-mutes') track.enabled = !muted; else ProbeSdk.mute(track, muted);
      return {};
    },
    async leave() { return {}; },
    state() { return {enabled: track ? track.enabled : null}; },
  });
})();
"""


@pytest.fixture
def probe_page(tmp_path: Path):
    """The real harness page with the probe SDK, served on loopback; the collector beside it."""
    root = tmp_path / "site"
    shutil.copytree(WEB, root, ignore=shutil.ignore_patterns("sdk"))
    (root / "sdk").mkdir()
    (root / "sdk/probe.js").write_text(PROBE_GLUE)
    (root / "vendor").mkdir()
    (root / "vendor/probe.js").write_text(PROBE_VENDOR)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    log = tmp_path / "collector.jsonl"
    argv = [sys.executable, "-m", "reallymuted.testbed.collector", "--port", "0"]
    collector = subprocess.Popen([*argv, "--out", str(log), "--t0", repr(time.monotonic())])
    try:
        deadline = time.monotonic() + 10
        while not (log.is_file() and '"listening"' in log.read_text()):
            assert time.monotonic() < deadline and collector.poll() is None, "no collector"
            time.sleep(0.05)
        port = json.loads(log.read_text().splitlines()[0])["port"]
        yield f"http://127.0.0.1:{server.server_port}/sdk.html?sdk=probe&collector={port}", log
    finally:
        collector.terminate()
        collector.wait(10)
        server.shutdown()


def _run_probe(url: str, mode: str, tmp_path: Path) -> tuple[dict, dict, list[dict]]:
    from playwright.sync_api import sync_playwright

    flags = [*FLAGS, *SdkDriver.extra_flags, "--use-fake-device-for-media-stream"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=BINARY, args=flags)
        try:
            page = browser.new_page()
            page.goto(url)
            page.wait_for_function("window.prepared !== undefined")
            page.evaluate("window.prepared")
            joined = page.evaluate("o => sdkJoin(o)", {"mode": mode})
            muted = page.evaluate("m => sdkSetMuted(m)", True)
            time.sleep(0.5)  # the beacon and the socket go out on their own
            log = page.evaluate("drainLog()")
        finally:
            browser.close()
    return joined, muted, log


@pytest.mark.testbed
def test_the_harness_tells_whose_code_changed_the_track(probe_page, tmp_path: Path) -> None:
    url, _ = probe_page
    _, by_vendor, _ = _run_probe(url, "sdk", tmp_path)
    assert [op["caller"] for op in by_vendor["operations"]] == ["/vendor/probe.js"]
    assert foreign_operations(by_vendor["operations"]) == []
    _, by_page, _ = _run_probe(url, "page-mutes", tmp_path)
    assert [op["caller"] for op in by_page["operations"]] == ["/sdk/probe.js"]
    assert foreign_operations(by_page["operations"]) == by_page["operations"]


@pytest.mark.testbed
def test_every_request_to_another_host_lands_at_the_collector(probe_page, tmp_path) -> None:
    url, collector_log = probe_page
    _, _, log = _run_probe(url, "sdk", tmp_path)
    asked = sorted(e["kind"] for e in log if e["event"] == "request")
    assert asked == ["beacon", "fetch", "websocket", "xhr"]
    received = [e for e in read_jsonl(collector_log) if e.get("event") == "request"]
    paths = sorted(e["path"].split("?")[0] for e in received)
    assert paths == [
        "/intercepted/beacon",
        "/intercepted/fetch",
        "/intercepted/websocket",
        "/intercepted/xhr",
    ]
    fetched = next(e for e in received if e["path"].startswith("/intercepted/fetch"))
    assert "telemetry.example.com" in fetched["path"] and fetched["body"] == '{"level": 0.5}'


# -- real sessions ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stimuli") / "tone.wav"
    make_stimulus({"kind": "tone", "seconds": 5, "freq_hz": 440, "level": 0.5}, path)
    return path


def run(tone: Path, out: Path, driver: str, mode: str, sdk: str) -> dict:
    spec = SessionSpec(
        app=f"sdk-{sdk}",
        driver=driver,
        mode=mode,
        stimulus="tone",
        stimulus_path=str(tone),
        rep=1,
        schedule=PHASES,
        options={"sdk": sdk},
        lead_s=0.5,
        tail_s=0.5,
    )
    manifest = run_session(spec, out)
    assert manifest["status"] == "ok", manifest["failure"]
    return manifest


def only_loopback(pcap: Path) -> set[str]:
    """Every address in the capture, and any DNS query name (there must be none)."""
    fields = ["ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "dns.qry.name"]
    argv = ["tshark", "-r", str(pcap), "-T", "fields", "-E", "separator=,"]
    for f in fields:
        argv += ["-e", f]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return {value for line in out.splitlines() for value in line.split(",") if value}


# (driver, mode, sdk) -> what the vendor's own mute did to the microphone track(s)
CASES = {
    ("sdk", "sdk", "webex"): ["a1 enabled=False by /vendor/webex.js"],
    ("sdk", "sdk", "whereby"): ["a1 enabled=False by /vendor/whereby.js"],
    ("sdk", "analyser", "whereby"): ["a1 enabled=False by /vendor/whereby.js"],
    ("sdk-preview", "sdk", "zoom"): [],
    ("sdk", "sdk", "livekit"): ["a1 enabled=False by /vendor/livekit.js"],
    ("sdk", "stop-on-mute", "livekit"): [
        "a1 stop by /vendor/livekit.js",
        "a1 enabled=False by /vendor/livekit.js",
    ],
    ("sdk", "sdk", "twilio"): ["a1 enabled=False by /vendor/twilio.js"],
}


def _did(operations: list[dict]) -> list[str]:
    out = []
    for op in operations:
        what = "stop" if op["event"] == "track_stop" else f"enabled={op['value']}"
        out.append(f"{op['track']} {what} by {op['caller']}")
    return out


@pytest.mark.testbed
@pytest.mark.parametrize(("driver", "mode", "sdk"), list(CASES), ids=["-".join(c) for c in CASES])
def test_the_vendors_own_mute(
    tone: Path, tmp_path: Path, reference_dir: Path, driver: str, mode: str, sdk: str
) -> None:
    """The session succeeds only if the vendor's bundle made every track change of the mute;
    what it did, the tracks it opened and what the witnesses and the wire saw follow."""
    out = tmp_path / sdk
    manifest = run(tone, out, driver, mode, sdk)
    assert manifest["source"] == vendor.SDKS[sdk].source
    assert manifest["client_code"]["packages"][0]["name"] in vendor.SDKS[sdk].namespaces.values()
    events = read_jsonl(out / "events.jsonl")
    (mute,) = [e for e in events if e["event"] == "mute"]
    assert mute["by_vendor"] is True
    assert _did(mute["operations"]) == CASES[(driver, mode, sdk)]
    opened = [e for e in events if e["event"] == "page_track_opened"]
    tracks = {("sdk", "analyser", "whereby"): 2, ("sdk", "stop-on-mute", "livekit"): 2}
    assert len(opened) == tracks.get((driver, mode, sdk), 1)
    phases = {p["state"]: p for p in summarise(out)["phases"] if p["state"] == "muted"}
    muted = phases["muted"]
    if mode == "stop-on-mute":  # the microphone is closed while muted, and nothing is sent
        assert muted["os_read_fraction"] < 0.1 and muted["rtp_pkts_per_s"] == 0
    else:  # the microphone stays open at both witnesses
        assert muted["os_read_fraction"] > 0.9 and muted["app_reads_per_s"] > 40
        transport = sdk != "zoom"  # the preview sends nothing
        assert (45 <= muted["rtp_pkts_per_s"] <= 55) if transport else muted["rtp_pkts_per_s"] == 0
    assert only_loopback(out / "traffic.pcapng") <= {"127.0.0.1", "::1"}
    if sdk == "webex":  # its own telemetry producers ran, and went to the collector only
        posted = [e["path"] for e in read_jsonl(out / "collector.jsonl") if "path" in e]
        assert "/sdk/mediaquality" in posted and "/sdk/rtcstats" in posted
        check_webex_telemetry(out, manifest, events, reference_dir, tmp_path)


def check_webex_telemetry(
    out: Path, manifest: dict, events: list[dict], released: Path, tmp_path: Path
) -> None:
    """What Webex's library produced is decoded per record, with its audio fields listed, and
    set beside the native client's released record (the real one, decoded by its own stage)."""
    import pandas as pd

    from reallymuted.analysis import sdk as sdk_analysis
    from reallymuted.analysis.evidence import mute_segments
    from reallymuted.analysis.telemetry.compared import compared_table
    from reallymuted.analysis.telemetry.reference import decode_reference

    row = sdk_analysis.session_row(out)
    assert row["mute_did"] == "a1 enabled=false by /vendor/webex.js"
    assert row["client_code"].startswith("@webex/media-helpers 3.12.0")
    records = sdk_analysis.telemetry_rows(out, manifest, mute_segments(events))
    assert {r["kind"] for r in records} == {"mediaquality", "rtcstats"}
    muted = [r for r in records if r["state"] == "muted" and r["kind"] == "rtcstats"]
    # the media source's audioLevel is in the stats dumped while muted, whatever it holds
    assert any("audioLevel" in r["audio_field_names"] for r in muted)
    assert row["telemetry_records_muted"] == sum(r["state"] == "muted" for r in records)
    tables = {k: tmp_path / f"{k}.out" for k in ("table", "problems", "values")}
    decode_reference(released / "UserStudy/webex-dump.json", tables, "UserStudy/webex-dump.json")
    side = compared_table(pd.read_csv(tables["table"]), None, pd.DataFrame(records))
    assert set(side.source) == {"reference", "sdk"}
    native = side[side.source == "reference"].iloc[0]
    assert native.kind == "wmequality" and "audio_mean_gain=" in native.audio_values
    assert (side[side.source == "sdk"].state == "muted").all()
