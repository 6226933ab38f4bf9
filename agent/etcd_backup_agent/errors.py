"""The exception tree of the agent, drawn once.

Every error the agent reports to an operator is an ``AgentError``; each class carries
its process exit code and the stable code used in socket replies::

    AgentError (exit 1, "internal")
    ├── UsageError (exit 2, "usage")
    ├── ConfigError (exit 2, "config")
    ├── SourceError (exit 1, "source")
    │   ├── EtcdUnavailable ("etcd_unavailable")
    │   ├── EtcdAuthError ("etcd_auth")
    │   ├── EtcdTLSError ("etcd_tls")
    │   └── SnapshotCorrupt ("snapshot_corrupt")
    ├── VerificationError (exit 1, "verification_failed")
    ├── SpoolError (exit 1, "spool")
    ├── SealError / CryptoError (exit 1, "crypto")
    ├── StoreError (exit 1, "store")
    │   ├── StoreUnavailable ("store_unavailable")
    │   ├── StoreAccessDenied ("store_access_denied")
    │   ├── StoreNotFound ("store_not_found")
    │   └── ObjectLocked ("object_locked")
    ├── BackupNotFound (exit 1, "not_found")
    ├── RestoreError (exit 1, "restore")
    ├── CoordinationError (exit 1, "coordination")
    ├── Busy (exit 1, "busy")
    └── Cancelled (exit 1, "cancelled")
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class AgentError(Exception):
    """Base of every error the agent reports; the message is one line for an operator."""

    exit_code: int = EXIT_FAILURE
    code: str = "internal"


class UsageError(AgentError):
    """The command line is wrong."""

    exit_code = EXIT_USAGE
    code = "usage"


class ConfigError(AgentError):
    """The configuration is invalid; ``problems`` lists each one as file: key: expectation."""

    exit_code = EXIT_USAGE
    code = "config"

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems) if problems else "invalid configuration")


class SourceError(AgentError):
    """Taking the snapshot from etcd failed."""

    code = "source"


class EtcdUnavailable(SourceError):
    """etcd cannot be reached, or the stream was cut."""

    code = "etcd_unavailable"


class EtcdAuthError(SourceError):
    """etcd refused the credentials or the user lacks permission."""

    code = "etcd_auth"


class EtcdTLSError(SourceError):
    """The TLS handshake with etcd failed (wrong CA, missing or rejected client certificate)."""

    code = "etcd_tls"


class SnapshotCorrupt(SourceError):
    """The snapshot stream ended without a valid sha256 trailer."""

    code = "snapshot_corrupt"


class VerificationError(AgentError):
    """The native verification of a snapshot found problems."""

    code = "verification_failed"

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = problems or []
        super().__init__(message)


class SpoolError(AgentError):
    """The spool directory cannot be used (missing, not writable, full)."""

    code = "spool"


class CryptoError(AgentError):
    """Compression or age encryption/decryption failed."""

    code = "crypto"


class StoreError(AgentError):
    """The backup store failed."""

    code = "store"


class StoreUnavailable(StoreError):
    """The store cannot be reached."""

    code = "store_unavailable"


class StoreAccessDenied(StoreError):
    """The store refused the credentials or the operation."""

    code = "store_access_denied"


class StoreNotFound(StoreError):
    """The bucket, directory or object does not exist."""

    code = "store_not_found"


class ObjectLocked(StoreError):
    """The object is under object lock and cannot be deleted yet."""

    code = "object_locked"


class BackupNotFound(AgentError):
    """No backup with that id (or no backup at all) exists in the store."""

    code = "not_found"


class RestoreError(AgentError):
    """A restore or drill cannot proceed or failed."""

    code = "restore"


class CoordinationError(AgentError):
    """The cluster-wide coordination (lock, leader check) failed."""

    code = "coordination"


class Cancelled(AgentError):
    """The work was cancelled (shutdown)."""

    code = "cancelled"


class Busy(AgentError):
    """Another long operation (backup, restore, drill, verify, prune) is running."""

    code = "busy"
