"""Every event names its component, in JSON and on the console."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from etcd_backup_agent import log as logsetup


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def test_json_events_carry_the_component() -> None:
    out = io.StringIO()
    logsetup.configure("info", "json", stream=out)
    logsetup.get("pipeline").info("backup_sealed", bytes=42)
    logsetup.get("store").warning("store_retry", attempt=2)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert (first["component"], first["event"], first["bytes"]) == ("pipeline", "backup_sealed", 42)
    assert (second["component"], second["level"]) == ("store", "warning")


def test_console_events_carry_the_component() -> None:
    out = io.StringIO()
    logsetup.configure("info", "console", stream=out)
    logsetup.get("daemon").info("backup_started", trigger="schedule")
    line = out.getvalue()
    assert "backup_started" in line and "component=daemon" in line, line


def test_bound_fields_keep_the_component() -> None:
    out = io.StringIO()
    logsetup.configure("debug", "json", stream=out)
    logsetup.get("control").bind(peer="uid=0").debug("request")
    event = json.loads(out.getvalue())
    assert (event["component"], event["peer"]) == ("control", "uid=0")


def test_below_the_level_nothing_is_written() -> None:
    out = io.StringIO()
    logsetup.configure("warning", "json", stream=out)
    logsetup.get("drill").info("drill_started")
    assert out.getvalue() == ""
