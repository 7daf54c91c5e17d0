"""Run a shell script as the first process (PID 1) of new mount and PID namespaces.

    python sandbox.py SCRIPT

The script mounts a container's root and execs the container's process into it
(tests/support/images.py writes it). This process stays outside, as a container runtime's
does: it passes the signals it gets on (TERM, INT, HUP, QUIT, USR1, USR2), exits with the
script's status (128 + n after signal n), and takes the namespace down with it if it dies,
which it does with its own parent. Standard library only, run by path, not imported.
"""

import ctypes
import os
import signal
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
MS_REC, MS_PRIVATE = 0x4000, 1 << 18
PR_SET_PDEATHSIG = 1
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def die_with_parent() -> None:
    _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")


def main(script: str) -> int:
    parent = os.getppid()
    die_with_parent()
    if os.getppid() != parent:  # the parent died before the line above
        return 137
    _check(libc.unshare(CLONE_NEWNS | CLONE_NEWPID), "unshare")
    # Nothing mounted from here on reaches the host's mount table.
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    child, early = 0, []

    def forward(number, _frame):
        if child:
            os.kill(child, number)
        else:
            early.append(number)  # came before the fork returned

    for signum in FORWARDED:  # before the fork, so that none ends this process instead
        signal.signal(signum, forward)
    child = os.fork()
    if child == 0:  # PID 1 of the new namespace: when it ends, every process in it ends
        die_with_parent()
        os.execv("/bin/sh", ["sh", "-c", script])  # (exec resets the handlers)
    for number in early:
        os.kill(child, number)
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
