"""The ``bundle`` record of a manifest: what the bundle object holds (names and digests only).

It never holds file contents. Old manifests have no record (``Manifest.bundle is None``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BUNDLE_SUFFIX = ".bundle.tar.zst.age"
OK = "ok"
FAILED = "failed"
ENCRYPTION_WARNING = "Secrets in these backups cannot be decrypted after a restore without it"


def bundle_key(cluster: str, bid: str) -> str:
    return f"{cluster}/{bid}{BUNDLE_SUFFIX}"


@dataclass(frozen=True)
class BundleFile:
    """One tar member: ``path`` is relative to the node's root ("etc/kubernetes/pki/ca.crt")."""

    path: str
    type: str  # "file", "dir" or "symlink"
    mode: str  # four octal digits, e.g. "0600"
    size: int = 0
    sha256: str = ""
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    link: str = ""

    @property
    def mode_bits(self) -> int:
        return int(self.mode, 8)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BundleFile:
        return cls(
            path=str(d["path"]),
            type=str(d["type"]),
            mode=str(d["mode"]),
            size=int(d.get("size", 0)),
            sha256=str(d.get("sha256", "")),
            uid=int(d.get("uid", 0)),
            gid=int(d.get("gid", 0)),
            mtime=int(d.get("mtime", 0)),
            link=str(d.get("link", "")),
        )


@dataclass(frozen=True)
class BundleRecord:
    """``status`` "ok": ``object`` holds ``files``; "failed": no object, ``error`` says why."""

    status: str
    layout: str
    object: str = ""
    object_size: int = 0
    object_sha256: str = ""
    tar_size: int = 0
    tar_sha256: str = ""
    compressed_size: int = 0
    files: tuple[BundleFile, ...] = ()
    error: str = ""
    warnings: tuple[str, ...] = ()
    # the path kube-apiserver's --encryption-provider-config names ("" when none)
    encryption_config: str = ""
    encryption_config_saved: bool = False

    @property
    def encryption_config_lost(self) -> bool:
        """True when the apiserver encrypts Secrets with a config this bundle does not hold."""
        return bool(self.encryption_config) and not self.encryption_config_saved

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BundleRecord:
        if not isinstance(d, dict):
            raise ValueError("manifest bundle record is not an object")
        try:
            return cls(
                status=str(d["status"]),
                layout=str(d.get("layout", "")),
                object=str(d.get("object", "")),
                object_size=int(d.get("object_size", 0)),
                object_sha256=str(d.get("object_sha256", "")),
                tar_size=int(d.get("tar_size", 0)),
                tar_sha256=str(d.get("tar_sha256", "")),
                compressed_size=int(d.get("compressed_size", 0)),
                files=tuple(BundleFile.from_dict(f) for f in d.get("files", ())),
                error=str(d.get("error", "")),
                warnings=tuple(str(w) for w in d.get("warnings", ())),
                encryption_config=str(d.get("encryption_config", "")),
                encryption_config_saved=bool(d.get("encryption_config_saved", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"manifest bundle record is malformed: {exc}") from None
