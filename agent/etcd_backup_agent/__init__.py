"""etcd-backup-agent: verified, encrypted etcd snapshots, stored and restorable."""

__version__ = "0.1.0"
