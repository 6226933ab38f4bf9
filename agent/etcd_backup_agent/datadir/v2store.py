"""The v2 store payload of the restored ``.snap``: ``st.Save()`` of a store holding only
the members, byte for byte as etcd's ``encoding/json`` writes it.

etcdutl 3.5 creates ``v2store.New("/0", "/1")`` and adds every member (ascending ID) with
``Create("/0/members/<id>/raftAttributes", raftAttributes JSON)``. Each create takes the next
store index: member k (from 1) gets index k for its directory, its leaf and its event; the
``/0/members`` directory appears with the first create (index 1). The watcher hub keeps
those create events in a 1000-slot ring, the rest of it null. Only struct fields without
``json:"-"`` appear, in declaration order; map keys (Children) are sorted as strings.
"""

from __future__ import annotations

from . import gojson
from .members import Member

ZERO_TIME = "0001-01-01T00:00:00Z"
HISTORY_CAPACITY = 1000
STATS = (
    "getsSuccess",
    "getsFail",
    "setsSuccess",
    "setsFail",
    "deleteSuccess",
    "deleteFail",
    "updateSuccess",
    "updateFail",
    "createSuccess",
    "createFail",
    "compareAndSwapSuccess",
    "compareAndSwapFail",
    "compareAndDeleteSuccess",
    "compareAndDeleteFail",
    "expireCount",
    "watchers",
)


def _node(path: str, index: int, value: str, children: str) -> str:
    return (
        f'{{"Path":{gojson.string(path)},"CreatedIndex":{index},"ModifiedIndex":{index},'
        f'"ExpireTime":"{ZERO_TIME}","Value":{gojson.string(value)},"Children":{children}}}'
    )


def _dir(path: str, index: int, children: dict[str, str]) -> str:
    body = ",".join(f"{gojson.string(k)}:{children[k]}" for k in sorted(children))
    return _node(path, index, "", "{" + body + "}")


def members_store(members: tuple[Member, ...] | list[Member]) -> bytes:
    """The JSON of a v2 store into which ``members`` were added in this order."""
    if len(members) > HISTORY_CAPACITY:
        raise ValueError(f"at most {HISTORY_CAPACITY} members")
    member_dirs: dict[str, str] = {}
    events: list[str] = []
    for index, m in enumerate(members, start=1):
        base = f"/0/members/{m.id_hex}"
        attrs = m.raft_attributes_json()
        leaf = _node(f"{base}/raftAttributes", index, attrs, "null")
        member_dirs[m.id_hex] = _dir(base, index, {"raftAttributes": leaf})
        events.append(
            f'{{"action":"create","node":{{"key":{gojson.string(base + "/raftAttributes")},'
            f'"value":{gojson.string(attrs)},"modifiedIndex":{index},"createdIndex":{index}}}}}'
        )
    n = len(events)
    zero: dict[str, str] = {}
    if n:
        zero["members"] = _dir("/0/members", 1, member_dirs)
    root = _dir("/", 0, {"0": _dir("/0", 0, zero), "1": _dir("/1", 0, {})})
    ring = ",".join(events + ["null"] * (HISTORY_CAPACITY - n))
    history = (
        f'{{"Queue":{{"Events":[{ring}],"Size":{n},"Front":0,"Back":{n % HISTORY_CAPACITY},'
        f'"Capacity":{HISTORY_CAPACITY}}},"StartIndex":{1 if n else 0},"LastIndex":{n}}}'
    )
    stats = ",".join(f'"{k}":{n if k == "createSuccess" else 0}' for k in STATS)
    return (
        f'{{"Root":{root},"WatcherHub":{{"EventHistory":{history}}},"CurrentIndex":{n},'
        f'"Stats":{{{stats}}},"CurrentVersion":2}}'
    ).encode()
