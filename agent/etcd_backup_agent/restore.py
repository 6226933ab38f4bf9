"""Restore: fetch a backup, check it against its manifest, unseal, verify, restore.

Order of trust: the stored object's sha256 is checked before anything is decrypted; the
plaintext lands under a temporary name and is checked (sha256 of the db part, trailer,
native verification, manifest revision/hash/key count) before it is restored. The restore
engine is native (``datadir.engine``, the default) or ``etcdutl snapshot restore``
(``[restore] engine = "etcdutl"``). Either writes into a hidden sibling of the target,
which is renamed into place only when the restore succeeded: a failed restore leaves no
half-written target. Nothing the operator owns is ever deleted or overwritten; only this
module's own temporary files are removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, cast

from . import log as logsetup
from . import scratch
from .binaries import candidates
from .bundle.check import verify_bundle
from .catalog import find_backup, list_backups
from .config import Settings
from .datadir import members as datadir_members
from .errors import CryptoError, RestoreError, StoreError, UsageError, VerificationError
from .fsutil import fsync_dir
from .manifest import Manifest
from .seal import unseal_stream
from .snapshot import verify as snapverify
from .store.base import Store

Emit = Callable[[dict[str, Any]], None]
CHUNK = 1024 * 1024
TRAILER = 32
BUMP_MIN_VERSION = (3, 5, 10)
# What the Kubernetes etcd restore docs pass to etcdutl; far above any real cluster's
# revision growth between a snapshot and its restore, far below int64.
K8S_BUMP = 1_000_000_000
ENGINES = ("native", "etcdutl")


def no_emit(event: dict[str, Any]) -> None:
    """Drop an event."""
    return None


def progress(emit: Emit, stage: str, done: int, total: int) -> None:
    emit({"event": "progress", "stage": stage, "done": done, "total": total})


def note(emit: Emit, message: str, level: str = "info") -> None:
    emit({"event": "log", "level": level, "message": message})


# --- the target member -----------------------------------------------------------------


@dataclass(frozen=True)
class MemberSpec:
    """Where and as which member to restore; the flags of ``etcdutl snapshot restore``."""

    data_dir: Path
    name: str = "default"
    initial_advertise_peer_urls: str = "http://127.0.0.1:2380"
    initial_cluster: str = ""
    initial_cluster_token: str = "etcd-cluster"  # noqa: S105 (not a secret)
    bump_revision: int | None = None
    mark_compacted: bool = False
    wal_dir: Path | None = None

    @property
    def cluster(self) -> str:
        return self.initial_cluster or f"{self.name}={self.initial_advertise_peer_urls}"

    def members(self) -> list[tuple[str, str]]:
        """(name, peer URLs) of every member in ``--initial-cluster``, in order, URLs merged."""
        out: dict[str, list[str]] = {}
        for item in self.cluster.split(","):
            name, sep, url = item.strip().partition("=")
            if not sep or not name or not url:
                raise UsageError(
                    f"--initial-cluster: expected NAME=URL[,NAME=URL...], got {item!r}"
                )
            out.setdefault(name, []).append(url)
        return [(n, ",".join(u)) for n, u in out.items()]

    def check(self) -> None:
        """Raise UsageError when the flags cannot describe one member of a cluster."""
        members = dict(self.members())
        if self.name not in members:
            raise UsageError(f"--name {self.name!r} does not appear in --initial-cluster")
        want = sorted(u.strip() for u in self.initial_advertise_peer_urls.split(","))
        have = sorted(u.strip() for u in members[self.name].split(","))
        if want != have:
            raise UsageError(
                f"--initial-advertise-peer-urls {self.initial_advertise_peer_urls} differs from "
                f"the URLs of {self.name!r} in --initial-cluster ({members[self.name]})"
            )
        if (self.bump_revision is not None) != self.mark_compacted:
            raise UsageError("--bump-revision and --mark-compacted go together (both or neither)")
        if self.bump_revision is not None and self.bump_revision < 0:
            raise UsageError("--bump-revision must be >= 0")
        if self.wal_dir is not None and not self.wal_dir.is_absolute():
            raise UsageError("--wal-dir must be an absolute path")
        self.cluster_spec()

    def cluster_spec(self) -> datadir_members.Cluster:
        """The cluster etcd derives from these flags (IDs as etcd computes them)."""
        return datadir_members.cluster_from_initial(self.cluster, self.initial_cluster_token)


# --- etcdutl --------------------------------------------------------------------------


@dataclass(frozen=True)
class Etcdutl:
    path: str
    version: tuple[int, int, int]

    @property
    def version_text(self) -> str:
        return ".".join(str(p) for p in self.version)

    @property
    def can_bump(self) -> bool:
        return self.version >= BUMP_MIN_VERSION


def find_etcdutl(configured: str) -> Etcdutl:
    """Locate a working etcdutl (``[restore] etcdutl``) and read its version.

    Each candidate (see binaries.candidates) must answer ``etcdutl version``; the first
    that does is used, so a broken wrapper on PATH does not hide a working binary.
    """
    found = candidates(configured)
    if not found:
        raise RestoreError(
            f"etcdutl not found ({configured!r}): install etcd's etcdutl or set [restore] etcdutl"
        )
    failures = []
    for path in found:
        try:
            out = subprocess.run(
                [path, "version"], capture_output=True, text=True, timeout=30, check=True
            ).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            failures.append(f"{path}: {exc}")
            continue
        m = re.search(r"etcdutl version:\s*(\d+)\.(\d+)\.(\d+)", out) or re.search(
            r"(\d+)\.(\d+)\.(\d+)", out
        )
        if not m:
            failures.append(f"{path}: cannot read a version from {out.strip()!r}")
            continue
        return Etcdutl(path, (int(m.group(1)), int(m.group(2)), int(m.group(3))))
    raise RestoreError("no working etcdutl: " + "; ".join(failures))


def restore_argv(
    etcdutl: Etcdutl,
    snapshot: Path,
    spec: MemberSpec,
    data_dir: Path,
    wal_dir: Path | None = None,
    skip_hash_check: bool = False,
) -> list[str]:
    """The etcdutl command line restoring ``snapshot`` as ``spec`` into ``data_dir``."""
    argv = [
        etcdutl.path,
        "snapshot",
        "restore",
        str(snapshot),
        "--data-dir",
        str(data_dir),
        "--name",
        spec.name,
        "--initial-cluster",
        spec.cluster,
        "--initial-cluster-token",
        spec.initial_cluster_token,
        "--initial-advertise-peer-urls",
        spec.initial_advertise_peer_urls,
    ]
    if wal_dir is not None:
        argv += ["--wal-dir", str(wal_dir)]
    if skip_hash_check:
        argv.append("--skip-hash-check")
    if spec.bump_revision:
        argv += ["--bump-revision", str(spec.bump_revision), "--mark-compacted"]
    return argv


# --- fetching and checking ------------------------------------------------------------


@dataclass(frozen=True)
class CheckedSnapshot:
    """A decrypted snapshot (db + trailer) that matched its manifest."""

    manifest: Manifest
    path: Path
    revision: int
    total_keys: int | None
    hash: int | None
    storage_version: str | None = None  # set for etcd 3.6 snapshots (meta/storageVersion)


def work_root(settings: Settings) -> Path:
    return settings.restore.work_dir or settings.spool.dir


@contextlib.contextmanager
def scratch_dir(settings: Settings, prefix: str) -> Iterator[Path]:
    """A private temporary directory (0700) in the work dir, removed afterwards."""
    with scratch.scratch_dir(work_root(settings), prefix) as path:
        yield path


def resolve_backup(settings: Settings, store: Store, backup: str) -> Manifest:
    """The manifest of ``backup`` (an id or "latest"); BackupNotFound when there is none."""
    try:
        catalog = list_backups(store, settings.cluster)
    except ValueError as exc:
        raise StoreError(f"{store.describe()}: unreadable manifest: {exc}") from None
    return find_backup(catalog, backup)


def fetch_object(store: Store, manifest: Manifest, dst: Path, emit: Emit) -> None:
    """Download the sealed object to ``dst`` and check its size and sha256 (before decrypting)."""
    digest = hashlib.sha256()
    done = 0
    with store.open_read(manifest.object) as src, open(dst, "xb") as out:
        for chunk in iter(lambda: src.read(CHUNK), b""):
            digest.update(chunk)
            out.write(chunk)
            done += len(chunk)
            progress(emit, "fetch", done, manifest.object_size)
    if done != manifest.object_size or digest.hexdigest() != manifest.object_sha256:
        raise VerificationError(
            f"stored object {manifest.object} does not match its manifest "
            f"({done} bytes, sha256 {digest.hexdigest()[:16]}..., expected "
            f"{manifest.object_size} bytes, {manifest.object_sha256[:16]}...): "
            "tampered or damaged; nothing was decrypted"
        )


def check_plaintext(path: Path, manifest: Manifest, emit: Emit) -> None:
    """Check the decrypted file: db size, sha256 of the db part, and the etcd trailer."""
    size = path.stat().st_size
    if size != manifest.db_size + TRAILER:
        raise VerificationError(
            f"decrypted snapshot has {size} bytes, expected {manifest.db_size} + {TRAILER}"
        )
    digest = hashlib.sha256()
    remaining = size - TRAILER
    with path.open("rb") as f:
        while remaining:
            chunk = f.read(min(CHUNK, remaining))
            if not chunk:
                raise VerificationError("decrypted snapshot ended early")
            digest.update(chunk)
            remaining -= len(chunk)
            progress(emit, "checksum", size - TRAILER - remaining, size - TRAILER)
        trailer = f.read(TRAILER)
    if digest.hexdigest() != manifest.snapshot_sha256:
        raise VerificationError("decrypted snapshot sha256 differs from the manifest")
    if trailer != digest.digest():
        raise VerificationError("decrypted snapshot sha256 trailer does not match its data")


def check_trailer_against_manifest(path: Path, manifest: Manifest) -> None:
    """Size and the trailer bytes against the manifest, without reading the db part.

    Native verification (``verify_against_manifest``) then proves sha256(db part) ==
    trailer, so together they prove what ``check_plaintext`` does, in one pass instead of two.
    """
    size = path.stat().st_size
    if size != manifest.db_size + TRAILER:
        raise VerificationError(
            f"decrypted snapshot has {size} bytes, expected {manifest.db_size} + {TRAILER}"
        )
    with path.open("rb") as f:
        f.seek(size - TRAILER)
        trailer = f.read(TRAILER)
    if trailer.hex() != manifest.snapshot_sha256:
        raise VerificationError("decrypted snapshot sha256 trailer differs from the manifest")


def verify_against_manifest(
    path: Path, manifest: Manifest, known_sha256: str | None = None
) -> snapverify.VerifyReport:
    """Natively verify ``path`` and compare revision, hash and key count with the manifest.

    ``known_sha256``: the data's digest, already computed while it was written."""
    report = snapverify.verify_snapshot(
        path, manifest.status_rules or "auto", known_sha256=known_sha256
    )
    if report.sound and report.trailer_ok is not True:
        raise VerificationError("decrypted snapshot has no matching sha256 trailer")
    if not report.sound or report.status is None:
        problems = report.problems or ["no status"]
        raise VerificationError(f"snapshot failed native verification: {problems[0]}", problems)
    st = report.status
    mismatches = []
    if st.revision != manifest.revision:
        mismatches.append(f"revision {st.revision} != manifest {manifest.revision}")
    if manifest.hash is not None and st.hash != manifest.hash:
        mismatches.append(f"hash {st.hash} != manifest {manifest.hash}")
    if manifest.total_keys is not None and st.total_key != manifest.total_keys:
        mismatches.append(f"key count {st.total_key} != manifest {manifest.total_keys}")
    if mismatches:
        raise VerificationError("snapshot differs from its manifest: " + "; ".join(mismatches))
    return report


class _FetchReader:
    """The store's download stream, hashed and counted as the decrypter reads it."""

    def __init__(self, body: Any, manifest: Manifest, emit: Emit) -> None:
        self.body = body
        self.manifest = manifest
        self.emit = emit
        self.digest = hashlib.sha256()
        self.count = 0
        self._shown = 0.0

    def read(self, n: int = -1) -> bytes:
        data: bytes = self.body.read(CHUNK if n is None or n < 0 else n)
        self.digest.update(data)
        self.count += len(data)
        now = time.monotonic()
        if not data or now - self._shown >= 0.25:
            self._shown = now
            progress(self.emit, "fetch", self.count, self.manifest.object_size)
        return data

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    def matches(self) -> bool:
        m = self.manifest
        return self.count == m.object_size and self.digest.hexdigest() == m.object_sha256

    def mismatch(self) -> VerificationError:
        m = self.manifest
        return VerificationError(
            f"stored object {m.object} does not match its manifest "
            f"({self.count} bytes, sha256 {self.digest.hexdigest()[:16]}..., expected "
            f"{m.object_size} bytes, {m.object_sha256[:16]}...): "
            "tampered or damaged; nothing was decrypted"
        )


def fetch_and_check(
    store: Store, manifest: Manifest, identity_text: str, scratch: Path, emit: Emit
) -> CheckedSnapshot:
    """Fetch, check, unseal and verify one backup into ``scratch``; raise on any mismatch.

    Fetch, decryption and decompression are one streamed pass (no sealed copy on disk);
    the object's sha256 is computed as it arrives and checked at its end, and the
    plaintext's sha256 as it is written, so nothing is read twice. age authenticates
    every 64 KiB chunk, so tampered bytes never reach the plaintext file; any mismatch
    removes the plaintext and is reported as the object not matching its manifest.
    """
    log = logsetup.get("restore")
    snapshot = scratch / "snapshot.db"
    note(emit, f"fetching and decrypting {manifest.object} ({manifest.object_size} bytes)")
    with store.open_read(manifest.object) as body:
        src = _FetchReader(body, manifest, emit)
        try:
            result = unseal_stream(cast(BinaryIO, src), snapshot, identity_text, durable=False)
            src.drain()  # bytes after the age stream would change the object's sha256
        except CryptoError:
            src.drain()
            if not src.matches():
                raise src.mismatch() from None
            raise
        except OSError as exc:
            raise CryptoError(f"decryption failed: {exc}") from None
    if not src.matches():
        snapshot.unlink(missing_ok=True)
        raise src.mismatch()
    progress(emit, "decrypt", result.size, manifest.db_size + TRAILER)
    if result.size != manifest.db_size + TRAILER:
        raise VerificationError(
            f"decrypted snapshot has {result.size} bytes, expected {manifest.db_size} + {TRAILER}"
        )
    if result.data_sha256 != manifest.snapshot_sha256:
        raise VerificationError("decrypted snapshot sha256 differs from the manifest")
    if result.trailer.hex() != result.data_sha256:
        raise VerificationError("decrypted snapshot sha256 trailer does not match its data")
    note(emit, "object and snapshot sha256 match the manifest; verifying natively")
    report = verify_against_manifest(snapshot, manifest, known_sha256=result.data_sha256)
    st = report.status
    assert st is not None
    log.info("backup checked", backup=manifest.id, revision=st.revision, keys=st.total_key)
    return CheckedSnapshot(manifest, snapshot, st.revision, st.total_key, st.hash, st.version)


# --- the target directory -------------------------------------------------------------


def check_target(data_dir: Path) -> None:
    """Refuse a target that exists and is not an empty directory."""
    if data_dir.is_symlink() or (data_dir.exists() and not data_dir.is_dir()):
        raise RestoreError(f"target {data_dir} exists and is not a directory; choose a new path")
    if data_dir.is_dir() and any(data_dir.iterdir()):
        raise RestoreError(
            f"target {data_dir} exists and is not empty; restore never overwrites a data dir: "
            "choose a new path (e.g. /var/lib/etcd-restored-<date>)"
        )


def check_wal_target(wal_dir: Path | None) -> None:
    """Refuse a ``--wal-dir`` that exists (etcdutl's rule)."""
    if wal_dir is not None and (wal_dir.exists() or wal_dir.is_symlink()):
        raise RestoreError(f"wal dir {wal_dir} exists; restore never reuses one: choose a new path")


def run_etcdutl(
    etcdutl: Etcdutl, snapshot: Path, spec: MemberSpec, emit: Emit, skip_hash_check: bool = False
) -> None:
    """Restore into a hidden sibling of the target, then rename it into place."""
    target = spec.data_dir
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        if spec.wal_dir is not None:
            spec.wal_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RestoreError(f"cannot create {parent}: {exc.strerror}") from None
    holder = Path(tempfile.mkdtemp(prefix=f".{target.name}.restoring-", dir=parent))
    wal_holder = None
    staged = holder / "data"
    try:
        staged_wal = None
        if spec.wal_dir is not None:
            wal_holder = Path(
                tempfile.mkdtemp(prefix=f".{spec.wal_dir.name}.restoring-", dir=spec.wal_dir.parent)
            )
            staged_wal = wal_holder / "wal"
        argv = restore_argv(etcdutl, snapshot, spec, staged, staged_wal, skip_hash_check)
        note(emit, "running " + shlex.join(["etcdutl", *argv[1:]]))
        progress(emit, "etcdutl", 0, 1)
        try:
            proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=3600)
        except (OSError, subprocess.SubprocessError) as exc:
            raise RestoreError(f"etcdutl snapshot restore failed to run: {exc}") from None
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise RestoreError(
                f"etcdutl snapshot restore failed (exit {proc.returncode}): " + " | ".join(tail)
            )
        progress(emit, "etcdutl", 1, 1)
        check_target(target)
        check_wal_target(spec.wal_dir)
        try:
            if staged_wal is not None and spec.wal_dir is not None:
                os.rename(staged_wal, spec.wal_dir)
                fsync_dir(spec.wal_dir.parent)
            staged.chmod(0o700)
            # rename(2) replaces only an empty directory: a target filled meanwhile fails here
            os.rename(staged, target)
        except OSError as exc:
            if staged_wal is not None and spec.wal_dir is not None and spec.wal_dir.exists():
                with contextlib.suppress(OSError):
                    os.rename(spec.wal_dir, staged_wal)
            raise RestoreError(f"cannot move the restored data into {target}: {exc}") from None
        fsync_dir(parent)
    finally:
        shutil.rmtree(holder, ignore_errors=True)
        if wal_holder is not None:
            shutil.rmtree(wal_holder, ignore_errors=True)


@dataclass(frozen=True)
class EngineResult:
    """What either engine reports about the data dir it wrote."""

    engine: str
    etcdutl_version: str | None
    member_id: str
    cluster_id: str
    revision: int | None
    bumped_from: int | None


def run_native(
    snapshot: Path, spec: MemberSpec, emit: Emit, has_trailer: bool = True
) -> EngineResult:
    """Restore with the native engine (datadir.engine) and report progress as "restore"."""
    from .datadir.engine import restore_native

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


# --- the report -----------------------------------------------------------------------


@dataclass(frozen=True)
class MemberCommand:
    name: str
    peer_urls: str
    argv: list[str]

    @property
    def text(self) -> str:
        return shlex.join(self.argv)


@dataclass
class RestoreReport:
    """What was restored, where, and what the operator does next."""

    backup_id: str
    created_at: str
    age_seconds: float
    revision: int
    total_keys: int | None
    hash: int | None
    data_dir: str
    name: str
    initial_cluster: str
    initial_cluster_token: str
    initial_advertise_peer_urls: str
    etcdutl_version: str | None
    bump_revision: int | None
    next_steps: list[str] = field(default_factory=list)
    recommendations: list[str] = field(default_factory=list)
    member_commands: list[MemberCommand] = field(default_factory=list)
    swap: dict[str, Any] | None = None
    engine: str = "native"
    wal_dir: str | None = None
    member_id: str | None = None
    cluster_id: str | None = None
    snapshot_file: str | None = None
    storage_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["member_commands"] = [
            {"name": c.name, "peer_urls": c.peer_urls, "argv": c.argv, "command": c.text}
            for c in self.member_commands
        ]
        return d


def member_commands(
    settings: Settings, manifest: Manifest, spec: MemberSpec, identity_hint: str
) -> list[MemberCommand]:
    """The restore command of every member of ``--initial-cluster`` (same backup and token)."""
    out = []
    for name, urls in spec.members():
        argv = ["etcd-backup-agent", "restore", manifest.id]
        if settings.source is not None:
            argv += ["--config", str(settings.source)]
        argv += [
            "--identity",
            identity_hint,
            "--data-dir",
            str(spec.data_dir),
            "--name",
            name,
            "--initial-cluster",
            spec.cluster,
            "--initial-advertise-peer-urls",
            urls,
            "--initial-cluster-token",
            spec.initial_cluster_token,
        ]
        if spec.wal_dir is not None:
            argv += ["--wal-dir", str(spec.wal_dir)]
        if spec.bump_revision is not None:
            argv += ["--bump-revision", str(spec.bump_revision), "--mark-compacted"]
        out.append(MemberCommand(name, urls, argv))
    return out


def next_steps(spec: MemberSpec, multi: bool) -> list[str]:
    """Exact steps for this node after the restore (layout-neutral)."""
    flags = shlex.join(
        [
            "--name",
            spec.name,
            "--data-dir",
            str(spec.data_dir),
            "--initial-cluster",
            spec.cluster,
            "--initial-cluster-token",
            spec.initial_cluster_token,
            "--initial-advertise-peer-urls",
            spec.initial_advertise_peer_urls,
            "--initial-cluster-state",
            "new",
            *(["--wal-dir", str(spec.wal_dir)] if spec.wal_dir is not None else []),
        ]
    )
    steps = [
        "Stop kube-apiserver (kubeadm: move /etc/kubernetes/manifests/kube-apiserver.yaml out) "
        "and the old etcd on this node; keep the old data dir: nothing was deleted.",
        f"Start etcd on this node with: {flags} "
        "(kubeadm: point the etcd-data hostPath in etcd.yaml at the new dir; systemd: set "
        "data-dir in the etcd config; or use `restore --apply --layout kubeadm|systemd`).",
    ]
    if multi:
        steps.append(
            "Run the per-member restore command below on every other member's node, then "
            "start etcd there with its own --name and peer URLs and the same --initial-cluster "
            "and token."
        )
    steps += [
        "Check: etcdctl endpoint status --cluster -w table (revision as restored) and "
        "etcdctl member list.",
        "Start kube-apiserver again, then restart kube-controller-manager, kube-scheduler and "
        "kubelets so no component keeps a cache newer than the snapshot.",
    ]
    return steps


def recommendations(etcdutl: Etcdutl | None, spec: MemberSpec) -> list[str]:
    if spec.bump_revision:
        return []
    if etcdutl is None or etcdutl.can_bump:
        return [
            f"For Kubernetes, restore with --bump-revision {K8S_BUMP} --mark-compacted so "
            "watch caches newer than the snapshot re-list instead of missing changes."
        ]
    return [
        f"etcdutl {etcdutl.version_text} cannot bump the revision (needs >= 3.5.10): restart "
        "every kube-apiserver, controller and kubelet after the restore so no watch cache "
        "keeps resource versions newer than the snapshot."
    ]


def restore(
    settings: Settings,
    store: Store,
    backup: str,
    identity_text: str,
    spec: MemberSpec,
    emit: Emit = no_emit,
    *,
    identity_hint: str = "KEY_FILE",
) -> RestoreReport:
    """Restore ``backup`` (an id or "latest") as member ``spec`` into a new data dir."""
    spec.check()
    check_target(spec.data_dir)
    check_wal_target(spec.wal_dir)
    engine = choose_engine(settings, spec)
    manifest = resolve_backup(settings, store, backup)
    log = logsetup.get("restore")
    log.info(
        "restore starting",
        backup=manifest.id,
        data_dir=str(spec.data_dir),
        name=spec.name,
        engine=engine.name,
    )
    with scratch_dir(settings, "restore-") as scratch:
        checked = fetch_and_check(store, manifest, identity_text, scratch, emit)
        result = engine.run(checked.path, spec, emit)
    log.info("restore finished", backup=manifest.id, data_dir=str(spec.data_dir))
    multi = len(spec.members()) > 1
    age = (datetime.now(UTC) - manifest.created).total_seconds()
    return RestoreReport(
        backup_id=manifest.id,
        created_at=manifest.created_at,
        age_seconds=round(age, 1),
        revision=checked.revision,
        total_keys=checked.total_keys,
        hash=checked.hash,
        data_dir=str(spec.data_dir),
        name=spec.name,
        initial_cluster=spec.cluster,
        initial_cluster_token=spec.initial_cluster_token,
        initial_advertise_peer_urls=spec.initial_advertise_peer_urls,
        etcdutl_version=result.etcdutl_version,
        bump_revision=spec.bump_revision,
        next_steps=next_steps(spec, multi),
        recommendations=recommendations(engine.etcdutl, spec),
        member_commands=member_commands(settings, manifest, spec, identity_hint) if multi else [],
        engine=result.engine,
        wal_dir=str(spec.wal_dir) if spec.wal_dir is not None else None,
        member_id=result.member_id,
        cluster_id=result.cluster_id,
        storage_version=checked.storage_version,
    )


def check_local_snapshot(
    path: Path, allow_no_trailer: bool
) -> tuple[snapverify.VerifyReport, bool]:
    """Verify a local plaintext snapshot natively; return (report, has a trailer)."""
    if not path.is_file():
        raise RestoreError(f"snapshot {path} is not a readable file")
    # one pass: the trailer's sha256 runs beside the tree walk (verify_snapshot)
    report = snapverify.verify_snapshot(path, "auto", require_trailer=False)
    if report.sound and report.trailer_ok is None and not allow_no_trailer:
        raise VerificationError(
            f"snapshot {path} has no sha256 trailer (copied from a data dir?): its integrity "
            "cannot be proven; pass --allow-no-trailer to restore it anyway"
        )
    if not report.sound or report.status is None:
        problems = report.problems or ["no status"]
        raise VerificationError(
            f"snapshot {path} failed native verification: {problems[0]}", problems
        )
    return report, report.trailer_ok is True


def restore_snapshot(
    settings: Settings,
    snapshot: Path,
    spec: MemberSpec,
    emit: Emit = no_emit,
    *,
    allow_no_trailer: bool = False,
) -> RestoreReport:
    """Restore a local plaintext snapshot file (``etcdctl snapshot save`` output) as ``spec``."""
    spec.check()
    check_target(spec.data_dir)
    check_wal_target(spec.wal_dir)
    engine = choose_engine(settings, spec)
    note(emit, f"verifying {snapshot} natively")
    report, has_trailer = check_local_snapshot(snapshot, allow_no_trailer)
    st = report.status
    assert st is not None
    result = engine.run(snapshot, spec, emit, has_trailer)
    logsetup.get("restore").info(
        "restore finished", snapshot=str(snapshot), data_dir=str(spec.data_dir)
    )
    multi = len(spec.members()) > 1
    commands = []
    if multi:
        for name, urls in spec.members():
            argv = [
                "etcd-backup-agent",
                "restore",
                "--snapshot",
                str(snapshot),
                *(["--config", str(settings.source)] if settings.source is not None else []),
                "--data-dir",
                str(spec.data_dir),
                "--name",
                name,
                "--initial-cluster",
                spec.cluster,
                "--initial-advertise-peer-urls",
                urls,
                "--initial-cluster-token",
                spec.initial_cluster_token,
            ]
            if spec.wal_dir is not None:
                argv += ["--wal-dir", str(spec.wal_dir)]
            if spec.bump_revision is not None:
                argv += ["--bump-revision", str(spec.bump_revision), "--mark-compacted"]
            commands.append(MemberCommand(name, urls, argv))
    return RestoreReport(
        backup_id="",
        created_at="",
        age_seconds=0.0,
        revision=st.revision,
        total_keys=st.total_key,
        hash=st.hash,
        data_dir=str(spec.data_dir),
        name=spec.name,
        initial_cluster=spec.cluster,
        initial_cluster_token=spec.initial_cluster_token,
        initial_advertise_peer_urls=spec.initial_advertise_peer_urls,
        etcdutl_version=result.etcdutl_version,
        bump_revision=spec.bump_revision,
        next_steps=next_steps(spec, multi),
        recommendations=recommendations(engine.etcdutl, spec),
        member_commands=commands,
        engine=result.engine,
        wal_dir=str(spec.wal_dir) if spec.wal_dir is not None else None,
        member_id=result.member_id,
        cluster_id=result.cluster_id,
        snapshot_file=str(snapshot),
        storage_version=st.version,
    )


@dataclass(frozen=True)
class BackupCheck:
    """The result of checking one stored backup end to end (no restore)."""

    backup_id: str
    revision: int
    total_keys: int | None
    hash: int | None
    object_sha256_ok: bool = True
    snapshot_sha256_ok: bool = True
    native_ok: bool = True
    bundle: str = "none"  # "ok", "none" or "failed" (at backup time); see bundle/check.py
    bundle_files: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_backup(
    settings: Settings, store: Store, backup: str, identity_text: str, emit: Emit = no_emit
) -> BackupCheck:
    """Download, decrypt, decompress and verify ``backup`` against its manifest."""
    manifest = resolve_backup(settings, store, backup)
    with scratch_dir(settings, "verify-") as scratch:
        checked = fetch_and_check(store, manifest, identity_text, scratch, emit)
    bundle, files = verify_bundle(store, manifest, identity_text, emit)
    return BackupCheck(
        manifest.id,
        checked.revision,
        checked.total_keys,
        checked.hash,
        bundle=bundle,
        bundle_files=files,
    )


# --- k3s / RKE2: the snapshot itself is what they restore from -------------------------


def place_file(src: Path, dest: Path) -> None:
    """Copy ``src`` to ``dest`` (0600, fsynced); never replace an existing ``dest``."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    except OSError as exc:
        raise RestoreError(f"cannot write into {dest.parent}: {exc}") from None
    tmp = Path(tmp_name)
    try:
        with open(src, "rb") as f, os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(f, out, CHUNK)
            out.flush()
            os.fsync(out.fileno())
        os.link(tmp, dest)  # fails when dest exists: nothing is overwritten
        fsync_dir(dest.parent)
    except FileExistsError:
        raise RestoreError(f"{dest} exists; nothing is overwritten") from None
    except OSError as exc:
        raise RestoreError(f"cannot write {dest}: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def place_backup(
    settings: Settings,
    store: Store,
    backup: str,
    identity_text: str,
    dest_dir: Path,
    emit: Emit = no_emit,
) -> tuple[Manifest, CheckedSnapshot, Path]:
    """Fetch and check ``backup``, then copy its verified plaintext into ``dest_dir``."""
    manifest = resolve_backup(settings, store, backup)
    dest = dest_dir / f"etcd-backup-agent-{manifest.id}.db"
    if dest.exists():
        raise RestoreError(f"{dest} exists; nothing is overwritten")
    with scratch_dir(settings, "restore-") as scratch:
        checked = fetch_and_check(store, manifest, identity_text, scratch, emit)
        place_file(checked.path, dest)
    return manifest, checked, dest
