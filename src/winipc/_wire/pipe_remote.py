"""Remote named pipes, version 1 (specified in docs/wire/pipe-remote.md): no I/O here.

A client of ``\\\\server\\pipe\\name`` opens a TCP connection to the server's pipe port and
sends a :func:`preamble` in clear text (the pipe's name and what it asks for); the machine
answers with a 4-byte status. On status 0 the connection turns into TLS, and from then on
both sides send :class:`Record` s: the client a HELLO, the server a READY, then DATA, EOF
DISCONNECT, FLUSH and FLUSHED both ways. DATA carries the local pipe's byte stream unchanged (a
message-type pipe's frames included), so the framing of docs/wire/pipe-messages.md applies
end to end.

:class:`PreambleDecoder` and :class:`RecordDecoder` cap every length before buffering and
raise :class:`winipc.errors.InvalidData` on malformed input, and nothing else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from winipc.errors import InvalidData

MAGIC = b"WNP\x01"
OP_OPEN = 1
OP_WAIT = 2
#: longest pipe name in a preamble, in bytes of UTF-8
MAX_NAME = 1024
#: a WAIT preamble's time-out meaning "forever"
WAIT_FOREVER = 0xFFFF_FFFF
_PRE_HEAD = struct.Struct(">4sBH")  # magic, op, name length
_WAIT_MS = struct.Struct(">I")
STATUS = struct.Struct(">I")

HELLO = 1
READY = 2
DATA = 3
EOF = 4
DISCONNECT = 5
FLUSH = 6
FLUSHED = 7
_KINDS = {HELLO, READY, DATA, EOF, DISCONNECT, FLUSH, FLUSHED}
SEQ = struct.Struct(">I")  # the payload of FLUSH and FLUSHED
RECORD_HEAD = struct.Struct(">BI")  # kind, payload length
#: largest DATA payload
MAX_DATA = 256 * 1024
#: largest HELLO / READY payload
MAX_CONTROL = 1024
#: longest computer name in a HELLO, in bytes of UTF-8
MAX_COMPUTER_NAME = 255

ACCESS_READ = 1
ACCESS_WRITE = 2
_HELLO = struct.Struct(">IBH")  # pid, access, computer name length
_READY = struct.Struct(">IBBI")  # status, flags (bit 0: message type), open mode, server pid


@dataclass(frozen=True)
class Preamble:
    op: int
    name: str
    wait_ms: int = 0


def preamble(op: int, name: str, wait_ms: int = 0) -> bytes:
    """The clear-text request: OPEN the pipe ``name`` (the part after ``\\pipe\\``), or WAIT
    up to ``wait_ms`` milliseconds (:data:`WAIT_FOREVER`) for an instance to listen."""
    raw = name.encode("utf-8")
    if not 1 <= len(raw) <= MAX_NAME:
        raise InvalidData(f"pipe name is {len(raw)} bytes of UTF-8; 1..{MAX_NAME} fit a preamble")
    if op == OP_OPEN:
        return _PRE_HEAD.pack(MAGIC, op, len(raw)) + raw
    if op == OP_WAIT:
        if not 0 <= wait_ms <= WAIT_FOREVER:
            raise InvalidData(f"wait time {wait_ms} ms outside 0..{WAIT_FOREVER}")
        return _PRE_HEAD.pack(MAGIC, op, len(raw)) + raw + _WAIT_MS.pack(wait_ms)
    raise InvalidData(f"unknown preamble operation {op}")


class PreambleDecoder:
    """Feed bytes until :meth:`result` returns the preamble (None: more bytes needed)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        if len(self._buf) + len(data) > _PRE_HEAD.size + MAX_NAME + _WAIT_MS.size:
            raise InvalidData("preamble longer than its limit")
        self._buf += data

    def need(self) -> int:
        """Bytes still missing (at least), 0 when complete."""
        if len(self._buf) < _PRE_HEAD.size:
            return _PRE_HEAD.size - len(self._buf)
        magic, op, n = _PRE_HEAD.unpack_from(self._buf)
        if magic != MAGIC:
            raise InvalidData("not a winipc remote-pipe preamble (bad magic or version)")
        if op not in (OP_OPEN, OP_WAIT):
            raise InvalidData(f"unknown preamble operation {op}")
        if not 1 <= n <= MAX_NAME:
            raise InvalidData(f"preamble announces a {n}-byte name; the limit is {MAX_NAME}")
        total = _PRE_HEAD.size + n + (_WAIT_MS.size if op == OP_WAIT else 0)
        return max(0, int(total) - len(self._buf))

    def result(self) -> Preamble | None:
        if self.need():
            return None
        _magic, op, n = _PRE_HEAD.unpack_from(self._buf)
        start = _PRE_HEAD.size
        if len(self._buf) != start + n + (_WAIT_MS.size if op == OP_WAIT else 0):
            raise InvalidData("bytes after the preamble before the answer")
        try:
            name = bytes(self._buf[start:start + n]).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidData("the preamble's pipe name is not UTF-8") from None
        wait_ms = _WAIT_MS.unpack_from(self._buf, start + n)[0] if op == OP_WAIT else 0
        return Preamble(op, name, wait_ms)


def record(kind: int, payload: bytes | bytearray | memoryview = b"") -> bytes:
    """One record: kind (1 byte), payload length (4 bytes, big-endian), payload."""
    if kind not in _KINDS:
        raise InvalidData(f"unknown record kind {kind}")
    limit = MAX_DATA if kind == DATA else MAX_CONTROL
    if len(payload) > limit:
        raise InvalidData(f"record payload of {len(payload)} bytes; kind {kind} holds at most {limit}")
    return RECORD_HEAD.pack(kind, len(payload)) + bytes(payload)


@dataclass(frozen=True)
class Record:
    kind: int
    payload: bytes


class RecordDecoder:
    """Incremental record decoder: ``feed(data)`` then ``next()`` until it returns None."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._head: tuple[int, int] | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data

    def next(self) -> Record | None:
        if self._head is None:
            if len(self._buf) < RECORD_HEAD.size:
                return None
            kind, n = RECORD_HEAD.unpack_from(self._buf)
            if kind not in _KINDS:
                raise InvalidData(f"unknown record kind {kind}")
            limit = MAX_DATA if kind == DATA else MAX_CONTROL
            if n > limit:
                raise InvalidData(f"record of kind {kind} announces {n} bytes; the limit is {limit}")
            del self._buf[:RECORD_HEAD.size]
            self._head = (kind, n)
        kind, n = self._head
        if len(self._buf) < n:
            return None
        payload = bytes(self._buf[:n])
        del self._buf[:n]
        self._head = None
        return Record(kind, payload)


@dataclass(frozen=True)
class Hello:
    pid: int
    read: bool
    write: bool
    computer_name: str


def hello(h: Hello) -> bytes:
    name = h.computer_name.encode("utf-8")[:MAX_COMPUTER_NAME]
    access = (ACCESS_READ if h.read else 0) | (ACCESS_WRITE if h.write else 0)
    return record(HELLO, _HELLO.pack(h.pid & 0xFFFF_FFFF, access, len(name)) + name)


def parse_hello(payload: bytes) -> Hello:
    if len(payload) < _HELLO.size:
        raise InvalidData("HELLO shorter than its fixed part")
    pid, access, n = _HELLO.unpack_from(payload)
    if access & ~(ACCESS_READ | ACCESS_WRITE) or not access:
        raise InvalidData(f"HELLO asks for access bits {access:#x}; 1 (read), 2 (write) or both")
    if n > MAX_COMPUTER_NAME or len(payload) != _HELLO.size + n:
        raise InvalidData("HELLO's computer name length does not match the record")
    try:
        name = payload[_HELLO.size:].decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidData("HELLO's computer name is not UTF-8") from None
    return Hello(pid, bool(access & ACCESS_READ), bool(access & ACCESS_WRITE), name)


@dataclass(frozen=True)
class Ready:
    status: int
    message_type: bool = False
    open_mode: int = 3
    server_pid: int = 0


def ready(r: Ready) -> bytes:
    return record(READY, _READY.pack(r.status, 1 if r.message_type else 0, r.open_mode, r.server_pid & 0xFFFF_FFFF))


def parse_ready(payload: bytes) -> Ready:
    if len(payload) != _READY.size:
        raise InvalidData(f"READY is {len(payload)} bytes, not {_READY.size}")
    status, flags, mode, pid = _READY.unpack(payload)
    if flags & ~1:
        raise InvalidData(f"READY flags {flags:#x}: only bit 0 (message type) is defined")
    if status == 0 and mode not in (1, 2, 3):
        raise InvalidData(f"READY open mode {mode}: 1, 2 or 3")
    return Ready(status, bool(flags & 1), mode, pid)
