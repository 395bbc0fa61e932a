"""Policy labels from microphone-read timelines with a known truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reallymuted.extract import Segment, label_states
from reallymuted.micpolicy import PolicyParams, label_policy, state_mic_stats, witnesses_agree

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
