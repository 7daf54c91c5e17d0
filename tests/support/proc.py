"""Stopping a child process (or its process group) for good, whatever state it is in."""

import contextlib
import os
import signal
import subprocess


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
