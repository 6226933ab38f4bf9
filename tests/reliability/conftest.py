"""Reliability suite: fixtures shared by its tests and the summary printed at the end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability import counters
from tests.reliability.harness import AgentPool


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[AgentPool]:
    """Agents started by a test, stopped by pid at its end (also after a failure)."""
    p = AgentPool(tmp_path)
    try:
        yield p
    finally:
        p.stop_all()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not any(counters.COUNTS.values()):
        return
    terminalreporter.section("reliability summary")
    for line in counters.summary_lines():
        terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if counters.COUNTS["backups_lost"] and session.exitstatus == 0:
        session.exitstatus = 1
