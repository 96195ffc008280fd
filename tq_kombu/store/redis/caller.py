"""Script calls on a connection of their own: the hot path without redis-py's per-command
layers (pool check-out and its readiness probe, retry wrapper, metrics, generic packing),
which cost a settle more CPU than the round trip itself.

Only the first attempt is lean. A connection error, a timeout or a reply that is not a
plain Redis reply hands the call to redis-py's own path (``Script.__call__``: its
retries, its reconnection), so faults behave exactly as before. Two threads never share
the connection: a call finding it busy takes the pooled path. A forked child opens its
own (the parent's socket is left alone).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import redis
from redis.exceptions import NoScriptError

__all__ = ["ScriptCaller", "pack"]


def pack(args: Sequence[Any]) -> bytes | None:
    """``args`` as one RESP command, or None when one is not str, bytes or int (then
    redis-py packs it, with its checks)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        kind = type(arg)
        if kind is str:
            data = arg.encode()
        elif kind is bytes:
            data = arg
        elif kind is int:
            data = b"%d" % arg
        else:
            return None
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


class ScriptCaller:
    """Runs registered scripts by EVALSHA on one connection kept out of the pool."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._connection: Any = None

    def __call__(self, script: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """The reply of ``script`` (a redis-py ``Script``) run with ``keys`` and ``args``."""
        if self._pid != os.getpid():
            self._forked()
        packed = pack(["EVALSHA", script.sha, len(keys), *keys, *args])
        if packed is None or not self._lock.acquire(blocking=False):
            return script(keys=keys, args=args)
        try:
            return self._call(script, packed)
        except (redis.ConnectionError, redis.TimeoutError):
            self._discard()  # its state is unknown: redis-py's path reconnects and retries
        finally:
            self._lock.release()
        return script(keys=keys, args=args)

    def _call(self, script: Any, packed: bytes) -> Any:
        connection = self._connection
        if connection is None:
            connection = self._connection = self._client.connection_pool.get_connection()
        try:
            connection.send_packed_command([packed])
            return connection.read_response()
        except NoScriptError:  # a restarted or new server: register it, then once more
            self._client.script_load(script.script)
            connection.send_packed_command([packed])
            return connection.read_response()

    def _discard(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.disconnect()

    def _forked(self) -> None:
        """In a forked child: forget the parent's connection and lock, never touch them."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._connection = None

    def close(self) -> None:
        """Disconnect the kept connection (the next call opens another)."""
        with self._lock:
            if self._pid == os.getpid():
                self._discard()
