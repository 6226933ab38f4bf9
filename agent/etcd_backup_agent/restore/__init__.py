"""Restore: a stored backup (or a local snapshot) into a NEW etcd data dir, and its checks.

The package, in the order a restore runs through it:

- ``options.py``: ``RestoreOptions``, every restore flag and default, defined once.
- ``request.py``: one restore request (socket or offline): check, plan the swap, restore,
  swap in; ``reset.py`` for k3s/RKE2, where the snapshot itself is placed.
- ``fetch.py``: fetch + decrypt + verify a stored backup to a checked plaintext snapshot;
  shared by restore, ``verify --backup``, drills and the keyspace commands.
- ``run.py``: restore one checked snapshot as one member (``member.py``) with the chosen
  engine (``engine.py``: native via datadir/, or ``etcdutl.py``).
- ``swap.py``: the guided kubeadm/systemd swap and the k3s/RKE2 cluster-reset plan.
- ``report.py``: the typed results, their JSON and how the operator reads them.
- ``events.py`` and ``types.py``: progress events, and what a request borrows from its
  caller (single flight, the store).

Import from the modules; this file stays empty so ``restore.swap`` (used by bundle/) and
``restore.options`` (used by the clients) load without the engines.
"""
