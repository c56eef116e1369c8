"""PostgreSQL setting values: memory units, list settings, and comparing a pg_settings row with a value.

Values are compared normalised (``16384`` with unit ``8kB`` equals ``128MB``, ``true`` equals ``on``),
so a planner can tell a setting that already holds its value from one that needs a change, and an
applier can give ALTER SYSTEM back exactly what pg_settings showed (:func:`with_unit`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

KB = 1024
MB = 1024 * KB
GB = 1024 * MB
TB = 1024 * GB
MEMORY_UNITS: dict[str, int] = {"B": 1, "kB": KB, "MB": MB, "GB": GB, "TB": TB}
TIME_UNITS = ("us", "ms", "s", "min", "h", "d")

# List-valued settings (GUC_LIST_INPUT). ALTER SYSTEM quotes each element of these, so 'a,b' would
# become one library called "a,b": each element must be its own literal.
LIST_SETTINGS = frozenset({
    "shared_preload_libraries", "session_preload_libraries", "local_preload_libraries", "search_path",
    "temp_tablespaces",
})  # fmt: skip

_VALUE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([kMGT]?B)?\s*$")
_UNIT = re.compile(r"^\s*(\d+)?\s*([kMGT]?B)\s*$")


def is_memory_unit(unit: str | None) -> bool:
    """True for pg_settings memory units: ``B``, ``kB``, ``MB``, ``8kB``, ``16MB`` ..."""
    return bool(unit) and _UNIT.match(unit) is not None


def unit_bytes(unit: str) -> int:
    """Bytes in one pg_settings memory unit (``8kB`` → 8192)."""
    match = _UNIT.match(unit or "")
    if match is None:
        raise ValueError(f"{unit!r} is not a PostgreSQL memory unit; allowed: B, kB, MB, GB, TB, optionally "
                         "preceded by a multiplier such as 8kB")  # fmt: skip
    return int(match.group(1) or 1) * MEMORY_UNITS[match.group(2)]


def to_bytes(value: str | int, unit: str | None = None) -> int:
    """Parse a memory value to bytes: ``"128MB"``, ``"4GB"``, ``"1.5GB"``, or ``"16384"`` with ``unit="8kB"``.

    A value with its own unit ignores ``unit``; a bare number needs one. ``-1`` (auto) gives a negative count.
    """
    match = _VALUE.match(str(value))
    if match is None:
        raise ValueError(f"{value!r} is not a memory value: expected a number with an optional unit "
                         "(B, kB, MB, GB, TB), e.g. '128MB', or a bare number with the setting's unit")  # fmt: skip
    number, suffix = match.groups()
    if suffix:
        factor = MEMORY_UNITS[suffix]
    elif unit:
        factor = unit_bytes(unit)
    else:
        raise ValueError(f"{value!r} has no unit and none was given: pass the setting's unit (e.g. '8kB', 'kB', 'MB')")
    if "." in number:
        return round(float(number) * factor)
    return int(number) * factor


def format_bytes(n: int) -> str:
    """Bytes as PostgreSQL writes them, in the largest whole unit: 1073741824 → ``"1GB"``, 9942016 → ``"9709kB"``."""
    if n < 0:
        raise ValueError(f"{n} is negative: only byte counts >= 0 have a unit spelling (-1, 'auto', is kept as is)")
    if n == 0:
        return "0"
    for suffix in ("TB", "GB", "MB", "kB"):
        if n % MEMORY_UNITS[suffix] == 0:
            return f"{n // MEMORY_UNITS[suffix]}{suffix}"
    return f"{n}B"


def human_bytes(n: int) -> str:
    """Bytes for a sentence: ``"1 GB"``, ``"23.4 GB"``, ``"9708 kB"``."""
    for suffix in ("TB", "GB", "MB"):
        size = MEMORY_UNITS[suffix]
        if n >= size:
            return f"{n // size} {suffix}" if n % size == 0 else f"{n / size:.1f} {suffix}"
    return f"{n // KB} kB" if n % KB == 0 else f"{n} B"


def with_unit(setting: str | None, unit: str | None) -> str:
    """The text that gives ALTER SYSTEM back pg_settings' ``setting`` in its ``unit`` (16384, 8kB → ``"128MB"``)."""
    if setting is None:
        raise ValueError("the setting is unknown (None): nothing to restore")
    if not unit:
        return setting
    if is_memory_unit(unit):
        n = to_bytes(setting, unit)
        return setting if n < 0 else format_bytes(n)
    if unit in TIME_UNITS:
        return f"{setting}{unit}"
    return setting


def parse_list(text: str | None) -> list[str]:
    """Elements of a list setting as pg_settings shows it (``'a, "b"'`` → ``['a', 'b']``)."""
    return [part.strip().strip('"') for part in (text or "").split(",") if part.strip().strip('"')]


def setting_equals(row: Mapping[str, Any], value: str) -> bool:
    """True when a pg_settings row already holds ``value`` (memory compared in bytes, numbers as numbers)."""
    current, unit = row.get("setting"), row.get("unit")
    if current is None:
        return False
    parsed = _VALUE.match(str(value))
    if is_memory_unit(unit) or (parsed is not None and parsed.group(2)):
        try:
            return to_bytes(current, unit) == to_bytes(value, unit)
        except ValueError:
            return False
    try:
        return float(current) == float(value)
    except ValueError:
        pass
    if "," in str(current) or "," in str(value):  # lists: pg_settings shows 'a, b' for what was set as a,b
        return [_word(x) for x in parse_list(current)] == [_word(x) for x in parse_list(value)]
    return _word(current) == _word(value)


def _word(text: str) -> str:
    lowered = str(text).strip().lower()
    return {"true": "on", "yes": "on", "false": "off", "no": "off"}.get(lowered, lowered)
