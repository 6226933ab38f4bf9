"""Retention against a real local-directory store, and the prune command end to end."""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyrage
import pytest

from etcd_backup_agent import cli
from etcd_backup_agent.config import RetentionSettings, Settings
from etcd_backup_agent.errors import ObjectLocked, StoreError
from etcd_backup_agent.manifest import Manifest, manifest_key, object_key
from etcd_backup_agent.retention import prune
from etcd_backup_agent.store.local import LocalStore
from tests.agent_helpers import write_toml
from tests.fake_backups import MemoryStore, fake_manifest

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 24, 13, 0, tzinfo=UTC)
DAYS = [f"2026-11-{d}T12:00:00" for d in range(19, 25)]  # 19th (oldest) .. 24th (newest)


def add(store: LocalStore, m: Manifest) -> None:
    store.put_bytes(object_key(m.cluster, m.id), b"s" * m.object_size)
    store.put_bytes(manifest_key(m.cluster, m.id), m.to_json().encode())


def files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def populated(tmp_path: Path) -> tuple[Path, dict[str, Manifest]]:
    """Six daily c1 backups (the oldest locked until 2999), leftovers, and a c2 backup."""
    root = tmp_path / "backups"
    store = LocalStore(root)
    ms = {t[:10]: fake_manifest(t) for t in DAYS}
    ms["2026-11-19"] = fake_manifest(DAYS[0], retain_until="2999-01-01T00:00:00Z")
    ms["other"] = fake_manifest("2026-01-01T00:00:00", cluster="c2")
    for m in ms.values():
        add(store, m)
    store.put_bytes("c1/20261101T000000Z-r1-n1.db.zst.age", b"leftover of a failed run")
    store.put_bytes("c1/20261102T000000Z-r2-n1.json", b"{broken")
    return root, ms


def settings_for(**policy: Any) -> Settings:
    return Settings(cluster="c1", node="n1", retention=RetentionSettings(**policy))


class RecordingStore(LocalStore):
    """A LocalStore that notes, for each delete, which keys still existed at that moment."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.deletes: list[tuple[str, bool]] = []

    def delete(self, key: str) -> None:
        mkey = key.replace(".db.zst.age", ".json")
        self.deletes.append((key, (self.root / mkey).exists()))
        super().delete(key)


def test_prune_deletes_manifest_then_object_and_leaves_the_rest(
    populated: tuple[Path, dict[str, Manifest]],
) -> None:
    root, ms = populated
    store = RecordingStore(root)
    report = prune(store, settings_for(keep_last=2), NOW)
    gone = [ms[d].id for d in ("2026-11-22", "2026-11-21", "2026-11-20")]
    assert report.result.deleted == gone
    assert report.skipped_locked == 1  # the 19th, held by its object lock
    for bid in gone:
        i = store.deletes.index((manifest_key("c1", bid), True))
        # The object goes second, when its manifest is already gone.
        assert store.deletes[i + 1] == (object_key("c1", bid), False)
    left = files(root)
    for bid in gone:
        assert manifest_key("c1", bid) not in left and object_key("c1", bid) not in left
    for day in ("2026-11-24", "2026-11-23", "2026-11-19"):
        assert manifest_key("c1", ms[day].id) in left and object_key("c1", ms[day].id) in left
    # Leftovers are reported, never deleted; the other cluster is untouched.
    assert report.orphans == ("c1/20261101T000000Z-r1-n1.db.zst.age",)
    assert len(report.unreadable) == 1
    assert "c1/20261101T000000Z-r1-n1.db.zst.age" in left
    assert "c1/20261102T000000Z-r2-n1.json" in left
    other = ms["other"]
    assert {manifest_key("c2", other.id), object_key("c2", other.id)} <= left
    assert not any(k.startswith("c2/") for k, _ in store.deletes)
    # A second run finds nothing more to delete.
    assert prune(store, settings_for(keep_last=2), NOW).result.deleted == []


def test_dry_run_deletes_nothing(populated: tuple[Path, dict[str, Manifest]]) -> None:
    root, _ = populated
    before = files(root)
    report = prune(LocalStore(root), settings_for(keep_last=1), NOW, dry_run=True)
    assert len(report.result.deleted) == 4 and report.result.dry_run
    assert files(root) == before


def test_empty_policy_keeps_everything(populated: tuple[Path, dict[str, Manifest]]) -> None:
    root, _ = populated
    before = files(root)
    report = prune(LocalStore(root), settings_for(), NOW)
    assert report.result.deleted == []
    assert all(d.reasons == ("no retention policy",) for d in report.decisions)
    assert files(root) == before


def test_incomplete_listing_refuses_to_prune() -> None:
    store = MemoryStore(complete=False)
    for t in DAYS:
        store.add(fake_manifest(t))
    with pytest.raises(StoreError, match="refusing to prune: listing incomplete"):
        prune(store, settings_for(keep_last=1), NOW)
    assert not any(op == "delete" for op, _ in store.calls)


def test_object_lock_in_the_store_restores_the_manifest_and_is_counted() -> None:
    store = MemoryStore()
    ms = [fake_manifest(t) for t in DAYS]
    for m in ms:
        store.add(m)
    oldest = ms[0]
    store.locked.add(object_key("c1", oldest.id))
    report = prune(store, settings_for(keep_last=2), NOW)
    assert report.result.locked == [oldest.id]
    assert report.skipped_locked == 1
    assert len(report.result.deleted) == 3
    assert Manifest.from_json(store.data[manifest_key("c1", oldest.id)]) == oldest
    assert ("put", manifest_key("c1", oldest.id)) in store.calls


# the command -----------------------------------------------------------------------------


def write_config(path: Path, store_root: Path, retention: str) -> Path:
    recipient = pyrage.x25519.Identity.generate().to_public()
    doc = {
        "cluster": {"name": "c1", "node": "n1"},
        "encryption": {"recipients": [str(recipient)]},
        "store": {"type": "local", "path": store_root},
        "retention": tomllib.loads(retention),
    }
    return write_toml(path, doc)


def test_prune_command_dry_run_json_then_for_real(
    tmp_path: Path,
    populated: tuple[Path, dict[str, Manifest]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, ms = populated
    cfg = write_config(tmp_path / "config.toml", root, "keep_last = 2")
    before = files(root)

    assert cli.main(["prune", "--config", str(cfg), "--dry-run", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert files(root) == before
    assert out["dry_run"] is True
    actions = {d["id"]: d["action"] for d in out["decisions"]}
    assert actions[ms["2026-11-24"].id] == "keep"
    assert actions[ms["2026-11-22"].id] == "would-delete"
    assert actions[ms["2026-11-19"].id] == "locked"
    reasons = {d["id"]: d["reasons"] for d in out["decisions"]}
    assert reasons[ms["2026-11-24"].id] == ["last #1", "newest verified backup"]
    assert reasons[ms["2026-11-19"].id] == ["object lock until 2999-01-01T00:00:00Z"]
    assert out["summary"] == {
        "backups": 6,
        "kept": 2,
        "deleted": 3,
        "skipped_locked": 1,
        "failed": 0,
        "orphans": 1,
        "unreadable": 1,
        "incomplete": 0,
    }

    assert cli.main(["prune", "--config", str(cfg)]) == 0
    text = capsys.readouterr().out
    assert f"DELETE        {ms['2026-11-20'].id}" in text
    assert f"KEEP          {ms['2026-11-23'].id}  last #2" in text
    assert "orphan (no manifest, not deleted): c1/20261101T000000Z-r1-n1.db.zst.age" in text
    assert "6 backup(s): 2 kept, deleted 3, 1 skipped (object lock), 0 failed" in text
    assert manifest_key("c1", ms["2026-11-20"].id) not in files(root)


def test_prune_command_with_empty_policy_keeps_all(
    tmp_path: Path,
    populated: tuple[Path, dict[str, Manifest]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, _ = populated
    cfg = write_config(tmp_path / "config.toml", root, "")
    before = files(root)
    assert cli.main(["prune", "--config", str(cfg)]) == 0
    assert "no retention policy" in capsys.readouterr().out
    assert files(root) == before


def test_prune_command_exits_1_on_store_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    cfg = write_config(tmp_path / "config.toml", not_a_dir, "keep_last = 1")
    assert cli.main(["prune", "--config", str(cfg)]) == 1
    assert "not a directory" in capsys.readouterr().err


def test_prune_command_exits_1_when_a_delete_fails(
    tmp_path: Path,
    populated: tuple[Path, dict[str, Manifest]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, ms = populated
    cfg = write_config(tmp_path / "config.toml", root, "keep_last = 4")
    doomed = ms["2026-11-20"]

    def delete(self: LocalStore, key: str) -> None:
        raise StoreError(f"cannot delete {key}: boom")

    monkeypatch.setattr(LocalStore, "delete", delete)
    assert cli.main(["prune", "--config", str(cfg)]) == 1
    out = capsys.readouterr().out
    assert f"FAILED        {doomed.id}  cannot delete manifest" in out
    assert manifest_key("c1", doomed.id) in files(root)


def test_a_locked_manifest_is_reported_locked_not_failed_and_stays_whole(
    tmp_path: Path,
    populated: tuple[Path, dict[str, Manifest]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, ms = populated
    cfg = write_config(tmp_path / "config.toml", root, "keep_last = 4")
    locked = ms["2026-11-20"]
    real_delete = LocalStore.delete

    def delete(self: LocalStore, key: str) -> None:
        if key == manifest_key("c1", locked.id):
            raise ObjectLocked(f"{key} is under object lock")
        real_delete(self, key)

    monkeypatch.setattr(LocalStore, "delete", delete)
    assert cli.main(["prune", "--config", str(cfg), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["locked"] == [locked.id]
    assert out["failed"] == []
    assert {manifest_key("c1", locked.id), object_key("c1", locked.id)} <= files(root)


def test_prune_command_reports_store_object_locks_and_exits_0(
    tmp_path: Path,
    populated: tuple[Path, dict[str, Manifest]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, ms = populated
    cfg = write_config(tmp_path / "config.toml", root, "keep_last = 3")
    locked = ms["2026-11-21"]
    real_delete = LocalStore.delete

    def delete(self: LocalStore, key: str) -> None:
        if key == object_key("c1", locked.id):
            raise ObjectLocked(f"{key} is under object lock")
        real_delete(self, key)

    monkeypatch.setattr(LocalStore, "delete", delete)
    assert cli.main(["prune", "--config", str(cfg), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["locked"] == [locked.id]
    actions = [d["action"] for d in out["decisions"]]
    assert out["summary"]["kept"] == actions.count("keep") == 3
    assert out["summary"]["skipped_locked"] == actions.count("locked") == 2
    assert out["summary"]["deleted"] == actions.count("delete") == 1
    # The locked backup is still listed: its manifest was put back.
    left = files(root)
    assert {manifest_key("c1", locked.id), object_key("c1", locked.id)} <= left
    assert Manifest.from_json((root / manifest_key("c1", locked.id)).read_bytes()) == locked
