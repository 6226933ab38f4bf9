"""Helpers to drive the agent like an operator does: write a config, run the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli_w

REPO = Path(__file__).resolve().parent.parent


def _plain(value: Any) -> Any:
    """``value`` with Paths as strings and tuples as lists, as tomli_w takes them."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in, table by table (at any depth)."""
    out = dict(base)
    for key, value in extra.items():
        old = out.get(key)
        is_table = isinstance(old, Mapping) and isinstance(value, Mapping)
        out[key] = merge(old, value) if is_table else value  # type: ignore[arg-type]
    return out


def to_toml(data: Mapping[str, Any]) -> str:
    """``data`` (tables of values, Paths allowed) as TOML text."""
    return tomli_w.dumps(_plain(data))


def write_toml(path: Path, data: Mapping[str, Any]) -> Path:
    """The one writer of test configs: ``data`` as TOML in ``path``."""
    path.write_text(to_toml(data))
    return path


def write_config(
    path: Path,
    *,
    endpoint: str,
    recipient: str,
    root: Path,
    cluster: str = "test",
    node: str = "node1",
    extra: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """A valid config: local store and spool under ``root``; ``extra`` merges per table."""
    data: dict[str, dict[str, Any]] = {
        "cluster": {"name": cluster, "node": node},
        "etcd": {"endpoints": [endpoint], "dial_timeout": "5s"},
        "encryption": {"recipients": [recipient]},
        "store": {"type": "local", "path": root / "store"},
        "spool": {"dir": root / "spool"},
    }
    return write_toml(path, merge(data, extra or {}))


def agent_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "agent") + os.pathsep + env.get("PYTHONPATH", "")
    env.update(overrides)
    return env


def run_agent(
    *args: str | Path,
    timeout: float = 300,
    input: bytes | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``etcd-backup-agent ARGS`` as a real process; never raises on exit code."""
    return subprocess.run(
        [sys.executable, "-m", "etcd_backup_agent.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or agent_env(),
        input=input.decode() if input is not None else None,
    )
