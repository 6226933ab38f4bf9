"""``etcd-backup-agent store check``: prove the store can list, write, read back and delete."""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Callable

from ..errors import EXIT_FAILURE, EXIT_OK, ObjectLocked, StoreError
from ..store import Store, open_store
from . import load_settings


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser("store", help="inspect the backup store")
    ssub = p.add_subparsers(dest="store_command", metavar="ACTION", parser_class=type(p))
    check = ssub.add_parser(
        "check",
        parents=[common],
        help="test list, write, read back and delete (exit 0 ok, 1 not)",
        description="Write a small probe object under <prefix>/<cluster>/.probe-<random>, read it "
        "back, delete it, and list the cluster's prefix. Prints each step; on failure names the "
        "step and why.",
        epilog="example: etcd-backup-agent store check --config /etc/etcd-backup-agent/config.toml",
    )
    check.set_defaults(handler=run_check)

    def usage(_args: argparse.Namespace) -> int:
        p.print_help(sys.stderr)
        return 2

    p.set_defaults(handler=usage)


def _step(name: str, action: Callable[[], str]) -> bool:
    try:
        detail = action()
    except StoreError as exc:
        print(f"{name}: FAILED: {exc}")
        return False
    print(f"{name}: ok{': ' + detail if detail else ''}")
    return True


def run_check(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    try:
        store: Store = open_store(settings)
    except StoreError as exc:
        print(f"open: FAILED: {exc}")
        return EXIT_FAILURE
    print(f"store: {store.describe()}")
    key = f"{settings.cluster}/.probe-{secrets.token_hex(8)}"
    payload = b"etcd-backup-agent store check " + secrets.token_bytes(16)
    try:
        return _run(store, settings.cluster, key, payload)
    finally:
        store.close()


def _run(store: Store, cluster: str, key: str, payload: bytes) -> int:
    def do_list() -> str:
        listing = store.list(f"{cluster}/")
        if not listing.complete:
            raise StoreError(f"listing of {cluster}/ was incomplete")
        return f"{len(listing.objects)} object(s) under {cluster}/"

    def do_write() -> str:
        store.put_bytes(key, payload)
        return key

    def do_read() -> str:
        data = store.get_bytes(key)
        if data != payload:
            raise StoreError(f"read back {len(data)} bytes that differ from the probe ({key})")
        return f"{len(data)} bytes match"

    def do_delete() -> str:
        try:
            store.delete(key)
        except ObjectLocked as exc:
            return f"probe is locked by the bucket's default retention and stays: {exc}"
        return ""

    ok = _step("list", do_list)
    if not ok:
        return EXIT_FAILURE
    if not _step("write", do_write):
        return EXIT_FAILURE
    ok = _step("read", do_read)
    ok = _step("delete", do_delete) and ok
    print("store check: OK" if ok else "store check: FAILED")
    return EXIT_OK if ok else EXIT_FAILURE
