"""Which config keys differ between two runs: named in full, so a refusal can say what changed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MISSING = "<unset>"  # the value of a key one side does not have


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values (a changed list is one changed key)."""
    if not isinstance(tree, Mapping):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def changed_keys(old: Mapping, new: Mapping) -> list[tuple[str, Any, Any]]:
    """(key, old value, new value) for every leaf that differs, sorted by key."""
    before, after = flatten(old), flatten(new)
    return [
        (key, before.get(key, MISSING), after.get(key, MISSING))
        for key in sorted(before.keys() | after.keys())
        if before.get(key, MISSING) != after.get(key, MISSING)
    ]


def describe_changes(changes: list[tuple[str, Any, Any]], limit: int = 6) -> str:
    shown = ", ".join(f"{key} ({old!r} -> {new!r})" for key, old, new in changes[:limit])
    return shown + (f" and {len(changes) - limit} more" if len(changes) > limit else "")


def drop_added_defaults(changes: list[tuple[str, Any, Any]], defaults: Mapping) -> list[tuple[str, Any, Any]]:
    """Leave out keys the old side lacks and the new side sets to their default: a key added in a
    later version, left at its default, changes nothing a run did (so upgrading keeps finished runs)."""
    flat = flatten(defaults)
    return [c for c in changes if not (c[1] == MISSING and c[0] in flat and flat[c[0]] == c[2])]
