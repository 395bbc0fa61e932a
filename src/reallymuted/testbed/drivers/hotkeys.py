"""An app's mute hotkey as the registry writes it (``Ctrl+Shift+M``), and how it is pressed: real
key events through Windows ``SendInput`` to the app's window brought forward, or System Events
through ``osascript`` on macOS (the native drivers); the web drivers type it with Playwright."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from reallymuted.testbed.drivers import DriverError

MODIFIERS = ("Ctrl", "Alt", "Shift", "Cmd", "Meta")
# Modifiers that mean nothing on a platform: Cmd exists only on macOS; on macOS "Meta" is
# ambiguous (Cmd or Ctrl?), so the registry must say Cmd or Ctrl there.
NOT_ON = {"windows": {"Cmd"}, "macos": {"Meta"}, "web": set()}


@dataclass(frozen=True)
class Hotkey:
    """A parsed shortcut: modifiers in registry order, then one key."""

    modifiers: tuple[str, ...]
    key: str  # "A".."Z", "0".."9", "Space", "F1".."F24"
    text: str

    @property
    def is_function_key(self) -> bool:
        return self.key.startswith("F") and self.key[1:].isdigit()


def parse_hotkey(text: str, platform: str) -> Hotkey:
    """Parse ``Ctrl+Shift+M``-style text; reject anything this project cannot send.

    Keys: one letter or digit, ``Space`` or ``F1``-``F24``; modifiers: Ctrl, Alt, Shift, Cmd
    (macOS), Meta (the Windows key). Letters are case-insensitive (``m`` = ``M``: Shift must be
    written out).
    """
    if platform not in NOT_ON:
        raise ValueError(f"hotkey platform {platform!r}: expected one of {', '.join(NOT_ON)}")
    parts = text.split("+")
    if any(not part for part in parts):
        raise ValueError(f"hotkey {text!r}: empty part")
    *mods, key = parts
    for mod in mods:
        if mod not in MODIFIERS:
            raise ValueError(f"hotkey {text!r}: unknown modifier {mod!r} ({', '.join(MODIFIERS)})")
        if mod in NOT_ON[platform]:
            raise ValueError(f"hotkey {text!r}: {mod} does not exist on {platform}")
    if len(set(mods)) != len(mods):
        raise ValueError(f"hotkey {text!r}: repeated modifier")
    if len(key) == 1 and key.isascii() and key.isalnum():
        key = key.upper()
    elif key == "Space" or (key[0] == "F" and key[1:].isdigit() and 1 <= int(key[1:]) <= 24):
        pass
    else:
        raise ValueError(f"hotkey {text!r}: unknown key {key!r} (a letter, a digit, Space, F1-F24)")
    return Hotkey(tuple(mods), key, text)


# Windows virtual-key codes (WinUser.h).
VK_MODIFIERS = {"Ctrl": 0x11, "Alt": 0x12, "Shift": 0x10, "Meta": 0x5B}  # CONTROL MENU SHIFT LWIN
VK_SPACE = 0x20
VK_F1 = 0x70
KEYEVENTF_EXTENDEDKEY = 0x0001
KEYEVENTF_KEYUP = 0x0002
INPUT_KEYBOARD = 1
EXTENDED_VKS = {0x5B}  # the Windows key is an extended key


def windows_vk(key: str) -> int:
    if key == "Space":
        return VK_SPACE
    if key.startswith("F") and key[1:].isdigit():
        return VK_F1 + int(key[1:]) - 1
    return ord(key)  # 'A'-'Z' and '0'-'9' are their own codes


def windows_key_events(hotkey: Hotkey) -> list[tuple[int, bool]]:
    """(virtual key, key up?) in order: modifiers down, key down, key up, modifiers up."""
    mods = [VK_MODIFIERS[m] for m in hotkey.modifiers]
    key = windows_vk(hotkey.key)
    return (
        [(vk, False) for vk in mods]
        + [(key, False), (key, True)]
        + [(vk, True) for vk in reversed(mods)]
    )


# SendInput's structures with fixed-width fields, so their layout (and sizeof(INPUT): 40 bytes
# on 64-bit Windows, 28 on 32-bit) is the same whatever platform builds them (tested on Linux).
class MOUSEINPUT(ctypes.Structure):
    _fields_ = (
        ("dx", ctypes.c_int32),
        ("dy", ctypes.c_int32),
        ("mouseData", ctypes.c_uint32),
        ("dwFlags", ctypes.c_uint32),
        ("time", ctypes.c_uint32),
        ("dwExtraInfo", ctypes.c_size_t),
    )


class KEYBDINPUT(ctypes.Structure):
    _fields_ = (
        ("wVk", ctypes.c_uint16),
        ("wScan", ctypes.c_uint16),
        ("dwFlags", ctypes.c_uint32),
        ("time", ctypes.c_uint32),
        ("dwExtraInfo", ctypes.c_size_t),
    )


class HARDWAREINPUT(ctypes.Structure):
    _fields_ = (
        ("uMsg", ctypes.c_uint32),
        ("wParamL", ctypes.c_uint16),
        ("wParamH", ctypes.c_uint16),
    )


class _INPUTUNION(ctypes.Union):
    _fields_ = (("mi", MOUSEINPUT), ("ki", KEYBDINPUT), ("hi", HARDWAREINPUT))


class INPUT(ctypes.Structure):
    _fields_ = (("type", ctypes.c_uint32), ("u", _INPUTUNION))


def windows_inputs(events: list[tuple[int, bool]]) -> ctypes.Array[INPUT]:
    """The INPUT array SendInput takes for these key events."""
    array = (INPUT * len(events))()
    for item, (vk, up) in zip(array, events, strict=True):
        item.type = INPUT_KEYBOARD
        flags = KEYEVENTF_KEYUP if up else 0
        if vk in EXTENDED_VKS:
            flags |= KEYEVENTF_EXTENDEDKEY
        item.u.ki = KEYBDINPUT(wVk=vk, wScan=0, dwFlags=flags, time=0, dwExtraInfo=0)
    return array


def send_input_windows(events: list[tuple[int, bool]]) -> None:
    """Inject the key events into the input stream (goes to the foreground window)."""
    user32 = ctypes.WinDLL("user32", use_last_error=True)  # type: ignore[attr-defined]
    array = windows_inputs(events)
    for item in array:  # scan codes too: some apps read them rather than virtual keys
        item.u.ki.wScan = user32.MapVirtualKeyW(item.u.ki.wVk, 0)  # MAPVK_VK_TO_VSC
    sent = user32.SendInput(len(array), array, ctypes.sizeof(INPUT))
    if sent != len(array):
        error = ctypes.get_last_error()  # type: ignore[attr-defined]
        raise DriverError(
            f"SendInput sent {sent} of {len(array)} key events (error {error}); an app running "
            "elevated only takes input from an elevated runner"
        )


def focus_windows(pids: list[int]) -> bool:
    """Bring a visible top-level window of one of ``pids`` to the foreground."""
    from ctypes import wintypes

    user32 = ctypes.WinDLL("user32", use_last_error=True)  # type: ignore[attr-defined]
    found: list[int] = []
    wanted = set(pids)

    @ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.HWND, wintypes.LPARAM)  # type: ignore[attr-defined]
    def visit(hwnd: int, _lparam: int) -> bool:
        pid = wintypes.DWORD()
        user32.GetWindowThreadProcessId(hwnd, ctypes.byref(pid))
        if pid.value in wanted and user32.IsWindowVisible(hwnd):
            found.append(hwnd)
            return False
        return True

    user32.EnumWindows(visit, 0)
    if not found:
        return False
    # Windows lets a background process take the foreground only right after input: an Alt
    # tap counts as input (and opens no menu when released at once).
    send_input_windows([(VK_MODIFIERS["Alt"], False), (VK_MODIFIERS["Alt"], True)])
    return bool(user32.SetForegroundWindow(found[0]))


# macOS: System Events key codes of the function keys (letters/digits are typed as text).
MAC_FKEY_CODES = {
    1: 122, 2: 120, 3: 99, 4: 118, 5: 96, 6: 97, 7: 98, 8: 100, 9: 101, 10: 109,
    11: 103, 12: 111, 13: 105, 14: 107, 15: 113, 16: 106, 17: 64, 18: 79, 19: 80, 20: 90,
}  # fmt: skip
MAC_MODIFIERS = {"Cmd": "command down", "Ctrl": "control down", "Alt": "option down"}
MAC_MODIFIERS["Shift"] = "shift down"


def applescript_string(text: str) -> str:
    if any(c in text for c in '"\\\n'):
        raise ValueError(f"{text!r}: quotes, backslashes and newlines are not allowed here")
    return f'"{text}"'


def osascript_hotkey(hotkey: Hotkey, app_name: str) -> list[str]:
    """The osascript command that activates ``app_name`` and presses ``hotkey`` in it."""
    if hotkey.is_function_key:
        number = int(hotkey.key[1:])
        if number not in MAC_FKEY_CODES:
            raise ValueError(f"hotkey {hotkey.text!r}: F{number} has no macOS key code here")
        press = f"key code {MAC_FKEY_CODES[number]}"
    elif hotkey.key == "Space":
        press = "keystroke space"
    else:
        press = f"keystroke {applescript_string(hotkey.key.lower())}"
    if hotkey.modifiers:
        press += " using {" + ", ".join(MAC_MODIFIERS[m] for m in hotkey.modifiers) + "}"
    return [
        "osascript",
        "-e",
        f"tell application {applescript_string(app_name)} to activate",
        "-e",
        f'tell application "System Events" to {press}',
    ]
