"""Helpers to drive the agent like an operator does: write a config, run the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    if isinstance(v, Path):
        return toml_value(str(v))
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(type(v))


def to_toml(data: dict[str, dict[str, Any]]) -> str:
    """Render nested tables (two levels deep, e.g. store.s3) as TOML."""
    lines: list[str] = []

    def table(name: str, body: dict[str, Any]) -> None:
        scalars = {k: v for k, v in body.items() if not isinstance(v, dict)}
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {toml_value(v)}" for k, v in scalars.items())
        lines.append("")
        for k, v in body.items():
            if isinstance(v, dict):
                table(f"{name}.{k}", v)

    for name, body in data.items():
        table(name, body)
    return "\n".join(lines)


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
    for table, values in (extra or {}).items():
        data.setdefault(table, {}).update(values)
    path.write_text(to_toml(data))
    return path


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
