"""winipc._backends.queue_files.GroupSync: which file a group-commit sync reaches.

On Linux the WAL stays open between syncs and is checked by its /proc/self/fd name, not
by stat (see GroupSync). These tests record what each ``fdatasync``/``fsync`` reached (by
inode, through a wrapper of the os functions) and replace the WAL in the ways SQLite and
winipc do, from other processes where that is where it happens.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from winipc._backends import queue_files as F

from conftest import run_py, wait_line

keeps_open = pytest.mark.skipif(not F._KEEP_WAL_OPEN, reason="the WAL is kept open on Linux with /proc only")


@dataclass
class Syncs:
    """Inodes reached by os.fdatasync (``data``), os.fsync (``full``) and os.stat/fstat (``stats``)."""

    data: list[int] = field(default_factory=list)
    full: list[int] = field(default_factory=list)
    stats: list[int] = field(default_factory=list)

    def clear(self) -> None:
        self.data.clear()
        self.full.clear()
        self.stats.clear()


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> Syncs:
    got = Syncs()
    real_fdatasync, real_fsync, real_fstat, real_stat = os.fdatasync, os.fsync, os.fstat, os.stat

    def inode(fd: int) -> int:
        return real_fstat(fd).st_ino  # the test's own look, not recorded

    def fdatasync(fd: int) -> None:
        got.data.append(inode(fd))
        real_fdatasync(fd)

    def fsync(fd: int) -> None:
        got.full.append(inode(fd))
        real_fsync(fd)

    def wrap(real: Callable[..., os.stat_result]) -> Callable[..., os.stat_result]:
        def look(*args: object, **kw: object) -> os.stat_result:
            st = real(*args, **kw)
            got.stats.append(st.st_ino)
            return st
        return look

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "fstat", wrap(real_fstat))
    monkeypatch.setattr(os, "stat", wrap(real_stat))
    return got


@pytest.fixture
def queue_dir(tmp_path: Path) -> Path:
    d = tmp_path / "q"
    d.mkdir()
    (d / "queue.db-wal").write_bytes(b"frames")
    return d


@pytest.fixture
def group_sync(queue_dir: Path) -> Iterator[F.GroupSync]:
    gs = F.GroupSync(str(queue_dir / "sync"), str(queue_dir / "queue.db-wal"), str(queue_dir))
    yield gs
    gs.close()


def ino(path: Path) -> int:
    return os.lstat(path).st_ino


def fd_targets() -> list[str]:
    """What this process's descriptors name (readlink of /proc/self/fd/*)."""
    out = []
    for name in os.listdir("/proc/self/fd"):
        try:
            out.append(os.readlink(f"/proc/self/fd/{name}"))
        except OSError:
            pass
    return out


def test_each_commit_is_synced_and_a_new_wal_name_once(group_sync: F.GroupSync, queue_dir: Path,
                                                       syncs: Syncs) -> None:
    wal = ino(queue_dir / "queue.db-wal")
    for _ in range(3):
        assert group_sync.durable(time.monotonic_ns()) is True
    assert syncs.data == [wal, wal, wal]
    assert syncs.full == [ino(queue_dir)]  # the folder: once, when the WAL was first opened


@keeps_open
def test_the_wal_stays_open_and_is_never_stat_ed(group_sync: F.GroupSync, queue_dir: Path,
                                                  syncs: Syncs, monkeypatch: pytest.MonkeyPatch) -> None:
    # a stat of the WAL queries its ctime: on kernels with multigrain timestamps its next
    # write then dirties the inode and the next fdatasync commits it (the cost avoided)
    group_sync.durable(time.monotonic_ns())
    opened: list[object] = []
    real_open = os.open

    def counting_open(path: object, *args: object, **kw: object) -> int:
        opened.append(path)
        return real_open(path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", counting_open)
    syncs.clear()
    wal = ino(queue_dir / "queue.db-wal")
    for _ in range(3):
        with open(queue_dir / "queue.db-wal", "r+b") as f:
            f.write(b"more")
        assert group_sync.durable(time.monotonic_ns()) is True
    assert str(queue_dir / "queue.db-wal") not in opened
    assert wal not in syncs.stats
    assert syncs.data == [ino(queue_dir / "queue.db-wal")] * 3
    assert syncs.full == []


def test_a_wal_replaced_by_another_process_is_synced_with_its_name(
        group_sync: F.GroupSync, queue_dir: Path, syncs: Syncs, procs: list[subprocess.Popen[str]]) -> None:
    wal_path = queue_dir / "queue.db-wal"
    old = ino(wal_path)
    group_sync.durable(time.monotonic_ns())
    # another process puts a new file in its place (rename over: one step, as a tool would)
    p = run_py(f"""
        import os
        with open({str(queue_dir / "new")!r}, "wb") as f:
            f.write(b"new frames")
        os.replace({str(queue_dir / "new")!r}, {str(wal_path)!r})
        print("replaced", flush=True)
    """)
    procs.append(p)
    wait_line(p, "replaced")
    assert p.wait(10) == 0
    new = ino(wal_path)
    assert new != old
    syncs.clear()
    assert group_sync.durable(time.monotonic_ns()) is True
    assert syncs.data == [new]
    assert syncs.full == [ino(queue_dir)]  # the new name is made durable too
    if F._KEEP_WAL_OPEN:
        assert f"{wal_path} (deleted)" not in fd_targets()  # the old one is closed (this test's: not another's)
    syncs.clear()
    assert group_sync.durable(time.monotonic_ns()) is True
    assert syncs.data == [new]
    assert syncs.full == []


def test_a_wal_removed_and_made_again_is_the_one_synced(group_sync: F.GroupSync, queue_dir: Path,
                                                        syncs: Syncs) -> None:
    wal_path = queue_dir / "queue.db-wal"
    group_sync.durable(time.monotonic_ns())
    wal_path.unlink()  # what SQLite's last close does after its checkpoint
    syncs.clear()
    assert group_sync.durable(time.monotonic_ns()) is True  # nothing to sync, still recorded
    assert syncs.data == [] and syncs.full == []
    if F._KEEP_WAL_OPEN:
        assert group_sync._wal == -1
    wal_path.write_bytes(b"a new connection's frames")  # the next connection's WAL
    syncs.clear()
    assert group_sync.durable(time.monotonic_ns()) is True
    assert syncs.data == [ino(wal_path)]
    assert syncs.full == [ino(queue_dir)]


def test_a_renamed_folder_leads_to_the_file_now_at_the_path(group_sync: F.GroupSync, queue_dir: Path,
                                                            syncs: Syncs) -> None:
    # delete_queue renames the folder; a queue of the same name may then be made again
    group_sync.durable(time.monotonic_ns())
    queue_dir.rename(queue_dir.with_name("dead"))
    syncs.clear()
    assert group_sync.durable(time.monotonic_ns()) is True
    assert syncs.data == [] and syncs.full == []
    queue_dir.mkdir()
    (queue_dir / "queue.db-wal").write_bytes(b"another queue")
    assert group_sync.durable(time.monotonic_ns()) is True
    assert syncs.data == [ino(queue_dir / "queue.db-wal")]
    assert syncs.full == [ino(queue_dir)]


@keeps_open
def test_a_descriptor_number_taken_by_another_file_is_not_synced_nor_closed(
        group_sync: F.GroupSync, queue_dir: Path, tmp_path: Path, syncs: Syncs) -> None:
    group_sync.durable(time.monotonic_ns())
    number = group_sync._wal
    assert number >= 0
    os.close(number)  # someone else's bug closes it, then the number is reused
    other = tmp_path / "other"
    other.write_bytes(b"not a WAL")
    fd = os.open(other, os.O_RDONLY)
    try:
        assert fd == number
        syncs.clear()
        assert group_sync.durable(time.monotonic_ns()) is True
        assert syncs.data == [ino(queue_dir / "queue.db-wal")]
        os.fstat(fd)  # still open: not closed by GroupSync
        assert os.readlink(f"/proc/self/fd/{fd}") == str(other)
    finally:
        os.close(fd)


@keeps_open
def test_close_closes_the_wal(queue_dir: Path) -> None:
    gs = F.GroupSync(str(queue_dir / "sync"), str(queue_dir / "queue.db-wal"), str(queue_dir))
    gs.durable(time.monotonic_ns())
    assert str(queue_dir / "queue.db-wal") in fd_targets()
    gs.close()
    assert str(queue_dir / "queue.db-wal") not in fd_targets()
    gs.close()  # twice is fine


def test_without_proc_the_wal_is_opened_for_each_sync(group_sync: F.GroupSync, queue_dir: Path,
                                                      syncs: Syncs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(F, "_KEEP_WAL_OPEN", False)  # macOS, or Linux without /proc
    wal_path = queue_dir / "queue.db-wal"
    old = ino(wal_path)
    assert group_sync.durable(time.monotonic_ns()) is True
    assert group_sync.durable(time.monotonic_ns()) is True
    assert syncs.data == [old, old]
    assert syncs.full == [ino(queue_dir)]
    assert str(wal_path) not in fd_targets()
    (queue_dir / "new").write_bytes(b"new")
    os.replace(queue_dir / "new", wal_path)
    syncs.clear()
    assert group_sync.durable(time.monotonic_ns()) is True
    assert syncs.data == [ino(wal_path)]
    assert syncs.full == [ino(queue_dir)]


def test_sqlite_keeps_the_wal_while_another_process_has_it_open(
        tmp_path: Path, syncs: Syncs, procs: list[subprocess.Popen[str]]) -> None:
    """SQLite's WAL lifecycle, as GroupSync's comment relies on it: a close that is not the
    last connection's leaves the WAL (same file); the last one removes it, and the next
    connection makes a new one, which the next sync reaches."""
    db = tmp_path / "queue.db"
    wal_path = tmp_path / "queue.db-wal"
    holder = run_py(f"""
        import sqlite3, sys
        conn = sqlite3.connect({str(db)!r}, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
        print("open", flush=True)
        sys.stdin.readline()
        conn.close()
        print("closed", flush=True)
    """, stdin=subprocess.PIPE)
    procs.append(holder)
    wait_line(holder, "open")
    gs = F.GroupSync(str(tmp_path / "sync"), str(wal_path), str(tmp_path))
    try:
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("INSERT INTO t VALUES (2)")
        first = ino(wal_path)
        assert gs.durable(time.monotonic_ns()) is True
        assert syncs.data == [first]
        conn.close()  # not the last connection: the WAL stays
        assert ino(wal_path) == first
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        wait_line(holder, "closed")  # the last connection: checkpointed and removed
        assert holder.wait(10) == 0
        assert not wal_path.exists()
        conn = sqlite3.connect(db, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("INSERT INTO t VALUES (3)")
            second = ino(wal_path)
            syncs.clear()
            assert gs.durable(time.monotonic_ns()) is True
            assert syncs.data == [second]
            assert syncs.full == [ino(tmp_path)]
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (3,)
        finally:
            conn.close()
    finally:
        gs.close()


def test_a_sync_covers_commits_of_other_processes_that_finished_before_it(
        group_sync: F.GroupSync, queue_dir: Path, procs: list[subprocess.Popen[str]]) -> None:
    committed = time.monotonic_ns()  # CLOCK_MONOTONIC is system-wide
    p = run_py(f"""
        import time
        from winipc._backends import queue_files as F
        gs = F.GroupSync({str(queue_dir / "sync")!r}, {str(queue_dir / "queue.db-wal")!r}, {str(queue_dir)!r})
        print("synced", gs.durable(time.monotonic_ns()), flush=True)
        gs.close()
    """)
    procs.append(p)
    assert wait_line(p, "synced") == "synced True"
    assert p.wait(10) == 0
    assert group_sync.durable(committed) is False  # the other process's sync started later
    assert group_sync.durable(time.monotonic_ns()) is True
