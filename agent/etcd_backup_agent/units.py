"""Sizes for people: one formatter, binary units (KiB, MiB), for every command's output."""

from __future__ import annotations


def human_size(n: int | None) -> str:
    """``36.0 KiB``; ``-`` for an unknown size."""
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover
