"""The shipped example config and the per-distribution [etcd] snippets load without errors."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from etcd_backup_agent.config import load
from etcd_backup_agent.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "example.toml"
SNIPPETS = sorted((ROOT / "config" / "examples").glob("*.toml"))
RECIPIENT = "age1cl9vmnpqxrfh80lupzwvzufcw50zd2xmhkpsz4m0fkm53937y9aqmy3lav"


def with_etcd_table(example: str, snippet: str) -> str:
    """The example config with its [etcd] table replaced by the snippet's."""
    head, sep, rest = example.partition("\n[etcd]\n")
    assert sep, "example.toml has no [etcd] table"
    tail = rest[re.search(r"^\[", rest, re.M).start() :]  # type: ignore[union-attr]
    return f"{head}\n{snippet}\n{tail}"


def test_example_loads_with_a_real_recipient(tmp_path: Path) -> None:
    text = re.sub(
        r"^recipients = \[.*\]$",
        f'recipients = ["{RECIPIENT}"]',
        EXAMPLE.read_text(),
        count=1,
        flags=re.M,
    )
    path = tmp_path / "config.toml"
    path.write_text(text)
    settings = load(path)
    assert settings.encryption.recipients == (RECIPIENT,)
    assert str(settings.control.socket) == "/run/etcd-backup-agent/agent.sock"
    assert settings.metrics.listen == "127.0.0.1:9471"


@pytest.mark.parametrize("snippet", SNIPPETS, ids=lambda p: p.name)
def test_etcd_snippet_is_a_valid_etcd_table(tmp_path: Path, snippet: Path) -> None:
    text = snippet.read_text()
    table = tomllib.loads(text)
    assert list(table) == ["etcd"]
    # The certificate files must exist for `config check`: recreate them under tmp_path.
    for key in ("ca_file", "cert_file", "key_file"):
        real = Path(table["etcd"][key])
        assert real.is_absolute()
        fake = tmp_path / real.relative_to("/")
        fake.parent.mkdir(parents=True, exist_ok=True)
        fake.write_text("-----BEGIN CERTIFICATE-----\n")
        text = text.replace(f'"{real}"', f'"{fake}"')
    config = with_etcd_table(EXAMPLE.read_text(), text)
    config = re.sub(
        r"^recipients = \[.*\]$", f'recipients = ["{RECIPIENT}"]', config, count=1, flags=re.M
    )
    path = tmp_path / "config.toml"
    path.write_text(config)
    settings = load(path)
    assert settings.etcd.endpoints == ("https://127.0.0.1:2379",)
    assert settings.etcd.cert_file is not None and settings.etcd.cert_file.is_file()


def test_snippet_check_can_fail(tmp_path: Path) -> None:
    config = with_etcd_table(EXAMPLE.read_text(), '[etcd]\nendpoint = ["https://x:2379"]\n')
    path = tmp_path / "config.toml"
    path.write_text(config)
    with pytest.raises(ConfigError, match=r"etcd\.endpoint: unknown key"):
        load(path)
