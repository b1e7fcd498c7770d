"""Bench scenarios for window messages: SendMessage round trips and WM_COPYDATA throughput.

Both serve from a message-only window (``create_window(..., parent=HWND_MESSAGE)``) that
the worker's main thread creates and pumps; the runner reaches it by its HWND (the
listening address) and sends to it. There is no connection: the worker pumps messages
only while it serves a command of the runner, which is when the runner sends.

``winipc-sendmessage`` (round trip 64 B): the runner's ``send`` is one
``send_message(hwnd, WM_APP + 1, 0, unit)`` with the 64 B unit as LPARAM bytes (a pointer
parameter). The LRESULT is only 8 bytes, so it cannot carry the 64 B back; the window
procedure returns the CRC-32 of the LPARAM it received in the low 32 bits, and the runner
checks every LRESULT against the CRC-32 of what it sent. The high 32 bits report the
echoes the worker's echo loop produced (the bench's :func:`~winipc.bench.workload.echo`,
where ``--inject-fault rtt`` damages an echo): each reply reports the oldest echo not yet
reported (a flag and 31 bits of its CRC-32), which the runner checks against the units it
sent, in order; so a damaged echo fails the runner's check a round trip or two later
(the last echoes of a session are produced after the last reply and are not checked). A
round trip that fails its check is handed to :func:`~winipc.bench.workload.ping` as a
damaged echo, so the run fails with ``checksum mismatch`` after the batch (the worker is
not left waiting).

``winipc-copydata`` (throughput 64 KiB, 1 MiB and 16 MiB, the ``--plot`` sizes too): each
unit is one ``send_copydata(hwnd, dwdata, unit)``, synchronous like SendMessage; the
window procedure copies ``CopyData.data`` (valid during the call only) into the
receiver's round buffer (as every other receiver's ``recv_into`` does) and returns the
length it copied, which the runner checks. Above 64 KiB the data travels in a sealed
memfd, not through the socket. The round's acknowledgement is the return of the last
call: the procedure had copied every byte by then. The worker checks the CRC-32 of the
whole round, as for every other throughput scenario.

Both are in the ``transport`` group: the figures are compared with the best transport
peer (the AF_UNIX stream socket, kernel pipes, ``multiprocessing.Pipe``...), the plain
ways of moving the same bytes between two processes, and the throughput with the memcpy
limit. ``tput-16m`` is measured by ``winipc-copydata``, ``af-unix-stream``, ``mp-pipe``
and ``memcpy-limit`` only (:attr:`~winipc.bench.registry.Metric.only`).

``--only messages`` (a keyword, :attr:`~winipc.bench.registry.Scenario.keywords`) selects
both scenarios. Importing this module registers them.
"""

from __future__ import annotations

import collections
import json
import os
import zlib
from typing import Any

from winipc.bench.registry import RTT, THROUGHPUT, Buffer, Endpoint, Scenario, Setup, register

#: the message of the round trips (WM_APP + 1)
BENCH_MSG = 0x8000 + 1
#: the COPYDATASTRUCT dwData of the bench's units
DWDATA = 0x57494E
#: the high half of a round trip's LRESULT reports an echo (then its low 31 bits are the
#: echo's CRC-32, truncated)
_ECHOED = 0x8000_0000
_CRC31 = 0x7FFF_FFFF
_U32 = 0xFFFF_FFFF
_U64 = 2**64


def _messages() -> Any:
    """:mod:`winipc.messages`, imported when a scenario runs (it may be missing)."""
    from winipc import messages

    return messages


def _signed(value: int) -> int:
    """An unsigned 64-bit value as the signed LRESULT that carries it."""
    return value - _U64 if value >= 2**63 else value


def _reply(crc: int, prev_crc: int) -> int:
    return _signed((prev_crc << 32) | crc)


def _unpack(lresult: int) -> tuple[int, int]:
    """(CRC-32 of the LPARAM, CRC-32 of the previous echo) from an LRESULT."""
    value = lresult % _U64
    return value & _U32, value >> 32


class _Pump:
    """The worker's message loop, run until the window procedure has handled a message
    that the runner sent.

    ``get_message`` runs the procedure for every sent message waiting (as GetMessage
    does: it may run it for the runner's next message too, when that arrived while it
    replied) and returns only posted ones, so the procedure ends the wait with
    ``post_quit_message`` (:meth:`handled_one`): the loop is a plain GetMessage loop that
    stops at WM_QUIT. The ends keep what the procedure got in order, so a message
    handled early waits for the receive that takes it.
    """

    def handled_one(self) -> None:
        """Called by the procedure after each bench message."""
        _messages().post_quit_message(0)

    def until(self, done: Any) -> None:
        """Process incoming messages until ``done()`` is true."""
        M = _messages()
        while not done():
            m = M.get_message()
            if m.message != M.WM_QUIT:
                M.dispatch_message(m)


# --------------------------------------------------------------------------- the window
class _Window:
    """The worker's message-only window, with the procedure of one scenario."""

    def __init__(self, setup: Setup, name: str, proc: Any) -> None:
        M = _messages()
        self.class_name = f"winipc-bench-{setup.tag}-{name}"
        M.register_class(self.class_name, proc)
        try:
            self.window = M.create_window(self.class_name, self.class_name, parent=M.HWND_MESSAGE)
        except BaseException:
            M.unregister_class(self.class_name)
            raise
        self.hwnd = int(self.window.hwnd)

    def close(self) -> None:
        M = _messages()
        try:
            self.window.destroy()
        finally:
            M.unregister_class(self.class_name)


class _Listening:
    """No connection to accept: the address is the window's HWND (and the worker's pid)."""

    def __init__(self, window: _Window, end: Endpoint) -> None:
        self._window = window
        self._end = end
        self.address = json.dumps({"hwnd": window.hwnd, "pid": os.getpid()})

    def accept(self, timeout: float | None) -> Endpoint:
        return self._end

    def close(self) -> None:
        self._window.close()


def _target(address: str) -> int:
    """The worker's HWND from the address, checked to be a live window."""
    M = _messages()
    hwnd = int(json.loads(address)["hwnd"])
    if not M.is_window(hwnd):
        from winipc import errors as W

        raise W.InvalidWindowHandle(f"the worker's window 0x{hwnd:X} does not exist")
    return hwnd


# --------------------------------------------------------------------------- SendMessage
class _EchoWindowEnd:
    """Worker side of ``winipc-sendmessage``: the window procedure, and the echo end.

    The procedure keeps each LPARAM for ``recv`` (in order) and replies with its CRC-32
    in the low half; ``send`` (the echo loop's echo) queues the echo's CRC-32, and each
    reply reports the oldest echo not reported yet in its high half (:data:`_ECHOED`
    set, 31 bits of the CRC-32), or none.
    """

    def __init__(self) -> None:
        self.pump = _Pump()
        self._inbox: collections.deque[bytes] = collections.deque()
        self._echoes: collections.deque[int] = collections.deque()

    def proc(self, hwnd: int, msg: int, wparam: int, lparam: Any) -> int:
        if msg != BENCH_MSG:
            return 0
        data = bytes(lparam) if isinstance(lparam, (bytes, bytearray, memoryview)) else b""
        self._inbox.append(data)
        echoed = _ECHOED | (self._echoes.popleft() & _CRC31) if self._echoes else 0
        self.pump.handled_one()
        return _reply(zlib.crc32(data), echoed)

    def recv(self, size: int) -> Buffer:
        inbox = self._inbox
        if not inbox:
            self.pump.until(lambda: inbox)
        return inbox.popleft()

    def send(self, data: Buffer) -> None:
        self._echoes.append(zlib.crc32(data))

    def close(self) -> None:
        pass


class _SendMessageEnd:
    """Runner side of ``winipc-sendmessage``: SendMessage, and the check of its LRESULT.

    The low half must be the CRC-32 of the unit sent; a reported echo (high half) must
    be the next unit not yet reported back. ``recv`` gives the round trip's echo to the
    workload's check: the unit itself when the LRESULT passed, else a damaged copy.
    """

    def __init__(self, hwnd: int) -> None:
        self._send = _messages().send_message
        self._hwnd = hwnd
        self._unechoed: collections.deque[int] = collections.deque()
        self._echo: Buffer = b""
        #: round trips whose LRESULT did not pass (for tests)
        self.mismatches = 0

    def send(self, data: Buffer) -> None:
        unit = bytes(data)
        got, echoed = _unpack(self._send(self._hwnd, BENCH_MSG, 0, unit))
        crc = zlib.crc32(unit)
        ok = got == crc
        if echoed & _ECHOED:
            want = self._unechoed.popleft() if self._unechoed else None
            ok = ok and want is not None and want & _CRC31 == echoed & _CRC31
        elif echoed:
            ok = False
        self._unechoed.append(crc)
        if ok:
            self._echo = unit
        else:
            self.mismatches += 1
            damaged = bytearray(unit)
            damaged[len(damaged) // 2] ^= 0x01
            self._echo = damaged

    def recv(self, size: int) -> Buffer:
        return self._echo

    def close(self) -> None:
        pass


class SendMessageScenario(Scenario):
    """winipc: SendMessage of 64 B LPARAM bytes to a message-only window in another process."""

    name = "winipc-sendmessage"
    group = "transport"
    mechanism = "winipc window messages, SendMessage (64 B LPARAM, CRC-32 LRESULT)"
    kinds = frozenset({RTT})
    keywords = frozenset({"messages", "window-messages"})
    description = (
        "a message-only window (create_window(parent=HWND_MESSAGE)) in the worker; "
        "send_message(hwnd, WM_APP+1, 0, 64 B) in the runner, the window procedure returns "
        "the CRC-32 of the LPARAM (and of the previous echo), checked for every round trip"
    )

    def unavailable(self) -> str | None:
        return _missing()

    def serve(self, setup: Setup) -> _Listening:
        end = _EchoWindowEnd()
        return _Listening(_Window(setup, self.name, end.proc), end)

    def connect(self, address: str, setup: Setup) -> Endpoint:
        return _SendMessageEnd(_target(address))


# --------------------------------------------------------------------------- WM_COPYDATA
class _CopyDataWindowEnd:
    """Worker side of ``winipc-copydata``: the procedure copies each unit into the
    receiver's buffer.

    A unit the procedure gets while no receive waits for it (the runner's next one,
    handled by the same GetMessage) or that does not fit is kept as a copy, in order,
    for the next receive.
    """

    def __init__(self) -> None:
        self.pump = _Pump()
        self._into: memoryview | None = None
        self._got = -1
        self._early: collections.deque[bytes] = collections.deque()

    def proc(self, hwnd: int, msg: int, wparam: int, lparam: Any) -> int:
        if msg != _messages().WM_COPYDATA:
            return 0
        data = lparam.data
        n = len(data)
        into = self._into
        if into is not None and self._got < 0 and n <= len(into):
            into[:n] = data
            self._got = n
        else:
            self._early.append(bytes(data))
        self.pump.handled_one()
        return n

    def recv_into(self, buffer: memoryview) -> int:
        if not self._early:
            self._into, self._got = buffer, -1
            try:
                self.pump.until(lambda: self._got >= 0 or self._early)
            finally:
                self._into = None
            if self._got >= 0:
                return self._got
        data = self._early.popleft()
        n = len(data)
        if n <= len(buffer):
            buffer[:n] = data
        return n

    def recv(self, size: int) -> Buffer:
        early = self._early
        if not early:
            self.pump.until(lambda: early)
        return early.popleft()

    def send(self, data: Buffer) -> None:
        """The acknowledgement: nothing to send, the runner's last call has returned."""

    def close(self) -> None:
        pass


class _CopyDataEnd:
    """Runner side of ``winipc-copydata``: one synchronous WM_COPYDATA per unit.

    Each call returns once the worker's procedure has copied the unit, and its LRESULT
    (the length copied) is checked; ``recv(1)`` is the round's acknowledgement, which the
    return of the last call already was (a wrong length turns it into ``b"!"``, failing
    the round).
    """

    def __init__(self, hwnd: int) -> None:
        self._send = _messages().send_copydata
        self._hwnd = hwnd
        self._bad: str | None = None

    def send(self, data: Buffer) -> None:
        n = len(data)
        got = self._send(self._hwnd, DWDATA, data)
        if got != n and self._bad is None:
            self._bad = f"WM_COPYDATA of {n} bytes: the window procedure copied {got}"

    def recv(self, size: int) -> Buffer:
        if self._bad is not None:
            return b"!"
        return b"k"

    def close(self) -> None:
        pass


class CopyDataScenario(Scenario):
    """winipc: WM_COPYDATA units to a message-only window in another process."""

    name = "winipc-copydata"
    group = "transport"
    mechanism = "winipc WM_COPYDATA (send_copydata, a sealed memfd above 64 KiB)"
    kinds = frozenset({THROUGHPUT})
    keywords = frozenset({"messages", "window-messages", "copydata"})
    description = (
        "a message-only window in the worker; send_copydata(hwnd, dwdata, unit) per unit "
        "in the runner, the window procedure copies CopyData.data into the round buffer "
        "and returns the length (checked); CRC-32 of each round at the worker"
    )

    def unavailable(self) -> str | None:
        return _missing()

    def serve(self, setup: Setup) -> _Listening:
        end = _CopyDataWindowEnd()
        return _Listening(_Window(setup, self.name, end.proc), end)

    def connect(self, address: str, setup: Setup) -> Endpoint:
        return _CopyDataEnd(_target(address))


def _missing() -> str | None:
    try:
        _messages()
    except ImportError as exc:
        return f"winipc.messages does not import here ({exc})"
    return None


SENDMESSAGE = register(SendMessageScenario())
COPYDATA = register(CopyDataScenario())
