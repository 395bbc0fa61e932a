"""The audit recipes: every app of the real registry says how it is audited on a Linux desktop,
nobody has yet run one on the real app, and the table and hotkeys a person is given are right."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from reallymuted.config import ConfigError, load_registry, load_yaml, validate_config
from reallymuted.testbed.recipes import (
    NOT_RUN,
    AuditRecipe,
    audit_recipes,
    recipe_table,
    xdotool_key,
)

TEN_APPS = {"zoom", "slack", "teams", "meet", "webex", "bluejeans", "whereby", "gotomeeting",
            "jitsi", "discord"}  # fmt: skip
SCHEMA = "workflow/schemas/apps.schema.yaml"


@pytest.fixture(scope="module")
def registry(repo_root: Path) -> dict:
    return load_registry(repo_root / "workflow/apps.yaml", repo_root / SCHEMA)


@pytest.fixture(scope="module")
def recipes(registry: dict) -> dict[str, AuditRecipe]:
    return audit_recipes(registry)


def test_every_app_has_a_recipe(recipes: dict[str, AuditRecipe]) -> None:
    assert set(recipes) == TEN_APPS
    assert audit_recipes() == recipes  # the default reads the same file
    for app, recipe in recipes.items():
        assert recipe.app == app and recipe.command and recipe.processes and recipe.package


def test_nobody_has_run_one_on_the_real_app(recipes: dict[str, AuditRecipe]) -> None:
    assert all(r.run_date is None and r.run_status == NOT_RUN for r in recipes.values())


def test_the_recipes_agree_with_the_registry(registry: dict, recipes: dict) -> None:
    # Linux clients: Zoom, Slack, Webex, BlueJeans and Discord; Teams' Linux client is retired
    assert {a for a, r in recipes.items() if r.client == "native"} == {
        "zoom", "slack", "webex", "bluejeans", "discord"
    }  # fmt: skip
    for app, recipe in recipes.items():
        linux, web = registry[app]["platforms"]["linux"], registry[app]["platforms"]["web"]
        if recipe.client == "native":
            assert set(linux["processes"]) <= set(recipe.processes)
            assert recipe.capture_api.startswith(linux["audio_api"])
        else:  # the browser, then the web app on the host its meetings are joined at
            assert recipe.command[0] == "chromium" and recipe.processes[0] == "chromium"
            host = re.match(r"https://([^/]+)/", recipe.command[1])
            assert host and host[1] in web["join_url"].replace("{site}.", ""), app
            assert recipe.capture_api == "PulseAudio (Chromium)"
    # Electron clients read the microphone through Chromium's audio service
    assert recipes["slack"].capture_api == "PulseAudio (Chromium)"


def test_the_table_names_each_app_and_says_not_yet_run(recipes: dict) -> None:
    table = recipe_table(recipes)
    header, rule, *rows = table.splitlines()
    assert header.split()[:3] == ["app", "client", "command"] and set(rule) <= {"-", " "}
    assert [row.split()[0] for row in rows] == list(recipes)
    for row, recipe in zip(rows, recipes.values(), strict=True):
        assert row.endswith(NOT_RUN) and recipe.mute_hotkey in row and recipe.capture_api in row
    assert "chromium https://meet.google.com/" in table
    assert {row.index(NOT_RUN) for row in rows} == {header.index("run on the real app")}


def test_a_run_on_the_real_app_shows_its_date_and_who(recipes: dict) -> None:
    from dataclasses import replace

    done = {"zoom": replace(recipes["zoom"], run_date="2030-01-31", run_by="A. Person")}
    assert "run on the real app 2030-01-31 by A. Person" in recipe_table(done)
    assert NOT_RUN not in recipe_table(done)


def test_docs_list_every_recipe_as_not_yet_run(repo_root: Path, recipes: dict) -> None:
    docs = (repo_root / "docs/apps.md").read_text()
    section = docs.split("## Auditing the app on your own Linux desktop", 1)[1]
    assert recipe_table(recipes, markdown=True) in section
    assert "docs/audit.md" in section or "(audit.md)" in section


@pytest.mark.parametrize(
    ("hotkey", "expected"),
    [
        ("Ctrl+Shift+M", "ctrl+shift+m"),
        ("Alt+A", "alt+a"),
        ("Cmd+Shift+A", "super+shift+a"),
        ("Meta+M", "super+m"),
        ("Ctrl+D", "ctrl+d"),
        ("Ctrl+Shift+Space", "ctrl+shift+space"),
        ("Ctrl+Alt+M", "ctrl+alt+m"),
        ("M", "m"),
        ("m", "m"),
        ("F9", "F9"),
    ],
)
def test_xdotool_key(hotkey: str, expected: str) -> None:
    assert xdotool_key(hotkey) == expected


def test_xdotool_key_on_every_hotkey_of_the_registry(registry: dict, recipes: dict) -> None:
    hotkeys = {
        spec["mute_hotkey"]
        for entry in registry.values()
        for spec in entry["platforms"].values()
        if "mute_hotkey" in spec
    }
    assert {"Ctrl+Shift+M", "Cmd+Shift+A", "Ctrl+Shift+Space", "Ctrl+D", "m"} <= hotkeys
    for hotkey in hotkeys:
        assert re.fullmatch(
            r"((ctrl|alt|shift|super)\+)*([a-z0-9]|space|F\d+)", xdotool_key(hotkey)
        )
    assert all(r.xdotool_key == xdotool_key(r.mute_hotkey) for r in recipes.values())


@pytest.mark.parametrize(
    ("hotkey", "message"),
    [
        ("Hyper+M", "unknown modifier 'Hyper'"),
        ("Ctrl+Banana", "unknown key 'Banana'"),
        ("Ctrl+F25", "unknown key 'F25'"),
        ("Ctrl++M", "empty part"),
        ("", "empty part"),
        ("Cmd+Meta+M", "repeated modifier"),
        ("Ctrl+é", "unknown key"),
    ],
)
def test_xdotool_key_refuses_bad_input(hotkey: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        xdotool_key(hotkey)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda audit: audit.pop("capture_api"), "'capture_api' is a required property"),
        (lambda audit: audit.pop("run_on_real_app"), "'run_on_real_app' is a required property"),
        (lambda audit: audit.update(run_on_real_app=True), "run_on_real_app"),
        (lambda audit: audit.update(run_on_real_app={"date": "2030-01-31"}), "run_on_real_app"),
        (lambda audit: audit.update(browser="firefox"), "unknown key"),
        (lambda audit: audit.update(mute_hotkey="Cmd+Shift+A"), "mute_hotkey"),
        (lambda audit: audit.update(processes=["ZoomWebviewHostXX"]), "processes"),
    ],
)
def test_the_schema_refuses_a_broken_audit_block(repo_root: Path, change, message: str) -> None:
    data = copy.deepcopy(load_yaml(repo_root / "workflow/apps.yaml"))
    change(data["apps"]["zoom"]["audit"])
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(data, repo_root / SCHEMA)


def test_the_schema_requires_the_audit_block(repo_root: Path) -> None:
    data = copy.deepcopy(load_yaml(repo_root / "workflow/apps.yaml"))
    del data["apps"]["meet"]["audit"]
    with pytest.raises(ConfigError, match=r"apps\.meet: 'audit' is a required property"):
        validate_config(data, repo_root / SCHEMA)


def test_a_recipe_contradicting_its_entry_is_refused(registry: dict) -> None:
    broken = copy.deepcopy(registry)
    broken["teams"]["audit"]["client"] = "native"
    broken["zoom"]["audit"]["xdotool_key"] = "alt+b"
    with pytest.raises(ValueError, match=r"teams\.audit: client 'native' but platforms\.linux"):
        audit_recipes({"teams": broken["teams"]})
    with pytest.raises(ValueError, match=r"zoom\.audit: xdotool_key 'alt\+b', expected 'alt\+a'"):
        audit_recipes({"zoom": broken["zoom"]})
