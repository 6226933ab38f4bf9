"""Which control plane runs here, and which of its files a restore needs (pure but for reads).

kubeadm: the PKI and the static pod manifests, plus the files kube-apiserver's manifest names
with ``--encryption-provider-config`` and ``--audit-policy-file``. k3s/RKE2: the server token,
``server/tls`` and ``server/cred/encryption-config.json`` under the data dir.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..config import BundleSettings

LAYOUTS = ("kubeadm", "k3s", "rke2")
KUBEADM_PKI = "/etc/kubernetes/pki"
KUBEADM_MANIFESTS = "/etc/kubernetes/manifests"
APISERVER = "kube-apiserver.yaml"
RANCHER = {"k3s": "/var/lib/rancher/k3s", "rke2": "/var/lib/rancher/rke2"}
# one item of a static pod's command/args list: "- --flag=value" or "- '--flag=value'"
_FLAG = re.compile(r"""^\s*-\s*(['"]?)--([a-z0-9-]+)=(.*?)\1\s*(?:#.*)?$""")


@dataclass(frozen=True)
class Plan:
    """The paths (absolute, on the node) to collect for one layout."""

    layout: str
    paths: tuple[str, ...]
    encryption_config: str = ""  # named by kube-apiserver (kubeadm) or the k3s/RKE2 default
    notes: tuple[str, ...] = ()
    required: tuple[str, ...] = ()  # the layout's own paths: none on disk, no such layout here


def on_node(root: Path, path: str) -> Path:
    """``path`` (absolute on the node) under ``root``."""
    return root / path.lstrip("/")


def detect(root: Path) -> str:
    """The layout of the node at ``root``: "kubeadm", "k3s", "rke2" or "none"."""
    for name in ("rke2", "k3s"):
        if on_node(root, f"{RANCHER[name]}/server").is_dir():
            return name
    if (
        on_node(root, f"{KUBEADM_MANIFESTS}/{APISERVER}").is_file()
        or on_node(root, KUBEADM_PKI).is_dir()
    ):
        return "kubeadm"
    return "none"


def apiserver_flags(text: str) -> dict[str, str]:
    """``--flag=value`` items of a static pod manifest's command lists (the last one wins).

    kubeadm writes every flag as one ``- --name=value`` list item; that is all this reads,
    so a value split over lines, or given as a separate item, is not seen (documented).
    """
    flags: dict[str, str] = {}
    for line in text.splitlines():
        m = _FLAG.match(line)
        if m:
            flags[m.group(2)] = m.group(3).strip()
    return flags


def resolve_layout(settings: BundleSettings) -> str:
    if settings.layout == "auto":
        return detect(settings.root)
    return settings.layout


def enabled(settings: BundleSettings, layout: str) -> bool:
    """``enabled`` as configured, else on exactly when a layout is known (or paths given)."""
    if settings.enabled is not None:
        return settings.enabled
    return layout != "none" or bool(settings.paths)


def plan(settings: BundleSettings, layout: str) -> Plan:
    """What to collect for ``layout`` plus ``[bundle] paths``."""
    extra = tuple(settings.paths)
    if layout == "kubeadm":
        paths = [KUBEADM_PKI, KUBEADM_MANIFESTS]
        notes: list[str] = []
        enc = ""
        manifest = on_node(settings.root, f"{KUBEADM_MANIFESTS}/{APISERVER}")
        try:
            flags = apiserver_flags(manifest.read_text(encoding="utf-8", errors="replace"))
        except OSError as exc:
            flags = {}
            notes.append(f"cannot read {KUBEADM_MANIFESTS}/{APISERVER}: {exc.strerror}")
        for flag in ("encryption-provider-config", "audit-policy-file"):
            value = flags.get(flag, "")
            if not value:
                continue
            if not value.startswith("/"):
                notes.append(f"--{flag}={value} is not an absolute path; not collected")
                continue
            if flag == "encryption-provider-config":
                enc = value
            if not any(_within(value, p) for p in paths):
                paths.append(value)
        base = (KUBEADM_PKI, KUBEADM_MANIFESTS)
        return Plan(layout, _unique((*paths, *extra)), enc, tuple(notes), base)
    if layout in RANCHER:
        data = settings.data_dir or RANCHER[layout]
        enc = f"{data}/server/cred/encryption-config.json"
        # the server writes the encryption config only when secrets encryption is on
        node_enc = on_node(settings.root, enc)
        exists = node_enc.exists() or node_enc.is_symlink()
        paths = [f"{data}/server/token", f"{data}/server/tls", *([enc] if exists else [])]
        base = (f"{data}/server/token", f"{data}/server/tls")
        return Plan(layout, _unique((*paths, *extra)), enc if exists else "", (), base)
    return Plan(layout, _unique(extra))


def missing_layout(settings: BundleSettings, what: Plan) -> str:
    """Why an explicitly configured layout is not on this node ("" when it is, or when the
    layout was detected): none of its own paths exist under the root."""
    if settings.layout == "auto" or not what.required:
        return ""
    for path in what.required:
        node = on_node(settings.root, path)
        if node.exists() or node.is_symlink():
            return ""
    return (
        f"[bundle] layout = {what.layout!r}, but none of its files exist under "
        f"{settings.root}: {', '.join(what.required)}"
    )


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _unique(paths: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(p.rstrip("/") or "/" for p in paths))
