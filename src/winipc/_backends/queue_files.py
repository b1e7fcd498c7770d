"""OS calls of the local queue store (winipc.msmq): locks, group commit, doorbells.

* :class:`FileLock` — an ``flock`` on a file of the queue's folder: one per open
  description, so two handles in one process exclude each other like two processes, and
  the kernel drops it when its holder dies.
* :class:`GroupSync` — group commit: after a commit whose messages must be on disk, make
  the queue's WAL durable with ``fdatasync``, unless another process's sync that started
  after this commit already did. One sync covers every commit that finished before it
  started, so concurrent producers share fsyncs.
* :class:`Doorbell` — how a blocked receiver is woken without polling: it binds a
  datagram socket (an abstract address on Linux) and registers the address as a file in
  the queue's ``wait`` folder; a sender rings every registered doorbell after its commit.
  A receiver registers before it looks at the queue, so a send it misses rings it.
* :class:`OwnerToken` — a file a process holds an ``flock`` on while it has transactions
  open; anyone can tell whether the owner of a transaction is alive by trying the lock.
* Shared queues: :func:`ensure_files` (the owner remakes files grantees cannot create),
  :func:`write_drop_file` / :func:`read_drop_file` (a send-only sender's file in
  ``incoming/``, written atomically; read without following links, blocking on FIFOs or
  reading past a cap) and :func:`remove_entry`.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import os
import secrets
import socket
import stat
import struct
import sys
import threading
import time

from winipc import errors as W
from winipc._backends.errors import translate

LINUX = sys.platform.startswith("linux")


def _open(path: str, flags: int, mode: int = 0o600) -> int:
    try:
        return os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    except OSError as exc:
        raise translate(exc, "open", path) from None


class FileLock:
    """An exclusive (or shared) ``flock`` on ``path``, created 0600 when missing."""

    def __init__(self, path: str, *, create: bool = True, mode: int = 0o600) -> None:
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        try:
            self.fd = os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
        except PermissionError:
            self.fd = _open(path, os.O_RDONLY)
        self.path = path
        self._thread = threading.Lock()

    def acquire(self) -> None:
        self._thread.acquire()
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread.release()
            raise

    def release(self) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            self._thread.release()

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def try_shared(self) -> bool:
        """A shared lock without waiting (held until close); False when an exclusive is held."""
        try:
            fcntl.flock(self.fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def try_exclusive(self) -> bool:
        """An exclusive lock without waiting (held until close); False when any is held."""
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


#: the WAL can be kept open between syncs: Linux with /proc mounted (see GroupSync)
_KEEP_WAL_OPEN = LINUX and os.path.isdir("/proc/self/fd")


class GroupSync:
    """Group commit of a SQLite WAL: :meth:`durable` after a commit that finished at ``t``.

    The sync file holds, at offset 0, the CLOCK_MONOTONIC time (ns, system-wide) at which
    the last completed ``fdatasync`` started; it is read and written only under the sync
    file's flock, and written after the sync completed, so a value there always means
    "everything committed before this time is on disk".

    Which file is synced: the one named ``wal_path`` when the sync starts, as if it were
    opened by path each time. On Linux the WAL stays open between syncs (closed by
    :meth:`close`) and is not ``stat``ed: on kernels with multigrain timestamps (6.13+), a
    query of a file's ctime makes its next change take a fine-grained timestamp, which
    dirties the inode, so the next ``fdatasync`` also commits the inode (measured: about
    +60 µs per sync on ext4, 6.18). Instead, before each sync, the kernel's name of the
    open descriptor (``readlink`` of ``/proc/self/fd/N``: a dentry walk, no getattr on the
    file; about 5 µs) must equal the name it had when it was opened. It differs when the
    WAL was unlinked or replaced (" (deleted)" is appended), when a folder on its path was
    renamed (delete_queue) or when the descriptor number no longer holds it; then the WAL
    is opened again by path, synced, and the folder is synced too (a new WAL's name must
    be durable). A replacement after the check does not matter: the commits this sync
    covers finished before it started, so they are in the file checked, or, if SQLite
    removed that file since, checkpointed into the database file, which SQLite syncs
    before it removes a WAL (synchronous=NORMAL syncs at checkpoints).

    Why the descriptor stays valid in practice (so reopening is rare): SQLite removes a
    WAL only when a closing connection gets an EXCLUSIVE lock on the database file, i.e.
    when it is the last connection, and a connection in WAL mode holds a SHARED lock from
    its first read until it closes; winipc's store keeps its connection open as long as
    this GroupSync (``_Store.close`` closes both), and commits on it before each
    :meth:`durable`. Checkpoints rewrite and truncate the WAL in place (same inode). A
    shared queue's owner remakes -wal/-shm (:func:`ensure_files`) only after its last
    connection removed them, when no store of that queue is open. SQLite takes no POSIX
    lock on the WAL, so opening and closing it here releases none of SQLite's locks.
    Elsewhere (macOS, no /proc) the WAL is opened by path for each sync and ``fstat``ed
    to tell a new WAL.
    """

    def __init__(self, sync_path: str, wal_path: str, dir_path: str, mode: int = 0o600) -> None:
        self.lock = FileLock(sync_path, mode=mode)
        self.wal_path = wal_path
        self.dir_path = dir_path
        self._dir_synced_ino = -1  # without _KEEP_WAL_OPEN: the WAL whose name was made durable
        self._wal = -1  # with _KEEP_WAL_OPEN: the WAL, open since a sync
        self._wal_link = ""  # and its name (readlink of /proc/self/fd/N) when opened

    def durable(self, committed_ns: int) -> bool:
        """Make commits that finished by ``committed_ns`` durable; True when this call synced.

        ``committed_ns``: CLOCK_MONOTONIC (``time.monotonic_ns()``) taken after the commit.
        Raises MessageStorageFailed when the sync fails (the commit may not be on disk).
        """
        fd = self.lock.fd
        with self.lock:
            raw = os.pread(fd, 8, 0)
            last = struct.unpack("<q", raw)[0] if len(raw) == 8 else 0
            if last > committed_ns:
                return False
            start = time.monotonic_ns()
            try:
                if _KEEP_WAL_OPEN:
                    self._sync_open_wal()
                else:
                    self._sync_wal_by_path()
            except OSError as exc:
                raise W.MessageStorageFailed(f"fdatasync of {self.wal_path} failed: {exc.strerror}") from None
            try:
                os.pwrite(fd, struct.pack("<q", start), 0)
            except OSError:
                pass  # a reader-only handle: the next syncer syncs again, which is only slower
            return True

    def _sync_open_wal(self) -> None:
        wal = self._wal
        if wal >= 0:
            try:
                link = os.readlink(f"/proc/self/fd/{wal}")
            except OSError:
                link = None  # the descriptor was closed behind our back
            if link != self._wal_link:
                self._wal = -1
                if link is not None and os.path.basename(link.removesuffix(" (deleted)")) == (
                        os.path.basename(self.wal_path)):
                    os.close(wal)  # ours, replaced or moved (else the number is someone else's now)
        if self._wal < 0:
            try:
                wal = os.open(self.wal_path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return  # checkpointed and removed by its last user: the database file was synced
            try:
                try:
                    link = os.readlink(f"/proc/self/fd/{wal}")
                except OSError:
                    link = ""  # cannot be checked later: opened by path for each sync
                os.fdatasync(wal)
                self._sync_dir()  # it may be a new file: its name must be durable too
            except OSError:
                os.close(wal)
                raise
            if link:
                self._wal, self._wal_link = wal, link
            else:
                os.close(wal)
            return
        try:
            os.fdatasync(self._wal)
        except OSError:
            os.close(self._wal)  # opened again next time (a write error is reported once per descriptor)
            self._wal = -1
            raise

    def _sync_wal_by_path(self) -> None:
        try:
            wal = os.open(self.wal_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # checkpointed and removed by its last user: the database file was synced
        try:
            os.fdatasync(wal)
            ino = os.fstat(wal).st_ino
            if ino != self._dir_synced_ino:  # a new WAL file: its name must be durable too
                self._sync_dir()
                self._dir_synced_ino = ino
        finally:
            os.close(wal)

    def _sync_dir(self) -> None:
        dfd = os.open(self.dir_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def close(self) -> None:
        """Close the sync file and the WAL (waits for a sync of another thread to finish)."""
        with self.lock._thread:
            if self._wal >= 0:
                os.close(self._wal)
                self._wal = -1
        self.lock.close()


class Doorbell:
    """A receiver's wake-up socket, registered in ``wait_dir`` while the doorbell is open."""

    def __init__(self, wait_dir: str) -> None:
        self.wait_dir = wait_dir
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        name = secrets.token_hex(12)
        if LINUX:
            self.sock.bind(b"\0winipc.mq." + name.encode())
        else:  # pragma: no cover - macOS: a socket file in the folder itself
            self.sock.bind(os.path.join(wait_dir, name + ".sock"))
        self.entry = os.path.join(wait_dir, name)
        try:
            fd = os.open(self.entry, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            os.close(fd)
        except OSError as exc:
            self.sock.close()
            raise translate(exc, "open", self.entry) from None

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> None:
        try:
            while True:
                self.sock.recv(16)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            pass

    def close(self) -> None:
        try:
            os.unlink(self.entry)
        except OSError:
            pass
        if not LINUX:  # pragma: no cover
            try:
                os.unlink(self.entry + ".sock")
            except OSError:
                pass
        self.sock.close()


_ring_lock = threading.Lock()
_ring_sock: socket.socket | None = None


def ring(wait_dir: str) -> int:
    """Wake every receiver registered in ``wait_dir``; returns how many were rung."""
    global _ring_sock
    try:
        names = os.listdir(wait_dir)
    except OSError:
        return 0
    if not names:
        return 0
    with _ring_lock:
        if _ring_sock is None or _ring_sock.fileno() < 0:
            _ring_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            _ring_sock.setblocking(False)
        s = _ring_sock
        rung = 0
        for name in names:
            if name.endswith(".sock"):
                continue
            addr: bytes | str = (
                b"\0winipc.mq." + name.encode() if LINUX else os.path.join(wait_dir, name + ".sock")
            )
            try:
                s.sendto(b"!", addr)
                rung += 1
            except (BlockingIOError, InterruptedError):
                rung += 1  # its buffer is full of rings already: it will look
            except OSError as exc:
                if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                    try:  # its receiver died without unregistering
                        os.unlink(os.path.join(wait_dir, name))
                    except OSError:
                        pass
        return rung


def _after_fork() -> None:
    global _ring_sock, _ring_lock
    _ring_lock = threading.Lock()
    _ring_sock = None


os.register_at_fork(after_in_child=_after_fork)


def _close_ring_socket() -> None:
    global _ring_sock
    if _ring_sock is not None:
        _ring_sock.close()
        _ring_sock = None


atexit.register(_close_ring_socket)


class OwnerToken:
    """This process's liveness token in ``folder``: a file it holds an exclusive flock on."""

    def __init__(self, folder: str) -> None:
        self.name = f"{os.getpid()}-{secrets.token_hex(6)}"
        self.path = os.path.join(folder, self.name)
        self.pid = os.getpid()
        # made under a hidden name and locked before it is renamed into view: a token
        # anyone can see is always locked while its process lives (a sweeper that saw an
        # unlocked one would take its owner for dead and roll back its transactions)
        tmp = os.path.join(folder, f".new-{self.name}")
        self.fd = _open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.fchmod(self.fd, 0o644)  # others must be able to open it to test the lock
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            os.rename(tmp, self.path)
        except OSError as exc:
            os.close(self.fd)
            self.fd = -1
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise translate(exc, "flock", self.path) from None

    def close(self) -> None:
        if self.fd >= 0:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            os.close(self.fd)
            self.fd = -1


def token_alive(folder: str, name: str) -> bool:
    """True while the process holding token ``name`` in ``folder`` is alive."""
    if "/" in name or (name.startswith(".") and not name.startswith(".new-")):
        return False
    path = os.path.join(folder, name)
    if name.startswith(".new-"):  # a token being made: unlocked for a moment, by design
        try:
            if time.time() - os.lstat(path).st_mtime < 60:
                return True
        except OSError:
            return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: assume alive (never roll back a live transaction)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        # the holder is gone: remove its token (best effort; the owner's folder may refuse)
        try:
            os.unlink(path)
        except OSError:
            pass
        return False
    finally:
        os.close(fd)


# ------------------------------------------------------- shared queues: files and drop files


def ensure_files(folder: str, names: list[str], mode: int, owner: tuple[int, int] | None) -> None:
    """Create the files ``names`` of ``folder`` that are missing, empty, with ``mode``.

    A shared queue's folder is not writable by its grantees, so files they need (SQLite's
    ``-wal`` and ``-shm`` after the last connection removed them) are made by the owner
    (or root). The folder's default ACL gives them the grantees' entries; ``mode``'s group
    bits must keep the mask (0660). ``owner`` (uid, gid): when we are root, the new file
    is given to the queue's owner, as SQLite does with the files it makes as root.
    """
    for name in names:
        path = os.path.join(folder, name)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        except FileExistsError:
            continue
        except OSError as exc:
            raise translate(exc, "create", path) from None
        try:
            if owner is not None and os.geteuid() == 0 and owner[0] != 0:
                os.fchown(fd, owner[0], owner[1])
        except OSError as exc:
            raise translate(exc, "chown", path) from None
        finally:
            os.close(fd)


def write_drop_file(folder: str, name: str, data: bytes, *, sync: bool, mode: int = 0o640) -> None:
    """Write ``data`` as ``folder/name``: under ``.tmp-<name>``, then renamed into place.

    ``sync`` (recoverable messages): the file is ``fsync``ed after the rename, so its data
    and its name are on disk before this returns (ext4, XFS and btrfs commit a new name
    with the file's fsync; the folder itself is also fsynced when we may open it, which a
    send-only sender may not). ``mode``'s group bits limit what the folder's default ACL
    grants (0640: the queue's readers may read it). Raises a translated OSError.
    """
    tmp = os.path.join(folder, ".tmp-" + name)
    final = os.path.join(folder, name)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        raise translate(exc, "create", tmp) from None
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.rename(tmp, final)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise translate(exc, "write", tmp) from None
        if sync:
            try:
                os.fsync(fd)
            except OSError as exc:
                raise W.MessageStorageFailed(f"fsync of {final} failed: {exc.strerror}") from None
            try:
                dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                dfd = -1  # a send-only sender may not read the folder: the file's fsync stands
            if dfd >= 0:
                try:
                    os.fsync(dfd)
                except OSError:
                    pass
                finally:
                    os.close(dfd)
    finally:
        os.close(fd)



class DropFile:
    """What :func:`read_drop_file` found: ``data`` and the creator's ``uid``, or a ``problem``."""

    __slots__ = ("data", "problem", "uid")

    def __init__(self, data: bytes | None, uid: int, problem: str) -> None:
        self.data = data
        self.uid = uid
        self.problem = problem


def read_drop_file(path: str, limit: int) -> DropFile:
    """Read a drop file that anyone with the send right may have put there, safely.

    Never follows a symlink, never blocks on a FIFO, refuses anything but a regular file
    with one link, and reads at most ``limit`` bytes (a larger file is refused unread).
    The creator's uid comes from the kernel (``fstat``), not from the file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return DropFile(None, -1, "gone")
        return DropFile(None, -1, f"cannot be opened ({exc.strerror})")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return DropFile(None, st.st_uid, "is not a regular file")
        if st.st_nlink != 1:
            return DropFile(None, st.st_uid, f"has {st.st_nlink} links")
        if st.st_size > limit:
            return DropFile(None, st.st_uid, f"is {st.st_size} bytes; the limit is {limit}")
        chunks = []
        got = 0
        while got <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        if got > limit:
            return DropFile(None, st.st_uid, f"grew past the limit of {limit} bytes")
        return DropFile(b"".join(chunks), st.st_uid, "")
    except OSError as exc:
        return DropFile(None, -1, f"cannot be read ({exc.strerror})")
    finally:
        os.close(fd)


def remove_entry(path: str) -> bool:
    """Remove a folder entry (file, symlink, FIFO or empty folder) without following it."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return True
    except IsADirectoryError:
        pass
    except OSError as exc:
        if exc.errno != errno.EPERM:
            return False
    try:
        os.rmdir(path)
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False


def entry_age(path: str) -> float | None:
    """Seconds since ``path`` (not followed) last changed, or None when it is gone."""
    try:
        return time.time() - os.lstat(path).st_mtime
    except OSError:
        return None
