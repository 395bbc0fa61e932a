"""How each app is audited on a person's own Linux desktop: the registry's ``audit`` blocks.

``workflow/apps.yaml`` gives every app an ``audit`` block (native Linux client or web app,
the command line to give ``reallymuted audit ... --``, its process names, mute hotkey and
capture API, and whether anyone has yet run it on the real app). :func:`audit_recipes` reads
them, checked against the rest of the entry; :func:`recipe_table` is what
``reallymuted audit --apps`` prints.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reallymuted.config import load_registry

NOT_RUN = "not yet run on the real app"
XDOTOOL_MODIFIERS = {"ctrl": "ctrl", "alt": "alt", "shift": "shift", "cmd": "super"}
XDOTOOL_MODIFIERS |= {"meta": "super", "super": "super"}  # Meta: the Windows (Super) key
COLUMNS = ("app", "client", "command", "mute hotkey", "capture API", "run on the real app")


@dataclass(frozen=True)
class AuditRecipe:
    """One app's ``audit`` block."""

    app: str  # registry id, e.g. zoom
    name: str  # e.g. Zoom
    client: str  # native | web
    package: str
    command: tuple[str, ...]
    processes: tuple[str, ...]
    mute_hotkey: str  # registry notation, e.g. Ctrl+Shift+M
    xdotool_key: str  # e.g. ctrl+shift+m
    capture_api: str
    run_date: str | None  # None: nobody has audited the real app yet
    run_by: str | None
    notes: str

    @property
    def run_status(self) -> str:
        if self.run_date is None:
            return NOT_RUN
        return f"run on the real app {self.run_date} by {self.run_by}"


def xdotool_key(hotkey: str) -> str:
    """``Ctrl+Shift+M`` -> ``ctrl+shift+m``; Cmd and Meta become super; Space, F1-F24 kept.

    Raises ValueError for an unknown modifier or key, an empty part or a repeated modifier.
    """
    *mods, key = hotkey.split("+")
    if not key or any(not m for m in mods):
        raise ValueError(f"hotkey {hotkey!r}: empty part")
    unknown = [m for m in mods if m.lower() not in XDOTOOL_MODIFIERS]
    if unknown:
        allowed = ", ".join(m.capitalize() for m in XDOTOOL_MODIFIERS)
        raise ValueError(f"hotkey {hotkey!r}: unknown modifier {unknown[0]!r} ({allowed})")
    names = [XDOTOOL_MODIFIERS[m.lower()] for m in mods]
    if len(set(names)) != len(names):
        raise ValueError(f"hotkey {hotkey!r}: repeated modifier")
    if len(key) == 1 and key.isascii() and key.isalnum():
        key = key.lower()
    elif key.lower() == "space":
        key = "space"
    elif key[0] in "Ff" and key[1:].isdigit() and 1 <= int(key[1:]) <= 24:
        key = f"F{int(key[1:])}"  # X keysyms are case-sensitive: F5, not f5
    else:
        raise ValueError(
            f"hotkey {hotkey!r}: unknown key {key!r} (a letter, a digit, Space, F1-F24)"
        )
    return "+".join([*names, key])


def _recipe(app: str, entry: Mapping[str, Any]) -> AuditRecipe:
    audit, platforms = entry["audit"], entry["platforms"]
    client = audit["client"]
    problems = []
    if client != platforms["linux"]["offer"]:
        problems.append(
            f"client {client!r} but platforms.linux.offer {platforms['linux']['offer']!r}"
        )
    hotkey = platforms["linux" if client == "native" else "web"].get("mute_hotkey")
    if audit["mute_hotkey"] != hotkey:
        where = "platforms.linux" if client == "native" else "platforms.web"
        problems.append(f"mute_hotkey {audit['mute_hotkey']!r} but {where} says {hotkey!r}")
    if audit["xdotool_key"] != xdotool_key(audit["mute_hotkey"]):
        want = xdotool_key(audit["mute_hotkey"])
        problems.append(f"xdotool_key {audit['xdotool_key']!r}, expected {want!r}")
    if problems:
        raise ValueError(f"workflow/apps.yaml: {app}.audit: " + "; ".join(problems))
    run = audit["run_on_real_app"] or {}
    return AuditRecipe(
        app=app,
        name=entry["name"],
        client=client,
        package=audit["package"],
        command=tuple(audit["command"]),
        processes=tuple(audit["processes"]),
        mute_hotkey=audit["mute_hotkey"],
        xdotool_key=audit["xdotool_key"],
        capture_api=audit["capture_api"],
        run_date=run.get("date"),
        run_by=run.get("by"),
        notes=audit["notes"],
    )


def audit_recipes(registry: Mapping[str, Any] | None = None) -> dict[str, AuditRecipe]:
    """``{app id: recipe}`` in registry order, from ``registry`` (``{app id: entry}``, as
    :func:`reallymuted.config.load_registry` returns it) or the validated workflow/apps.yaml.

    Raises ValueError when a block contradicts the rest of its entry (client vs
    platforms.linux.offer, hotkey, xdotool_key).
    """
    entries = load_registry() if registry is None else registry
    return {app: _recipe(app, entry) for app, entry in entries.items()}


def _row(recipe: AuditRecipe, markdown: bool) -> tuple[str, ...]:
    command = shlex.join(recipe.command)
    if markdown:
        status = f"**{recipe.run_status}**" if recipe.run_date is None else recipe.run_status
        return (recipe.name, recipe.client, f"`{command}`", recipe.mute_hotkey,
                recipe.capture_api, status)  # fmt: skip
    return (recipe.app, recipe.client, command, recipe.mute_hotkey, recipe.capture_api,
            recipe.run_status)  # fmt: skip


def recipe_table(recipes: Mapping[str, AuditRecipe], *, markdown: bool = False) -> str:
    """The recipes as a plain-text table for a terminal (``markdown``: a Markdown table)."""
    rows = [_row(r, markdown) for r in recipes.values()]
    if markdown:
        lines = [COLUMNS, ("---",) * len(COLUMNS), *rows]
        return "\n".join("| " + " | ".join(cells) + " |" for cells in lines) + "\n"
    widths = [max(len(cells[i]) for cells in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
    rule = tuple("-" * w for w in widths)
    return "".join(
        "  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip() + "\n"
        for cells in [COLUMNS, rule, *rows]
    )
