"""``etcd-backup-agent keygen``: create an age X25519 identity in age-keygen's format.

The identity decrypts every backup: it belongs off the node (a password manager, an offline
machine, a safe). Only its public key (``age1...``) goes into the agent's config. So the
command never prints the secret to a terminal, and writes files with mode 0600, created
atomically, never replacing an existing file unless told to.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
from datetime import UTC, datetime
from pathlib import Path

from pyrage import x25519

from ..errors import EXIT_OK, UsageError

WARNING = (
    "warning: this identity decrypts every backup made for its public key. Keep it OFF the "
    "node (password manager, offline storage); the node needs only the public key. You will "
    "need it for restores and drills."
)


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    del common  # keygen needs no config
    p = sub.add_parser(
        "keygen",
        help="create an age identity (key pair) for encrypting backups",
        description="Create an age X25519 identity in the stock age-keygen format. Run it OFF "
        "the node; put only the printed public key into [encryption] recipients. Without "
        "--out the identity goes to stdout, which must not be a terminal.",
        epilog="examples:\n"
        "  etcd-backup-agent keygen --out backup-key.txt\n"
        "  etcd-backup-agent keygen > backup-key.txt   (the file is made 0600)\n"
        "  age -d -i backup-key.txt X.db.zst.age | zstd -d > snapshot.db",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", "-o", metavar="FILE", help="write the identity to FILE (mode 0600)")
    p.add_argument(
        "--force", action="store_true", help="replace FILE if it exists (the old key is lost)"
    )
    p.set_defaults(handler=run_keygen, log_level=None, log_format=None)


def render(identity: x25519.Identity, now: datetime) -> str:
    """Format an identity as age-keygen does: two comment lines, then the secret key."""
    created = now.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    return f"# created: {created}\n# public key: {identity.to_public()}\n{identity}\n"


def write_identity(path: Path, text: str, force: bool) -> None:
    """Write ``text`` to ``path`` with mode 0600, atomically; refuse to replace unless ``force``.

    The content goes to a fresh temporary file (O_EXCL, 0600) beside ``path``; it is then
    hard-linked into place (fails if ``path`` exists) or, with ``force``, renamed over it. A
    reader never sees a partial key, and an existing key is never truncated.
    """
    if path.exists() and not force:
        raise UsageError(f"{path} exists; refusing to overwrite an identity (use --force)")
    if path.is_dir():
        raise UsageError(f"{path} is a directory")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise UsageError(f"cannot create {tmp}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            os.fchmod(f.fileno(), 0o600)  # whatever the umask
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError as exc:
                raise UsageError(
                    f"{path} exists; refusing to overwrite an identity (use --force)"
                ) from exc
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def run_keygen(args: argparse.Namespace) -> int:
    identity = x25519.Identity.generate()
    recipient = str(identity.to_public())
    text = render(identity, datetime.now(UTC))
    if args.out is None:
        if args.force:
            raise UsageError("--force only applies with --out FILE")
        if sys.stdout.isatty():
            raise UsageError(
                "refusing to print a secret key to a terminal: use --out FILE, or redirect "
                "stdout (etcd-backup-agent keygen > key.txt)"
            )
        _restrict_stdout_file()
        sys.stdout.write(text)
        sys.stdout.flush()
        sys.stderr.write(f"public key: {recipient}\n")
        sys.stderr.write(f'config:     [encryption] recipients = ["{recipient}"]\n')
        sys.stderr.write(WARNING + "\n")
        return EXIT_OK
    out = Path(args.out)
    write_identity(out, text, force=args.force)
    print(f"wrote identity to {out} (mode 0600)")
    print(f"public key: {recipient}")
    print("add to /etc/etcd-backup-agent/config.toml:")
    print("[encryption]")
    print(f'recipients = ["{recipient}"]')
    sys.stderr.write(WARNING + "\n")
    return EXIT_OK


def _restrict_stdout_file() -> None:
    """If stdout was redirected to a regular file (``> key.txt``), make that file 0600."""
    try:
        st = os.fstat(sys.stdout.fileno())
    except (OSError, ValueError):
        return
    if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
        with contextlib.suppress(OSError):
            os.fchmod(sys.stdout.fileno(), 0o600)
