"""docs/config.md and config/example.toml, rendered from the key declarations.

Run ``make config-docs`` (``python -m etcd_backup_agent.config_reference docs/config.md
config/example.toml``) after changing a key; tests/unit/test_config_reference.py fails while
either file is stale.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

from .config import TABLES, Table
from .config_schema import Kind, MiB, Opt
from .durations import format_duration

_DOC_HEAD = """\
# Configuration reference

The agent reads one TOML file (default `/etc/etcd-backup-agent/config.toml`, or `--config
FILE`). `config/example.toml` is a commented example of every key. Check a file with
`etcd-backup-agent config check --config FILE`.

Rules that hold for every table:

- Every key is optional unless marked **required**; a missing key takes its default.
- Unknown keys are errors (a typo never silently falls back to a default). Secret-looking
  keys (`password`, `secret_access_key`, `identity`, ...) are refused with a hint: secrets
  are only read from files named by `*_file` keys.
- Durations are strings: `"90s"`, `"15m"`, `"1h"`, `"7d"`. Sizes are integers (bytes) or
  strings such as `"512MiB"`, `"2GB"`.
- Relative paths are resolved against the directory of the config file. Keys marked
  "must be readable" name files that must exist and be readable when the config is loaded.
- Every problem is reported as `FILE: table.key: what is expected`; the daemon does not start
  with an invalid file, and a `SIGHUP` with an invalid file keeps the running config.

This page is generated from the key declarations in
`agent/etcd_backup_agent/config_schema.py` (the same ones the loader reads with) by
`make config-docs`; `tests/unit/test_config_reference.py` fails when it is stale.
"""

_EXAMPLE_HEAD = """\
# etcd-backup-agent configuration (TOML). Every key is optional unless marked REQUIRED.
# Validate with:  etcd-backup-agent config check --config /etc/etcd-backup-agent/config.toml
# Durations are strings: "90s", "15m", "1h", "7d". Sizes: integers (bytes) or "512MiB", "2GB".
# Secrets are never written here: only paths to files that hold them.
# Generated from the key declarations (docs/config.md has the same text as a table).
"""


def literal(kind: Kind, value: Any) -> str:
    """``value`` as TOML, the way an operator would write it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if kind is Kind.DURATION:
        return json.dumps(format_duration(value) if value else "0s")
    if kind is Kind.SIZE and value and value % MiB == 0:
        return json.dumps(f"{value // MiB}MiB")
    if isinstance(value, (str, Path)):
        return json.dumps(str(value))
    if isinstance(value, tuple):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    return str(value)


def type_column(o: Opt) -> str:
    if o.type_doc:
        return o.type_doc
    if o.choices:
        return " \\| ".join(f'`"{c}"`' for c in o.choices)
    if o.kind is Kind.INT:
        return f"integer {o.minimum}-{o.maximum}" if o.maximum else f"integer >= {o.minimum}"
    if o.kind is Kind.DURATION and not o.allow_zero:
        return "duration > 0"
    return str(o.kind.value)


def default_column(o: Opt, default: Any) -> str:
    if o.default_doc:
        return o.default_doc
    return "none" if default is None else f"`{literal(o.kind, default)}`"


def meaning(o: Opt) -> str:
    return o.doc + (" Must be readable." if o.must_read else "")


def render_reference(tables: tuple[Table, ...] = TABLES) -> str:
    out = [_DOC_HEAD]
    for t in tables:
        out.append(f"## `[{t.name}]`\n")
        if t.intro:
            out.append(textwrap.fill(t.intro, width=92, break_on_hyphens=False) + "\n")
        out.append("| key | type | default | meaning |\n|---|---|---|---|")
        for key, o, default in t.declared():
            row = f"| `{key}` | {type_column(o)} | {default_column(o, default)} | {meaning(o)} |"
            out.append(row)
        out.append("")
    return "\n".join(out)


def _comment(text: str) -> list[str]:
    text = text.replace("**required**", "REQUIRED").replace("**", "")
    return textwrap.wrap(
        text, width=92, initial_indent="# ", subsequent_indent="# ", break_on_hyphens=False
    )


def render_example(tables: tuple[Table, ...] = TABLES) -> str:
    out = [_EXAMPLE_HEAD]
    for t in tables:
        # an optional nested table stays commented out: its presence switches it on
        off = "# " if t.nested else ""
        out.append(f"{off}[{t.name}]")
        if t.intro:
            out += _comment(t.intro)
        for key, o, default in t.declared():
            out += _comment(meaning(o))
            value = o.example or literal(o.kind, default)
            out.append(f"{'' if o.active and not t.nested else '# '}{key} = {value}")
        out.append("")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    reference, example = (Path(a) for a in argv)
    reference.write_text(render_reference(), encoding="utf-8")
    example.write_text(render_example(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
