"""The ten apps of the study: the registry (workflow/apps.yaml) and the per-app tables.

The registry says how each app is offered, driven and traced, and what the paper found (an
expected value, never a result). The per-app tables set, for each app, the paper's finding
beside every source of evidence this study has for it — and say plainly when that source is a
model of the app (``testbed-profile``) or did not run at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from reallymuted.config import load_yaml, validate_config

PLATFORMS = ("windows", "macos", "linux", "web")
FINDINGS = {
    "M1": "continuous raw-mic reads while muted",
    "M2": "buffer status flags only while muted",
    "M3": "WebRTC software mute (browser keeps reading, send stream withholds)",
    "M4": "not determined (could not be traced)",
}
NOT_RUN = {
    "native": "not run: needs a {platform} host with the app installed and an account",
    "web": "not run: needs internet access and an account for the web app",
}


def load_registry(path: str | Path, schema: str | Path | None = None) -> dict[str, Any]:
    """The validated registry: ``{app id: entry}``."""
    registry = load_yaml(path)
    if schema is None:
        schema = Path(path).parent / "schemas" / "apps.schema.yaml"
    return validate_config(registry, schema)["apps"]


def platforms_table(registry: dict[str, Any]) -> pd.DataFrame:
    """Table 2 analogue: how each app is offered per platform (native / web / none)."""
    rows = []
    for app, entry in registry.items():
        row: dict[str, Any] = {"app": app, "name": entry["name"], "vendor": entry["vendor"]}
        for platform in PLATFORMS:
            spec = entry["platforms"][platform]
            offer = spec["offer"]
            row[platform] = f"{offer} ({spec['audio_api']})" if "audio_api" in spec else offer
        row["paper_finding"] = "+".join(entry["paper_finding"]["codes"])
        row["testbed_profile"] = entry["testbed_profile"] or "none"
        row["status"] = entry.get("status", "")
        row["source"] = "registry"
        rows.append(row)
    return pd.DataFrame(rows)


def drivers_for(entry: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, driver) pairs that exist for an app, from how it is offered."""
    pairs = []
    if entry["testbed_profile"]:
        pairs.append(("testbed-profile", entry["testbed_profile"]))
    for platform in ("windows", "macos"):
        if entry["platforms"][platform]["offer"] == "native":
            pairs.append(("native", f"native-{platform}"))
    if entry["platforms"]["web"]["offer"] == "web":
        pairs.append(("web", "web"))
    return pairs
