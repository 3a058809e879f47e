import os
import stat

import pytest

from irrepro.utils import atomic_path, sha256_file


def test_atomic_file_lands_only_on_success(tmp_path):
    dest = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []  # no temp file left behind
    with atomic_path(dest) as tmp:
        tmp.write_text("whole")
    assert dest.read_text() == "whole"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o666 & ~umask


def test_atomic_dir_replaces_old_output(tmp_path):
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "old").write_text("x")
    with atomic_path(dest, is_dir=True) as tmp:
        (tmp / "new").write_text("y")
    assert sorted(p.name for p in dest.iterdir()) == ["new"]


def test_sha256_matches_known_digest(tmp_path):
    p = tmp_path / "abc"
    p.write_bytes(b"abc")
    assert sha256_file(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
