"""Manifest naming and JSON: the stored layout is a contract."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from etcd_backup_agent.manifest import (
    Manifest,
    backup_id,
    manifest_key,
    object_key,
    parse_id,
)


def sample() -> Manifest:
    bid = backup_id(datetime(2026, 11, 24, 8, 5, 9, tzinfo=UTC), 1234, "cp-1")
    return Manifest(
        id=bid,
        object=object_key("prod", bid),
        created_at="2026-11-24T08:05:09Z",
        cluster="prod",
        node="cp-1",
        revision=1234,
        db_size=4096,
        snapshot_sha256="ab" * 32,
        object_size=100,
        object_sha256="cd" * 32,
    )


def test_id_and_keys() -> None:
    m = sample()
    assert m.id == "20261124T080509Z-r1234-cp-1"
    assert m.object == "prod/20261124T080509Z-r1234-cp-1.db.zst.age"
    assert manifest_key("prod", m.id) == "prod/20261124T080509Z-r1234-cp-1.json"
    assert parse_id(m.id) == (datetime(2026, 11, 24, 8, 5, 9, tzinfo=UTC), 1234, "cp-1")
    assert parse_id("nonsense") is None


def test_json_round_trip_keeps_every_field() -> None:
    m = sample()
    back = Manifest.from_json(m.to_json())
    assert back == m
    assert m.to_dict()["format_version"] == 1
    assert list(m.to_dict())[:4] == ["format_version", "id", "object", "created_at"]


@pytest.mark.parametrize("text", ["{", "[]", '{"format_version": 99}', '{"format_version": 1}'])
def test_bad_manifest_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        Manifest.from_json(text)
