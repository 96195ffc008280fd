"""``python -m demo_project``: the tq demo, on the embedded SQLite store.

Queues tasks of all four priority levels and one with a countdown, starts a real
``celery worker`` (one process, prefetch 1), shows the tasks running most urgent
first and the countdown task running when due, then stops the worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEADLINE_SECONDS = 60


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="tq-demo-"))
    journal = workdir / "journal.txt"
    os.environ.setdefault("TQ_BROKER_URL", f"tq+sqlite:///{workdir / 'queue.sqlite3'}")
    os.environ["TQ_DEMO_JOURNAL"] = str(journal)

    from demo_project.celery import app, crunch, notify, send_email
    from tq_kombu import Priority

    print(f"broker: {app.conf.broker_url}")
    start = time.time()
    crunch.apply_async(("report (countdown 3 s)",), countdown=3)
    notify.apply_async(("ann", "LOW: weekly digest"), priority=Priority.LOW)
    crunch.apply_async(("NORMAL: thumbnails",))
    send_email.apply_async(("bob@example.com", "HIGH: password reset"), priority=Priority.HIGH)
    notify.apply_async(("ops", "URGENT: disk full"), priority=Priority.URGENT)
    print("queued 5 tasks in this order: countdown, LOW, NORMAL, HIGH, URGENT")

    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "demo_project",
            "--quiet",
            "worker",
            "--pool",
            "solo",
            "-Q",
            "default,emails,notifications,heavy",
            "--without-mingle",
            "--without-gossip",
            "-l",
            "WARNING",
        ],
        start_new_session=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    print("started a worker; tasks run in this order:")
    seen = 0
    try:
        while seen < 5 and time.time() - start < DEADLINE_SECONDS:
            lines = journal.read_text().splitlines() if journal.exists() else []
            for line in lines[seen:]:
                print(f"  +{time.time() - start:5.2f} s  {line}")
            seen = len(lines)
            if worker.poll() is not None:
                print("the worker exited early", file=sys.stderr)
                return 1
            time.sleep(0.05)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
    print("worker stopped")
    if seen < 5:
        print(f"only {seen} of 5 tasks ran within {DEADLINE_SECONDS} s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
