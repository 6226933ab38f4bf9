"""What the reliability suite did, added up for the summary printed at the end of the run.

Every test adds to these counters; ``conftest.py`` prints them when the session ends and
fails the session when ``backups_lost`` is not 0.
"""

from __future__ import annotations

from collections import Counter

COUNTS: Counter[str] = Counter()
FAULTS: Counter[str] = Counter()  # by kind, e.g. "etcd SIGKILL mid-stream"
NOTES: list[str] = []  # measured values worth printing (soak start/end resources)


def fault(kind: str, n: int = 1) -> None:
    FAULTS[kind] += n
    COUNTS["faults_injected"] += n


def add(name: str, n: int = 1) -> None:
    COUNTS[name] += n


def note(text: str) -> None:
    NOTES.append(text)


def summary_lines() -> list[str]:
    lines = [
        f"faults injected:        {COUNTS['faults_injected']}",
        f"backup cycles run:      {COUNTS['cycles']}",
        f"malformed inputs tried: {COUNTS['malformed_inputs']}",
        f"store checks passed:    {COUNTS['store_checks']}",
        f"backups checked:        {COUNTS['backups_checked']}",
        f"backups lost:           {COUNTS['backups_lost']}",
    ]
    lines += [f"  fault {kind}: {n}" for kind, n in sorted(FAULTS.items())]
    lines += [f"  {text}" for text in NOTES]
    return lines
