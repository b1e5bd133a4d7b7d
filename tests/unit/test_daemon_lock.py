"""daemonlock.py: one daemon per database; a second is refused with the holder named; a killed holder's lock is
released by the kernel, so it never blocks the next daemon."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from onguard.incidents.daemonlock import DaemonAlreadyRunning, daemon_lock, lock_path

HOLD = """
import sys
from pathlib import Path
from onguard.incidents.daemonlock import daemon_lock
with daemon_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()  # holds the lock until killed or stdin closes
"""


def hold_in_a_subprocess(database: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(database)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
    return holder


def test_a_second_holder_is_refused_and_told_who_holds_it(tmp_path: Path) -> None:
    database = tmp_path / "state" / "onguard.db"
    with daemon_lock(database) as path:
        assert path == tmp_path / "state" / "onguard.db.lock"
        with pytest.raises(DaemonAlreadyRunning) as caught:
            with daemon_lock(database):
                pass
    error = caught.value
    assert error.exit_code == 2
    assert error.message.startswith(f"{path}: another onguard daemon (pid {os.getpid()} on host "
                                    f"{socket.gethostname()}, since ")
    assert f"is running on the database {database}" in error.message
    assert error.hint and "one daemon per database" in error.hint


def test_the_lock_is_free_again_after_a_clean_exit(tmp_path: Path) -> None:
    database = tmp_path / "onguard.db"
    with daemon_lock(database):
        pass
    with daemon_lock(database):
        pass
    assert lock_path(database).read_text() == ""  # no holder named after a clean exit


def test_another_database_has_its_own_lock(tmp_path: Path) -> None:
    with daemon_lock(tmp_path / "a.db"), daemon_lock(tmp_path / "b.db"):
        pass


def test_a_lock_held_by_another_process_is_refused_until_it_is_killed(tmp_path: Path) -> None:
    database = tmp_path / "onguard.db"
    holder = hold_in_a_subprocess(database)
    try:
        with pytest.raises(DaemonAlreadyRunning, match=rf"\(pid {holder.pid} on host "):
            with daemon_lock(database):
                pass
        holder.send_signal(signal.SIGKILL)
        assert holder.wait(timeout=30) == -signal.SIGKILL
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    # The killed holder never cleaned up: its pid is still in the file, but the kernel released its lock.
    assert f'"pid": {holder.pid}' in lock_path(database).read_text()
    with daemon_lock(database):
        pass
