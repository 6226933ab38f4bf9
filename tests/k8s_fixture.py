"""Fill a real etcd with Kubernetes-layout keys and remember what the keyspace should be.

Protobuf values are built here from the wire format (tag = field << 3 | wire type), with
no code of the product: the expected figures come from what this module wrote.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

from tests.servers import EtcdServer, _client


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _ld(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _vi(num: int, value: int) -> bytes:
    return _varint(num << 3) + _varint(value)


def proto_object(
    api_version: str,
    kind: str,
    name: str,
    namespace: str | None,
    labels: dict[str, str],
    body: bytes,
    uid: str = "0b5e1c2e-0000-4000-8000-000000000001",
    resource_version: str = "",
    created: int = 1_700_000_000,
) -> bytes:
    """``k8s\\x00`` + runtime.Unknown{TypeMeta, raw} whose raw object has ObjectMeta as field 1."""
    meta = _ld(1, name.encode())
    if namespace:
        meta += _ld(3, namespace.encode())
    meta += _ld(5, uid.encode())
    if resource_version:
        meta += _ld(6, resource_version.encode())
    meta += _vi(7, 3)
    meta += _ld(8, _vi(1, created))
    for k, v in labels.items():
        meta += _ld(11, _ld(1, k.encode()) + _ld(2, v.encode()))
    raw = _ld(1, meta) + _ld(2, body)  # field 2: a stand-in spec, left opaque
    type_meta = _ld(1, api_version.encode()) + _ld(2, kind.encode())
    return (
        b"k8s\x00"
        + _ld(1, type_meta)
        + _ld(2, raw)
        + _ld(4, b"application/vnd.kubernetes.protobuf")
    )


def json_object(
    api_version: str, kind: str, name: str, namespace: str | None, spec: dict[str, object]
) -> dict[str, object]:
    meta: dict[str, object] = {
        "name": name,
        "uid": f"uid-{name}",
        "resourceVersion": "12345",
        "generation": 2,
        "creationTimestamp": "2024-01-02T03:04:05Z",
        "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
        "labels": {"app": name},
    }
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, "spec": spec}


PROVIDERS = ("aescbc", "aesgcm", "secretbox", "kms2")


def encrypted(provider: str, key_name: str, rng: random.Random, size: int) -> bytes:
    version = "v2" if provider == "kms2" else "v1"
    name = "kms" if provider == "kms2" else provider
    return f"k8s:enc:{name}:{version}:{key_name}:".encode() + rng.randbytes(size)


@dataclass
class Expected:
    """What the keyspace holds, per resource, computed from the writes."""

    live: dict[bytes, bytes] = field(default_factory=dict)
    history: dict[bytes, list[int]] = field(default_factory=dict)  # sizes of older revisions
    tombstones: dict[bytes, int] = field(default_factory=dict)
    resource: dict[bytes, str] = field(default_factory=dict)
    namespace: dict[bytes, str | None] = field(default_factory=dict)

    def put(self, key: bytes, value: bytes, resource: str, namespace: str | None) -> None:
        old = self.live.get(key)
        if old is not None:
            self.history.setdefault(key, []).append(len(key) + len(old))
        self.live[key] = value
        self.resource[key] = resource
        self.namespace[key] = namespace

    def delete(self, key: bytes) -> None:
        old = self.live.pop(key)
        self.history.setdefault(key, []).append(len(key) + len(old))
        self.tombstones[key] = self.tombstones.get(key, 0) + 1

    def compacted(self) -> None:
        """After a compaction at the current revision only the latest puts remain."""
        self.history.clear()
        self.tombstones.clear()

    def per_resource(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for key in self.resource:
            r = out.setdefault(
                self.resource[key],
                {"objects": 0, "bytes": 0, "history_bytes": 0, "tombstones": 0},
            )
            if key in self.live:
                r["objects"] += 1
                r["bytes"] += len(key) + len(self.live[key])
            r["history_bytes"] += sum(self.history.get(key, [])) + len(key) * self.tombstones.get(
                key, 0
            )
            r["tombstones"] += self.tombstones.get(key, 0)
        return {k: v for k, v in out.items() if any(v.values())}


def fill_cluster(server: EtcdServer, seed: int = 5) -> Expected:
    """Pods and secrets (protobuf, some encrypted), nodes (/minions), services/specs and
    endpoints, a custom resource (JSON), a CRD; updates, deletes and a compaction."""
    rng = random.Random(seed)
    exp = Expected()
    client = _client(server)

    def put(key: str, value: bytes, resource: str, ns: str | None) -> None:
        client.put(key.encode(), value)
        exp.put(key.encode(), value, resource, ns)

    def delete(key: str) -> None:
        client.delete(key.encode())
        exp.delete(key.encode())

    try:
        for n_ns, ns in enumerate(("default", "kube-system", "team-a")):
            for i in range(6):
                name = f"pod-{i}"
                body = rng.randbytes(rng.choice([50, 400, 3000]))
                put(
                    f"/registry/pods/{ns}/{name}",
                    proto_object("v1", "Pod", name, ns, {"app": name}, body),
                    "pods",
                    ns,
                )
            for i in range(3):
                put(
                    f"/registry/secrets/{ns}/s{i}",
                    encrypted(PROVIDERS[(n_ns + i) % 4], f"key{i}", rng, 200),
                    "secrets",
                    ns,
                )
            put(
                f"/registry/services/specs/{ns}/svc",
                proto_object("v1", "Service", "svc", ns, {}, rng.randbytes(80)),
                "services",
                ns,
            )
            put(
                f"/registry/services/endpoints/{ns}/svc",
                proto_object("v1", "Endpoints", "svc", ns, {}, rng.randbytes(60)),
                "endpoints",
                ns,
            )
        for n in range(3):
            put(
                f"/registry/minions/node-{n}",
                proto_object("v1", "Node", f"node-{n}", None, {}, rng.randbytes(900)),
                "nodes",
                None,
            )
        crd = json_object(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            "widgets.example.com",
            None,
            {"group": "example.com"},
        )
        put(
            "/registry/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com",
            json.dumps(crd).encode(),
            "customresourcedefinitions.apiextensions.k8s.io",
            None,
        )
        for i in range(4):
            obj = json_object("example.com/v1", "Widget", f"w{i}", "team-a", {"size": i})
            put(
                f"/registry/example.com/widgets/team-a/w{i}",
                json.dumps(obj).encode(),
                "widgets.example.com",
                "team-a",
            )
        # history that a compaction removes
        for i in range(3):
            obj = json_object("example.com/v1", "Widget", "w0", "team-a", {"size": 100 + i})
            put(
                "/registry/example.com/widgets/team-a/w0",
                json.dumps(obj).encode(),
                "widgets.example.com",
                "team-a",
            )
        delete("/registry/pods/team-a/pod-5")
        header_rev = client.get_response("/registry/").header.revision
        client.compact(header_rev, physical=True)
        exp.compacted()
        # history kept after the compaction
        for i in range(2):
            obj = json_object("example.com/v1", "Widget", "w1", "team-a", {"size": 200 + i})
            put(
                "/registry/example.com/widgets/team-a/w1",
                json.dumps(obj).encode(),
                "widgets.example.com",
                "team-a",
            )
        put(
            "/registry/pods/default/pod-0",
            proto_object("v1", "Pod", "pod-0", "default", {"app": "x"}, rng.randbytes(700)),
            "pods",
            "default",
        )
        delete("/registry/pods/kube-system/pod-4")
        delete("/registry/secrets/default/s0")
        client.put(b"/unrelated/key", b"not kubernetes")
        exp.put(b"/unrelated/key", b"not kubernetes", "(non-kubernetes)", None)
    finally:
        client.close()
    return exp
