"""docs/config.md and config/example.toml cannot drift from the config loader."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from etcd_backup_agent import config, config_reference
from etcd_backup_agent.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "config.md"
EXAMPLE = ROOT / "config" / "example.toml"

_HEADING = re.compile(r"^## `\[([a-z0-9_.]+)\]`\s*$")
_ROW = re.compile(r"^\| `([a-z0-9_]+)` \|")
_TABLE = re.compile(r"^#?\s*\[([a-z0-9_.]+)\]\s*(#.*)?$")
_KEY = re.compile(r"^#?\s*([a-z0-9_]+)\s*=")


def documented_keys(text: str) -> set[str]:
    """Dotted keys of the reference's tables: one row per key under a `[table]` heading."""
    keys: set[str] = set()
    table: str | None = None
    for line in text.splitlines():
        if m := _HEADING.match(line):
            table = m.group(1)
        elif line.startswith("## "):
            table = None
        elif (m := _ROW.match(line)) and table is not None:
            keys.add(f"{table}.{m.group(1)}")
    return keys


def example_keys(text: str) -> set[str]:
    """Dotted keys of the example, commented out or not."""
    keys: set[str] = set()
    table: str | None = None
    for line in text.splitlines():
        if m := _TABLE.match(line.strip()):
            table = m.group(1)
        elif (m := _KEY.match(line.strip())) and table is not None:
            keys.add(f"{table}.{m.group(1)}")
    return keys


def document_with(key: str, value: Any) -> dict[str, Any]:
    """A TOML document (as parsed) holding only ``key`` ("store.s3.bucket")."""
    *tables, name = key.split(".")
    doc: dict[str, Any] = {name: value}
    for t in reversed(tables):
        doc = {t: doc}
    return doc


def unknown_key_problems(doc: dict[str, Any]) -> list[str]:
    try:
        config.from_dict(doc)
    except ConfigError as exc:
        return [p for p in exc.problems if "unknown key" in p or "never accepted inline" in p]
    return []


def test_the_loader_reports_its_keys() -> None:
    keys = config.accepted_keys()
    # spot checks that the introspection sees plain, nested and optional tables
    assert {"cluster.name", "store.s3.bucket", "drill.interval", "log.format"} <= keys
    assert all(re.fullmatch(r"[a-z0-9_]+(\.[a-z0-9_]+)+", k) for k in keys)


def test_every_accepted_key_is_documented() -> None:
    missing = config.accepted_keys() - documented_keys(REFERENCE.read_text())
    assert not missing, f"keys missing from docs/config.md: {sorted(missing)}"


def test_every_accepted_key_is_in_the_example() -> None:
    missing = config.accepted_keys() - example_keys(EXAMPLE.read_text())
    assert not missing, f"keys missing from config/example.toml: {sorted(missing)}"


def test_every_documented_key_is_accepted() -> None:
    documented = documented_keys(REFERENCE.read_text())
    assert len(documented) >= 50, "docs/config.md: no key tables found"
    extra = documented - config.accepted_keys()
    assert not extra, f"docs/config.md documents keys the loader rejects: {sorted(extra)}"
    # and the loader itself does not call any of them unknown
    for key in sorted(documented):
        assert unknown_key_problems(document_with(key, "x")) == [], key


def test_every_example_key_is_accepted() -> None:
    extra = example_keys(EXAMPLE.read_text()) - config.accepted_keys()
    assert not extra, f"config/example.toml has keys the loader rejects: {sorted(extra)}"


@pytest.mark.parametrize("key", ["cluster.nmae", "store.s3.buckets", "drill.intervall"])
def test_the_unknown_key_check_can_fail(key: str) -> None:
    assert unknown_key_problems(document_with(key, "x")) != []
    text = f"## `[{key.rsplit('.', 1)[0]}]`\n\n| `{key.rsplit('.', 1)[1]}` | x | x | x |\n"
    assert documented_keys(text) == {key}
    assert not documented_keys(text) <= config.accepted_keys()


REGENERATE = "make config-docs"


def test_the_reference_is_rendered_from_the_declarations() -> None:
    assert REFERENCE.read_text() == config_reference.render_reference(), f"stale: {REGENERATE}"


def test_the_example_is_rendered_from_the_declarations() -> None:
    assert EXAMPLE.read_text() == config_reference.render_example(), f"stale: {REGENERATE}"


def test_every_key_of_the_example_carries_its_doc_line() -> None:
    lines = EXAMPLE.read_text().splitlines()
    for table in config.TABLES:
        for key, opt, _ in table.declared():
            at = next(i for i, ln in enumerate(lines) if re.match(rf"^(# )?{key} = ", ln))
            lines_above = " ".join(ln.removeprefix("# ") for ln in lines[max(0, at - 8) : at])
            assert opt.doc.split()[-1] in lines_above, (table.name, key)
            del lines[: at + 1]  # keys of the next table come later in the file


def test_a_changed_declaration_shows_in_the_rendering() -> None:
    table = next(t for t in config.TABLES if t.name == "compression")
    changed = replace(table, intro="A sentence the checked-in reference does not have.")
    assert "does not have" in config_reference.render_reference((changed,))
    assert "does not have" not in REFERENCE.read_text()
