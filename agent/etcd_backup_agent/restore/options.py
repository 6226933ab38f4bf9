"""The options of one restore, defined once: ``RestoreOptions`` and its defaults.

``etcd-backup-agent restore``, ``etcd-backupctl restore`` and the socket's ``restore``
operation all build this value with ``from_args``, from the request arguments that
cli/options.py ``restore_request`` makes of the flags (a flag not given is not sent, so the
defaults here apply) and that the socket's schema checks.
Identities travel beside it (``identity_file`` or ``identity``) and are never part of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .member import DEFAULT_NAME, DEFAULT_PEER_URLS, DEFAULT_TOKEN, K8S_BUMP, MemberSpec
from .swap import KUBERNETES_LAYOUTS, LAYOUTS, RESET_LAYOUTS

DEFAULT_SWAP_WAIT = 30.0
_PATHS = ("snapshot", "data_dir", "wal_dir")
SCHEMA: dict[str, tuple[tuple[type, ...], bool]] = {
    "backup": ((str,), True),
    "identity_file": ((str,), False),
    "identity": ((str,), False),
    "data_dir": ((str,), True),
    "wal_dir": ((str,), False),
    "name": ((str,), False),
    "initial_cluster": ((str,), False),
    "initial_advertise_peer_urls": ((str,), False),
    "initial_cluster_token": ((str,), False),
    "bump_revision": ((int,), False),
    "mark_compacted": ((bool,), False),
    "apply": ((bool,), False),
    "layout": ((str,), False),
    "dry_run": ((bool,), False),
    "swap_wait": ((int, float), False),
    "with_bundle": ((bool,), False),
}


@dataclass(frozen=True)
class RestoreOptions:
    """What to restore (``backup`` or a local ``snapshot``), as which member, and whether
    to swap it in (``apply``/``dry_run`` with ``layout``)."""

    backup: str | None = None
    snapshot: Path | None = None
    allow_no_trailer: bool = False
    data_dir: Path | None = None
    wal_dir: Path | None = None
    name: str = DEFAULT_NAME
    initial_cluster: str = ""
    initial_advertise_peer_urls: str = DEFAULT_PEER_URLS
    initial_cluster_token: str = DEFAULT_TOKEN
    bump_revision: int | None = None
    mark_compacted: bool = False
    apply: bool = False
    layout: str | None = None
    dry_run: bool = False
    swap_wait: float = DEFAULT_SWAP_WAIT
    with_bundle: bool = False

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> RestoreOptions:
        """From the (schema-checked) arguments of a restore request; absent means default."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = args.get(f.name)
            if value is None or (f.name in _PATHS and not value):
                continue
            values[f.name] = Path(value) if f.name in _PATHS else value
        if "swap_wait" in values:
            values["swap_wait"] = float(values["swap_wait"])
        return cls(**values)

    # -- checks and the member --------------------------------------------------------

    def check(self) -> None:
        """Refuse combinations no restore can serve (before anything is read)."""
        if self.data_dir is None and not self.resets:
            raise UsageError("--data-dir is required (the NEW data dir)")
        if (self.apply or self.layout) and self.layout not in LAYOUTS:
            raise UsageError(f"--apply needs --layout {' or '.join(LAYOUTS)}")
        if self.data_dir is not None and not self.resets and not self.data_dir.is_absolute():
            raise UsageError("data_dir must be an absolute path")

    @property
    def resets(self) -> bool:
        """k3s/RKE2: the snapshot is placed for ``--cluster-reset``, no data dir is written."""
        return self.layout in RESET_LAYOUTS

    @property
    def swaps(self) -> bool:
        """Whether a swap is planned (``--dry-run``) or applied (``--apply``)."""
        return self.layout is not None and (self.apply or self.dry_run)

    def member_spec(self, engine: str) -> MemberSpec:
        """The member to write; with the native ``engine``, a Kubernetes layout bumps the
        revision (``K8S_BUMP``) unless ``--bump-revision`` says otherwise (0 = no bump)."""
        assert self.data_dir is not None, "check() first"
        bump, marked = self.bump_revision, self.mark_compacted
        if bump is None and self.layout in KUBERNETES_LAYOUTS and engine == "native":
            # Kubernetes watch caches must re-list after a restore: bump unless told not to
            bump, marked = K8S_BUMP, True
        if bump == 0:
            bump, marked = None, False
        return MemberSpec(
            data_dir=self.data_dir,
            name=self.name,
            initial_advertise_peer_urls=self.initial_advertise_peer_urls,
            initial_cluster=self.initial_cluster,
            initial_cluster_token=self.initial_cluster_token,
            bump_revision=bump,
            mark_compacted=marked,
            wal_dir=self.wal_dir,
        )


DEFAULTS = RestoreOptions()
