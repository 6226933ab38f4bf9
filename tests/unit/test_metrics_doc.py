"""docs/metrics.md names exactly the metrics the exporter exposes."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from etcd_backup_agent.metrics import Metrics

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def exported() -> set[str]:
    text = Metrics("c", "0").exposition().decode()
    names = set()
    for fam in text_string_to_metric_families(text):
        if not fam.samples:
            names.add(fam.name)  # gauges without a sample yet (keyspace) count too
        for sample in fam.samples:
            names.add(sample.name)
    return names


def documented() -> set[str]:
    return set(re.findall(r"\betcd_backup_[a-z_]+\b", DOC.read_text()))


def _base(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name.startswith("etcd_backup_duration_seconds"):
            return name[: -len(suffix)]
    return name


def test_every_exported_metric_is_documented() -> None:
    missing = {_base(n) for n in exported()} - documented()
    assert not missing, f"add to docs/metrics.md: {sorted(missing)}"


def test_every_documented_metric_is_exported() -> None:
    names = exported() | {_base(n) for n in exported()}
    unknown = documented() - names
    assert not unknown, f"docs/metrics.md names metrics the agent does not export: {unknown}"
