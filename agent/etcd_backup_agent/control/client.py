"""The client side of the agent's control socket: find it, send one request, read replies.

The ``etcd-backupctl`` command line built on it is ``cli/ctl.py``.
"""

from __future__ import annotations

import argparse
import json
import socket
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..config import DEFAULT_CONFIG_PATH, ControlSettings
from ..errors import AgentError, ConfigError
from . import protocol as proto


class Unreachable(Exception):
    """The daemon's socket cannot be reached."""


def find_socket(args: argparse.Namespace) -> Path:
    """--socket, else [control] socket of --config, else the default config or socket.

    Only the ``[control] socket`` key is read: validating the whole config would need the
    files it names (credentials, identities), which a non-root operator cannot read.
    """
    if args.socket:
        return Path(args.socket)
    if args.config:
        return _socket_of(Path(args.config))
    try:
        return _socket_of(DEFAULT_CONFIG_PATH)
    except ConfigError:
        return ControlSettings.socket


def _socket_of(path: Path) -> Path:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"not valid TOML: {exc}"
        raise ConfigError(
            [f"{path}: cannot read: {reason} (give the socket with --socket PATH instead)"]
        ) from None
    control = data.get("control")
    value = control.get("socket") if isinstance(control, dict) else None
    if value is None:
        return ControlSettings.socket
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigError([f"{path}: control.socket: expected an absolute path, got {value!r}"])
    return Path(value)


def call(
    path: Path,
    op: str,
    args: dict[str, Any],
    on_event: Callable[[dict[str, Any]], None] | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Send one request and return the final reply; events go to ``on_event``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(10)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise Unreachable(str(exc)) from None
        sock.settimeout(timeout)
        sock.sendall(proto.encode(proto.request(op, args)))
        for message in _lines(sock):
            if "event" in message:
                if on_event is not None:
                    on_event(message)
                continue
            return message
        raise AgentError("the daemon closed the connection without a reply")
    finally:
        sock.close()


def _lines(sock: socket.socket) -> Iterator[dict[str, Any]]:
    # linear in the reply size: an extract reply can hold tens of MB on one line
    buf = bytearray()
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            return
        searched = len(buf)  # buf never holds a newline between reads
        buf += chunk
        end = buf.find(b"\n", searched)
        while end >= 0:
            line = bytes(buf[:end])
            del buf[: end + 1]
            if line.strip():
                yield json.loads(line)
            end = buf.find(b"\n")
