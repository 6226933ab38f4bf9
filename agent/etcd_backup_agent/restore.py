"""Restore: fetch a backup, check it against its manifest, unseal, verify, etcdutl restore.

Order of trust: the stored object's sha256 is checked before anything is decrypted; the
plaintext lands under a temporary name and is checked (sha256 of the db part, trailer,
native verification, manifest revision/hash/key count) before etcdutl sees it. etcdutl
restores into a hidden sibling of the target, which is renamed into place only when the
restore succeeded: a failed restore leaves no half-written target. Nothing the operator
owns is ever deleted or overwritten; only this module's own temporary files are removed.
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
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import log as logsetup
from .binaries import candidates
from .bundle.check import verify_bundle
from .catalog import find_backup, list_backups
from .config import Settings
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
K8S_BUMP = 1_000_000_000


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


def restore_argv(etcdutl: Etcdutl, snapshot: Path, spec: MemberSpec, data_dir: Path) -> list[str]:
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
    if spec.bump_revision is not None:
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


def work_root(settings: Settings) -> Path:
    return settings.restore.work_dir or settings.spool.dir


@contextlib.contextmanager
def scratch_dir(settings: Settings, prefix: str) -> Iterator[Path]:
    """A private temporary directory (0700) in the work dir, removed afterwards."""
    root = work_root(settings)
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    except OSError as exc:
        raise RestoreError(f"work dir {root}: cannot create a temporary dir: {exc}") from None
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


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


def verify_against_manifest(path: Path, manifest: Manifest) -> snapverify.VerifyReport:
    """Natively verify ``path`` and compare revision, hash and key count with the manifest."""
    report = snapverify.verify_snapshot(path, manifest.status_rules or "auto")
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


def fetch_and_check(
    store: Store, manifest: Manifest, identity_text: str, scratch: Path, emit: Emit
) -> CheckedSnapshot:
    """Fetch, check, unseal and verify one backup into ``scratch``; raise on any mismatch."""
    log = logsetup.get("restore")
    sealed = scratch / "object.db.zst.age"
    snapshot = scratch / "snapshot.db"
    note(emit, f"fetching {manifest.object} ({manifest.object_size} bytes)")
    fetch_object(store, manifest, sealed, emit)
    note(emit, "object sha256 matches the manifest; decrypting")
    progress(emit, "decrypt", 0, manifest.db_size + TRAILER)
    with sealed.open("rb") as src:
        try:
            unseal_stream(src, snapshot, identity_text)
        except CryptoError:
            raise
        except OSError as exc:
            raise CryptoError(f"decryption failed: {exc}") from None
    sealed.unlink()
    progress(emit, "decrypt", manifest.db_size + TRAILER, manifest.db_size + TRAILER)
    check_plaintext(snapshot, manifest, emit)
    note(emit, "snapshot sha256 matches the manifest; verifying natively")
    report = verify_against_manifest(snapshot, manifest)
    st = report.status
    assert st is not None
    log.info("backup checked", backup=manifest.id, revision=st.revision, keys=st.total_key)
    return CheckedSnapshot(manifest, snapshot, st.revision, st.total_key, st.hash)


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


def run_etcdutl(etcdutl: Etcdutl, snapshot: Path, spec: MemberSpec, emit: Emit) -> None:
    """Restore into a hidden sibling of the target, then rename it into place."""
    target = spec.data_dir
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RestoreError(f"cannot create {parent}: {exc.strerror}") from None
    holder = Path(tempfile.mkdtemp(prefix=f".{target.name}.restoring-", dir=parent))
    staged = holder / "data"
    try:
        argv = restore_argv(etcdutl, snapshot, spec, staged)
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
        try:
            staged.chmod(0o700)
            # rename(2) replaces only an empty directory: a target filled meanwhile fails here
            os.rename(staged, target)
        except OSError as exc:
            raise RestoreError(f"cannot move the restored data into {target}: {exc}") from None
        fsync_dir(parent)
    finally:
        shutil.rmtree(holder, ignore_errors=True)


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
    etcdutl_version: str
    bump_revision: int | None
    next_steps: list[str] = field(default_factory=list)
    recommendations: list[str] = field(default_factory=list)
    member_commands: list[MemberCommand] = field(default_factory=list)
    swap: dict[str, Any] | None = None

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


def recommendations(etcdutl: Etcdutl, spec: MemberSpec) -> list[str]:
    if spec.bump_revision is not None:
        return []
    if etcdutl.can_bump:
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
    etcdutl = find_etcdutl(settings.restore.etcdutl)
    if spec.bump_revision is not None and not etcdutl.can_bump:
        raise RestoreError(
            f"--bump-revision/--mark-compacted need etcdutl >= 3.5.10; {etcdutl.path} is "
            f"{etcdutl.version_text}: install a newer etcdutl ([restore] etcdutl) or restore "
            "without them"
        )
    manifest = resolve_backup(settings, store, backup)
    log = logsetup.get("restore")
    log.info("restore starting", backup=manifest.id, data_dir=str(spec.data_dir), name=spec.name)
    with scratch_dir(settings, "restore-") as scratch:
        checked = fetch_and_check(store, manifest, identity_text, scratch, emit)
        run_etcdutl(etcdutl, checked.path, spec, emit)
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
        etcdutl_version=etcdutl.version_text,
        bump_revision=spec.bump_revision,
        next_steps=next_steps(spec, multi),
        recommendations=recommendations(etcdutl, spec),
        member_commands=member_commands(settings, manifest, spec, identity_hint) if multi else [],
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
