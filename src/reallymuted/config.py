"""Load and validate the study configuration against its JSON Schema.

The workflow calls :func:`validate_config` before any rule is defined, so a wrong key or value
stops the run at once with a message that names the key and says what is allowed.
"""

from __future__ import annotations

import copy
import gc
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from reallymuted.paths import APPS_REGISTRY, APPS_SCHEMA


class ConfigError(ValueError):
    """The configuration does not match its schema."""


# A large study's plan is millions of Python objects (10 000 sessions: 20 000 jobs). Python's
# full collections walk every one of them each time the heap has grown by a quarter: 19
# passes, 8 s of the 40 s such a study took to plan (`make bench`, planning_scale). A full
# pass after this many young ones instead of 10; the young ones still free short-lived
# cycles, and the plan's peak memory stayed the same (810 MB).
FULL_COLLECTION_AFTER = 1000


def space_out_full_collections() -> None:
    """Set the workflow process's garbage collector for planning a large study (above)."""
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_AFTER)


def load_yaml(path: str | Path) -> Any:
    with Path(path).open() as fh:
        return yaml.safe_load(fh)


def _key_path(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _allowed(schema: dict[str, Any]) -> str:
    """Say in words what a schema node allows."""
    if "enum" in schema:
        return "one of " + ", ".join(repr(v) for v in schema["enum"])
    kind = schema.get("type", "value")
    kinds = " or ".join(kind) if isinstance(kind, list) else kind
    bounds = []
    if "minimum" in schema:
        bounds.append(f">= {schema['minimum']}")
    if "exclusiveMinimum" in schema:
        bounds.append(f"> {schema['exclusiveMinimum']}")
    if "maximum" in schema:
        bounds.append(f"<= {schema['maximum']}")
    if "pattern" in schema:
        bounds.append(f"matching /{schema['pattern']}/")
    if "minItems" in schema:
        bounds.append(f"at least {schema['minItems']} item(s)")
    text = kinds + (" " + ", ".join(bounds) if bounds else "")
    if schema.get("description"):
        text += f" ({schema['description']})"
    return text


def _explain(error: jsonschema.ValidationError) -> str:
    where = _key_path(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        return f"{where}: unknown key(s) {', '.join(map(repr, extra))}; allowed keys: " + ", ".join(
            allowed
        )
    if error.validator == "required":
        return f"{where}: {error.message}"
    return f"{where}: {error.instance!r} is not allowed; expected {_allowed(error.schema)}"


def _fill_defaults(instance: Any, schema: dict[str, Any]) -> None:
    """Insert schema defaults for missing keys, recursively (objects only)."""
    if not isinstance(instance, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            _fill_defaults(instance[key], sub)


def validate_config(config: dict[str, Any], schema_path: str | Path) -> dict[str, Any]:
    """Validate ``config`` in place (defaults filled in) and return it.

    A study config with the ``attack`` stage on also gets the attack's activity stimuli in
    ``sessions.stimuli`` (:func:`reallymuted.study.add_attack_stimuli`): every reader of the
    config (the workflow, the session command line, the artifact) sees the same matrix.
    Raises :class:`ConfigError` listing every problem, one line each.
    """
    schema = load_yaml(schema_path)
    _fill_defaults(config, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = "\n".join("  - " + _explain(e) for e in errors)
        raise ConfigError(f"invalid configuration ({len(errors)} problem(s)):\n{lines}")
    if "attack" in schema.get("properties", {}):
        from reallymuted.study import add_attack_stimuli

        try:
            add_attack_stimuli(config)
        except (ValueError, OSError) as exc:
            raise ConfigError(f"invalid configuration: {exc}") from None
    return config


def load_registry(
    path: str | Path = APPS_REGISTRY, schema: str | Path = APPS_SCHEMA
) -> dict[str, Any]:
    """The ten apps' registry (workflow/apps.yaml), validated: ``{app id: entry}``."""
    return validate_config(load_yaml(path), schema)["apps"]


def export_script_command(repo: str | Path, python: str) -> None:
    """Where a `shell:` job's script command finds the clone and its Python
    (REALLYMUTED_REPO, REALLYMUTED_PYTHON; workflow/rules/common.smk, script_command)."""
    os.environ["REALLYMUTED_REPO"] = str(repo)
    os.environ["REALLYMUTED_PYTHON"] = python


def export_package_path(src: str | Path) -> None:
    """Put the package's source directory first on PYTHONPATH for every job's interpreter."""
    current = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join([str(src), *(p for p in current if p != str(src))])
