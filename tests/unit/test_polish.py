"""Regressions from the operator trial: each test failed before its fix."""

from __future__ import annotations

import pytest

from etcd_backup_agent.keyspace.extract import Extracted
from etcd_backup_agent.keyspace.k8s_values import as_document


def test_a_brace_that_is_not_json_is_reported_as_other() -> None:
    value = b"{not json at all"
    doc, note = as_document(value, keep_server_fields=False)
    assert note == "opaque"
    assert doc["x-etcd-backup-agent"]["encoding"] == "other"
    assert "neither JSON nor protobuf" in doc["x-etcd-backup-agent"]["note"]
    ex = Extracted(b"/registry/x/y", 3, value)
    assert ex.encoding == "other"
    assert ex.to_dict()["encoding"] == "other"
    # a JSON value that is not an object is not a Kubernetes object either
    assert Extracted(b"/k", 3, b"{}").encoding == "json"
    assert Extracted(b"/k", 3, b'{"a": [1,').encoding == "other"


def test_inspect_prints_the_binary_units_list_prints() -> None:
    from etcd_backup_agent.keyspace.render import human
    from etcd_backup_agent.units import human_size

    # before: "37.8 kB" in inspect where list said "36.9 KiB"
    assert human(37786) == "36.9 KiB" == human_size(37786)
    assert human(None) == "-"


def test_backupctl_backup_prints_the_offline_backup_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from dataclasses import replace

    from etcd_backup_agent.control.client import show
    from tests.fake_backups import fake_manifest

    m = replace(
        fake_manifest("2026-01-01T00:00:00"),
        db_size=36864,
        object_size=1529,
        duration_seconds=0.064,
    )
    show("backup", m.to_dict() | {"store": "s3://bucket/prefix/"})
    out = capsys.readouterr().out.splitlines()
    # before: "36864 bytes -> 1529 bytes sealed in 0.064 s" and "object: c1/...":
    # a key without the store, unlike `etcd-backup-agent backup`
    assert out[0].endswith("36.0 KiB -> 1.5 KiB sealed in 64ms"), out
    assert out[1] == f"object: s3://bucket/prefix/{m.object}"
