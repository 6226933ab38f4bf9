"""Regressions from the operator trial: each test failed before its fix."""

from __future__ import annotations

from etcd_backup_agent.keyspace.extract import Extracted
from etcd_backup_agent.keyspace.k8s_values import as_document


def test_a_brace_that_is_not_json_is_reported_as_other() -> None:
    value = b"{not json at all"
    doc, note = as_document(value, keep_server_fields=False)
    assert doc["x-etcd-backup-agent"]["encoding"] == "other"
    assert "neither JSON nor protobuf" in doc["x-etcd-backup-agent"]["note"]
    ex = Extracted(b"/registry/x/y", 3, value)
    assert ex.encoding == "other"
    assert ex.to_dict()["encoding"] == "other"
    # a JSON value that is not an object is not a Kubernetes object either
    assert Extracted(b"/k", 3, b"{}").encoding == "json"
    assert Extracted(b"/k", 3, b'{"a": [1,').encoding == "other"
