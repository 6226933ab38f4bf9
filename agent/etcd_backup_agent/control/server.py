"""The control socket server: AF_UNIX, peer uid checked, bounded, one thread per connection.

One request per connection: read one line (bounded by ``max_request_bytes``, within
``idle_timeout``), stream events, send the final reply, close. Every failure becomes an
error reply or a closed connection; the server itself never stops on bad input.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import socket
import stat
import struct
import threading
import time
from pathlib import Path
from typing import Any

from .. import log as logsetup
from ..config import ControlSettings
from ..errors import AgentError
from ..service import Agent
from . import protocol as proto
from .dispatch import dispatch

_UCRED = struct.Struct("3i")


class _Conn:
    """One client connection; writes stop quietly once the peer is gone."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.gone = False
        self.lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        if self.gone:
            return
        data = proto.encode(message)
        with self.lock:
            try:
                self.sock.sendall(data)
            except OSError:
                self.gone = True


class ControlServer:
    """Serve ``agent`` on the unix socket of ``settings``; ``start()`` runs it on a thread."""

    def __init__(self, settings: ControlSettings, agent: Agent) -> None:
        self.settings = settings
        self.agent = agent
        self.path = Path(settings.socket)
        self.log = logsetup.get("control")
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._slots = threading.BoundedSemaphore(settings.max_connections)
        self._gid: int | None = None
        self._own_uid = os.getuid()

    # -- lifecycle ----------------------------------------------------------------------

    def _bind(self) -> socket.socket:
        parent = self.path.parent
        if not parent.exists():
            parent.mkdir(parents=True, mode=0o755)
        if self.path.exists() or self.path.is_symlink():
            st = self.path.lstat()
            if not stat.S_ISSOCK(st.st_mode):
                raise AgentError(f"{self.path} exists and is not a socket; refusing to replace it")
            if _answers(self.path):
                raise AgentError(f"{self.path} is in use by another running agent")
            self.path.unlink()  # a stale socket of an earlier run
        if self.settings.group:
            try:
                self._gid = grp.getgrnam(self.settings.group).gr_gid
            except KeyError:
                raise AgentError(
                    f"[control] group {self.settings.group!r} does not exist"
                ) from None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        if self._gid is not None:
            os.chown(self.path, -1, self._gid)
            os.chmod(self.path, 0o660)
        else:
            os.chmod(self.path, 0o600)
        sock.listen(min(self.settings.max_connections * 2, 1024))
        sock.settimeout(0.5)
        return sock

    def start(self) -> None:
        """Bind and serve on a background thread."""
        self._sock = self._bind()
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="control-accept", daemon=True)
        self._thread.start()
        self.log.info("control socket listening", socket=str(self.path))

    def stop(self) -> None:
        """Stop accepting, close the socket and remove its file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    # -- serving --------------------------------------------------------------------------

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(0.05)
                continue
            try:
                self._admit(conn)
            except Exception as exc:  # keep serving whatever one connection does
                self.log.error("control connection setup failed", error=str(exc))
                conn.close()

    def _admit(self, conn: socket.socket) -> None:
        conn.settimeout(self.settings.idle_timeout)
        if not self._slots.acquire(blocking=False):
            _Conn(conn).send(proto.error(proto.BUSY, "too many connections; try again"))
            conn.close()
            return
        try:
            t = threading.Thread(
                target=self._handle, args=(conn,), name="control-conn", daemon=True
            )
            t.start()
        except BaseException:
            self._slots.release()
            raise

    def _peer_allowed(self, conn: socket.socket) -> tuple[bool, int, int]:
        raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        pid, uid, gid = _UCRED.unpack(raw)
        if uid in (0, self._own_uid):
            return True, pid, uid
        if self._gid is not None:
            if gid == self._gid:
                return True, pid, uid
            with contextlib.suppress(KeyError):
                pw = pwd.getpwuid(uid)
                if self._gid in os.getgrouplist(pw.pw_name, pw.pw_gid):
                    return True, pid, uid
        return False, pid, uid

    def _handle(self, sock: socket.socket) -> None:
        conn = _Conn(sock)
        try:
            allowed, pid, uid = self._peer_allowed(sock)
            if not allowed:
                self.log.warning("control peer refused", peer_uid=uid, peer_pid=pid)
                conn.send(
                    proto.error(
                        proto.PERMISSION_DENIED,
                        "permission denied: root or the [control] group only",
                    )
                )
                return
            try:
                line = self._read_line(sock)
            except proto.ProtocolError as exc:
                conn.send(proto.error(exc.code, str(exc)))
                return
            if line is None:
                return
            try:
                req = proto.parse_request(line)
            except proto.ProtocolError as exc:
                conn.send(proto.error(exc.code, str(exc)))
                return
            self.log.info("control request", op=req.op, peer_uid=uid)
            try:
                result = dispatch(self.agent, req.op, req.args, conn.send)
                conn.send(proto.ok(result))
            except AgentError as exc:
                conn.send(proto.error(exc.code, str(exc)))
            except Exception as exc:
                self.log.error("control op crashed", op=req.op, error=repr(exc)[:300])
                conn.send(proto.error(proto.INTERNAL, f"internal error: {exc.__class__.__name__}"))
        except Exception as exc:
            self.log.error("control connection failed", error=repr(exc)[:300])
        finally:
            with contextlib.suppress(OSError):
                sock.close()
            self._slots.release()

    def _read_line(self, sock: socket.socket) -> bytes | None:
        limit = self.settings.max_request_bytes
        buf = bytearray()
        deadline = time.monotonic() + self.settings.idle_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise proto.ProtocolError(proto.TIMEOUT, "no complete request line in time")
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                raise proto.ProtocolError(
                    proto.TIMEOUT, "no complete request line in time"
                ) from None
            if not chunk:
                if buf.strip():
                    return bytes(buf)
                return None
            nl = chunk.find(b"\n")
            if nl >= 0:
                buf += chunk[:nl]
                if len(buf) > limit:
                    raise proto.ProtocolError(proto.TOO_LARGE, f"request over {limit} bytes")
                sock.settimeout(self.settings.idle_timeout)
                return bytes(buf)
            buf += chunk
            if len(buf) > limit:
                raise proto.ProtocolError(proto.TOO_LARGE, f"request over {limit} bytes")


def _answers(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()
