"""Config validation: every problem names the file and key; exit 2 from `config check`."""

from __future__ import annotations

from pathlib import Path

import pyrage
import pytest

from etcd_backup_agent.config import EXAMPLE_RECIPIENT, load
from etcd_backup_agent.durations import format_duration, parse_duration
from etcd_backup_agent.errors import ConfigError
from tests.agent_helpers import REPO, run_agent

RECIPIENT = str(pyrage.x25519.Identity.generate().to_public())

GOOD = f"""
[cluster]
name = "prod"
[encryption]
recipients = ["{RECIPIENT}"]
"""


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(GOOD)
    s = load(cfg)
    assert s.cluster == "prod"
    assert s.etcd.endpoints == ("http://127.0.0.1:2379",)
    assert s.store.type == "local"
    assert s.schedule.interval == 3600
    assert s.encryption.recipients == (RECIPIENT,)


@pytest.mark.parametrize(
    ("snippet", "key", "expect"),
    [
        ("[cluster]\nname = 5", "cluster.name", "expected a string"),
        ('[cluster]\nnmae = "x"', "cluster.nmae", "unknown key"),
        ('[etcd]\nendpoints = "http://x:2379"', "etcd.endpoints", "list of strings"),
        ("[etcd]\nsnapshot_timeout = 30", "etcd.snapshot_timeout", "duration"),
        ('[etcd]\nsnapshot_timeout = "30 parsecs"', "etcd.snapshot_timeout", "duration"),
        ('[etcd]\npassword = "hunter2"', "etcd.password", "never accepted inline"),
        ('[etcd]\nusername = "root"', "etcd.password_file", "required when username"),
        ('[etcd]\nca_file = "/nonexistent/ca.crt"', "etcd.ca_file", "does not exist"),
        ('[etcd]\ncert_file = "/etc/hostname"', "etcd.cert_file", "together"),
        ("[compression]\nlevel = 42", "compression.level", "between 1 and 19"),
        ("[compression]\nlevel = true", "compression.level", "an integer"),
        ('[store]\ntype = "ftp"', "store.type", "one of"),
        ('[store]\ntype = "s3"', "store.s3.bucket", "bucket name"),
        (
            '[store.s3]\nbucket = "b"\naws_secret_access_key = "x"',
            "store.s3.aws_secret_access_key",
            "credentials_file",
        ),
        ('[schedule]\ninterval = "0s"', "schedule.interval", "greater than zero"),
        ('[schedule]\nat = ["25:00"]', "schedule.at", "HH:MM"),
        ('[coordination]\nmode = "raft"', "coordination.mode", "one of"),
        # the keyspace figures leave out the lock's keys: "/" or "/registry" would hide them all
        ('[coordination]\nlock_prefix = "/"', "coordination.lock_prefix", "agent's own"),
        ('[coordination]\nlock_prefix = "/registry"', "coordination.lock_prefix", "agent's own"),
        ('[coordination]\nlock_prefix = "locks"', "coordination.lock_prefix", "agent's own"),
        ('[metrics]\nlisten = "nope"', "metrics.listen", "HOST:PORT"),
        ("[retention]\nkeep_daily = -1", "retention.keep_daily", ">= 0"),
        ("[spool]\ndir = 3", "spool.dir", "a path"),
        ("bogus = 1", "bogus", "unknown key"),
    ],
)
def test_bad_config_names_key(tmp_path: Path, snippet: str, key: str, expect: str) -> None:
    cfg = tmp_path / "c.toml"
    if snippet.startswith("[cluster]"):
        text = f'[encryption]\nrecipients = ["{RECIPIENT}"]\n{snippet}\n'
    elif snippet.startswith("["):
        text = f"{GOOD}\n{snippet}\n"
    else:  # a top-level key must come before the first table
        text = f"{snippet}\n{GOOD}"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(cfg)
    text = "\n".join(info.value.problems)
    assert f"{cfg}: {key}:" in text, text
    assert expect in text, text


@pytest.mark.parametrize(
    ("recipients", "expect"),
    [
        ("[]", "at least one age recipient"),
        ('["age1notarecipient"]', "expected age X25519 recipients"),
        ('["AGE-SECRET-KEY-1QQQQ"]', "identity"),
        (f'["{EXAMPLE_RECIPIENT}"]', "placeholder"),
    ],
)
def test_bad_recipients(tmp_path: Path, recipients: str, expect: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[encryption]\nrecipients = {recipients}\n")
    with pytest.raises(ConfigError) as info:
        load(cfg)
    assert any("encryption.recipients" in p and expect in p for p in info.value.problems)


def test_recipients_file_with_comments(tmp_path: Path) -> None:
    other = str(pyrage.x25519.Identity.generate().to_public())
    rfile = tmp_path / "recipients.txt"
    rfile.write_text(f"# ops team\n{RECIPIENT}  # laptop\n\n{other}\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[encryption]\nrecipients_file = "recipients.txt"\n')
    assert load(cfg).encryption.recipients == (RECIPIENT, other)


def test_unreadable_recipients_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[encryption]\nrecipients_file = "missing.txt"\n')
    with pytest.raises(ConfigError) as info:
        load(cfg)
    assert any(
        "encryption.recipients_file" in p and "does not exist" in p for p in info.value.problems
    )


def test_invalid_toml_names_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[cluster\nname=")
    with pytest.raises(ConfigError) as info:
        load(cfg)
    assert str(cfg) in info.value.problems[0] and "not valid TOML" in info.value.problems[0]


def test_config_check_cli_exit_codes(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    r = run_agent("config", "check", "--config", good)
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD + '\n[compression]\nlevel = "max"\n')
    r = run_agent("config", "check", "--config", bad)
    assert r.returncode == 2
    assert f"{bad}: compression.level: expected an integer" in r.stderr
    assert "Traceback" not in r.stderr
    r = run_agent("config", "check", "--config", tmp_path / "missing.toml")
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_example_config_is_valid_once_recipient_is_set(tmp_path: Path) -> None:
    text = (REPO / "config" / "example.toml").read_text()
    assert EXAMPLE_RECIPIENT in text
    cfg = tmp_path / "c.toml"
    cfg.write_text(text.replace(EXAMPLE_RECIPIENT, RECIPIENT))
    load(cfg)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("1h", 3600), ("7d", 604800), ("1h30m", 5400), ("250ms", 0.25)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "1x", "h1", "1h 30m", "-5s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_duration() -> None:
    assert format_duration(5400) == "1h30m"
    assert format_duration(0.5) == "500ms"
