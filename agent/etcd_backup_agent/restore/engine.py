"""The restore engines: native (``datadir.engine``, the default) or etcdutl
(``[restore] engine = "etcdutl"``, restore/etcdutl.py).

Either writes a new data dir for one member; ``choose_engine`` refuses what the chosen
engine cannot do before anything is fetched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import Settings
from ..errors import RestoreError
from ..events import Emit, note, progress
from .etcdutl import Etcdutl, find_etcdutl, run_etcdutl
from .member import MemberSpec


@dataclass(frozen=True)
class EngineResult:
    """What either engine reports about the data dir it wrote."""

    engine: str
    etcdutl_version: str | None
    member_id: str
    cluster_id: str
    revision: int | None
    bumped_from: int | None

    @property
    def label(self) -> str:
        """The engine as a drill names it: "native" or "etcdutl 3.5.x"."""
        return f"{self.engine} {self.etcdutl_version}" if self.etcdutl_version else self.engine


def run_native(
    snapshot: Path, spec: MemberSpec, emit: Emit, has_trailer: bool = True
) -> EngineResult:
    """Restore with the native engine (datadir.engine) and report progress as "restore"."""
    from ..datadir.engine import restore_native

    cluster = spec.cluster_spec()
    note(emit, f"restoring natively as member {spec.name} of cluster {cluster.id_hex}")
    progress(emit, "restore", 0, 1)
    out = restore_native(
        snapshot,
        cluster,
        spec.name,
        spec.data_dir,
        spec.wal_dir,
        bump_revision=spec.bump_revision or 0,
        mark_compacted=spec.mark_compacted and bool(spec.bump_revision),
        has_trailer=has_trailer,
        progress=lambda done, total: progress(emit, "restore", done, total),
    )
    progress(emit, "restore", 1, 1)
    return EngineResult(
        "native", None, out.member_id, out.cluster_id, out.revision, out.bumped_from
    )


@dataclass(frozen=True)
class Engine:
    """The chosen restore engine; ``etcdutl`` is set for the etcdutl engine."""

    name: str
    etcdutl: Etcdutl | None

    def run(
        self, snapshot: Path, spec: MemberSpec, emit: Emit, has_trailer: bool = True
    ) -> EngineResult:
        if self.etcdutl is None:
            return run_native(snapshot, spec, emit, has_trailer)
        run_etcdutl(self.etcdutl, snapshot, spec, emit, skip_hash_check=not has_trailer)
        cluster = spec.cluster_spec()
        return EngineResult(
            "etcdutl",
            self.etcdutl.version_text,
            cluster.member_named(spec.name).id_hex,
            cluster.id_hex,
            None,
            None,
        )


def choose_engine(settings: Settings, spec: MemberSpec) -> Engine:
    """The ``[restore] engine``; refuse what it cannot do before anything is fetched."""
    engine = settings.restore.engine
    if engine == "native":
        return Engine("native", None)
    etcdutl = find_etcdutl(settings.restore.etcdutl)
    if spec.bump_revision and not etcdutl.can_bump:
        raise RestoreError(
            f"--bump-revision/--mark-compacted need etcdutl >= 3.5.10; {etcdutl.path} is "
            f"{etcdutl.version_text}: install a newer etcdutl ([restore] etcdutl), use "
            '[restore] engine = "native", or restore without them'
        )
    return Engine("etcdutl", etcdutl)
