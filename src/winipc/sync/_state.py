"""The shared state of a synchronization object: a small file, locked while it changes.

Layout of ``state`` (little-endian; docs/wire/sync-state.md)::

    byte 0          lock byte: an OFD write lock on it guards the state (STATE_LOCK)
    byte 1          owner byte: a mutex's owning thread keeps it locked (OWNER_LOCK)
    64..127         header: magic "WSYN", version u16, kind u16, a, b, c, d (i64), pulse u64,
                    nwait u32 (used waiter slots)
    128..4095       up to 240 waiter slots, packed in [0, nwait): token u64, pid u32, flags u32

Fields by kind::

    event      a = signaled (0/1)   d = manual reset (0/1)
    semaphore  a = count            b = maximum
    mutex      a = recursion count  b = owner pid   c = owner thread id (native)
               d = token of the waiter a released mutex is handed to (0 = none)
    timer      a = signaled (0/1)   b = due (ns, CLOCK_REALTIME; 0 = inactive)
               c = period (ns)      d = manual reset (0/1)

A slot's flags: bit 0 used, bit 1 granted (a PulseEvent released this waiter).
Every change happens with the lock byte held and is written back with at most two
``pwrite`` calls, the waiter slots first and then the header (which holds ``nwait``): a
process killed between them leaves at worst a stale copy of a slot past the end or a
slot counted twice, which costs a spurious wake-up and nothing else.
"""

from __future__ import annotations

import contextlib
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from winipc import errors as W
from winipc._backends import posix_sync as S

MAGIC = b"WSYN"
VERSION = 1
KINDS = {"event": 1, "mutex": 2, "semaphore": 3, "timer": 4}
HEADER = struct.Struct("<4sHHqqqqQI")
HEADER_OFF = 64
SLOT = struct.Struct("<QII")
SLOTS_OFF = 128
NSLOTS = 240
SIZE = 4096
USED, GRANTED = 1, 2


@dataclass
class Header:
    kind: int
    a: int
    b: int
    c: int
    d: int
    pulse: int
    nwait: int = 0  # used waiter slots: 0 lets every operation skip the table

    def pack(self) -> bytes:
        return HEADER.pack(
            MAGIC, VERSION, self.kind, self.a, self.b, self.c, self.d, self.pulse, self.nwait
        )


def initial_bytes(kind: str, a: int = 0, b: int = 0, c: int = 0, d: int = 0) -> bytes:
    """The whole state file of a new object."""
    raw = bytearray(SIZE)
    raw[HEADER_OFF : HEADER_OFF + HEADER.size] = Header(KINDS[kind], a, b, c, d, 0).pack()
    return bytes(raw)


class State:
    """The state as read under the lock; changes are written back when the lock is left."""

    def __init__(self, fd: int, where: str) -> None:
        self._fd = fd
        raw = S.pread(fd, HEADER.size, HEADER_OFF)
        if len(raw) != HEADER.size:
            raise W.InvalidData(f"{where}: truncated object state")
        magic, version, kind, a, b, c, d, pulse, nwait = HEADER.unpack(raw)
        if magic != MAGIC or version != VERSION:
            raise W.InvalidData(f"{where}: not a winipc synchronization object (or another version)")
        self.h = Header(kind, a, b, c, d, pulse, nwait)
        self._orig = self.h.pack()
        self._slots: list[list[int]] | None = None
        self._slots_dirty = False

    # ------------------------------------------------------------------ waiter slots
    # Used slots are kept packed in [0, nwait): reads and writes touch only those.
    @property
    def slots(self) -> list[list[int]]:
        if self._slots is None:
            n = min(self.h.nwait, NSLOTS)
            raw = S.pread(self._fd, SLOT.size * n, SLOTS_OFF) if n else b""
            n = len(raw) // SLOT.size
            self._slots = [list(SLOT.unpack_from(raw, i * SLOT.size)) for i in range(n)]
        return self._slots

    def _changed(self) -> None:
        self._slots_dirty = True
        self.h.nwait = len(self.slots)

    def register(self, token: int, pid: int) -> int | None:
        """Put ``token`` in a slot (its own if it has one); None if the table is full."""
        found = self.find(token)
        if found is not None:
            return found
        if len(self.slots) >= NSLOTS:
            return None
        self.slots.append([token, pid, USED])
        self._changed()
        return len(self.slots) - 1

    def find(self, token: int) -> int | None:
        if not self.h.nwait:
            return None
        for i, slot in enumerate(self.slots):
            if slot[0] == token:
                return i
        return None

    def unregister(self, token: int) -> None:
        i = self.find(token)
        if i is not None:
            last = self.slots.pop()
            if i < len(self.slots):
                self.slots[i] = last  # fill the hole: the used slots stay packed
            self._changed()

    def granted(self, index: int | None) -> bool:
        return index is not None and bool(self.slots[index][2] & GRANTED)

    def clear_grant(self, index: int) -> None:
        self.slots[index][2] &= ~GRANTED
        self._slots_dirty = True

    def grant(self, index: int) -> None:
        self.slots[index][2] |= GRANTED
        self._slots_dirty = True

    def waiters(self, exclude: int = 0) -> list[int]:
        if not self.h.nwait:
            return []
        return [slot[0] for slot in self.slots if slot[0] != exclude]

    def drop(self, tokens: set[int]) -> None:
        kept = [slot for slot in self.slots if slot[0] not in tokens]
        if len(kept) != len(self.slots):
            self._slots = kept
            self._changed()

    def flush(self) -> None:
        if self._slots_dirty and self._slots is not None:
            S.pwrite(self._fd, b"".join(SLOT.pack(*slot) for slot in self._slots), SLOTS_OFF)
        packed = self.h.pack()
        if packed != self._orig:
            S.pwrite(self._fd, packed, HEADER_OFF)


class StateFile:
    """One handle's open state file, with the in-process lock that OFD locks do not give."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = S.open_rw(path)
        self._tlock = threading.Lock()

    @contextlib.contextmanager
    def locked(self) -> Iterator[State]:
        """Hold the state lock; the state's changes are written when the block ends."""
        with self._tlock:
            S.lock_byte(self.fd, S.STATE_LOCK, wait=True)
            try:
                st = State(self.fd, self.path)
                yield st
                st.flush()
            finally:
                S.unlock_byte(self.fd, S.STATE_LOCK)

    def acquire_lock(self) -> State:
        """For multi-object waits: lock (in the caller's order) and read."""
        self._tlock.acquire()
        try:
            S.lock_byte(self.fd, S.STATE_LOCK, wait=True)
        except BaseException:
            self._tlock.release()
            raise
        return State(self.fd, self.path)

    def release_lock(self, st: State | None) -> None:
        try:
            if st is not None:
                st.flush()
        finally:
            S.unlock_byte(self.fd, S.STATE_LOCK)
            self._tlock.release()

    def close(self) -> None:
        S.close(self.fd)


def ring(tokens: list[int]) -> set[int]:
    """Wake these waiters; returns the tokens of waiters that no longer exist."""
    return {t for t in tokens if not S.wake(t)}
