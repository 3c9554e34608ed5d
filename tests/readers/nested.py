"""Shared by the reader scripts (each runs in its own venv, with this folder on sys.path)."""

from __future__ import annotations

from typing import Any


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"image": {"encoded": x}} -> {"image/encoded": x}: readers nest by the record key's `/`.

    A value that is not a dict comes back under its prefix, or `value` at the top.
    """
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}{key}/"))
        return flat
    return {prefix.rstrip("/") or "value": tree}
