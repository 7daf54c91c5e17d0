"""The test session's own cache of slow tools stays usable, or is made again."""

import os
import sys

from tests.support.infra import _usable


def make_venv(where):
    (where / "bin").mkdir(parents=True)
    (where / "bin" / "python").symlink_to(sys.executable)
    (where / "bin" / "checkov").write_text(f"#!{where}/bin/python\nimport sys\n")
    return where


def test_a_moved_or_orphaned_checkov_virtualenv_is_not_used(tmp_path):
    venv = make_venv(tmp_path / "cache" / "checkov-1.0.0")
    assert _usable(venv)
    # A CI cache restored under another HOME: the script still names the old python.
    moved = tmp_path / "elsewhere"
    os.rename(tmp_path / "cache", moved)
    assert not _usable(moved / "checkov-1.0.0")
    # The base interpreter it was made from is gone (upgraded away).
    orphaned = make_venv(tmp_path / "orphaned")
    (orphaned / "bin" / "python").unlink()
    (orphaned / "bin" / "python").symlink_to(tmp_path / "no-such-python")
    assert not _usable(orphaned)


SH_WRAPPER = "#!/bin/sh\n'''exec' '{python}' \"$0\" \"$@\"\n' '''\nimport sys\n"


def test_a_virtualenv_at_a_long_path_is_usable_through_pips_sh_wrapper(tmp_path):
    venv = make_venv(tmp_path / ("x" * 120) / "checkov-1.0.0")
    # What pip writes when "#!<python>" would be too long for the kernel.
    (venv / "bin" / "checkov").write_text(SH_WRAPPER.format(python=venv / "bin" / "python"))
    assert _usable(venv)
    (venv / "bin" / "checkov").write_text(SH_WRAPPER.format(python="/elsewhere/bin/python"))
    assert not _usable(venv)
