"""What the agent reports about itself, as one value: ``AgentStatus``.

The socket's ``status`` reply (``to_wire``, docs/socket-protocol.md), the systemd
``STATUS=`` line (``status_line``) and the ``etcd-backupctl status`` text (``render``, from
the decoded reply) are all derived from it, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .bundle.record import BundleRecord
from .units import human_size

NONE = "none"


@dataclass(frozen=True)
class LastResult:
    """The last backup attempt: success, failure, skipped, cancelled (or none yet)."""

    result: str = NONE
    at: str | None = None
    backup_id: str | None = None
    error: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class LastDrill:
    """The last restore drill: success or failure (or none yet)."""

    result: str = NONE
    kind: str | None = None  # native, full (drill.KINDS)
    source: str | None = None  # store, spool (drill.SOURCES)
    at: str | None = None
    backup_id: str | None = None
    error: str | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class CoordinationStatus:
    mode: str | None = None
    holder: str | None = None  # as the last probe saw it: status never waits for etcd


@dataclass(frozen=True)
class StoreStatus:
    describe: str | None = None
    up: bool = False


@dataclass(frozen=True)
class DrillStatus:
    last: LastDrill
    mode: str | None  # store, spool, or None (scheduled drills off)
    next_due: str | None


@dataclass(frozen=True)
class SpoolStatus:
    bytes: int = 0
    pending_uploads: int = 0
    max_bytes: int = 0


@dataclass(frozen=True)
class BundleStatus:
    """The bundle of the newest backup this agent stored."""

    status: str
    layout: str
    files: int
    error: str | None = None
    encryption_config: str | None = None
    encryption_config_saved: bool = False
    warnings: tuple[str, ...] = ()

    @classmethod
    def of(cls, rec: BundleRecord | None) -> BundleStatus | None:
        if rec is None:
            return None
        return cls(
            status=rec.status,
            layout=rec.layout,
            files=len(rec.files),
            error=rec.error or None,
            encryption_config=rec.encryption_config or None,
            encryption_config_saved=rec.encryption_config_saved,
            warnings=tuple(rec.warnings),
        )


@dataclass(frozen=True)
class AgentStatus:
    version: str
    cluster: str
    node: str
    time: str
    busy: bool
    last: LastResult = field(default_factory=LastResult)
    newest_backup: str | None = None
    next_run: str | None = None
    coordination: CoordinationStatus | None = None
    leader: bool | None = None
    store: StoreStatus | None = None
    drill: DrillStatus | None = None
    spool: SpoolStatus | None = None
    bundle: BundleStatus | None = None

    def to_wire(self) -> dict[str, Any]:
        """The socket's ``status`` reply (its key order and names are the documented ones)."""
        drill = self.drill or DrillStatus(LastDrill(), None, None)
        coord = self.coordination or CoordinationStatus()
        return {
            "agent_version": self.version,
            "cluster": self.cluster,
            "node": self.node,
            "time": self.time,
            "busy": self.busy,
            "version": self.version,
            "last": asdict(self.last),
            "newest_backup": self.newest_backup,
            "next_run": self.next_run,
            "coordination": asdict(coord),
            "leader": self.leader,
            "store": asdict(self.store) if self.store else None,
            "drill": {**asdict(drill.last), "mode": drill.mode, "next_due": drill.next_due},
            "spool": asdict(self.spool) if self.spool else None,
            "bundle": (
                {**asdict(self.bundle), "warnings": list(self.bundle.warnings)}
                if self.bundle
                else None
            ),
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> AgentStatus:
        """Decode a ``status`` reply; missing parts (an older agent) stay None."""

        def pick(kind: type, value: Any) -> Any:
            if not isinstance(value, dict):
                return None
            names = {f.name for f in fields(kind)}
            return kind(**{k: v for k, v in value.items() if k in names})

        drill = data.get("drill")
        bundle = data.get("bundle")
        return cls(
            version=str(data.get("version") or data.get("agent_version") or ""),
            cluster=str(data.get("cluster", "")),
            node=str(data.get("node", "")),
            time=str(data.get("time", "")),
            busy=bool(data.get("busy")),
            last=pick(LastResult, data.get("last")) or LastResult(),
            newest_backup=data.get("newest_backup"),
            next_run=data.get("next_run"),
            coordination=pick(CoordinationStatus, data.get("coordination")),
            leader=data.get("leader"),
            store=pick(StoreStatus, data.get("store")),
            drill=(
                DrillStatus(
                    pick(LastDrill, drill) or LastDrill(), drill.get("mode"), drill.get("next_due")
                )
                if isinstance(drill, dict)
                else None
            ),
            spool=pick(SpoolStatus, data.get("spool")),
            bundle=(
                BundleStatus(
                    **{
                        k: v
                        for k, v in bundle.items()
                        if k in {f.name for f in fields(BundleStatus)} and k != "warnings"
                    },
                    warnings=tuple(bundle.get("warnings") or ()),
                )
                if isinstance(bundle, dict)
                else None
            ),
        )

    def status_line(self) -> str:
        """systemd's ``STATUS=``: the last result and the next run, on one line."""
        last = self.last
        text = f"last: {last.result}"
        if last.backup_id:
            text += f" {last.backup_id}"
        elif last.reason:
            text += f" ({last.reason})"
        if self.next_run is not None:
            text += f"; next: {self.next_run}"
        return text


def _yes_no(value: bool | None) -> str:
    return "unknown" if value is None else ("yes" if value else "no")


def render(st: AgentStatus) -> list[str]:
    """The status as an operator reads it at 3 a.m.: what happened, what is next."""
    last = st.last
    line = f"last backup:  {last.result}"
    if last.at:
        line += f" at {last.at}"
    if last.backup_id:
        line += f" ({last.backup_id})"
    if last.error:
        line += f": {last.error}"
    elif last.reason:
        line += f" ({last.reason})"
    coord = st.coordination or CoordinationStatus()
    store = st.store
    spool = st.spool or SpoolStatus()
    out = [
        f"agent:        {st.cluster} / {st.node}, version {st.version}",
        line,
        f"newest in store: {st.newest_backup or 'none'}",
        f"next run:     {st.next_run or '-'}{'  (a backup is running)' if st.busy else ''}",
        f"coordination: {coord.mode}, lock holder {coord.holder or '-'}, "
        f"local member is leader: {_yes_no(st.leader)}",
        f"store:        {store.describe if store else None} "
        f"({'up' if store and store.up else 'DOWN'})",
        f"spool:        {human_size(spool.bytes)}, {spool.pending_uploads} "
        f"backup(s) waiting for upload",
    ]
    drill = st.drill.last if st.drill else LastDrill()
    if drill.at:
        kind = ", ".join(str(v) for v in (drill.kind, drill.source) if v)
        text = f"{drill.result} ({kind}) at {drill.at}"
        if drill.error:
            text += f": {drill.error}"
    else:
        text = "none yet"
    out.append(f"last drill:   {text}")
    bundle = st.bundle
    if bundle:
        text = f"{bundle.status} ({bundle.layout}, {bundle.files} entries)"
        if bundle.error:
            text += f": {bundle.error}"
        out.append(f"bundle:       {text}")
        out.extend(f"  WARNING: {w}" for w in bundle.warnings)
    return out
