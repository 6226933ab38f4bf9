"""Member and cluster IDs, and the member records, exactly as etcd 3.5/3.6 derive them.

Facts from etcd's ``server/etcdserver/api/membership`` (release-3.5 and release-3.6 agree):

- ``computeMemberId``: sha1 over the member's peer URLs, sorted and joined with nothing
  between them, followed by the cluster token; the ID is the first 8 bytes, big-endian.
- ``genID`` (``NewClusterFromURLsMap``): sha1 over the 8-byte big-endian IDs of every
  member in ascending order; the cluster ID is again the first 8 bytes.
- ``types.NewURLs`` trims, parses and sorts the URLs; a URL needs a scheme of http, https,
  unix or unixs, a ``host:port`` and no path.
- ``types.ID.String()`` is lowercase hex without zero padding: the members bucket key and
  the v2 store path use it.
- ``json.Marshal(Member)``: ``{"id":N,"peerURLs":[...],"name":"..."}``; ``isLearner`` and
  ``clientURLs`` are omitted when false/empty, as are members without a name. A restored
  member has its name (``NewMember(name, ...)``) and no client URLs yet: etcd publishes
  those when it first starts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import UsageError
from . import gojson

SCHEMES = ("http", "https", "unix", "unixs")


@dataclass(frozen=True)
class Member:
    id: int
    name: str
    peer_urls: tuple[str, ...]

    @property
    def id_hex(self) -> str:
        """``types.ID.String()``: lowercase hex, no padding."""
        return format(self.id, "x")

    def raft_attributes_json(self) -> str:
        """``json.Marshal(m.RaftAttributes)``: what the v2 store's raftAttributes holds."""
        return '{"peerURLs":' + gojson.strings(self.peer_urls) + "}"

    def json(self) -> bytes:
        """``json.Marshal(m)``: the members bucket value and the ConfChange context."""
        body = f'{{"id":{self.id},"peerURLs":{gojson.strings(self.peer_urls)}'
        if self.name:
            body += f',"name":{gojson.string(self.name)}'
        return (body + "}").encode()


@dataclass(frozen=True)
class Cluster:
    id: int
    token: str
    members: tuple[Member, ...]  # ascending ID: the order etcd adds and lists them

    @property
    def id_hex(self) -> str:
        return format(self.id, "x")

    def member_named(self, name: str) -> Member:
        for m in self.members:
            if m.name == name:
                return m
        raise UsageError(f"--name {name!r} does not appear in --initial-cluster")

    def bucket_members(self) -> list[tuple[bytes, bytes]]:
        """The new content of the db's ``members`` bucket, as (key, value) pairs."""
        return [(m.id_hex.encode(), m.json()) for m in self.members]


def normalize_url(text: str) -> str:
    """One peer URL as ``types.NewURLs`` keeps it (trimmed, scheme lowercased); raise
    UsageError for what etcd refuses."""
    raw = text.strip()
    try:
        u = urlsplit(raw)
        port = u.port
    except ValueError as exc:
        raise UsageError(f"peer URL {raw!r}: {exc}") from None
    if u.scheme.lower() not in SCHEMES:
        raise UsageError(f"peer URL {raw!r}: scheme must be one of {', '.join(SCHEMES)}")
    if port is None or not u.hostname:
        raise UsageError(f"peer URL {raw!r}: address does not have the form host:port")
    if u.path or u.query or u.fragment:
        raise UsageError(f"peer URL {raw!r}: a peer URL has no path")
    return f"{u.scheme.lower()}://{u.netloc}"


def normalize_urls(urls: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``types.NewURLs(...).StringSlice()``: normalized and sorted."""
    if not urls:
        raise UsageError("a member needs at least one peer URL")
    return tuple(sorted(normalize_url(u) for u in urls))


def parse_initial_cluster(text: str) -> list[tuple[str, tuple[str, ...]]]:
    """``NAME=URL,NAME=URL,...`` as (name, sorted URLs); repeated names merge their URLs."""
    grouped: dict[str, list[str]] = {}
    for item in text.split(","):
        name, sep, url = item.strip().partition("=")
        if not sep or not name or not url.strip():
            raise UsageError(f"--initial-cluster: expected NAME=URL[,NAME=URL...], got {item!r}")
        grouped.setdefault(name, []).append(url)
    return [(name, normalize_urls(urls)) for name, urls in grouped.items()]


def member_id(peer_urls: tuple[str, ...], token: str) -> int:
    """``computeMemberId(peerURLs, token, nil)``."""
    digest = hashlib.sha1(("".join(sorted(peer_urls)) + token).encode()).digest()  # noqa: S324
    return int.from_bytes(digest[:8], "big")


def cluster_id(ids: list[int]) -> int:
    """``RaftCluster.genID``."""
    raw = b"".join(i.to_bytes(8, "big") for i in sorted(ids))
    return int.from_bytes(hashlib.sha1(raw).digest()[:8], "big")  # noqa: S324


def cluster_from_initial(initial_cluster: str, token: str) -> Cluster:
    """``membership.NewClusterFromURLsMap(token, NewURLsMap(initial_cluster))``."""
    members: dict[int, Member] = {}
    seen_urls: dict[str, str] = {}
    for name, urls in parse_initial_cluster(initial_cluster):
        for u in urls:
            if u in seen_urls and seen_urls[u] != name:
                raise UsageError(f"--initial-cluster has duplicate URL {u}")
            seen_urls[u] = name
        mid = member_id(urls, token)
        if mid == 0:
            raise UsageError(f"member {name!r}: its ID would be 0, which etcd cannot use")
        if mid in members:
            raise UsageError(f"members {members[mid].name!r} and {name!r} have identical IDs")
        members[mid] = Member(mid, name, urls)
    ordered = tuple(members[i] for i in sorted(members))
    return Cluster(cluster_id(list(members)), token, ordered)
