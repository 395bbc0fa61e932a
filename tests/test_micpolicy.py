"""Policy labels from microphone-read timelines with a known truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reallymuted.analysis.evidence import Segment, label_states
from reallymuted.analysis.micpolicy import (
    PolicyParams,
    label_policy,
    state_mic_stats,
    witnesses_agree,
)

SEGMENTS = [
    Segment("unmuted", 0.0, 6.0),
    Segment("muted", 6.0, 20.0),
    Segment("unmuted", 20.0, 26.0),
]
PARAMS = PolicyParams()


def reads_from(reading: callable, tick: float = 0.02) -> pd.DataFrame:
    """A trace as both witnesses would log it when the client reads whenever ``reading(t)``."""
    times = np.arange(0, 26, tick)
    on = np.array([reading(t) for t in times])
    os_rows = pd.DataFrame(
        {
            "t": times,
            "witness": "os",
            "bytes": np.where(on, 1920, 0),
            "dropped": np.where(on, 0, 1920),
        }
    )
    app_rows = pd.DataFrame(
        {"t": times[on] + 0.003, "witness": "app", "bytes": 1920.0, "dropped": np.nan}
    )
    reads = pd.concat([os_rows, app_rows], ignore_index=True).sort_values("t")
    reads["peak"], reads["rms"] = 0.5, 0.2
    reads["state"] = label_states(reads.t, SEGMENTS)
    return reads


def is_muted(t: float) -> bool:
    return 6.0 <= t < 20.0


@pytest.mark.parametrize("witness", ["os", "app"])
def test_continuous(witness: str) -> None:
    label = label_policy(reads_from(lambda t: True), SEGMENTS, witness, PARAMS)
    assert label.policy == "continuous"
    assert label.muted_share == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("witness", ["os", "app"])
def test_a_session_muted_throughout_is_judged_against_real_time(witness: str) -> None:
    """The attack's sessions have no unmuted phase: reading all the time is continuous,
    reading a third of the time is not."""
    muted_only = [Segment("muted", 0.0, 26.0)]
    label = label_policy(reads_from(lambda t: True), muted_only, witness, PARAMS)
    assert label.policy == "continuous" and np.isnan(label.unmuted_share)
    third = label_policy(reads_from(lambda t: t % 3 < 1), muted_only, witness, PARAMS)
    assert third.policy == "periodic" and third.period_s == pytest.approx(3, rel=0.1)


@pytest.mark.parametrize("witness", ["os", "app"])
def test_stops_with_a_release_delay(witness: str) -> None:
    # the device is released 0.8 s after the mute and reopened 0.3 s after the unmute
    reads = reads_from(lambda t: not (6.8 <= t < 20.3))
    label = label_policy(reads, SEGMENTS, witness, PARAMS)
    assert label.policy == "stops"
    assert label.muted_share == 0


@pytest.mark.parametrize("witness", ["os", "app"])
@pytest.mark.parametrize(("on_s", "every_s"), [(1.0, 3.0), (0.5, 2.0), (1.5, 4.0)])
def test_periodic_period_within_ten_percent(witness: str, on_s: float, every_s: float) -> None:
    reads = reads_from(lambda t: not is_muted(t) or ((t - 6.3) % every_s) < on_s)
    label = label_policy(reads, SEGMENTS, witness, PARAMS)
    assert label.policy == "periodic"
    assert label.period_s == pytest.approx(every_s, rel=0.1)


def test_irregular_bursts_are_not_called_periodic() -> None:
    bursts = [7.6, 8.1, 11.9, 12.2, 18.0]
    reads = reads_from(lambda t: not is_muted(t) or any(b <= t < b + 0.3 for b in bursts))
    assert label_policy(reads, SEGMENTS, "app", PARAMS).policy == "intermittent"


def test_disagreeing_witnesses_are_detected() -> None:
    reads = reads_from(lambda t: True)
    # the app-level hook saw nothing while muted, the OS saw reads: a disagreement to flag
    reads = reads[~((reads.witness == "app") & reads.t.between(6.0, 20.0))]
    os_label = label_policy(reads, SEGMENTS, "os", PARAMS)
    app_label = label_policy(reads, SEGMENTS, "app", PARAMS)
    assert (os_label.policy, app_label.policy) == ("continuous", "stops")
    assert not witnesses_agree(os_label, app_label)


def test_state_stats() -> None:
    stats = state_mic_stats(reads_from(lambda t: not is_muted(t)), SEGMENTS, PARAMS).set_index(
        "state"
    )
    assert stats.loc["unmuted", "duration_s"] == 12
    assert stats.loc["muted", "os_read_share"] == 0
    assert stats.loc["unmuted", "os_read_share"] == pytest.approx(1)
    assert stats.loc["unmuted", "app_reads_per_s"] == pytest.approx(50, rel=0.02)


def _policy_row(source: str, app: str, mode: str, policy: str) -> dict:
    return {
        "source": source,
        "app": app,
        "mute_mode": mode,
        "policy": policy,
        "period_s": np.nan,
        "witnesses_agree": True,
    }


def _state_row(
    source: str, app: str, mode: str, state: str, app_reads: float, **driver: str
) -> dict:
    return {
        "source": source,
        "app": app,
        "mute_mode": mode,
        "driver": driver.get("driver", ""),
        "registry_app": driver.get("registry_app", ""),
        "state": state,
        "app_reads_per_s": app_reads,
        "rtp_packets_per_s": 50.0,
        "rtp_payload_mean": 10.0,
        "audio_level_median_dbov": -127.0,
    }


def test_values_say_the_source_of_each_key_from_its_rows() -> None:
    """A real client and a model side by side: the file names both, each key its own."""
    from reallymuted.analysis.micpolicy import testbed_values

    policy = pd.DataFrame(
        [
            _policy_row("testbed", "chromium", "soft", "continuous"),
            _policy_row("testbed-profile", "webex-2021", "app", "continuous"),
        ]
    )
    states = pd.DataFrame(
        [
            _state_row("testbed", "chromium", "soft", "muted", 50.0, driver="chromium"),
            _state_row("testbed-profile", "webex-2021", "app", "muted", 50.0, driver="profile"),
        ]
    )
    values = testbed_values(policy, states)
    assert values["source"] == "testbed, testbed-profile"
    assert values["source_of"]["policy_chromium_soft"] == "testbed"
    assert values["source_of"]["policy_webex_2021_app"] == "testbed-profile"
    assert values["source_of"]["muted_audio_level_median_dbov_chromium_soft"] == "testbed"
    assert set(values["source_of"]) == set(values) - {
        "source",
        "source_of",
        "sources",
        "drivers",
        "apps",
    }
    assert "native_continuous_apps" not in values  # no native session: not a zero


def test_native_values_per_registry_app() -> None:
    """Webex read continuously while muted; Teams was never seen calling the capture API."""
    from reallymuted.analysis.micpolicy import testbed_values

    policy = pd.DataFrame(
        [
            _policy_row("native", "webex-windows", "hotkey", "continuous"),
            _policy_row("native", "teams-windows", "hotkey", "stops"),
            _policy_row("native", "zoom-windows", "hotkey", "stops"),
        ]
    )
    reads = {  # app reads per second, unmuted then muted
        "webex": (100.0, 100.0),
        "teams": (0.0, 0.0),
        "zoom": (100.0, 0.0),
    }
    states = pd.DataFrame(
        [
            _state_row("native", f"{app}-windows", "hotkey", state, rate,
                       driver="native-windows", registry_app=app)
            for app, rates in reads.items()
            for state, rate in zip(("unmuted", "muted"), rates, strict=True)
        ]
    )  # fmt: skip
    values = testbed_values(policy, states)
    assert values["native_platforms"] == ["windows"]
    assert values["native_continuous_apps"] == ["webex"]
    assert values["native_untraced_apps_windows"] == ["teams"]  # zoom stopped, it was traced
    assert values["drivers"] == ["native-windows"] and values["source"] == "native"
