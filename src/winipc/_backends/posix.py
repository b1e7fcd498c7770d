"""The POSIX backend: every OS call winipc makes on Linux and macOS.

Callers get winipc errors only: each function translates ``OSError`` through
:func:`winipc._backends.errors.translate`. Lock primitives use Linux open-file-description
locks (one byte per handle, released by the kernel when the last descriptor of the handle
closes, also on SIGKILL); where the OS lacks them, ``flock`` stands in and handle counts
are reported as unknown.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import shutil
import socket
import stat
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from winipc import errors as W
from winipc._backends.errors import translate

HAS_OFD_LOCKS = hasattr(fcntl, "F_OFD_SETLK")
LINUX = sys.platform.startswith("linux")
_FLOCK_FMT = "hhqqi" if LINUX else "qqihh"  # struct flock layout (Linux / BSD)
_SUN_PATH_MAX = 100  # conservative: 108 on Linux, 104 on macOS, minus the NUL


def uid() -> int:
    return os.geteuid()


def pid() -> int:
    return os.getpid()


def user_name(user_id: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(user_id).pw_name
    except KeyError:
        return str(user_id)


def lookup_user(name: str) -> int:
    import pwd

    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        raise W.InvalidParameter(f"no such user: {name!r}") from None


def lookup_group(name: str) -> int:
    import grp

    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise W.InvalidParameter(f"no such group: {name!r}") from None


def groups_of(user_id: int, gid: int) -> frozenset[int]:
    """Primary and supplementary groups of a user (from the group database)."""
    import pwd

    try:
        name = pwd.getpwuid(user_id).pw_name
        return frozenset(os.getgrouplist(name, gid)) | {gid}
    except (KeyError, OSError):
        return frozenset({gid})


def pid_alive(p: int) -> bool:
    try:
        os.kill(p, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------- directories


def _mode_str(mode: int) -> str:
    return oct(stat.S_IMODE(mode))


def ensure_private_dir(path: str) -> None:
    """Create ``path`` 0700 if missing; verify it is ours, 0700, and not a symlink.

    Raises:
        AccessDenied: the directory exists but is a symlink, not a directory, owned by
            another user, or open to group or others.
    """
    try:
        os.mkdir(path, 0o700)
        os.chmod(path, 0o700)  # whatever the umask
    except FileExistsError:
        pass
    except OSError as exc:
        raise translate(exc, "mkdir", path) from None
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise translate(exc, "stat", path) from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise W.AccessDenied(f"namespace root {path} is not a plain directory (symlink or file)")
    if st.st_uid != uid():
        raise W.AccessDenied(f"namespace root {path} is owned by uid {st.st_uid}, not by uid {uid()}")
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise W.AccessDenied(
            f"namespace root {path} has mode {_mode_str(st.st_mode)}; it must be 0700"
        )


def verify_shared_root(path: str, *, create: bool) -> None:
    """Verify a machine-wide root: a real directory that no other user can tamper with.

    Accepted: owned by us (any mode); or owned by root and, if writable by others, sticky.
    ``create`` makes it (1777 when we are root, else 0700 for our own use) when missing.

    Raises:
        AccessDenied: a symlink, not a directory, or writable by others without the
            sticky bit, or owned by another non-root user.
    """
    if create:
        try:
            os.mkdir(path, 0o700)
            os.chmod(path, 0o1777 if uid() == 0 else 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise translate(exc, "mkdir", path) from None
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise translate(exc, "stat", path) from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise W.AccessDenied(f"machine-wide root {path} is not a plain directory (symlink or file)")
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid == uid():
        return
    if st.st_uid != 0:
        raise W.AccessDenied(
            f"machine-wide root {path} is owned by uid {st.st_uid}; it must be ours or root's "
            "(create it as root: mkdir -m 1777)"
        )
    if mode & 0o022 and not mode & stat.S_ISVTX:
        raise W.AccessDenied(
            f"machine-wide root {path} has mode {_mode_str(mode)}: writable by others "
            "without the sticky bit"
        )


def open_dir(path: str) -> int:
    """Open a directory without following a symlink at its last component."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise W.AccessDenied(f"{path} is not a directory (a symlink or file squats there)") from None
        raise translate(exc, "open", path) from None


def make_temp_dir(root: str, mode: int) -> str:
    path = os.path.join(root, f".tmp.{secrets.token_hex(8)}")
    try:
        os.mkdir(path, 0o700)
        os.chmod(path, mode)
    except OSError as exc:
        raise translate(exc, "mkdir", path) from None
    return path


def publish_dir(tmp: str, final: str) -> bool:
    """Atomically move a fully built object directory to its name.

    Returns:
        False when something already occupies the name (nothing is replaced but an empty
        directory we own).
    """
    try:
        os.rename(tmp, final)
        return True
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.EPERM, errno.EACCES):
            return False
        raise translate(exc, "rename", final) from None


def retire_dir(root: str, path: str) -> bool:
    """Move a dead object's directory out of the namespace and delete it.

    Returns:
        False when we may not (another user's object in a sticky root).
    """
    grave = os.path.join(root, f".dead.{secrets.token_hex(8)}")
    try:
        os.rename(path, grave)
    except FileNotFoundError:
        return True
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            return False
        raise translate(exc, "rename", path) from None
    shutil.rmtree(grave, ignore_errors=True)
    return True


SHM_DIR = "/dev/shm"


def shm_dir() -> str | None:
    """A memory-backed directory for mapping data (tmpfs /dev/shm), or None."""
    try:
        st = os.lstat(SHM_DIR)
    except OSError:
        return None
    if stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX and os.access(SHM_DIR, os.W_OK):
        return SHM_DIR
    return None


def unlink_owned(path: str, owner: int) -> None:
    """Unlink ``path`` if it is a regular file (not a symlink) owned by ``owner``."""
    try:
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode) and st.st_uid == owner:
            os.unlink(path)
    except OSError:
        pass


def mtime_age(path: str) -> float | None:
    """Seconds since ``path`` last changed, or None if it is gone."""
    import time

    try:
        return time.time() - os.lstat(path).st_mtime
    except OSError:
        return None


def remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def write_new_file(dir_path: str, name: str, data: bytes, mode: int) -> int:
    """Create ``dir_path/name`` exclusively with ``mode`` (umask ignored); return its fd."""
    path = os.path.join(dir_path, name)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, mode)
        os.write(fd, data)
    except OSError as exc:
        raise translate(exc, "create", path) from None
    return fd


def open_file_readwrite(path: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise W.AccessDenied(f"{path} is a symlink; refused") from None
        raise translate(exc, "open", path) from None


def open_file_readonly(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise W.AccessDenied(f"{path} is a symlink; refused") from None
        raise translate(exc, "open", path) from None


@dataclass(frozen=True)
class FileId:
    dev: int
    ino: int
    uid: int
    mode: int
    nlink: int


def fstat_id(fd: int) -> FileId:
    try:
        st = os.fstat(fd)
    except OSError as exc:
        raise translate(exc, "stat") from None
    return FileId(st.st_dev, st.st_ino, st.st_uid, st.st_mode, st.st_nlink)


def lstat_id(path: str) -> FileId | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise translate(exc, "stat", path) from None
    return FileId(st.st_dev, st.st_ino, st.st_uid, st.st_mode, st.st_nlink)


def read_fd(fd: int, limit: int) -> bytes:
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise W.InvalidData(f"object record is {size} bytes; the limit is {limit}")
        return os.pread(fd, size, 0)
    except OSError as exc:
        raise translate(exc, "read") from None


def list_dir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise translate(exc, "list", path) from None


def close_fd(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


# --------------------------------------------------------------------------- locks


def _lock(fd: int, cmd: int, typ: int, start: int, length: int = 1) -> tuple[int, int, int, int]:
    if LINUX:
        arg = struct.pack(_FLOCK_FMT, typ, os.SEEK_SET, start, length, 0)
        t, _wh, s, ln, p = struct.unpack(_FLOCK_FMT, fcntl.fcntl(fd, cmd, arg))
    else:  # pragma: no cover - BSD layout
        arg = struct.pack(_FLOCK_FMT, start, length, 0, typ, os.SEEK_SET)
        s, ln, p, t, _wh = struct.unpack(_FLOCK_FMT, fcntl.fcntl(fd, cmd, arg))
    return t, s, ln, p


def guard(dir_fd: int, *, exclusive: bool = True) -> None:
    """Take the object's guard (``flock`` on its directory); blocks until granted."""
    while True:
        try:
            fcntl.flock(dir_fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            return
        except InterruptedError:
            continue
        except OSError as exc:
            raise translate(exc, "lock") from None


def unguard(dir_fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(dir_fd, fcntl.LOCK_UN)


SLOT_BASE = 1
SLOT_LIMIT = 1 << 20


def take_slot(fd: int) -> int:
    """Write-lock the first free byte of a holders file; return its offset.

    The lock lives as long as the open file description (fork and fd passing share it).
    Without OFD locks a shared ``flock`` stands in and the offset is 0.
    """
    if not HAS_OFD_LOCKS:  # pragma: no cover - macOS
        fcntl.flock(fd, fcntl.LOCK_SH)
        return 0
    slot = SLOT_BASE
    while slot < SLOT_LIMIT:
        try:
            _lock(fd, fcntl.F_OFD_SETLK, fcntl.F_WRLCK, slot)
            return slot
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise translate(exc, "lock") from None
        slot += 1
    raise W.InvalidParameter(f"too many handles to one object (limit {SLOT_LIMIT})")


def drop_slot(fd: int, slot: int) -> None:
    if not HAS_OFD_LOCKS:  # pragma: no cover - macOS
        fcntl.flock(fd, fcntl.LOCK_UN)
        return
    with contextlib.suppress(OSError):
        _lock(fd, fcntl.F_OFD_SETLK, fcntl.F_UNLCK, slot)


def _first_holder(fd: int, start: int) -> int | None:
    t, s, _ln, _p = _lock(fd, fcntl.F_OFD_GETLK, fcntl.F_WRLCK, start, 0)
    return None if t == fcntl.F_UNLCK else s


def hold_shared(fd: int) -> None:
    """Read-lock byte 0 of ``fd``'s file for as long as the descriptor lives.

    Memory-backed data files carry such a lock from every process that has them open,
    so a file nobody holds is known to be an orphan (see ``file_is_held``).
    """
    try:
        if HAS_OFD_LOCKS:
            _lock(fd, fcntl.F_OFD_SETLK, fcntl.F_RDLCK, 0)
        else:  # pragma: no cover - macOS
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        raise translate(exc, "lock") from None


def file_is_held(path: str) -> bool:
    """True when some process holds ``path`` with :func:`hold_shared` (or it cannot be told)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return True
    try:
        if HAS_OFD_LOCKS:
            return _lock(fd, fcntl.F_OFD_GETLK, fcntl.F_WRLCK, 0)[0] != fcntl.F_UNLCK
        try:  # pragma: no cover - macOS
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except OSError:  # pragma: no cover
            return True
    finally:
        os.close(fd)


def count_holders(fd: int) -> int | None:
    """How many handles (other than ``fd``'s own) hold the object; None if unknowable."""
    if not HAS_OFD_LOCKS:  # pragma: no cover - macOS
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return 0
    n, pos = 0, SLOT_BASE
    try:
        while True:
            found = _first_holder(fd, pos)
            if found is None:
                return n
            n += 1
            pos = found + 1
    except OSError as exc:
        raise translate(exc, "lock") from None


def has_holders(fd: int) -> bool:
    if not HAS_OFD_LOCKS:  # pragma: no cover - macOS
        return count_holders(fd) != 0
    try:
        return _first_holder(fd, SLOT_BASE) is not None
    except OSError as exc:
        raise translate(exc, "lock") from None


# --------------------------------------------------------------------------- sockets


@contextlib.contextmanager
def _short_path(path: str) -> Iterator[str]:
    """A path to ``path`` short enough for sun_path (via /proc/self/fd on Linux)."""
    if len(os.fsencode(path)) <= _SUN_PATH_MAX or not LINUX:
        yield path
        return
    dfd = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{dfd}/{os.path.basename(path)}"
    finally:
        os.close(dfd)


def listen_unix(
    dir_path: str, name: str, mode: int, backlog: int = 0, kind: int = socket.SOCK_STREAM
) -> socket.socket:
    """Bind a stream (or ``kind``: SOCK_SEQPACKET) socket at ``dir_path/name`` and listen.

    The socket is bound under a temporary name, given its mode, then renamed into place,
    so it never exists at its name with the umask's mode.
    """
    sock = socket.socket(socket.AF_UNIX, kind)
    tmp = os.path.join(dir_path, f".b.{secrets.token_hex(6)}")
    final = os.path.join(dir_path, name)
    try:
        with _short_path(tmp) as p:
            sock.bind(p)
        os.chmod(tmp, mode)
        sock.listen(backlog)
        os.rename(tmp, final)
    except OSError as exc:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise translate(exc, "listen", final) from None
    return sock


def connect_unix(
    path: str, kind: int = socket.SOCK_STREAM, sock: socket.socket | None = None
) -> socket.socket:
    """Connect without waiting for room in the listener's queue.

    ``sock``: an unconnected socket to use (bound already, say); closed on failure.

    Raises:
        PipeBusy: the listener's queue is full or it stopped listening.
        FileNotFound: nothing listens at ``path``.
        AccessDenied: the file mode refuses us.
    """
    if sock is None:
        sock = socket.socket(socket.AF_UNIX, kind)
    sock.setblocking(False)
    try:
        with _short_path(path) as p:
            sock.connect(p)
    except OSError as exc:
        sock.close()
        raise translate(exc, "connect", path) from None
    sock.setblocking(True)
    return sock


def unread_bytes(sock: socket.socket, name: str = "") -> int:
    """Bytes sent on a local stream socket that its reader has not read yet (TIOCOUTQ).

    Raises:
        WinIPCError: the query failed (translated; ``name`` goes into the message).
    """
    import fcntl
    import termios

    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except OSError as exc:
        raise translate(exc, "flush", name) from None
    return int(struct.unpack("i", raw)[0])


def unix_listener_alive(path: str) -> bool:
    """Whether a process listens on the Unix socket at ``path`` (False: refused or gone).

    A full listen queue counts as alive. A stale socket file (its process died) refuses.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        with _short_path(path) as p:
            sock.connect(p)
    except (BlockingIOError, InterruptedError):
        return True
    except OSError as exc:
        return exc.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    finally:
        sock.close()
    return True


def unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@dataclass(frozen=True)
class PeerCredentials:
    """Who is on the other end of a local connection.

    Attributes:
        pid: process id (0 if the OS does not tell).
        uid: effective user id.
        gid: effective group id.
    """

    pid: int
    uid: int
    gid: int


def peer_credentials(sock: socket.socket) -> PeerCredentials:
    try:
        if LINUX:
            raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            p, u, g = struct.unpack("3i", raw)
            return PeerCredentials(p, u, g)
        # macOS: LOCAL_PEERCRED gives uid and groups; LOCAL_PEERPID the pid
        raw = sock.getsockopt(0, 0x001, 4 + 4 + 2 + 16 * 4)  # pragma: no cover
        _ver, u, _ng, g = struct.unpack_from("IIhI", raw)  # pragma: no cover
        p = struct.unpack("i", sock.getsockopt(0, 0x002, 4))[0]  # pragma: no cover
        return PeerCredentials(p, u, g)  # pragma: no cover
    except OSError as exc:
        raise translate(exc, "getsockopt") from None


def send_fds(sock: socket.socket, data: bytes, fds: list[int]) -> None:
    try:
        socket.send_fds(sock, [data], fds)
    except OSError as exc:
        raise translate(exc, "write") from None


def recv_fds(sock: socket.socket, size: int, max_fds: int) -> tuple[bytes, list[int]]:
    try:
        data, fds, _flags, _addr = socket.recv_fds(sock, size, max_fds)
    except OSError as exc:
        raise translate(exc, "read") from None
    for fd in fds:
        os.set_inheritable(fd, False)
    return data, fds


# =========================================================================== file mappings
# Used by winipc.mapping: memory-backed files (/dev/shm, memfd), files mapped as they are,
# views (mmap), the lock byte of shared sections, and POSIX ACLs that open a mapping's data
# to the principals its SecurityAttributes allow.

import mmap  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import TypeVar  # noqa: E402

_M = TypeVar("_M", bound=mmap.mmap)
_MAP_NOT_SUPPORTED = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


def gid() -> int:
    return os.getegid()


def create_shm_file(name: str, mode: int, size: int) -> int:
    """Create ``<shm_dir>/name`` exclusively, ``mode`` (umask ignored), ``size`` bytes of zeros.

    Raises:
        NotSupported: there is no usable /dev/shm.
        AlreadyExists: the name is taken (names are random; someone is squatting).
    """
    shm = shm_dir()
    if shm is None:
        raise W.NotSupported(f"{SHM_DIR} is missing or not a sticky writable directory")
    path = os.path.join(shm, name)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise translate(exc, "create", path) from None
    try:
        os.fchmod(fd, mode)
        os.ftruncate(fd, size)
    except OSError as exc:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise translate(exc, "truncate", path) from None
    return fd


def open_shm_file(name: str, owner: int, writable: bool) -> int:
    """Open ``<shm_dir>/name``, a regular file (not a symlink) that ``owner`` owns.

    Raises:
        FileNotFound: it is gone.
        AccessDenied: its mode refuses us, or it is a symlink or someone else's file.
    """
    shm = shm_dir() or SHM_DIR
    path = os.path.join(shm, name)
    flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise W.AccessDenied(f"{path} is a symlink; refused") from None
        raise translate(exc, "open", path) from None
    try:
        st = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        raise translate(exc, "stat", path) from None
    if not stat.S_ISREG(st.st_mode) or st.st_uid != owner:
        os.close(fd)
        raise W.AccessDenied(f"{path} is not a regular file of uid {owner}; refused")
    return fd


def memfd(size: int, label: str) -> int:
    """An anonymous memory file of ``size`` zero bytes (memfd, sealed against resizing).

    Where memfd_create is missing, an unlinked file in /dev/shm or the temp directory.
    """
    try:
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create(label, os.MFD_CLOEXEC | getattr(os, "MFD_ALLOW_SEALING", 0))
            try:
                os.ftruncate(fd, size)
                seals = getattr(fcntl, "F_SEAL_SHRINK", 0) | getattr(fcntl, "F_SEAL_GROW", 0)
                if seals and hasattr(fcntl, "F_ADD_SEALS"):
                    with contextlib.suppress(OSError):
                        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            except OSError:
                os.close(fd)
                raise
            return fd
        import tempfile  # pragma: no cover - macOS

        fd, path = tempfile.mkstemp(prefix=".winipc-anon.", dir=shm_dir())  # pragma: no cover
        os.unlink(path)  # pragma: no cover
        os.ftruncate(fd, size)  # pragma: no cover
        return fd  # pragma: no cover
    except OSError as exc:
        raise translate(exc, "create", "anonymous mapping") from None


def open_backing_file(path: str, writable: bool) -> tuple[int, FileId]:
    """Open a regular file to map it; returns (fd, its id).

    Raises:
        FileNotFound, AccessDenied: as open(2) says; AccessDenied also for a non-regular file.
    """
    flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise translate(exc, "open", path) from None
    fid = fstat_id(fd)
    if not stat.S_ISREG(fid.mode):
        os.close(fd)
        raise W.AccessDenied(f"{path} is not a regular file; only regular files can be mapped")
    return fd, fid


def dup_fd(fd: int) -> int:
    try:
        return os.dup(fd)
    except OSError as exc:
        raise translate(exc, "dup") from None


def reopen_fd(fd: int, writable: bool) -> int:
    """A new open file description of ``fd``'s file (its own locks), via /proc on Linux.

    Raises:
        AccessDenied: the file's mode refuses us (the caller may keep sharing ``fd``).
        NotSupported: the OS cannot reopen a descriptor.
    """
    if not LINUX:  # pragma: no cover - macOS
        raise W.NotSupported("reopening a descriptor needs /proc/self/fd")
    flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC
    try:
        return os.open(f"/proc/self/fd/{fd}", flags)
    except OSError as exc:
        raise translate(exc, "open", f"descriptor {fd}") from None


def file_size(fd: int) -> int:
    try:
        return os.fstat(fd).st_size
    except OSError as exc:
        raise translate(exc, "stat") from None


def regular_file_size(fd: int) -> int | None:
    """The size of the regular file (or memfd) behind ``fd``; None for anything else."""
    try:
        st = os.fstat(fd)
    except OSError as exc:
        raise translate(exc, "stat") from None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def grow_file(fd: int, size: int) -> None:
    try:
        os.ftruncate(fd, size)
    except OSError as exc:
        raise translate(exc, "truncate") from None


def pwrite(fd: int, data: bytes, offset: int) -> None:
    try:
        while data:
            n = os.pwrite(fd, data, offset)
            data, offset = data[n:], offset + n
    except OSError as exc:
        raise translate(exc, "write") from None


def pread(fd: int, size: int, offset: int) -> bytes:
    try:
        return os.pread(fd, size, offset)
    except OSError as exc:
        raise translate(exc, "read") from None


def map_fd(factory: Callable[..., _M], fd: int, length: int, offset: int, access: int) -> _M:
    """``factory(fd, length, access=, offset=)``: an ``mmap.mmap`` (or subclass) over ``fd``.

    Raises:
        InvalidParameter: the range does not fit the file (it shrank) or is refused.
        AccessDenied: the descriptor's mode does not allow ``access``.
    """
    try:
        return factory(fd, length, access=access, offset=offset)
    except ValueError as exc:
        raise W.InvalidParameter(f"cannot map {length} bytes at offset {offset}: {exc}") from None
    except OSError as exc:
        raise translate(exc, "mmap") from None


def sync_map(m: mmap.mmap, offset: int, size: int) -> None:
    """msync ``size`` bytes of ``m`` from ``offset`` (page-aligned by the caller)."""
    try:
        mmap.mmap.flush(m, offset, size)  # the base method: subclasses may override flush
    except OSError as exc:
        raise translate(exc, "flush") from None


def lock_byte(fd: int, start: int, wait: bool) -> bool:
    """Write-lock one byte of ``fd``'s file (OFD lock: dropped by the kernel on death).

    Returns:
        False when ``wait`` is False and another open file description holds it.
    """
    try:
        if HAS_OFD_LOCKS:
            _lock(fd, fcntl.F_OFD_SETLKW if wait else fcntl.F_OFD_SETLK, fcntl.F_WRLCK, start)
        else:  # pragma: no cover - macOS: whole-file flock on this descriptor
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        return True
    except OSError as exc:
        if not wait and exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise translate(exc, "lock") from None


def unlock_byte(fd: int, start: int) -> None:
    with contextlib.suppress(OSError):
        if HAS_OFD_LOCKS:
            _lock(fd, fcntl.F_OFD_SETLK, fcntl.F_UNLCK, start)
        else:  # pragma: no cover - macOS
            fcntl.flock(fd, fcntl.LOCK_UN)


_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_GROUP, _ACL_MASK, _ACL_OTHER = 1, 2, 4, 8, 0x10, 0x20
_ACL_UNDEFINED = 0xFFFFFFFF


def _acl_blob(owner: int, users: dict[int, int], groups: dict[int, int], group: int, other: int) -> bytes:
    """The ``system.posix_acl_*`` xattr value (version 2) for these entries, perms 4 r 2 w 1 x.

    A mask entry (the union of the named entries' and the owning group's perms) is added
    when there are named entries, as POSIX requires.
    """
    entries = [(_ACL_USER_OBJ, owner & 7, _ACL_UNDEFINED)]
    entries += [(_ACL_USER, p & 7, u) for u, p in sorted(users.items())]
    entries.append((_ACL_GROUP_OBJ, group & 7, _ACL_UNDEFINED))
    entries += [(_ACL_GROUP, p & 7, g) for g, p in sorted(groups.items())]
    mask = 0
    for _tag, perm, _id in entries[1:]:
        mask |= perm
    if users or groups:
        entries.append((_ACL_MASK, mask, _ACL_UNDEFINED))
    entries.append((_ACL_OTHER, other & 7, _ACL_UNDEFINED))
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def _set_acl_xattr(fd: int, name: str, blob: bytes) -> bool:
    if not LINUX or not hasattr(os, "setxattr"):  # pragma: no cover - macOS
        return False
    try:
        os.setxattr(fd, name, blob)
        return True
    except OSError as exc:
        if exc.errno in _MAP_NOT_SUPPORTED:
            return False
        raise translate(exc, "setxattr") from None


def set_file_acl(fd: int, users: dict[int, int], groups: dict[int, int], other: int) -> bool:
    """Give the owner rw, each uid/gid of ``users``/``groups`` its bits (4 r, 2 w), others ``other``.

    Writes a POSIX access ACL (``system.posix_acl_access``).

    Returns:
        False when the file system or OS has no POSIX ACLs (the caller falls back to modes).
    """
    blob = _acl_blob(
        6, {u: p & 6 for u, p in users.items()}, {g: p & 6 for g, p in groups.items()}, 0, other & 6
    )
    return _set_acl_xattr(fd, "system.posix_acl_access", blob)


def set_access_acl(
    fd: int, users: dict[int, int], groups: dict[int, int], *, owner: int, group: int, other: int
) -> bool:
    """Write the access ACL (``system.posix_acl_access``) of a file or directory ``fd``.

    Args:
        fd: an open descriptor of the object (a directory opened ``O_RDONLY`` will do).
        users, groups: uid / gid -> perms (4 r, 2 w, 1 x) of named entries.
        owner, group, other: perms of the owner, the owning group and everyone else.

    The mask is the union of the named entries and ``group``; the kernel sets the mode's
    group bits to it, and keeps the sticky bit.

    Returns:
        False when the file system or OS has no POSIX ACLs. Raises AccessDenied (not ours).
    """
    return _set_acl_xattr(fd, "system.posix_acl_access", _acl_blob(owner, users, groups, group, other))


def set_default_acl(
    fd: int, users: dict[int, int], groups: dict[int, int], *, owner: int, group: int, other: int
) -> bool:
    """Write the default ACL (``system.posix_acl_default``) of directory ``fd``.

    Files created in the directory afterwards start with these entries instead of the
    umask (the new file's mode then limits the owner, the mask and others: create files
    with group bits that keep what the named entries need, e.g. 0660).

    Returns:
        False when the file system or OS has no POSIX ACLs. Raises AccessDenied.
    """
    return _set_acl_xattr(fd, "system.posix_acl_default", _acl_blob(owner, users, groups, group, other))


def get_acl(fd: int, default: bool = False) -> list[tuple[int, int, int]] | None:
    """The entries (tag, perms, id) of ``fd``'s access or default ACL, or None when it has none."""
    if not LINUX or not hasattr(os, "getxattr"):  # pragma: no cover - macOS
        return None
    name = "system.posix_acl_default" if default else "system.posix_acl_access"
    try:
        blob = os.getxattr(fd, name)
    except OSError as exc:
        if exc.errno in (*_MAP_NOT_SUPPORTED, errno.ENODATA):
            return None
        raise translate(exc, "getxattr") from None
    if len(blob) < 4 or (len(blob) - 4) % 8:
        return None
    return [struct.unpack_from("<HHI", blob, off) for off in range(4, len(blob), 8)]


def chmod_fd(fd: int, mode: int) -> None:
    try:
        os.fchmod(fd, mode)
    except OSError as exc:
        raise translate(exc, "chmod") from None


# =========================================================================== datagrams
# Used by winipc.mailslots across machines: UDP sockets, the broadcast address of each
# interface, and host name resolution.

import ipaddress  # noqa: E402

_SIOCGIFFLAGS = 0x8913
_SIOCGIFADDR = 0x8915
_SIOCGIFBRDADDR = 0x8919
_IFF_UP = 0x1
_IFF_BROADCAST = 0x2
_IFF_LOOPBACK = 0x8


def udp_socket(port: int | None = None, *, broadcast: bool = False) -> socket.socket:
    """An IPv4 UDP socket; bound to ``0.0.0.0:port`` (shared, SO_REUSEADDR) when ``port``.

    Every socket of a host bound to one port with SO_REUSEADDR receives a copy of each
    broadcast datagram; a unicast datagram goes to one of them.

    Raises:
        AccessDenied: the port is privileged or held exclusively by another program.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if broadcast:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if port is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("0.0.0.0", port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise W.AccessDenied(f"UDP port {port} is held exclusively by another program") from None
        raise translate(exc, "bind", f"udp:{port}") from None
    return sock


def broadcast_addresses() -> list[str]:
    """The IPv4 broadcast address of every up, non-loopback interface that has one."""
    if not LINUX:  # pragma: no cover - macOS: the limited broadcast address
        return ["255.255.255.255"]
    out: list[str] = []
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _index, ifname in socket.if_nameindex():
            req = struct.pack("16s16x", ifname.encode()[:15])
            try:
                flags = struct.unpack_from("H", fcntl.ioctl(probe, _SIOCGIFFLAGS, req), 16)[0]
                if not flags & _IFF_UP or flags & _IFF_LOOPBACK or not flags & _IFF_BROADCAST:
                    continue
                raw = fcntl.ioctl(probe, _SIOCGIFBRDADDR, req)
            except OSError:
                continue  # no IPv4 address on this interface
            addr = socket.inet_ntoa(raw[20:24])
            if addr != "0.0.0.0" and addr not in out:
                out.append(addr)
    finally:
        probe.close()
    return out


def local_ipv4_addresses() -> set[str]:
    """The IPv4 addresses of this host's interfaces (loopback included)."""
    out = {"127.0.0.1"}
    if not LINUX:  # pragma: no cover
        return out
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _index, ifname in socket.if_nameindex():
            req = struct.pack("16s16x", ifname.encode()[:15])
            try:
                raw = fcntl.ioctl(probe, _SIOCGIFADDR, req)
            except OSError:
                continue
            out.add(socket.inet_ntoa(raw[20:24]))
    finally:
        probe.close()
    return out


def resolve_ipv4(host: str) -> str | None:
    """The IPv4 address of ``host`` (a name or a dotted quad), or None if it does not resolve."""
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_DGRAM)
    except (OSError, UnicodeError):
        return None
    return str(infos[0][4][0]) if infos else None


_host: str | None = None


def _forget_host() -> None:
    global _host
    _host = None


os.register_at_fork(after_in_child=_forget_host)


def host_name() -> str:
    """This host's name: ``WINIPC_HOSTNAME`` when set (tests give each netns host one), else the OS's.

    Read once per process (a forked child reads it again): a send stamps it on every
    message, and the environment lookup and gethostname() cost more than the rest of a send."""
    global _host
    h = _host
    if h is None:
        h = _host = os.environ.get("WINIPC_HOSTNAME") or socket.gethostname()
    return h
