"""AgentStatus: the socket reply, STATUS= and the rendered text come from one value."""

from __future__ import annotations

import json

from etcd_backup_agent.status import (
    AgentStatus,
    BundleStatus,
    CoordinationStatus,
    DrillStatus,
    LastDrill,
    LastResult,
    SpoolStatus,
    StoreStatus,
    render,
)

WIRE_KEYS = [
    "agent_version",
    "cluster",
    "node",
    "time",
    "busy",
    "version",
    "last",
    "newest_backup",
    "next_run",
    "coordination",
    "leader",
    "store",
    "drill",
    "spool",
    "bundle",
]


def full() -> AgentStatus:
    return AgentStatus(
        version="1.2.3",
        cluster="c",
        node="n1",
        time="2026-01-01T00:00:00Z",
        busy=True,
        last=LastResult("failure", "2026-01-01T00:00:00Z", error="store down"),
        newest_backup="2025-12-31T23:00:00Z",
        next_run="2026-01-01T01:00:00Z",
        coordination=CoordinationStatus("etcd-lock", "n9 pid=1"),
        leader=False,
        store=StoreStatus("local:/srv/b", False),
        drill=DrillStatus(
            LastDrill("success", "native", "spool", "2026-01-01T00:00:00Z", "id1", None, 1.5),
            "spool",
            "2026-01-02T00:00:00Z",
        ),
        spool=SpoolStatus(2048, 1, 0),
        bundle=BundleStatus("ok", "kubeadm", 12, warnings=("no encryption config",)),
    )


def test_wire_shape_is_the_documented_one_and_decodes_back() -> None:
    st = full()
    wire = json.loads(json.dumps(st.to_wire()))
    assert list(wire) == WIRE_KEYS
    assert wire["last"] == {
        "result": "failure",
        "at": "2026-01-01T00:00:00Z",
        "backup_id": None,
        "error": "store down",
        "reason": None,
    }
    assert wire["drill"]["mode"] == "spool" and wire["drill"]["kind"] == "native"
    assert wire["coordination"] == {"mode": "etcd-lock", "holder": "n9 pid=1"}
    assert wire["spool"] == {"bytes": 2048, "pending_uploads": 1, "max_bytes": 0}
    assert wire["bundle"]["warnings"] == ["no encryption config"]
    assert AgentStatus.from_wire(wire) == st


def test_status_line_names_the_last_result_and_the_next_run() -> None:
    ok = AgentStatus("v", "c", "n", "t", False, last=LastResult("success", backup_id="b1"))
    assert ok.status_line() == "last: success b1"
    skipped = AgentStatus(
        "v", "c", "n", "t", False, last=LastResult("skipped", reason="lock_held"), next_run="T"
    )
    assert skipped.status_line() == "last: skipped (lock_held); next: T"
    assert AgentStatus("v", "c", "n", "t", False).status_line() == "last: none"


def test_render_reads_like_the_runbook() -> None:
    text = "\n".join(render(full()))
    assert "last backup:  failure at 2026-01-01T00:00:00Z: store down" in text
    assert "next run:     2026-01-01T01:00:00Z  (a backup is running)" in text
    assert "lock holder n9 pid=1, local member is leader: no" in text
    assert "store:        local:/srv/b (DOWN)" in text
    assert "1 backup(s) waiting for upload" in text
    assert "last drill:   success (native, spool) at 2026-01-01T00:00:00Z" in text
    assert "bundle:       ok (kubeadm, 12 entries)" in text
    assert "  WARNING: no encryption config" in text


def test_an_older_reply_without_the_daemon_parts_still_renders() -> None:
    st = AgentStatus.from_wire({"agent_version": "0.9", "cluster": "c", "node": "n", "last": {}})
    assert st.version == "0.9" and st.store is None
    assert render(st)[0] == "agent:        c / n, version 0.9"
