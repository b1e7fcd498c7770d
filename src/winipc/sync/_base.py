"""What every synchronization object shares: naming, create-or-open, access, transfer."""

from __future__ import annotations

import os
import secrets
from typing import Any, ClassVar, TypeVar

from winipc import errors as W
from winipc._backends import os_backend as B
from winipc._backends import posix_sync as S
from winipc._core import namespace
from winipc._core.handles import Handle
from winipc._core.names import ObjectName, parse
from winipc._core.security import Access, SecurityAttributes
from winipc.sync import _state
from winipc.sync._state import State, StateFile

STATE = "state"

# access rights (winnt.h)
DELETE = 0x00010000
READ_CONTROL = 0x00020000
SYNCHRONIZE = 0x00100000
STANDARD_RIGHTS_REQUIRED = 0x000F0000
MUTEX_MODIFY_STATE = 0x0001
EVENT_MODIFY_STATE = 0x0002
SEMAPHORE_MODIFY_STATE = 0x0002
TIMER_QUERY_STATE = 0x0001
TIMER_MODIFY_STATE = 0x0002
MUTEX_ALL_ACCESS = STANDARD_RIGHTS_REQUIRED | SYNCHRONIZE | 0x1
EVENT_ALL_ACCESS = STANDARD_RIGHTS_REQUIRED | SYNCHRONIZE | 0x3
SEMAPHORE_ALL_ACCESS = STANDARD_RIGHTS_REQUIRED | SYNCHRONIZE | 0x3
TIMER_ALL_ACCESS = STANDARD_RIGHTS_REQUIRED | SYNCHRONIZE | 0x3

#: code returned by _probe: the object can be taken, or was abandoned (mutex)
OK = 0
ABANDONED = 0x80

T = TypeVar("T", bound="SyncObject")


def _unnamed() -> ObjectName:
    token = secrets.token_hex(12)
    return ObjectName("kernel", ".", "local", f"(unnamed {token})", "")


def _parse(name: str | None) -> ObjectName:
    return _unnamed() if name is None else parse(name, family="kernel")


class SyncObject(Handle):
    """Base of Event, Mutex, Semaphore and WaitableTimer.

    Attributes:
        name: the display name (``Local\\\\x``), or None for an unnamed object.
        already_exists: True when the constructor opened an existing object
            (Win32: GetLastError() == ERROR_ALREADY_EXISTS after CreateEvent...).
        access: the access mask this handle was opened with.
    """

    type_name: ClassVar[str] = ""
    modify_right: ClassVar[int] = 0
    all_access: ClassVar[int] = 0

    _ref: namespace.NamedRef
    _sf: StateFile

    def _setup(
        self,
        name: str | None,
        security: SecurityAttributes | None,
        attrs: dict[str, Any],
        init: bytes,
        on_create: Any = None,
    ) -> None:
        """Create the object, or open the one of that name (whose type must match)."""
        self._closed = True
        oname = _parse(name)
        sec = security if security is not None else SecurityAttributes()
        mode = sec.file_mode(holders=True)
        created_fd: list[int] = []

        def populate(tmp: str) -> None:
            fd = B.write_new_file(tmp, STATE, init, mode)
            if on_create is not None:
                # a mutex created owned: its owner byte is locked before anyone sees it
                S.lock_byte(fd, S.OWNER_LOCK, wait=False)
                created_fd.append(fd)
            else:
                B.close_fd(fd)

        if name is None:
            attrs = {**attrs, "unnamed": True}
        ref, created = namespace.create(oname, self.type_name, attrs, sec, populate=populate)
        try:
            if not created:
                _check_owner(ref, oname, self.all_access, self.modify_right)
            if not created and ref.record.type != self.type_name:
                raise W.InvalidHandle(
                    f"{oname.display} is a {ref.record.type}, not a {self.type_name}"
                )
            self._attach(ref, oname if name is not None else None, self.all_access)
        except BaseException:
            for fd in created_fd:
                B.close_fd(fd)
            ref.release()
            raise
        self.already_exists = not created
        if created and on_create is not None:
            on_create(self, created_fd[0])
        else:
            for fd in created_fd:  # built for a race we lost: never published
                B.close_fd(fd)

    def _attach(self, ref: namespace.NamedRef, oname: ObjectName | None, access: int) -> None:
        self._ref = ref
        self._sf = StateFile(os.path.join(ref.path, STATE))
        self.name = oname.display if oname is not None else None
        self.access = access
        self.already_exists = False
        self._closed = False

    @classmethod
    def open(cls: type[T], name: str, access: int | None = None, inherit: bool = False) -> T:
        """Open an existing object by name (Win32: OpenEvent / OpenMutex / ...).

        Args:
            name: the object's name.
            access: rights wanted (e.g. SYNCHRONIZE | EVENT_MODIFY_STATE); default all.
            inherit: accepted for Win32 parity; use ``winipc.spawn(inherit=[...])``.

        Raises:
            FileNotFound: no object has the name.
            InvalidHandle: an object of another type has it.
            AccessDenied: its security refuses us.
        """
        oname = parse(name, family="kernel")
        ref = namespace.open_existing(oname)
        try:
            _check_owner(ref, oname, cls.all_access if access is None else int(access), cls.modify_right)
        except BaseException:
            ref.release()
            raise
        if ref.record.type != cls.type_name:
            ref.release()
            raise W.InvalidHandle(f"{oname.display} is a {ref.record.type}, not a {cls.type_name}")
        obj = cls.__new__(cls)
        try:
            # the creator's spelling is the one shown (names are kept as created)
            shown = parse(ref.record.name, family="kernel") if ref.record.name else oname
            obj._attach(ref, shown, cls.all_access if access is None else int(access))
        except BaseException:
            ref.release()
            raise
        return obj

    def _check_right(self, right: int, what: str) -> None:
        self._check_open()
        if not self.access & right:
            raise W.AccessDenied(f"{what} needs access {right:#x}; this handle has {self.access:#x}")

    def _close(self) -> None:
        try:
            self._sf.close()
        finally:
            self._ref.release()

    def _fileno(self) -> int:
        # the holders descriptor: what spawn(inherit=...) passes, so int(h) means the same there
        return self._ref.fd

    # ------------------------------------------------------------------ waiting protocol
    def _probe(self, st: State, slot: int | None) -> int | None:
        """OK or ABANDONED if a wait would be satisfied now, else None (no side effects)."""
        raise NotImplementedError

    def _consume(self, st: State, slot: int | None, code: int) -> None:
        """Take what a satisfied wait takes (a count, ownership, an auto-reset)."""

    def _owner_pid(self, st: State) -> int:
        """A process whose exit may satisfy the wait (a mutex's owner), else 0."""
        return 0

    def _next_change(self, st: State) -> float | None:
        """Seconds until the object signals by itself (a timer's due time), else None."""
        return None

    def _on_leave(self, st: State, token: int) -> list[int]:
        """A waiter stops waiting without taking the object: waiters to wake, if any."""
        return []

    def _wake_all(self, st: State, exclude: int = 0) -> list[int]:
        return st.waiters(exclude)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the object is signaled (Win32: WaitForSingleObject).

        Takes what the wait takes: ownership of a mutex, one count of a semaphore, the
        signal of an auto-reset event or synchronization timer.

        Args:
            timeout: seconds; None waits forever; 0 tests and returns at once.

        Returns:
            True when signaled, False on time-out (WAIT_TIMEOUT).

        Raises:
            AbandonedMutex: a mutex whose owner died; ownership is granted all the same.
        """
        from winipc.sync._wait import wait_any

        self._check_right(SYNCHRONIZE, "waiting")
        return wait_any([self], timeout) is not None

    def __await__(self) -> Any:
        from winipc.sync._wait import wait_any_async

        self._check_right(SYNCHRONIZE, "waiting")
        return wait_any_async([self], None).__await__()

    # ------------------------------------------------------------------ transfer
    def _export(self) -> tuple[list[int], dict[str, Any]]:
        return [self._ref.fd], {
            "path": self._ref.path,
            "root": self._ref.root,
            "name": self.name,
            "access": self.access,
        }

    @classmethod
    def _import(cls, fds: list[int], meta: dict[str, Any]) -> Handle:
        obj = cls.__new__(cls)
        path = str(meta["path"])
        name = meta.get("name")
        oname = parse(str(name), family="kernel") if name else _unnamed()
        rec = namespace.ObjectRecord(cls.type_name, str(name or ""), -1, 0, 0.0)
        ref = namespace.NamedRef.adopt(oname, str(meta["root"]), path, fds[0], rec)
        obj._attach(ref, oname if name else None, int(meta["access"]))
        return obj

    def __repr__(self) -> str:
        state = "closed" if self._closed else (self.name or "unnamed")
        return f"<{type(self).__name__} {state}>"


def _check_owner(ref: namespace.NamedRef, oname: ObjectName, access: int, modify: int) -> None:
    """Another user's object opens only as its security allows (root is not special)."""
    rec = ref.record
    me = B.uid()
    if rec.owner == me:
        return
    wanted = Access.READ | (Access.WRITE if access & modify else Access(0))
    if not rec.security_attributes.check(rec.owner, me, os.getegid(), wanted):
        raise W.AccessDenied(f"{oname.display} belongs to uid {rec.owner}; its security refuses uid {me}")


def wake(sf: StateFile, tokens: list[int]) -> None:
    """Ring ``tokens``; forget those whose waiters are gone."""
    gone = _state.ring(tokens)
    if gone:
        with sf.locked() as st:
            st.drop(gone)
