"""Trailer + integrity check + status of one snapshot file, as one report."""

from __future__ import annotations

import os
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .bolt import BoltError, BoltFile
from .status import RULES, SnapshotStatus, scan_status
from .trailer import check_trailer

VERIFIER_VERSION = "1"
"""Bumped whenever what verification checks or computes changes."""


@dataclass(frozen=True)
class VerifyReport:
    """``sound``: no problems; ``status`` is None when the file could not be read as bolt."""

    status: SnapshotStatus | None
    problems: list[str] = field(default_factory=list)
    trailer_ok: bool | None = None
    sound: bool = False


def verify_snapshot(
    path: str | os.PathLike[str],
    rules: str = "auto",
    require_trailer: bool = True,
    known_sha256: str | None = None,
) -> VerifyReport:
    """Verify a snapshot file; never raises for bad content (only for bad arguments).

    ``require_trailer=False`` accepts a raw ``member/snap/db`` copy without a trailer.
    ``known_sha256``: the sha256 of the data, already computed as it was written (the
    backup's stream); the trailer is checked against it instead of hashing the file again.
    """
    if rules not in RULES:
        raise ValueError(f"rules must be one of {', '.join(RULES)}")
    problems: list[str] = []
    # sha256 releases the GIL: hash the trailer on a second core while the tree is walked.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="trailer") as pool:
        pending = pool.submit(check_trailer, path, known_sha256)
        status, found = _scan(path, rules)
        try:
            trailer = pending.result()
        except OSError as exc:
            return VerifyReport(None, [f"cannot read {os.fspath(path)}: {exc.strerror or exc}"])
    if trailer.ok is False or (not trailer.present and require_trailer):
        problems.append(trailer.message)
    problems += found
    return VerifyReport(status, problems, trailer.ok, not problems)


def _scan(path: str | os.PathLike[str], rules: str) -> tuple[SnapshotStatus | None, list[str]]:
    problems: list[str] = []
    status: SnapshotStatus | None = None
    try:
        with BoltFile(path) as db:
            status, found = scan_status(db, rules)
            problems += [str(p) for p in found]
    except BoltError as exc:
        problems.append(str(exc))
    except (OSError, struct.error, ValueError, OverflowError) as exc:
        problems.append(f"unreadable bolt file: {exc}")
    return status, problems
