"""The paper's attack with and without the OS-level mute (issue 15; docs/guard.md).

Each attack app of the study has a guarded twin (``guard: true``: same client, options,
stimuli and schedule, with ``reallymuted guard`` muting its capture streams at the session's
PulseAudio while it is muted). The attack runs on both arms; this module sets them side by
side, one row per measure, app and guard (off, on):

* ``decoded gain while muted``: the telemetry decoded from the capture, per muted interval
  (the mean and the max gain of each record; their mean and range);
* ``telemetry classifier (reference protocol)``: the reference classifier's code
  cross-validated over recordings (:func:`reallymuted.analysis.attack_classifier.cross_validate`)
  at the longest window: the chosen model's pooled held-out macro accuracy with its 95 %
  interval over the held-out recordings, beside 1/activities;
* ``telemetry classifier (grouped test)``: the decoded windows through the leakage test's
  machinery (:func:`reallymuted.analysis.leakage.leakage_test`): accuracy with its 95 %
  interval over recordings against chance *measured* by shuffling the activities among the
  recordings, and its p-value;
* ``traffic leakage test``: the leakage test on the encrypted muted traffic of every attack app
  (``results/tables/leakage.csv``), as that table gives it.

Whether a session ran guarded is read from its evidence (the ``guard`` column of the tables,
from each manifest), never from the config: an arm whose evidence says otherwise is an error.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reallymuted.analysis import classifier
from reallymuted.analysis.attack_classifier import HELDOUT, learning_curve
from reallymuted.analysis.attack_telemetry import GAIN_COLUMNS
from reallymuted.analysis.evidence import source_label, value_key
from reallymuted.analysis.leakage import leakage_test
from reallymuted.io import DataError, write_csv, write_json

log = logging.getLogger(__name__)

GAINS = "decoded gain while muted"
REFERENCE_PROTOCOL = "telemetry classifier (reference protocol)"
GROUPED_TEST = "telemetry classifier (grouped test)"
TRAFFIC = "traffic leakage test"
MEASURES = (GAINS, REFERENCE_PROTOCOL, GROUPED_TEST, TRAFFIC)

COLUMNS = [
    "measure",
    "statistic",
    "client",
    "app",
    "guard",
    "source",
    "stimulus_source",
    "samples",
    "value",
    "low",
    "high",
    "spread",
    "chance",
    "chance_high",
    "p_value",
    "verdict",
]


def _guard_of(app: str, twins: Mapping[str, str]) -> tuple[str, str]:
    """(client, guard) of an attack app: its unguarded twin's name and off/on."""
    if app in twins:
        return twins[app], "on"
    return app, "off"


def _verdict(p_value: float | None, untested: str) -> str:
    """The leakage test's verdict in this table's words (one test for traffic and telemetry)."""
    if p_value is None or not np.isfinite(p_value):
        return untested  # why the test could not run
    return "above chance" if p_value < 0.05 else "no evidence above chance"


def gain_rows(telemetry: pd.DataFrame, app: str, client: str, guard: str) -> list[dict[str, Any]]:
    """Decoded gains of the app's matched, muted intervals: mean gain and max gain."""
    seen = set(telemetry.guard.astype(str))
    if seen - {guard}:
        raise DataError(f"{app}: its sessions say guard {sorted(seen)}, the study says {guard}")
    muted = telemetry[telemetry.matched.astype(bool) & (telemetry.state == "muted")]
    rows = []
    for statistic in ("mean", "max"):
        gains = muted[GAIN_COLUMNS[statistic]].astype(float).dropna()
        sounding = int((gains > 0).sum())
        rows.append(
            {
                "measure": GAINS,
                "statistic": f"{statistic} gain of each record (0-100)",
                "client": client,
                "app": app,
                "guard": guard,
                "source": source_label(muted.source) if len(muted) else "",
                "stimulus_source": " ".join(sorted(set(muted.stimulus_source))),
                "samples": len(gains),
                "value": gains.mean() if len(gains) else np.nan,
                "low": gains.min() if len(gains) else np.nan,
                "high": gains.max() if len(gains) else np.nan,
                "spread": "range over intervals",
                "verdict": f"above 0 in {sounding} of {len(gains)} intervals",
            }
        )
    return rows


def reference_protocol_row(
    metrics: pd.DataFrame,
    folds: pd.DataFrame,
    activities: int,
    app: str,
    client: str,
    guard: str,
) -> dict[str, Any]:
    """The reference protocol's chosen model at the window of ``metrics`` (one window)."""
    stimulus_source = " ".join(sorted(set(metrics.stimulus_source.astype(str))))
    curve = learning_curve(metrics, folds, np.nan, stimulus_source, np.nan)
    held = curve[curve.eval_set == HELDOUT]
    if held.empty:
        raise DataError(f"{app}: the reference protocol gave no held-out result")
    top = held.sort_values("window").iloc[-1]
    return {
        "measure": REFERENCE_PROTOCOL,
        "statistic": f"macro accuracy, {top.model}, n = {int(top.window)} intervals",
        "client": client,
        "app": app,
        "guard": guard,
        "source": str(top.source),
        "stimulus_source": stimulus_source,
        "samples": int(top.n_windows),
        "value": float(top.macro_accuracy),
        "low": float(top.ci_low),
        "high": float(top.ci_high),
        "spread": "95 % bootstrap over recordings",
        "chance": 1 / activities if activities else np.nan,
        "verdict": "chance: 1/activities (not measured)",
    }


def grouped_test_row(
    minutes: pd.DataFrame,
    window: int,
    app: str,
    client: str,
    guard: str,
    seed: int,
    bootstrap: int,
    permutations: int,
) -> dict[str, Any]:
    """The decoded telemetry's windows of ``window`` intervals, through the leakage test."""
    windows = classifier.windows(minutes, window)
    result = leakage_test(
        windows.X, windows.y, windows.groups, seed, bootstrap=bootstrap, permutations=permutations
    )
    verdict = _verdict(result.get("p_value"), str(result["verdict"]))
    return {
        "measure": GROUPED_TEST,
        "statistic": f"accuracy, random forest, n = {window} intervals",
        "client": client,
        "app": app,
        "guard": guard,
        "source": source_label(minutes.source) if len(minutes) else "",
        "stimulus_source": " ".join(sorted(set(minutes.stimulus_source.astype(str)))),
        "samples": int(result["windows"]),
        "value": result.get("accuracy", np.nan),
        "low": result.get("ci_low", np.nan),
        "high": result.get("ci_high", np.nan),
        "spread": "95 % bootstrap over recordings",
        "chance": result.get("chance", np.nan),
        "chance_high": result.get("chance_high", np.nan),
        "p_value": result.get("p_value", np.nan),
        "verdict": verdict,
    }


def traffic_rows(leakage: pd.DataFrame, twins: Mapping[str, str]) -> list[dict[str, Any]]:
    """The leakage test's rows of every attack app that has a guarded twin, both arms."""
    rows = []
    apps = {*twins, *twins.values()}
    for r in leakage[leakage.app.isin(apps)].itertuples():
        client, guard = _guard_of(r.app, twins)
        if str(r.guard) != guard:
            raise DataError(f"{r.app}: its sessions say guard {r.guard}, the study says {guard}")
        rows.append(
            {
                "measure": TRAFFIC,
                "statistic": f"accuracy, random forest, {r.window_s:g}-s windows",
                "client": client,
                "app": r.app,
                "guard": guard,
                "source": r.source,
                "stimulus_source": r.stimulus_source,
                "samples": r.windows,
                "value": r.accuracy,
                "low": r.ci_low,
                "high": r.ci_high,
                "spread": "95 % bootstrap over recordings",
                "chance": r.chance,
                "chance_high": r.chance_high,
                "p_value": r.p_value,
                "verdict": _verdict(r.p_value, str(r.verdict)),
            }
        )
    missing = sorted(apps - set(leakage.app))
    if missing:
        raise DataError(f"the leakage table has no row for {missing}")
    return rows


def attack_guard_table(
    arms: Mapping[str, Mapping[str, Any]],
    leakage: pd.DataFrame,
    twins: Mapping[str, str],
    window: int,
    seed: int,
    bootstrap: int,
    permutations: int,
) -> pd.DataFrame:
    """``arms``: per telemetry app (either arm) its ``telemetry`` table, ``minutes``,
    ``metrics`` and ``folds`` (one window); ``twins``: guarded app -> unguarded twin."""
    rows = []
    for app, arm in sorted(arms.items(), key=lambda kv: _guard_of(kv[0], twins)):
        client, guard = _guard_of(app, twins)
        telemetry, minutes = arm["telemetry"], arm["minutes"]
        rows += gain_rows(telemetry, app, client, guard)
        activities = telemetry.activity.nunique()
        rows.append(
            reference_protocol_row(arm["metrics"], arm["folds"], activities, app, client, guard)
        )
        rows.append(
            grouped_test_row(minutes, window, app, client, guard, seed, bootstrap, permutations)
        )
    rows += traffic_rows(leakage, twins)
    table = pd.DataFrame(rows, columns=COLUMNS)
    order = {m: i for i, m in enumerate(MEASURES)}
    table = table.sort_values(
        ["measure", "client", "guard", "statistic"],
        key=lambda c: c.map(order) if c.name == "measure" else c,
        kind="stable",
    )
    return table.reset_index(drop=True)


def attack_guard_values(table: pd.DataFrame) -> dict[str, Any]:
    """Each row's value (and chance, p-value) by a readable key, with the sources, and
    whether every guarded arm's classifier and traffic test stayed at measured chance."""
    values: dict[str, Any] = {"source": source_label(table.source)}
    source_of: dict[str, str] = {}  # the file mixes a model's rows with a real client's
    short = {GAINS: "gain", REFERENCE_PROTOCOL: "reference_protocol", GROUPED_TEST: "grouped_test",
             TRAFFIC: "traffic"}  # fmt: skip
    for r in table.itertuples():
        measure = [short[r.measure]] + ([r.statistic.split(" ")[0]] if r.measure == GAINS else [])
        key = value_key("attack_guard", *measure, r.client, r.guard)
        names = (
            ["value", "chance", "p_value"] if r.measure in (GROUPED_TEST, TRAFFIC) else ["value"]
        )
        for name in names:
            values[f"{key}_{name}"] = getattr(r, name)
            source_of[f"{key}_{name}"] = str(r.source)
    tested = table[table.measure.isin([GROUPED_TEST, TRAFFIC])]
    on, off = tested[tested.guard == "on"], tested[tested.guard == "off"]
    values["guarded_at_chance"] = bool(len(on)) and bool((on.p_value >= 0.05).all())
    values["unguarded_above_chance"] = sorted(
        f"{r.measure}: {r.client}" for r in off.itertuples() if r.p_value < 0.05
    )
    values["guarded_above_chance"] = sorted(
        f"{r.measure}: {r.client}" for r in on.itertuples() if r.p_value < 0.05
    )
    values["source_of"] = source_of
    return values


def read_arm(paths: Mapping[str, str | Path]) -> dict[str, pd.DataFrame]:
    """One telemetry app's files (rule attack_guard_tables' inputs) as its arm."""
    return {
        "telemetry": pd.read_csv(paths["telemetry"], dtype={"activity": str}),
        "minutes": pd.read_csv(paths["minutes"], dtype={"recording_id": str, "activity": str}),
        "metrics": pd.read_csv(paths["metrics"]),
        "folds": pd.read_csv(paths["folds"]),
    }


def write_attack_guard(
    arms: Mapping[str, Mapping[str, Any]],
    leakage_csv: str | Path,
    twins: Mapping[str, str],
    settings: Mapping[str, Any],
    outputs: Mapping[str, str | Path],
) -> pd.DataFrame:
    """Rule attack_guard_tables: the table and its values; returns the table (to draw)."""
    table = attack_guard_table(
        arms,
        pd.read_csv(leakage_csv),
        twins,
        int(settings["window"]),
        int(settings["seed"]),
        int(settings["bootstrap"]),
        int(settings["permutations"]),
    )
    for r in table[table.measure != GAINS].itertuples():
        log.info("%s %s guard %s: %.3f [%.3f, %.3f] vs chance %.3f: %s", r.measure, r.client,
                 r.guard, r.value, r.low, r.high, r.chance, r.verdict)  # fmt: skip
    write_csv(outputs["table"], table)
    write_json(outputs["values"], attack_guard_values(table))
    return table
