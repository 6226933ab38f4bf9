"""One module per ``etcd-backup-agent`` subcommand; each exposes ``register``."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import log as logsetup
from ..config import Settings, load


def load_settings(args: argparse.Namespace) -> Settings:
    """Load --config and apply its [log] settings unless overridden on the command line."""
    settings = load(Path(args.config) if args.config else None)
    logsetup.configure(
        level=args.log_level or settings.log.level, fmt=args.log_format or settings.log.format
    )
    return settings
