"""Stopping a child process (or its process group) for good, whatever state it is in,
and children that do not outlive the session."""

import contextlib
import os
import signal
import subprocess
import sys


def stop_process(proc: subprocess.Popen, grace: float = 10.0, *, group: bool = False) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; reaped before returning.

    With ``group`` (a process started with start_new_session), the signals go to its
    whole process group, and whatever is left of the group is killed even if the
    leader has exited already.
    """
    def send(signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(proc.pid, signum)
            elif proc.poll() is None:
                proc.send_signal(signum)

    if proc.poll() is None:
        send(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    if proc.poll() is None or group:
        send(signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _load_prctl():
    # Loaded here, in the parent: after fork() a child of a threaded parent should only
    # make async-signal-safe calls before exec, and loading a library is not one.
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except OSError:
        return None


_PRCTL = _load_prctl()


def die_with_parent() -> None:
    """Ask Linux to SIGKILL the child if the (spawning thread of the) parent dies."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command's name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def running(pid: int) -> bool:
    """There is such a process, and it has not ended (a zombie has)."""
    fields = proc_stat(pid)
    return fields is not None and fields[0] != "Z"


def children(pid: int) -> list[int]:
    """The pids of ``pid``'s children (its main thread's), as this process's /proc sees them."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as found:
            return [int(child) for child in found.read().split()]
    except OSError:
        return []
