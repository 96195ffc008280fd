"""The lease renewer: a small companion process that keeps a consuming process's leases.

A task that holds the GIL (a regular expression backtracking for a minute, a C
extension that never releases it) starves every thread of its process, a renewal
thread included. So the leases a process holds are renewed by a companion process
of its own, started on the first lease it takes:

- the parent tells it what it holds and drops, one JSON line per change on its stdin
  (``["hold", queue, id, token, lease_seconds]``, ``["settling", ...]``, ``["drop", ...]``);
- it renews every held lease every ``lease_seconds / 3``, through its own connection to
  the store (same URL and options: TLS, key prefix), and logs a lease it finds lost,
  unless the parent was settling that message (an ack racing a renewal loses nothing);
- it exits when its stdin closes (the parent exited or dropped it) or its parent changes
  (the parent was killed while a forked child still holds the pipe), and ignores SIGINT
  and SIGTERM, so a warm shutdown keeps renewing until the worker itself exits.

Run as ``python -m tq_kombu.renewer``; the first stdin line is the store to open.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import pickle
import select
import signal
import site
import subprocess
import sys
import threading
import time
import weakref
from typing import Any

from .lease import LeaseKeeper
from .store.contract import HotPath, Store
from .store.model import Lease

logger = logging.getLogger("tq_kombu.renewer")

#: The longest the companion sleeps between checks that its parent is alive.
PARENT_CHECK_SECONDS = 1.0
#: A companion that dies sooner than this after its start is not started again.
RESTART_MIN_SECONDS = 10.0
#: After reading its pipe, the companion lets commands gather this long before it reads
#: again: one wake-up per batch of settles, not per settle (a drop only stops renewals,
#: which come every lease_seconds / 3 at the soonest; the pipe, enlarged where the
#: system allows, holds thousands of commands, so the parent never waits on it).
GATHER_SECONDS = 0.02
#: The pipe size asked for (Linux F_SETPIPE_SZ); the default (64 KiB) where refused.
PIPE_BYTES = 1 << 20


class RenewLoop:
    """What the companion process does, apart from reading its pipe (testable in-process)."""

    def __init__(self, store: HotPath) -> None:
        self.store = store
        #: Held leases and their lease time in seconds.
        self.held: dict[Lease, float] = {}
        #: Held leases the parent is settling: losing one of them is not worth a warning.
        self.settling: set[Lease] = set()
        #: Held leases found lost once: the parent may have just settled them (its drop is
        #: on its way); lost again at the next renewal, they are reported.
        self.suspect: set[Lease] = set()
        self.next_renewal = time.monotonic()
        self._failing = False

    def apply(self, command: list[Any]) -> None:
        """Apply one command of the parent."""
        verb, queue, message_id, token = command[:4]
        lease = Lease(str(queue), str(message_id), str(token))
        if verb == "hold":
            self.held[lease] = float(command[4])
            self.settling.discard(lease)
            self.suspect.discard(lease)
        elif verb == "settling":
            self.settling.add(lease)
        elif verb == "drop":
            self.held.pop(lease, None)
            self.settling.discard(lease)
            self.suspect.discard(lease)

    @property
    def interval_seconds(self) -> float:
        shortest = min(self.held.values(), default=3.0)
        return max(shortest / 3, 0.05)

    def renew(self, more_commands: Any = None) -> None:
        """Renew every held lease once. ``more_commands()`` returns the commands that
        arrived meanwhile; they are applied before a lost lease is reported."""
        self.next_renewal = time.monotonic() + self.interval_seconds
        by_seconds: dict[float, list[Lease]] = {}
        for lease, seconds in self.held.items():
            by_seconds.setdefault(seconds, []).append(lease)
        lost: list[Lease] = []
        try:
            for seconds, leases in by_seconds.items():
                lost += self.store.renew(leases, seconds)
        except Exception as exc:  # noqa: BLE001 - the store may be away for a while: keep trying
            if not self._failing:
                logger.warning("tq: could not renew leases (%s); retrying", exc)
            self._failing = True
            return
        if self._failing:
            logger.warning("tq: renewing leases again")
            self._failing = False
        if lost and more_commands is not None:
            for command in more_commands():
                self.apply(command)
        for lease in lost:
            if lease not in self.held:
                continue
            if lease not in self.settling and lease not in self.suspect:
                self.suspect.add(lease)  # settled a moment ago, most likely: ask again later
                continue
            if lease not in self.settling:
                logger.warning(
                    "tq: lost the lease of message %s in queue %r (it expired and was handed "
                    "to another consumer); raise lease_seconds if the worker was stalled",
                    lease.message_id,
                    lease.queue,
                )
            self.held.pop(lease, None)
            self.settling.discard(lease)
            self.suspect.discard(lease)


class _Pipe:
    """The parent's commands, one JSON list per line, read without blocking."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = b""
        self.closed = False

    def first_line(self) -> bytes:
        """The first line, waiting for it (the store to open)."""
        while b"\n" not in self._buffer:
            chunk = os.read(self.fd, 65536)
            if not chunk:
                self.closed = True
                return b""
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        os.set_blocking(self.fd, False)
        return line

    def read(self) -> list[list[Any]]:
        chunks = []
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                self.closed = True
                break
            chunks.append(chunk)
        self._buffer += b"".join(chunks)
        *lines, self._buffer = self._buffer.split(b"\n")
        # one JSON array of every complete line: one parse, not one per command
        commands: list[list[Any]] = json.loads(
            b"[" + b",".join(line for line in lines if line.strip()) + b"]"
        )
        return commands


def serve(loop: RenewLoop, pipe: _Pipe, parent_pid: int) -> None:
    """Renew until the pipe closes or the parent is gone."""
    for command in pipe.read():  # those that came with the first line
        loop.apply(command)
    while not pipe.closed and os.getppid() == parent_pid:
        wait = min(max(loop.next_renewal - time.monotonic(), 0), PARENT_CHECK_SECONDS)
        readable, _, _ = select.select([pipe.fd], [], [], wait)
        if readable:
            for command in pipe.read():
                loop.apply(command)
            # let the next commands gather (not past a renewal that is due)
            time.sleep(min(max(loop.next_renewal - time.monotonic(), 0), GATHER_SECONDS))
        if time.monotonic() >= loop.next_renewal:
            if loop.held:
                loop.renew(pipe.read)
            else:
                loop.next_renewal = time.monotonic() + loop.interval_seconds


class Renewer:
    """The parent's side: starts the companion on the first hold (again if it died)
    and tells it every change. Renews from a thread instead only where no companion can
    do it: a ``memory://`` store (it lives in this process) or no companion process can
    be started at all (an embedded interpreter without an executable)."""

    def __init__(self, url: str, options: dict[str, Any], store: Store) -> None:
        self.url = url
        self.options = dict(options)
        self.store = store
        self._held: dict[Lease, float] = {}
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._thread: LeaseKeeper | None = None
        self._started_at = 0.0
        _RENEWERS.add(self)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def hold(self, lease: Lease, lease_seconds: float) -> None:
        self.hold_many([lease], lease_seconds)

    def hold_many(self, leases: list[Lease], lease_seconds: float) -> None:
        """Hold leases not held yet, told to the companion in one write (a fetched batch)."""
        with self._lock:
            new = [lease for lease in leases if self._held.get(lease) != lease_seconds]
            if not new:
                return
            for lease in new:
                self._held[lease] = lease_seconds
            self._send_many([["hold", *lease_fields(lease), lease_seconds] for lease in new])

    def lease_seconds_of(self, leases: list[Lease]) -> dict[Lease, float]:
        """The lease length each of ``leases`` still held is renewed to."""
        with self._lock:
            return {lease: self._held[lease] for lease in leases if lease in self._held}

    def settling(self, lease: Lease) -> None:
        """Say a held lease is being settled. The companion is not told (one write less a
        message): it reports a lease lost only when lost twice in a row, by when the drop
        of a settled one has come."""
        with self._lock:
            if lease in self._held and self._thread is not None:
                self._thread_apply(["settling", *lease_fields(lease)])

    def drop(self, lease: Lease) -> None:
        with self._lock:
            if self._held.pop(lease, None) is not None:
                self._send(["drop", *lease_fields(lease)])

    def close(self) -> None:
        """Stop the companion (its stdin closes; it exits)."""
        with self._lock:
            process, self._process = self._process, None
            if process is not None and process.stdin is not None:
                process.stdin.close()
            if self._thread is not None:
                self._thread.stop()
                self._thread = None

    def _send(self, command: list[Any]) -> None:
        self._send_many([command])

    def _send_many(self, commands: list[list[Any]]) -> None:
        if self._thread is not None:
            for command in commands:
                self._thread_apply(command)
            return
        # not polled for its exit here (a syscall per settle): a companion that died
        # fails the write (its pipe has no reader), and is started again then
        if self._process is None or self._process.returncode is not None:
            self._start()
            return
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(b"".join(json.dumps(c).encode() + b"\n" for c in commands))
        except OSError:  # it died: start another, told everything held
            self._start()

    def _start(self) -> None:
        if self.url.lower().startswith("memory:"):  # lives in this process only
            self._start_thread()
            return
        if self._process is not None and time.monotonic() - self._started_at < RESTART_MIN_SECONDS:
            self._fall_back(f"it exited at once with code {self._process.poll()}")
            return
        try:
            config = {"url": self.url, "options": self.options, "parent_pid": os.getpid()}
            lines = [base64.b64encode(pickle.dumps(config))]
            lines += [
                json.dumps(["hold", *lease_fields(lease), seconds]).encode()
                for lease, seconds in self._held.items()
            ]
            process = subprocess.Popen(
                [sys.executable, "-m", "tq_kombu.renewer"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                env=_companion_env(),
                bufsize=0,
                # its own process group: a SIGTERM to the worker's group (systemd, kill
                # -TERM -<pgid>) must not end it while it starts, before it ignores SIGTERM;
                # it exits by itself once its parent is gone
                process_group=0,
            )
            assert process.stdin is not None
            _enlarge(process.stdin.fileno())
            process.stdin.write(b"\n".join(lines) + b"\n")
        except Exception as exc:  # noqa: BLE001 - any reason at all: renew from a thread
            self._fall_back(str(exc))
            return
        self._process = process
        self._started_at = time.monotonic()

    def _fall_back(self, why: str) -> None:
        logger.warning(
            "tq: the lease renewer process cannot run (%s); renewing from a thread instead, "
            "which a task holding the GIL can starve",
            why,
        )
        self._process = None
        self._start_thread()

    def _start_thread(self) -> None:
        self._thread = LeaseKeeper(self.store, min(self._held.values(), default=30.0))
        for lease in self._held:
            self._thread.hold(lease)

    def _thread_apply(self, command: list[Any]) -> None:
        assert self._thread is not None
        lease = Lease(*command[1:4])
        if command[0] == "hold":
            self._thread.hold(lease)
        elif command[0] == "settling":
            self._thread.settling(lease)
        else:
            self._thread.drop(lease)

    def after_fork_in_child(self) -> None:
        """A forked child holds none of its parent's leases: let go of its companion."""
        self._lock = threading.Lock()
        self._held.clear()
        process, self._process = self._process, None
        if process is not None and process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()  # unbuffered: closes this process's copy of the pipe
            process.returncode = 0  # not ours to wait for
        self._thread = None


def _companion_env() -> dict[str, str]:
    """The environment of the companion: ours, able to import this very tq_kombu."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    installed = [*site.getsitepackages(), site.getusersitepackages()]
    if any(os.path.abspath(path) == package_root for path in installed):
        return dict(os.environ)  # found there by default, ahead of nothing else
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, path]))}


def _enlarge(fd: int) -> None:
    """Ask for a pipe of :data:`PIPE_BYTES` (Linux); keep the default where refused."""
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setsize is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, setsize, PIPE_BYTES)


def lease_fields(lease: Lease) -> list[str]:
    return [lease.queue, lease.message_id, lease.token]


_RENEWERS: weakref.WeakSet[Renewer] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for renewer in list(_RENEWERS):
        renewer.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="[%(asctime)s: %(levelname)s/tq-renewer %(process)d] %(message)s",
    )
    pipe = _Pipe(sys.stdin.fileno())
    first = pipe.first_line()
    if not first:
        return
    config = pickle.loads(base64.b64decode(first))  # noqa: S301 - our parent's pipe
    from .store import open_store

    store = open_store(config["url"], **config["options"])
    try:
        serve(RenewLoop(store), pipe, int(config["parent_pid"]))
    finally:
        store.close()


if __name__ == "__main__":
    main()
