"""The member a restore writes: its name, peer URLs, cluster, token and revision bump.

These are the flags of ``etcdutl snapshot restore``; ``MemberSpec.check`` refuses what
cannot describe one member of a cluster before anything is fetched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..datadir import members as datadir_members
from ..errors import RestoreError, UsageError

DEFAULT_NAME = "default"
DEFAULT_PEER_URLS = "http://127.0.0.1:2380"
DEFAULT_TOKEN = "etcd-cluster"  # noqa: S105 (not a secret)
# What the Kubernetes etcd restore docs pass to etcdutl; far above any real cluster's
# revision growth between a snapshot and its restore, far below int64.
K8S_BUMP = 1_000_000_000


@dataclass(frozen=True)
class MemberSpec:
    """Where and as which member to restore; the flags of ``etcdutl snapshot restore``."""

    data_dir: Path
    name: str = DEFAULT_NAME
    initial_advertise_peer_urls: str = DEFAULT_PEER_URLS
    initial_cluster: str = ""
    initial_cluster_token: str = DEFAULT_TOKEN
    bump_revision: int | None = None
    mark_compacted: bool = False
    wal_dir: Path | None = None

    @property
    def cluster(self) -> str:
        return self.initial_cluster or f"{self.name}={self.initial_advertise_peer_urls}"

    @property
    def multi(self) -> bool:
        """Whether ``--initial-cluster`` names more than this member."""
        return len(self.members()) > 1

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

    def cluster_flags(self) -> list[str]:
        """The cluster's flags as etcd and etcdutl take them (this member's peer URLs)."""
        return [
            "--initial-cluster",
            self.cluster,
            "--initial-cluster-token",
            self.initial_cluster_token,
            "--initial-advertise-peer-urls",
            self.initial_advertise_peer_urls,
        ]

    def cluster_spec(self) -> datadir_members.Cluster:
        """The cluster etcd derives from these flags (IDs as etcd computes them)."""
        return datadir_members.cluster_from_initial(self.cluster, self.initial_cluster_token)


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
