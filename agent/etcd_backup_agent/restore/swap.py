"""Guided swap: point a kubeadm static pod or a systemd etcd at a restored data dir, or
put a verified snapshot where ``k3s``/``rke2 server --cluster-reset`` restores from.

Plans are values (``SwapPlan``) that can be printed (``--dry-run``) or applied. Every file
the swap changes is first moved or copied aside under a timestamped name; nothing is
deleted. Edits are line-based and touch only the lines that name the data dir.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import RestoreError

LAYOUTS = ("kubeadm", "systemd", "k3s", "rke2")
# k3s and RKE2 embed etcd and restore it themselves from a snapshot file
RESET_LAYOUTS = ("k3s", "rke2")
KUBERNETES_LAYOUTS = ("kubeadm", "k3s", "rke2")
RESET_SNAPSHOT_DIRS = {
    "k3s": Path("/var/lib/rancher/k3s/server/db/snapshots"),
    "rke2": Path("/var/lib/rancher/rke2/server/db/snapshots"),
}
RESET_UNITS = {"k3s": "k3s", "rke2": "rke2-server"}
ETCD_MANIFEST = "etcd.yaml"
APISERVER_MANIFEST = "kube-apiserver.yaml"
_DATA_DIR_ARG = re.compile(r"^(\s*-\s*--data-dir[= ])(\S+?)(\s*)$")
_NAME_ARG = re.compile(r"^\s*-\s*--name[= ](\S+?)\s*$")
_PEER_ARG = re.compile(r"^\s*-\s*--initial-advertise-peer-urls[= ](\S+?)\s*$")
_PATH_KEY = re.compile(r"^(\s*(?:-\s+)?(?:path|mountPath):\s*)(\S+?)(\s*)$")
_NAME_KEY = re.compile(r"^\s*(?:-\s+)?name:\s*['\"]?etcd-data['\"]?\s*$")
_CONF_DATA_DIR = re.compile(r"^(data-dir:\s*)(['\"]?)([^'\"#\s]+)(['\"]?)(\s*(?:#.*)?)$")
_ENV_DATA_DIR = re.compile(r"^(\s*(?:export\s+)?ETCD_DATA_DIR=)(['\"]?)([^'\"\s]+)(['\"]?)(\s*)$")


@dataclass(frozen=True)
class LineChange:
    line: int
    old: str
    new: str


@dataclass(frozen=True)
class SwapPlan:
    """The ordered actions of one swap, and how to undo them."""

    layout: str
    new_data_dir: str
    old_data_dir: str | None
    backup_dir: str
    steps: list[str] = field(default_factory=list)
    changes: dict[str, list[LineChange]] = field(default_factory=dict)
    rollback: list[str] = field(default_factory=list)
    applied: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SwapPlan:
        """The plan of a socket reply (``to_dict``'s inverse)."""
        return cls(
            layout=str(d["layout"]),
            new_data_dir=str(d["new_data_dir"]),
            old_data_dir=d.get("old_data_dir"),
            backup_dir=str(d["backup_dir"]),
            steps=[str(s) for s in d.get("steps", [])],
            changes={
                str(path): [LineChange(int(c["line"]), str(c["old"]), str(c["new"])) for c in cs]
                for path, cs in d.get("changes", {}).items()
            },
            rollback=[str(s) for s in d.get("rollback", [])],
            applied=bool(d.get("applied")),
        )

    def lines(self) -> list[str]:
        """The plan as the operator reads it: steps, changed lines, rollback."""
        state = "applied" if self.applied else "planned"
        out = [f"{self.layout} swap ({state}); originals kept in {self.backup_dir}:"]
        out += [f"  - {step}" for step in self.steps]
        for path, changes in self.changes.items():
            out += [f"  {path}:{c.line}: {c.old.strip()}  ->  {c.new.strip()}" for c in changes]
        out.append("rollback:")
        out += [f"  {step}" for step in self.rollback]
        return out


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _item_blocks(lines: list[str], section: str) -> list[tuple[int, int]]:
    """Line ranges of the list items under every ``section:`` key."""
    blocks: list[tuple[int, int]] = []
    for i, line in enumerate(lines):
        if line.strip() != f"{section}:":
            continue
        base = _indent(line)
        item_indent: int | None = None
        start: int | None = None
        j = i + 1
        while j < len(lines):
            cur = lines[j]
            if not cur.strip() or cur.lstrip().startswith("#"):
                j += 1
                continue
            ind = _indent(cur)
            is_item = cur.lstrip().startswith("- ")
            if item_indent is None:
                if not is_item or ind < base:
                    break
                item_indent = ind
            if ind < item_indent or (ind == item_indent and not is_item):
                break
            if is_item and ind == item_indent:
                if start is not None:
                    blocks.append((start, j))
                start = j
            j += 1
        if start is not None:
            blocks.append((start, j))
    return blocks


def rewrite_etcd_manifest(text: str, new_dir: str) -> tuple[str, list[LineChange], str | None]:
    """Point the etcd-data volume, its mount and ``--data-dir`` of a kubeadm etcd.yaml at
    ``new_dir``; return (new text, changed lines, old host path). Only those lines change.
    """
    lines = text.splitlines(keepends=True)
    changes: list[LineChange] = []
    old_host: str | None = None

    def set_value(idx: int, pattern: re.Pattern[str]) -> str:
        raw = lines[idx]
        body = raw.rstrip("\r\n")
        end = raw[len(body) :]
        m = pattern.match(body)
        assert m is not None
        new = f"{m.group(1)}{new_dir}{m.group(3)}"
        if new != body:
            changes.append(LineChange(idx + 1, body, new))
            lines[idx] = new + end
        return m.group(2)

    plain = [ln.rstrip("\r\n") for ln in lines]
    for section, key in (("volumes", "path"), ("volumeMounts", "mountPath")):
        found = False
        for start, end in _item_blocks(plain, section):
            block = range(start, end)
            if not any(_NAME_KEY.match(plain[k]) for k in block):
                continue
            for k in block:
                m = _PATH_KEY.match(plain[k])
                if m and m.group(1).strip().lstrip("- ").startswith(f"{key}:"):
                    value = set_value(k, _PATH_KEY)
                    if section == "volumes":
                        old_host = value
                    found = True
        if not found:
            raise RestoreError(
                f"etcd manifest: no {key} of the etcd-data entry under {section}: "
                "not a kubeadm etcd.yaml? edit it by hand (docs/restore.md)"
            )
    args = [i for i, ln in enumerate(plain) if _DATA_DIR_ARG.match(ln)]
    if len(args) != 1:
        raise RestoreError(f"etcd manifest: expected one --data-dir argument, found {len(args)}")
    set_value(args[0], _DATA_DIR_ARG)
    new_text = "".join(lines)
    if len(new_text.splitlines()) != len(plain):
        raise RestoreError("etcd manifest rewrite changed the number of lines (refusing)")
    return new_text, changes, old_host


def manifest_member(text: str) -> tuple[str | None, str | None]:
    """``--name`` and ``--initial-advertise-peer-urls`` of a kubeadm etcd.yaml."""
    name = peers = None
    for line in text.splitlines():
        if m := _NAME_ARG.match(line):
            name = m.group(1)
        elif m := _PEER_ARG.match(line):
            peers = m.group(1)
    return name, peers


def rewrite_etcd_config(text: str, new_dir: str) -> tuple[str, list[LineChange], str | None]:
    """Set ``data-dir:`` (etcd.conf.yml) or ``ETCD_DATA_DIR=`` (env file) to ``new_dir``."""
    lines = text.splitlines(keepends=True)
    changes: list[LineChange] = []
    old: str | None = None
    for i, raw in enumerate(lines):
        body = raw.rstrip("\r\n")
        m = _CONF_DATA_DIR.match(body) or _ENV_DATA_DIR.match(body)
        if not m:
            continue
        old = m.group(3)
        new = f"{m.group(1)}{m.group(2)}{new_dir}{m.group(4)}{m.group(5)}"
        if new != body:
            changes.append(LineChange(i + 1, body, new))
            lines[i] = new + raw[len(body) :]
    if old is None:
        raise RestoreError("etcd config: no top-level 'data-dir:' (or ETCD_DATA_DIR=) line")
    return "".join(lines), changes, old


def plan_kubeadm(
    manifests_dir: Path, new_dir: Path, name: str | None = None, peer_urls: str | None = None
) -> tuple[SwapPlan, str]:
    """Plan the kubeadm swap; return the plan and the rewritten etcd.yaml text."""
    etcd_yaml = manifests_dir / ETCD_MANIFEST
    api_yaml = manifests_dir / APISERVER_MANIFEST
    for p in (etcd_yaml, api_yaml):
        if not p.is_file():
            raise RestoreError(f"{p} does not exist: is this a kubeadm control-plane node?")
    text = etcd_yaml.read_text(encoding="utf-8")
    m_name, m_peers = manifest_member(text)
    if name is not None and m_name is not None and m_name != name:
        raise RestoreError(
            f"{etcd_yaml} runs etcd as --name={m_name} but the restore used --name {name}: "
            "restore again with the manifest's name"
        )
    if (
        peer_urls is not None
        and m_peers is not None
        and sorted(m_peers.split(",")) != sorted(peer_urls.split(","))
    ):
        raise RestoreError(
            f"{etcd_yaml} advertises peer URLs {m_peers} but the restore used {peer_urls}"
        )
    new_text, changes, old = rewrite_etcd_manifest(text, str(new_dir))
    backup = manifests_dir.parent / f"{manifests_dir.name}-backup-{_stamp()}"
    plan = SwapPlan(
        layout="kubeadm",
        new_data_dir=str(new_dir),
        old_data_dir=old,
        backup_dir=str(backup),
        changes={str(etcd_yaml): changes},
        steps=[
            f"create {backup}",
            f"move {api_yaml} -> {backup}/ (kubelet stops kube-apiserver)",
            f"move {etcd_yaml} -> {backup}/ (kubelet stops etcd)",
            "wait for both static pods to stop",
            f"write {etcd_yaml}: etcd-data hostPath, mountPath and --data-dir -> {new_dir} "
            f"({len(changes)} lines changed)",
            f"copy {backup}/{APISERVER_MANIFEST} -> {api_yaml} (kubelet starts kube-apiserver)",
        ],
        rollback=[
            f"mv {etcd_yaml} {etcd_yaml}.restored   # stops the restored etcd",
            f"cp -p {backup}/{ETCD_MANIFEST} {etcd_yaml}   # old etcd, old data dir {old}",
            f"(kube-apiserver.yaml unchanged; original kept in {backup})",
        ],
    )
    return plan, new_text


def apply_kubeadm(plan: SwapPlan, manifests_dir: Path, new_text: str, wait: float) -> SwapPlan:
    """Carry out ``plan`` (see plan_kubeadm)."""
    backup = Path(plan.backup_dir)
    etcd_yaml = manifests_dir / ETCD_MANIFEST
    api_yaml = manifests_dir / APISERVER_MANIFEST
    backup.mkdir(mode=0o700)
    os.rename(api_yaml, backup / APISERVER_MANIFEST)
    os.rename(etcd_yaml, backup / ETCD_MANIFEST)
    if wait > 0:
        time.sleep(wait)
    tmp = etcd_yaml.with_name(f".{ETCD_MANIFEST}.tmp")
    tmp.write_text(new_text, encoding="utf-8")
    shutil.copymode(backup / ETCD_MANIFEST, tmp)
    # the kubelet picks up only *.yaml names, so the temp name is invisible to it
    os.rename(tmp, etcd_yaml)
    shutil.copy2(backup / APISERVER_MANIFEST, api_yaml)
    return replace(plan, applied=True)


def plan_systemd(config: Path, new_dir: Path) -> tuple[SwapPlan, str]:
    """Plan the systemd swap: the etcd config's data dir, copied aside first."""
    if not config.is_file():
        raise RestoreError(f"etcd config {config} does not exist ([restore] etcd_config)")
    new_text, changes, old = rewrite_etcd_config(config.read_text(encoding="utf-8"), str(new_dir))
    aside = config.with_name(f"{config.name}.before-restore-{_stamp()}")
    plan = SwapPlan(
        layout="systemd",
        new_data_dir=str(new_dir),
        old_data_dir=old,
        backup_dir=str(aside),
        changes={str(config): changes},
        steps=[
            "systemctl stop kube-apiserver etcd   (whichever run on this node)",
            f"copy {config} -> {aside}",
            f"set the data dir in {config} to {new_dir} ({len(changes)} lines changed)",
            "systemctl start etcd, then kube-apiserver",
        ],
        rollback=[
            "systemctl stop etcd",
            f"cp -p {aside} {config}   # old data dir {old}",
            "systemctl start etcd",
        ],
    )
    return plan, new_text


def apply_systemd(plan: SwapPlan, config: Path, new_text: str) -> SwapPlan:
    """Copy the config aside and write the edited one (atomically); systemctl is left to the
    operator (printed in the plan)."""
    aside = Path(plan.backup_dir)
    shutil.copy2(config, aside)
    tmp = config.with_name(f".{config.name}.tmp")
    tmp.write_text(new_text, encoding="utf-8")
    shutil.copymode(config, tmp)
    os.rename(tmp, config)
    return replace(plan, applied=True)


def swap(
    layout: str,
    new_dir: Path,
    *,
    manifests_dir: Path,
    etcd_config: Path,
    dry_run: bool,
    name: str | None = None,
    peer_urls: str | None = None,
    wait: float = 30.0,
) -> SwapPlan:
    """Plan, and unless ``dry_run`` apply, the swap for ``layout``."""
    if layout == "kubeadm":
        plan, text = plan_kubeadm(manifests_dir, new_dir, name, peer_urls)
    elif layout == "systemd":
        plan, text = plan_systemd(etcd_config, new_dir)
    else:
        raise RestoreError(f"unknown layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    if dry_run:
        return plan
    try:
        if layout == "kubeadm":
            return apply_kubeadm(plan, manifests_dir, text, wait)
        return apply_systemd(plan, etcd_config, text)
    except OSError as exc:
        raise RestoreError(
            f"guided swap failed part-way ({exc}); the originals are in {plan.backup_dir}; "
            "roll back with: " + " ; ".join(plan.rollback)
        ) from None


def plan_cluster_reset(layout: str, snapshot_dir: Path | None, file_name: str) -> SwapPlan:
    """Plan a k3s/RKE2 restore: the snapshot goes into the server's snapshot dir, and the
    operator runs ``<k3s|rke2> server --cluster-reset --cluster-reset-restore-path=FILE``."""
    if layout not in RESET_LAYOUTS:
        raise RestoreError(f"layout {layout!r} does not restore through --cluster-reset")
    directory = snapshot_dir or RESET_SNAPSHOT_DIRS[layout]
    target = directory / file_name
    if target.exists() or target.is_symlink():
        raise RestoreError(f"{target} exists; nothing is overwritten (remove or rename it)")
    unit = RESET_UNITS[layout]
    db_dir = directory.parent
    command = f"{layout} server --cluster-reset --cluster-reset-restore-path={target}"
    plan = SwapPlan(
        layout=layout,
        new_data_dir=str(target),
        old_data_dir=str(db_dir / "etcd"),
        backup_dir=str(directory),
        steps=[
            f"write the verified snapshot to {target} (0600)",
            f"systemctl stop {unit}   (on every server node)",
            f"{command}   (on this node; it exits when the reset is done)",
            f"systemctl start {unit}   (this node)",
            f"on every other server: mv {db_dir} {db_dir}.before-restore, then systemctl start "
            f"{unit} (they rejoin and sync from this node)",
        ],
        rollback=[
            f"systemctl stop {unit}",
            f"{layout} moves the old etcd dir aside during the reset "
            f"({db_dir}/etcd-old-<timestamp>): move it back to {db_dir}/etcd",
            f"systemctl start {unit}",
        ],
    )
    return plan


def cluster_reset_command(plan: SwapPlan) -> str:
    """The exact command the operator runs for a k3s/RKE2 plan."""
    return f"{plan.layout} server --cluster-reset --cluster-reset-restore-path={plan.new_data_dir}"
