"""petloc.processes.process_alive against real processes: a child that runs, one that has exited
(still in the process table until its parent reaps it), one reaped, a pid no system hands out, and a
process of another user, which the caller may not signal but which exists."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from petloc.processes import process_alive

# Linux hands out pids below pid_max, which is at most 2**22 (PID_MAX_LIMIT); macOS below 99999.
NEVER_A_PID = 2**22


def test_a_running_child_is_alive_until_reaped() -> None:
    """The child blocks on its stdin, so it runs until the test closes it: no timing involved."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert process_alive(child.pid)
    finally:
        assert child.stdin is not None
        child.stdin.close()
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # until it exits, leaving it unreaped
    assert process_alive(child.pid)  # a zombie: its pid is still taken
    assert child.wait() == 0
    assert not process_alive(child.pid)


def test_a_pid_that_no_process_has_is_dead() -> None:
    with pytest.raises(ProcessLookupError):  # the oracle: the system says there is no such process
        os.kill(NEVER_A_PID, 0)
    assert not process_alive(NEVER_A_PID)


NOBODY = 65534


def ask(pid: int) -> tuple[bool, bool]:
    """(whether signalling ``pid`` is refused, what process_alive says about it)."""
    try:
        os.kill(pid, 0)
        denied = False
    except PermissionError:
        denied = True
    return denied, process_alive(pid)


def ask_as_nobody(pid: int) -> tuple[bool, bool]:
    """:func:`ask` in a forked child that has dropped to the user 'nobody' (root only)."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: it ends in os._exit, so pytest never sees it return
        try:
            os.close(read)
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.write(write, bytes(ask(pid)))  # two bytes, 0 or 1
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as answer:
        data = answer.read()
    os.waitpid(child, 0)
    assert len(data) == 2, "the child running as nobody wrote no answer"
    return bool(data[0]), bool(data[1])


def test_a_process_of_another_user_is_alive() -> None:
    """Signalling another user's process is refused (EPERM), yet it exists. As root, a child running
    as 'nobody' asks about this (root's) process; otherwise this process asks about pid 1."""
    denied, alive = ask_as_nobody(os.getpid()) if os.geteuid() == 0 else ask(1)
    if not denied:
        pytest.skip("pid 1 belongs to this user: no process of another user to ask about")
    assert alive
