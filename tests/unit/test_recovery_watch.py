"""A recovery is stalled when the changelog records it still has to read stop falling, not when it is slow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from stream_jobs.recovery_watch import RecoveryWatch


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_slow_recovery_that_keeps_reading_is_never_stalled() -> None:
    clock = Clock()
    watch = RecoveryWatch(stall_s=30, clock=clock)
    for remaining in range(1_000_000, 0, -10_000):  # 10,000 records a second, for 100 s
        assert watch.observe(True, remaining) is None
        clock.now += 1
    assert watch.observe(False, 0) is None


def test_no_progress_for_the_stall_time_is_a_stall() -> None:
    clock = Clock()
    watch = RecoveryWatch(stall_s=30, clock=clock)
    assert watch.observe(True, 156) is None
    clock.now = 29.0
    assert watch.observe(True, 156) is None
    clock.now = 30.5
    assert watch.observe(True, 156) == 30.5
    watch.reset()  # the broker was away: the count starts again
    clock.now = 40.0
    assert watch.observe(True, 156) is None
    clock.now = 69.0
    assert watch.observe(True, 156) is None
    clock.now = 71.0
    assert watch.observe(True, 156) == 31.0


def test_progress_or_the_end_of_recovery_restarts_the_count() -> None:
    clock = Clock()
    watch = RecoveryWatch(stall_s=30, clock=clock)
    watch.observe(True, 100)
    clock.now = 25.0
    assert watch.observe(True, 99) is None  # one record read: progress
    clock.now = 50.0
    assert watch.observe(True, 99) is None
    assert watch.observe(False, 99) is None  # recovery over
    clock.now = 200.0
    assert watch.observe(False, 0) is None
    assert watch.observe(True, 0) is None  # nothing to read: never stalled
    clock.now = 300.0
    assert watch.observe(True, 0) is None


def test_restart_replaces_the_process_with_the_same_command(tmp_path: Path) -> None:
    """Same pid, same command line and environment, the reason logged once before."""
    script = tmp_path / "worker.py"
    script.write_text(
        "import logging, os, sys\n"
        "from stream_jobs.recovery_watch import restart_process\n"
        "logging.basicConfig(level='INFO', format='%(levelname)s %(message)s')\n"
        "print('run', os.getpid(), sys.argv[1:], os.environ.get('RUN_MARK', ''), flush=True)\n"
        "if not os.environ.get('RUN_MARK'):\n"
        "    os.environ['RUN_MARK'] = 'again'\n"
        "    restart_process('table recovery read none of its 156 changelog records for 30 s')\n"
    )
    out = subprocess.run(
        [sys.executable, str(script), "worker", "-l", "info"], capture_output=True, text=True, timeout=60, check=True
    )
    first, second = out.stdout.splitlines()
    assert first.split()[0] == second.split()[0] == "run"
    assert first.split()[1] == second.split()[1]  # the same pid
    assert first.endswith("['worker', '-l', 'info'] ") and second.endswith("['worker', '-l', 'info'] again")
    assert out.stderr.splitlines() == [
        "ERROR table recovery read none of its 156 changelog records for 30 s: restarting this worker"
    ]
