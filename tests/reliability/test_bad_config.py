"""Property-based bad configs: every problem names its key; never a traceback.

The loader is run in-process for volume (hypothesis, derandomized) and a sample through the
CLI (`config check`, exit 2). Documents start from a valid one and are damaged per key of the
schema (``accepted_keys()``): wrong types, huge values, bad durations and recipients,
unreadable paths, missing required keys and extra keys.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etcd_backup_agent.config import accepted_keys, from_dict
from etcd_backup_agent.errors import ConfigError
from tests.agent_helpers import run_agent, to_toml
from tests.reliability import counters

RECIPIENT = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
KEYS = sorted(accepted_keys())
REQUIRED = ["encryption.recipients"]  # every other key has a default


def valid(tmp: Path) -> dict[str, Any]:
    return {
        "cluster": {"name": "c1", "node": "n1"},
        "etcd": {"endpoints": ["http://127.0.0.1:2379"]},
        "encryption": {"recipients": ["age1" + "q" * 58]},
        "store": {"type": "local", "path": str(tmp / "store")},
        "spool": {"dir": str(tmp / "spool")},
    }


BAD_VALUES = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=40),
    st.sampled_from(["1x", "-5s", "9999999999999d", "1e308s", "", " ", "1h1", "nan"]),
    st.sampled_from(["age1", "age1" + "z" * 58, "AGE-SECRET-KEY-1XYZ", "ssh-rsa AAAA"]),
    st.sampled_from(["/nonexistent/file.pem", "/root/\x00x", "relative/path"]),
    st.lists(st.integers() | st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def set_key(doc: dict[str, Any], dotted: str, value: Any) -> None:
    *tables, key = dotted.split(".")
    node = doc
    for t in tables:
        if not isinstance(node.get(t), dict):
            node[t] = {}
        node = node[t]
    node[key] = value


def del_key(doc: dict[str, Any], dotted: str) -> None:
    *tables, key = dotted.split(".")
    node = doc
    for t in tables:
        node = node.get(t, {})
    node.pop(key, None)


def names_a_key(problem: str, keys: list[str]) -> bool:
    return any(f": {k}:" in problem or f": {k} " in problem for k in keys) or any(
        f": {k.split('.')[0]}" in problem for k in keys
    )


@settings(
    derandomize=True,
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    damage=st.lists(st.tuples(st.sampled_from(KEYS), BAD_VALUES), min_size=1, max_size=3),
    drop=st.lists(st.sampled_from(REQUIRED), max_size=1),
    extra=st.lists(st.sampled_from(["bogus", "etcd.endpoint", "store.s3.buckets"]), max_size=1),
)
def test_damaged_documents_fail_with_named_keys(
    tmp_path: Path, damage: list[tuple[str, Any]], drop: list[str], extra: list[str]
) -> None:
    doc = copy.deepcopy(valid(tmp_path))
    for key, value in damage:
        set_key(doc, key, value)
    for key in drop:
        del_key(doc, key)
    for key in extra:
        set_key(doc, key, 1)
    counters.add("malformed_inputs")
    try:
        from_dict(doc)
    except ConfigError as exc:
        assert exc.problems
        for p in exc.problems:
            assert p.startswith("<config>: ") and "\n" not in p, p
            # every problem names a dotted key or a table of the document
            assert (
                p.split(": ")[1].split(".")[0] in doc
                or p.split(": ")[1] in KEYS
                or (p.split(": ")[1].split(".")[0] in {k.split(".")[0] for k in KEYS})
            ), p
        for key in extra:
            assert any(key in p for p in exc.problems), (key, exc.problems)
        for key in drop:
            assert any(key in p for p in exc.problems), (key, exc.problems)
        return
    # accepted: nothing required was dropped and no unknown key was added
    assert not drop and not extra, (drop, extra)
    for _key, value in damage:
        assert not (isinstance(value, float) and math.isnan(value)), damage


CLI_CASES = {
    "interval": ("schedule", "interval", "soon"),
    "recipient": ("encryption", "recipients", ["AGE-SECRET-KEY-1ABC"]),
    "huge": ("retention", "keep_last", 10**40),
    "type": ("etcd", "endpoints", 5),
    "unreadable": ("etcd", "ca_file", "/nonexistent/ca.pem"),
    "extra": ("cluster", "colour", "blue"),
}


@pytest.mark.integration
@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_config_check_exits_2_naming_the_key(tmp_path: Path, case: str) -> None:
    table, key, value = CLI_CASES[case]
    doc = valid(tmp_path)
    doc.setdefault(table, {})[key] = value
    cfg = tmp_path / "bad.toml"
    cfg.write_text(to_toml(doc))
    counters.add("malformed_inputs")
    r = run_agent("config", "check", "--config", cfg)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert f"{table}.{key}" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
