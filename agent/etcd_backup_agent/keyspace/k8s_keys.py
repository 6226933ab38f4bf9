"""An etcd key -> the Kubernetes resource, namespace and name it stores.

Layout (kube-apiserver's storage): ``<prefix><resource>/<namespace>/<name>`` for namespaced
resources and ``<prefix><resource>/<name>`` for cluster-scoped ones, with the historical
exceptions below. Custom resources carry their group: ``<prefix><group>/<plural>/...``
(a CRD group always contains a dot, built-in resources are stored by resource name only).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIXES = ("/registry/",)
OTHER = "(non-kubernetes)"
"""The resource name given to keys under none of the configured prefixes."""

# Resources whose storage path is not their resource name.
_RENAMED = {"minions": "nodes", "controllers": "replicationcontrollers"}
# /registry/services/specs/... and /registry/services/endpoints/... share one segment.
_SERVICES = {"specs": "services", "endpoints": "endpoints"}


@dataclass(frozen=True)
class K8sKey:
    """Where a key sits: ``namespace`` is None for cluster-scoped objects."""

    resource: str
    namespace: str | None
    name: str


def normalize_prefixes(prefixes: tuple[str, ...]) -> tuple[bytes, ...]:
    """Prefixes as bytes ending in ``/``, longest first (``/registry/a/`` before ``/registry/``)."""
    out = {(p if p.endswith("/") else p + "/").encode() for p in prefixes if p.strip("/")}
    return tuple(sorted(out, key=len, reverse=True))


def parse_key(key: bytes, prefixes: tuple[bytes, ...]) -> K8sKey:
    """Classify ``key``; keys outside every prefix get resource ``OTHER``."""
    for prefix in prefixes:
        if key.startswith(prefix):
            rest = key[len(prefix) :].decode("utf-8", "replace").split("/")
            return _classify(rest)
    return K8sKey(OTHER, None, key.decode("utf-8", "replace"))


def _classify(parts: list[str]) -> K8sKey:
    head = parts[0]
    if head == "services" and len(parts) > 1 and parts[1] in _SERVICES:
        resource = _SERVICES[parts[1]]
        rest = parts[2:]
    elif "." in head and len(parts) > 2:
        # kubectl names a custom resource <plural>.<group>
        resource = f"{parts[1]}.{head}"
        rest = parts[2:]
    else:
        resource = _RENAMED.get(head, head)
        rest = parts[1:]
    if len(rest) >= 2:
        return K8sKey(resource, rest[0], "/".join(rest[1:]))
    return K8sKey(resource, None, rest[0] if rest else "")


def parent_decides(parent: bytes, prefixes: tuple[bytes, ...]) -> bool:
    """True when every key directly under ``parent`` (which ends in ``/``) has the same
    resource and namespace, so one classification serves them all: anything but a
    prefix itself (``/registry/a`` and ``/registry/b`` are different resources)."""
    return bool(parent) and parent not in prefixes
