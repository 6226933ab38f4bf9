"""Fetch a backup's bundle object and check it end to end against the manifest record.

Order of trust, as for snapshots: the stored object's size and sha256 first (a tampered
object is never decrypted), then decryption, the tar's sha256, and every member against
the record's file list (name, type, size, mode, sha256).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from ..errors import RestoreError, StoreNotFound, UsageError, VerificationError
from ..manifest import Manifest
from ..store.base import Store
from .extract import Member, read_members
from .record import OK, BundleFile, BundleRecord
from .tarball import unseal_bundle

CHUNK = 1024 * 1024


def record_of(manifest: Manifest) -> BundleRecord:
    """The manifest's bundle record; UsageError when the backup has no usable bundle."""
    rec = manifest.bundle
    if rec is None:
        raise UsageError(f"backup {manifest.id} has no control-plane bundle ([bundle] was off)")
    if rec.status != OK or not rec.object:
        raise RestoreError(
            f"backup {manifest.id}: its bundle failed at backup time ({rec.error}); "
            "only the snapshot was stored"
        )
    return rec


def fetch_sealed(store: Store, rec: BundleRecord) -> bytes:
    """The stored bundle object, checked against the record's size and sha256."""
    digest = hashlib.sha256()
    parts: list[bytes] = []
    size = 0
    try:
        with store.open_read(rec.object) as src:
            while size <= rec.object_size and (chunk := src.read(CHUNK)):
                digest.update(chunk)
                parts.append(chunk)
                size += len(chunk)
    except StoreNotFound:
        raise VerificationError(f"bundle object {rec.object} is missing from the store") from None
    if size != rec.object_size or digest.hexdigest() != rec.object_sha256:
        raise VerificationError(
            f"bundle object {rec.object} does not match its manifest ({size} bytes, sha256 "
            f"{digest.hexdigest()[:16]}..., expected {rec.object_size} bytes, "
            f"{rec.object_sha256[:16]}...): tampered or damaged; nothing was decrypted"
        )
    return b"".join(parts)


def compare(members: list[Member], files: tuple[BundleFile, ...]) -> list[str]:
    """Differences between the tar's members and the manifest's file list."""
    have = {m.meta.path: m.meta for m in members}
    want = {f.path: f for f in files}
    problems = [f"{p}: in the manifest, not in the bundle" for p in sorted(want.keys() - have)]
    problems += [f"{p}: in the bundle, not in the manifest" for p in sorted(have.keys() - want)]
    for path in sorted(want.keys() & have.keys()):
        w, h = want[path], have[path]
        for name in ("type", "mode", "size", "sha256", "link", "uid", "gid"):
            if getattr(w, name) != getattr(h, name):
                problems.append(f"{path}: {name} differs from the manifest")
    return problems


def open_bundle(store: Store, manifest: Manifest, identity_text: str) -> list[Member]:
    """Fetch, check, decrypt and parse the bundle of ``manifest``; raise on any mismatch."""
    return open_bundle_tar(store, manifest, identity_text)[1]


def open_bundle_tar(
    store: Store, manifest: Manifest, identity_text: str
) -> tuple[bytes, list[Member]]:
    """open_bundle, with the checked tar itself (for a client that writes the files)."""
    rec = record_of(manifest)
    sealed = fetch_sealed(store, rec)
    tar = unseal_bundle(sealed, identity_text, rec.tar_size)
    if len(tar) != rec.tar_size or hashlib.sha256(tar).hexdigest() != rec.tar_sha256:
        raise VerificationError("decrypted bundle differs from the manifest (size or sha256)")
    members = read_members(tar)
    problems = compare(members, rec.files)
    if problems:
        raise VerificationError(
            f"bundle differs from its manifest: {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            problems,
        )
    return tar, members


def verify_bundle(
    store: Store, manifest: Manifest, identity_text: str, emit: Callable[[dict[str, Any]], None]
) -> tuple[str, int]:
    """Check the bundle of a backup being verified or drilled: ("ok", files) when it matches,
    ("none", 0) without a bundle, ("failed", 0) when it failed at backup time (a warning);
    raise VerificationError or CryptoError when the stored bundle is damaged."""
    rec = manifest.bundle
    if rec is None:
        return "none", 0
    if rec.status != OK:
        emit(
            {
                "event": "log",
                "level": "warning",
                "message": f"this backup has no bundle: it failed at backup time ({rec.error})",
            }
        )
        return "failed", 0
    emit({"event": "log", "level": "info", "message": f"checking the bundle {rec.object}"})
    members = open_bundle(store, manifest, identity_text)
    return OK, len(members)
