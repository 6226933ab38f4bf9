"""Native reading and writing of etcd data directories: db, WAL, snap."""
