"""``python -m etcd_backup_agent.cli``: the ``etcd-backup-agent`` command."""

from __future__ import annotations

from .agent import main

raise SystemExit(main())
