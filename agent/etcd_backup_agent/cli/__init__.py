"""The two command lines: ``etcd-backup-agent`` (``agent``) and ``etcd-backupctl`` (``ctl``).

``options`` defines every flag that both programs take (restore flags, identity, output
format, backup selectors...) once; ``render`` turns results into the text an operator
reads (tables, the prune report, the progress bar, restore and status reports). The
subcommands of ``etcd-backup-agent`` live in ``commands/``, one module each.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


# Thin so that importing ``cli.ctl`` (etcd-backupctl) does not load the agent's command
# line and its logging setup (structlog): the client starts faster without them.
def main(argv: Sequence[str] | None = None) -> int:
    """``etcd-backup-agent``: see ``cli.agent``."""
    from .agent import main as agent_main

    return agent_main(argv)


def build_parser() -> argparse.ArgumentParser:
    """The ``etcd-backup-agent`` parser: see ``cli.agent``."""
    from .agent import build_parser as agent_parser

    return agent_parser()
