"""The raft state of a freshly restored member: etcdutl's ``saveWALAndSnap``, as values.

One ConfChangeAddNode entry per member (ascending ID, term 1, index 1..n, the member's
JSON as context), a hard state {term 1, vote = the first member, commit n}, and a raft
snapshot at (term 1, index n) whose conf state lists every member as a voter and whose
data is the v2 store holding the members. The db's consistent index and term become
(n, 1), which is what ``updateCIndex(hardstate.Commit, hardstate.Term)`` stores.
"""

from __future__ import annotations

from . import raftpb, v2store
from .members import Cluster

TERM = 1


def bootstrap(cluster: Cluster, name: str) -> raftpb.Bootstrap:
    """The WAL content of member ``name`` of ``cluster``."""
    local = cluster.member_named(name)
    entries = tuple(
        raftpb.Entry(TERM, i, raftpb.ENTRY_CONF_CHANGE, raftpb.conf_change(m.id, m.json()))
        for i, m in enumerate(cluster.members, start=1)
    )
    commit = len(entries)
    return raftpb.Bootstrap(
        metadata=raftpb.etcd_metadata(local.id, cluster.id),
        entries=entries,
        hard_state=raftpb.HardState(TERM, cluster.members[0].id, commit),
        conf_state=raftpb.ConfState(voters=tuple(m.id for m in cluster.members)),
        snapshot_index=commit,
        snapshot_term=TERM,
    )


def raft_snapshot(cluster: Cluster, boot: raftpb.Bootstrap) -> bytes:
    """The marshalled raftpb.Snapshot that the ``.snap`` file wraps."""
    return raftpb.snapshot(
        v2store.members_store(cluster.members), boot.conf_state, boot.snapshot_index, TERM
    )
