"""Event, Mutex, Semaphore and WaitableTimer (Win32: CreateEvent, CreateMutex, ...)."""

from __future__ import annotations

import datetime as _dt
import os
import threading
from typing import Any

from winipc import errors as W
from winipc._backends import posix_sync as S
from winipc._core.security import SecurityAttributes
from winipc.sync import _base
from winipc.sync._base import ABANDONED, OK, SyncObject, wake
from winipc.sync._state import State, StateFile, initial_bytes

_I64_MAX = (1 << 63) - 1


# ============================================================================ event


class Event(SyncObject):
    """An event (Win32: CreateEventW).

    Args:
        name: ``Local\\\\x``, ``Global\\\\x``, a plain name, or None for an unnamed event.
        manual_reset: True: set() releases every waiter and the event stays set until
            reset(); False (auto-reset): set() releases exactly one waiter and the event
            resets as that waiter returns.
        initial_state: signaled at creation (ignored when the event exists already).
        security: who may open it; owner only by default.

    Raises:
        InvalidHandle: another kind of object has the name.
        InvalidName, AccessDenied: as for every named object.
    """

    kind = "event"
    type_name = "event"
    modify_right = _base.EVENT_MODIFY_STATE
    all_access = _base.EVENT_ALL_ACCESS

    def __init__(
        self,
        name: str | None = None,
        *,
        manual_reset: bool = False,
        initial_state: bool = False,
        security: SecurityAttributes | None = None,
    ) -> None:
        init = initial_bytes("event", a=int(bool(initial_state)), d=int(bool(manual_reset)))
        self._setup(name, security, {"manual_reset": bool(manual_reset)}, init)

    @property
    def manual_reset(self) -> bool:
        with self._sf.locked() as st:
            return bool(st.h.d)

    def _probe(self, st: State, slot: int | None) -> int | None:
        return OK if st.h.a or st.granted(slot) else None

    def _consume(self, st: State, slot: int | None, code: int) -> None:
        if st.granted(slot):
            assert slot is not None
            st.clear_grant(slot)
        elif not st.h.d:
            st.h.a = 0

    def set(self) -> None:
        """Signal the event (Win32: SetEvent)."""
        self._check_right(_base.EVENT_MODIFY_STATE, "SetEvent")
        with self._sf.locked() as st:
            st.h.a = 1
            tokens = st.waiters()
        wake(self._sf, tokens)

    def reset(self) -> None:
        """Make the event non-signaled (Win32: ResetEvent)."""
        self._check_right(_base.EVENT_MODIFY_STATE, "ResetEvent")
        with self._sf.locked() as st:
            st.h.a = 0

    def pulse(self) -> None:
        """Release the waiters waiting now, then reset (Win32: PulseEvent).

        Manual-reset: every current waiter; auto-reset: one current waiter. With no
        waiter, nothing happens (the event is left non-signaled). Microsoft calls
        PulseEvent unreliable because a waiter briefly away (APC) misses the pulse;
        here a registered waiter never does.
        """
        self._check_right(_base.EVENT_MODIFY_STATE, "PulseEvent")
        with self._sf.locked() as st:
            if st.h.d:
                for i in range(len(st.slots)):
                    st.grant(i)
            else:
                # one live waiter: ring them in order; a dead waiter's slot is dropped
                dead = set()
                for tok, _pid, _flags in list(st.slots):
                    if S.wake(tok):
                        found = st.find(tok)
                        assert found is not None
                        st.grant(found)
                        break
                    dead.add(tok)
                st.drop(dead)
            st.h.a = 0
            st.h.pulse += 1
            tokens = st.waiters()
        wake(self._sf, tokens)

    def is_set(self) -> bool:
        """Whether the event is signaled now (does not consume an auto-reset signal)."""
        self._check_open()
        with self._sf.locked() as st:
            return bool(st.h.a)


# ============================================================================ mutex


class _Owned:
    """One thread's ownership of one mutex: its own descriptor holds the owner byte."""

    def __init__(self, path: str, fd: int, pid: int, tid: int) -> None:
        self.path, self.fd, self.pid, self.tid = path, fd, pid, tid


class _ThreadOwnerships:
    """The mutexes a thread owns; when the thread ends they are abandoned (not released)."""

    def __init__(self) -> None:
        self.owned: dict[str, _Owned] = {}

    def __del__(self) -> None:
        for own in list(self.owned.values()):
            try:
                # unlocking the owner byte while the state still names this thread is
                # exactly what a waiter reads as "abandoned"; then wake the waiters
                S.unlock_byte(own.fd, S.OWNER_LOCK)
                sf = StateFile(own.path)
                try:
                    with sf.locked() as st:
                        tokens = st.waiters()
                    wake(sf, tokens)
                finally:
                    sf.close()
            except Exception:
                pass
            finally:
                S.close(own.fd)
        self.owned.clear()


_local = threading.local()


def _ownerships() -> _ThreadOwnerships:
    own: _ThreadOwnerships | None = getattr(_local, "owned", None)
    if own is None:
        own = _local.owned = _ThreadOwnerships()
    return own


class Mutex(SyncObject):
    """A mutex (Win32: CreateMutexW): owned by one thread at a time, recursively.

    ``wait()`` / ``acquire()`` take ownership (again, for the owner: a count);
    ``release()`` gives one level back. When the owning thread ends or its process dies
    (also by SIGKILL) while owning it, the next waiter gets ownership and an
    :class:`~winipc.errors.AbandonedMutex` signal. ``with mutex:`` acquires and
    releases; an abandoned acquisition there sets ``mutex.abandoned`` instead of raising.

    Args:
        name: see :class:`Event`.
        initial_owner: the creating thread owns it at once (ignored when it exists).
        security: who may open it; owner only by default.
    """

    kind = "mutex"
    type_name = "mutex"
    modify_right = _base.MUTEX_MODIFY_STATE
    all_access = _base.MUTEX_ALL_ACCESS

    def __init__(
        self,
        name: str | None = None,
        *,
        initial_owner: bool = False,
        security: SecurityAttributes | None = None,
    ) -> None:
        self.abandoned = False
        if initial_owner:
            pid, tid = os.getpid(), threading.get_native_id()
            init = initial_bytes("mutex", a=1, b=pid, c=tid)
            self._setup(name, security, {}, init, on_create=Mutex._own_new)
        else:
            self._setup(name, security, {}, initial_bytes("mutex"))

    def _own_new(self, fd: int) -> None:
        """Record the creating thread's ownership (its descriptor holds the owner byte)."""
        _ownerships().owned[self._sf.path] = _Owned(
            self._sf.path, fd, os.getpid(), threading.get_native_id()
        )

    def _attach(self, ref: Any, oname: Any, access: int) -> None:
        super()._attach(ref, oname, access)
        self.abandoned = False

    # A released mutex with waiters is reserved (field d) for the first of them, as
    # Windows hands a released mutex to a waiting thread: a thread that releases and
    # at once acquires again cannot barge ahead of it (which starves waiters on other
    # cores). The reservation lapses when that waiter leaves or its process is gone.
    def _reserved_for_other(self, st: State, slot: int | None) -> bool:
        token = st.h.d
        if not token or (slot is not None and st.slots[slot][0] == token):
            return False
        holder = st.find(token)
        if holder is not None and S.process_exists(st.slots[holder][1]):
            return True
        if holder is not None:
            st.drop({token})
        st.h.d = 0
        return False

    def _on_leave(self, st: State, token: int) -> list[int]:
        if st.h.d != token:
            return []
        st.h.d = st.slots[0][0] if st.slots and st.h.a <= 0 else 0
        return [st.h.d] if st.h.d else []

    def _probe(self, st: State, slot: int | None) -> int | None:
        if st.h.a <= 0:
            return None if self._reserved_for_other(st, slot) else OK
        if st.h.b == os.getpid() and st.h.c == threading.get_native_id():
            return OK if self._sf.path in _ownerships().owned else ABANDONED
        if not S.byte_locked(self._sf.fd, S.OWNER_LOCK):
            return ABANDONED  # owned on paper, but the owner's descriptor is gone
        return None

    def _consume(self, st: State, slot: int | None, code: int) -> None:
        pid, tid = os.getpid(), threading.get_native_id()
        owned = _ownerships().owned
        if code == OK and st.h.a > 0 and self._sf.path in owned:
            st.h.a += 1  # recursive acquisition by the owner
            return
        fd = S.open_rw(self._sf.path)
        if not S.lock_byte(fd, S.OWNER_LOCK, wait=False):
            S.close(fd)
            raise W.WinIPCError(f"{self.name}: mutex owner byte held by a live owner")
        old = owned.pop(self._sf.path, None)
        if old is not None:
            S.close(old.fd)
        owned[self._sf.path] = _Owned(self._sf.path, fd, pid, tid)
        st.h.a, st.h.b, st.h.c, st.h.d = 1, pid, tid, 0

    def _owner_pid(self, st: State) -> int:
        return int(st.h.b) if st.h.a > 0 and st.h.b != os.getpid() else 0

    def acquire(self, timeout: float | None = None) -> bool:
        """Take ownership (Win32: WaitForSingleObject on the mutex).

        Returns:
            True once owned; False on time-out.

        Raises:
            AbandonedMutex: the previous owner ended while owning it; this thread owns
                it now and must release it.
        """
        return self.wait(timeout)

    def release(self) -> None:
        """Give back one level of ownership (Win32: ReleaseMutex).

        Raises:
            NotOwner: (288) the calling thread does not own the mutex.
        """
        self._check_right(_base.MUTEX_MODIFY_STATE, "ReleaseMutex")
        owned = _ownerships().owned
        with self._sf.locked() as st:
            mine = (
                st.h.a > 0
                and st.h.b == os.getpid()
                and st.h.c == threading.get_native_id()
                and self._sf.path in owned
            )
            if not mine:
                raise W.NotOwner(f"{self.name or 'mutex'}: the calling thread does not own it")
            st.h.a -= 1
            tokens: list[int] = []
            if st.h.a == 0:
                st.h.b = st.h.c = 0
                st.flush()  # the state says "free" before the owner byte is let go
                own = owned.pop(self._sf.path)
                S.unlock_byte(own.fd, S.OWNER_LOCK)
                S.close(own.fd)
                waiting = st.waiters()
                st.h.d = waiting[0] if waiting else 0  # hand it to the first waiter
                tokens = waiting[:1]
        wake(self._sf, tokens)

    def __enter__(self) -> Mutex:
        try:
            self.acquire()
            self.abandoned = False
        except W.AbandonedMutex:
            self.abandoned = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# ============================================================================ semaphore


class Semaphore(SyncObject):
    """A counting semaphore (Win32: CreateSemaphoreW).

    Args:
        name: see :class:`Event`.
        initial: the count at creation, 0..maximum (ignored when it exists).
        maximum: the largest count, >= 1.
        security: who may open it; owner only by default.

    Raises:
        InvalidParameter: a count out of range (named in the message).
    """

    kind = "semaphore"
    type_name = "semaphore"
    modify_right = _base.SEMAPHORE_MODIFY_STATE
    all_access = _base.SEMAPHORE_ALL_ACCESS

    def __init__(
        self,
        name: str | None = None,
        initial: int = 0,
        maximum: int = 1,
        *,
        security: SecurityAttributes | None = None,
    ) -> None:
        if not isinstance(maximum, int) or not 1 <= maximum <= 0x7FFF_FFFF:
            raise W.InvalidParameter(f"maximum must be 1..2**31-1, not {maximum!r}")
        if not isinstance(initial, int) or not 0 <= initial <= maximum:
            raise W.InvalidParameter(f"initial must be 0..maximum ({maximum}), not {initial!r}")
        self._setup(name, security, {"maximum": maximum}, initial_bytes("semaphore", a=initial, b=maximum))

    def _probe(self, st: State, slot: int | None) -> int | None:
        return OK if st.h.a > 0 else None

    def _consume(self, st: State, slot: int | None, code: int) -> None:
        st.h.a -= 1

    def acquire(self, timeout: float | None = None) -> bool:
        """Take one count (WaitForSingleObject); False on time-out."""
        return self.wait(timeout)

    def release(self, count: int = 1) -> int:
        """Add ``count`` (Win32: ReleaseSemaphore).

        Returns:
            The count before the release.

        Raises:
            TooManyPosts: (298) the count would pass the maximum; it is unchanged.
            InvalidParameter: ``count`` < 1.
        """
        self._check_right(_base.SEMAPHORE_MODIFY_STATE, "ReleaseSemaphore")
        if not isinstance(count, int) or count < 1:
            raise W.InvalidParameter(f"count must be >= 1, not {count!r}")
        with self._sf.locked() as st:
            previous = int(st.h.a)
            if previous + count > st.h.b:
                raise W.TooManyPosts(f"count {previous} + {count} would pass the maximum {st.h.b}")
            st.h.a = previous + count
            tokens = st.waiters()
        wake(self._sf, tokens)
        return previous

    @property
    def count(self) -> int:
        """The current count (a snapshot)."""
        self._check_open()
        with self._sf.locked() as st:
            return int(st.h.a)

    @property
    def maximum(self) -> int:
        self._check_open()
        with self._sf.locked() as st:
            return int(st.h.b)

    def __enter__(self) -> Semaphore:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# ============================================================================ timer


def _due_ns(due: float | _dt.datetime) -> int:
    if isinstance(due, _dt.datetime):
        return int(due.timestamp() * 1e9)
    if not isinstance(due, (int, float)) or due != due or due < 0:
        raise W.InvalidParameter(f"due must be seconds >= 0 from now or a datetime, not {due!r}")
    return S.now_ns() + int(due * 1e9)


class WaitableTimer(SyncObject):
    """A waitable timer (Win32: CreateWaitableTimerW).

    Inactive until :meth:`set`. At its due time it becomes signaled: a manual-reset
    timer stays signaled (releasing every waiter) until set again; a synchronization
    timer releases one waiter and resets. A periodic timer signals again every period.

    Args:
        name: see :class:`Event`.
        manual_reset: notification timer (True) or synchronization timer (False).
        security: who may open it; owner only by default.
    """

    kind = "waitable-timer"
    type_name = "timer"
    modify_right = _base.TIMER_MODIFY_STATE
    all_access = _base.TIMER_ALL_ACCESS

    def __init__(
        self,
        name: str | None = None,
        *,
        manual_reset: bool = False,
        security: SecurityAttributes | None = None,
    ) -> None:
        init = initial_bytes("timer", d=int(bool(manual_reset)))
        self._setup(name, security, {"manual_reset": bool(manual_reset)}, init)

    @staticmethod
    def _advance(st: State) -> None:
        """Bring a due timer up to now: signal it, move a periodic one to its next due."""
        due, period = st.h.b, st.h.c
        if not due:
            return
        now = S.now_ns()
        if now < due:
            return
        st.h.a = 1
        if period > 0:
            st.h.b = due + ((now - due) // period + 1) * period
        else:
            st.h.b = 0

    def _probe(self, st: State, slot: int | None) -> int | None:
        self._advance(st)
        return OK if st.h.a else None

    def _consume(self, st: State, slot: int | None, code: int) -> None:
        if not st.h.d:
            st.h.a = 0

    def _next_change(self, st: State) -> float | None:
        return None if not st.h.b else max(0.0, (st.h.b - S.now_ns()) / 1e9)

    def set(self, due: float | _dt.datetime, period: float = 0.0) -> None:
        """Arm the timer (Win32: SetWaitableTimer); it becomes non-signaled now.

        Args:
            due: seconds from now (relative), or an absolute ``datetime`` (aware, or
                naive local time).
            period: seconds between signals after the first; 0 signals once.

        Raises:
            InvalidParameter: a negative due time or period.
        """
        self._check_right(_base.TIMER_MODIFY_STATE, "SetWaitableTimer")
        if not isinstance(period, (int, float)) or period < 0 or period != period:
            raise W.InvalidParameter(f"period must be seconds >= 0, not {period!r}")
        due_ns = max(1, _due_ns(due))
        with self._sf.locked() as st:
            st.h.a = 0
            st.h.b = min(due_ns, _I64_MAX)
            st.h.c = int(period * 1e9)
            tokens = st.waiters()
        wake(self._sf, tokens)  # waiters recompute how long to sleep

    def cancel(self) -> None:
        """Disarm the timer; its signaled state is left as it is (CancelWaitableTimer)."""
        self._check_right(_base.TIMER_MODIFY_STATE, "CancelWaitableTimer")
        with self._sf.locked() as st:
            self._advance(st)
            st.h.b = 0
            st.h.c = 0
