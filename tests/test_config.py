"""The configuration schema: the shipped configs are valid; a bad one is refused, by key."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest

from reallymuted.config import ConfigError, load_yaml, validate_config
from reallymuted.study import driver_options, guard_twins
from reallymuted.testbed.spec import SessionSpec

SCHEMA = Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml"


@pytest.fixture
def config(repo_root: Path) -> dict:
    return load_yaml(repo_root / "config.yaml")


def test_shipped_configs_are_valid(repo_root: Path) -> None:
    from snakemake.utils import update_config

    base = load_yaml(repo_root / "config.yaml")
    validate_config(copy.deepcopy(base), SCHEMA)
    # the files under config/ are overlays, merged over config.yaml as Snakemake merges them
    for path in sorted((repo_root / "config").glob("*.yaml")):
        merged = copy.deepcopy(base)
        update_config(merged, load_yaml(path))
        validate_config(merged, SCHEMA)


def test_wrong_type_names_the_key_and_what_is_allowed(config: dict) -> None:
    config["classifier"]["windows"] = [3, "five"]
    with pytest.raises(ConfigError, match=r"classifier\.windows\[1\]: 'five' .*expected integer"):
        validate_config(config, SCHEMA)


def test_unknown_key_lists_the_allowed_ones(config: dict) -> None:
    config["clasifier"] = {}
    with pytest.raises(
        ConfigError, match=r"unknown key\(s\) 'clasifier'; allowed keys: .*classifier"
    ):
        validate_config(config, SCHEMA)


def test_bad_enum_value_lists_the_choices(config: dict) -> None:
    config["classifier"]["models"] = ["random_forest", "cnn"]
    with pytest.raises(ConfigError, match=r"models\[1\]: 'cnn' .*one of 'majority'"):
        validate_config(config, SCHEMA)


def test_every_problem_is_reported_at_once(config: dict) -> None:
    config["classifier"]["seed"] = -1
    config["reference"]["commit"] = "main"
    with pytest.raises(ConfigError) as caught:
        validate_config(config, SCHEMA)
    assert "2 problem(s)" in str(caught.value)


def test_missing_keys_get_their_schema_defaults(config: dict) -> None:
    del config["classifier"]["validation_fraction"]
    filled = validate_config(copy.deepcopy(config), SCHEMA)
    assert filled["classifier"]["validation_fraction"] == 0.25


@pytest.mark.workflow
def test_snakemake_stops_before_any_rule_on_a_bad_config(repo_root: Path, tmp_path: Path) -> None:
    bad = load_yaml(repo_root / "config.yaml")
    bad["classifier"]["windows"] = "7"
    (tmp_path / "bad.yaml").write_text(__import__("yaml").safe_dump(bad))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "-s",
            str(repo_root / "Snakefile"),
            "-d",
            str(tmp_path),
            "--configfile",
            str(tmp_path / "bad.yaml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode != 0
    assert "classifier.windows: '7' is not allowed" in run.stdout + run.stderr
    assert not (tmp_path / "results").exists()


def test_each_guarded_app_has_exactly_one_twin(config: dict) -> None:
    sessions = config["sessions"]
    assert guard_twins(sessions) == {
        "attack-webex-guarded": "attack-webex",  # the attack's arms: same all-muted schedule
        "baresip-pcmu-guarded": "baresip-pcmu",
        "chromium-guarded": "chromium",
        "control-continuous-guarded": "control-continuous",
        "leak-chromium-soft-guarded": "leak-chromium-soft",
        "sdk-webex-guarded": "sdk-webex",
        "webex-2021-guarded": "webex-2021",
    }
    assert "guard" not in driver_options(sessions["apps"]["chromium-guarded"])
    alone = copy.deepcopy(sessions)
    alone["apps"]["baresip-pcmu-guarded"]["codec"] = "opus"  # twin: baresip-opus now
    assert guard_twins(alone)["baresip-pcmu-guarded"] == "baresip-opus"
    del alone["apps"]["baresip-opus"]
    with pytest.raises(ValueError, match=r"baresip-pcmu-guarded .* found none"):
        guard_twins(alone)
    twice = copy.deepcopy(sessions)
    twice["apps"]["chromium-again"] = {"driver": "chromium", "modes": ["soft"]}
    with pytest.raises(ValueError, match=r"found \['chromium', 'chromium-again'\]"):
        guard_twins(twice)
    only_guarded = {"chromium-guarded"}  # a selection that leaves the twin out
    with pytest.raises(ValueError, match=r"chromium-guarded .* runs, its twin chromium not"):
        guard_twins(sessions, only_guarded)
    assert guard_twins(sessions, {"chromium"}) == {}  # nothing guarded selected


def test_a_guarded_session_on_a_windows_or_macos_host_is_refused(tmp_path: Path) -> None:
    """The guard mutes streams on the session's own PulseAudio; a host session has none, and
    its manifest would say guard for nothing."""
    sessions = {
        "schedule": [{"state": "muted", "seconds": 1}],
        "apps": {"zoom-win": {"driver": "native-windows", "modes": ["hotkey"], "guard": True,
                              "registry_app": "zoom"}},
    }  # fmt: skip
    spec = SessionSpec.from_config(sessions, "zoom-win", "hotkey", "speech", 1, tmp_path)
    assert spec.guard
    with pytest.raises(ValueError, match="native-windows sessions run on a host"):
        spec.validate()
