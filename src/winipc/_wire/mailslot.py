"""Mailslot datagrams across machines, version 1 (specified in docs/wire/mailslot.md).

One mailslot message is one datagram, over UDP or as one NATS message. The datagram is a
16-byte header (``<2sBBHBBII``, little-endian) followed by the mailslot name, the
broadcast domain, the sender's host name (all UTF-8) and the payload::

    off size field
    0   2    magic b"MS"
    2   1    version = 1
    3   1    flags: bit 0 = BROADCAST; every other bit must be 0
    4   2    N = name length in bytes, 1..255
    6   1    D = domain length, 0..255 (0 unless BROADCAST)
    7   1    H = sender host name length, 0..255
    8   4    sender pid
    12  4    L = payload length
    16  N+D+H+L  name, domain, host, payload

:func:`decode` checks every length in the header against the caps before it copies a
byte out, and raises :class:`winipc.errors.InvalidData` on malformed input, and nothing
else. :func:`encode` raises :class:`winipc.errors.InvalidParameter` for a datagram that
cannot be sent, and never produces one that :func:`decode` refuses. The encoding is
canonical: ``encode(decode(b)) == b`` for every ``b`` that decodes.

:func:`udp_port` and :func:`nats_subject` give the address a mailslot name is reached at.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass

from winipc._core.names import fold
from winipc.errors import InvalidData, InvalidParameter

HEADER = struct.Struct("<2sBBHBBII")
HEADER_SIZE = HEADER.size  # 16
MAGIC = b"MS"
VERSION = 1
FLAG_BROADCAST = 0x01
KNOWN_FLAGS = FLAG_BROADCAST

#: Largest UDP payload over IPv4 (65535 - 20-byte IP header - 8-byte UDP header).
MAX_DATAGRAM = 65_507
#: Largest payload of a broadcast (``\\*\mailslot\x``, ``\\DOMAIN\mailslot\x``), as on Windows.
MAX_BROADCAST_MESSAGE = 424
#: Largest name, domain and host name, in UTF-8 bytes.
MAX_NAME_BYTES = 255
MAX_DOMAIN_BYTES = 255
MAX_HOST_BYTES = 255
#: Largest payload of any datagram: a unicast with a 1-byte name and no host name.
MAX_UNICAST_MESSAGE = MAX_DATAGRAM - HEADER_SIZE - 1  # 65490
MAX_PID = 0xFFFF_FFFF

#: Environment variable moving the UDP port range; read at each :func:`udp_port` call.
PORT_BASE_ENV = "WINIPC_MAILSLOT_PORT_BASE"
DEFAULT_PORT_BASE = 17_000
PORT_SPAN = 4096
MIN_PORT_BASE = 1024
MAX_PORT_BASE = 65_535 - PORT_SPAN  # 61439

#: Every mailslot subject starts with this; its last token is the hex of the folded name.
SUBJECT_PREFIX = "winipc.mailslot.v1"


@dataclass(frozen=True)
class Datagram:
    """One mailslot message as it travels between machines.

    Attributes:
        name: the mailslot name after ``\\mailslot\\`` as the sender spelled it
            (``"taxes\\bobs_comments"``); 1..255 UTF-8 bytes, backslashes separate
            pseudo-directories, no NUL, no ``/``, no empty segment.
        payload: the message, 0..:data:`MAX_BROADCAST_MESSAGE` bytes for a broadcast,
            else up to :func:`max_message` bytes.
        broadcast: True for ``\\\\*\\mailslot\\x`` and ``\\\\DOMAIN\\mailslot\\x``.
        domain: the domain a broadcast targets; ``""`` for a ``*`` broadcast and for
            every unicast. At most 255 UTF-8 bytes; no NUL, ``\\`` or ``/``; not ``"*"``.
        sender_host: the sender's host name (informative), at most 255 UTF-8 bytes; no
            NUL, ``\\`` or ``/``.
        sender_pid: the sender's process id (informative), 0..2**32-1.
    """

    name: str
    payload: bytes
    broadcast: bool = False
    domain: str = ""
    sender_host: str = ""
    sender_pid: int = 0


# -- shared rules (the encoder and the decoder apply the same ones) ------------------------


def _name_problem(name: str) -> str | None:
    """Why ``name`` is not a mailslot name, or None (the length is checked elsewhere)."""
    if "\0" in name:
        return "contains a NUL character"
    if "/" in name:
        return "contains '/', which mailslot names cannot hold"
    if any(not seg for seg in name.split("\\")):
        return "has an empty path segment (a leading, trailing or doubled backslash)"
    return None


def _server_problem(text: str, *, domain: bool) -> str | None:
    """Why a domain or host name is unusable, or None."""
    if "\0" in text:
        return "contains a NUL character"
    if "\\" in text or "/" in text:
        return "contains '\\' or '/'"
    if domain and text == "*":
        return "is reserved: a '*' broadcast has an empty domain"
    return None


def _utf8(value: object, what: str, limit: int, *, minimum: int = 0) -> tuple[str, bytes]:
    """``value`` and its UTF-8, type and length checked; raises InvalidParameter."""
    if not isinstance(value, str):
        raise InvalidParameter(f"{what} must be a str, not {type(value).__name__}")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidParameter(
            f"{what} {value!r} cannot be encoded as UTF-8: {exc.reason}"
        ) from None
    if len(raw) < minimum:
        raise InvalidParameter(f"{what} is empty; it must have {minimum}..{limit} bytes")
    if len(raw) > limit:
        raise InvalidParameter(f"{what} is {len(raw)} bytes in UTF-8; the limit is {limit} bytes")
    return value, raw


def _check_name(name: object) -> bytes:
    text, raw = _utf8(name, "mailslot name", MAX_NAME_BYTES, minimum=1)
    problem = _name_problem(text)
    if problem:
        raise InvalidParameter(f"mailslot name {text!r} {problem}")
    return raw


def _check_server(value: object, what: str, limit: int, *, domain: bool, minimum: int = 0) -> bytes:
    text, raw = _utf8(value, what, limit, minimum=minimum)
    problem = _server_problem(text, domain=domain)
    if problem:
        raise InvalidParameter(f"{what} {text!r} {problem}")
    return raw


def _fields(
    name: object, broadcast: object, domain: object, sender_host: object
) -> tuple[bytes, bytes, bytes]:
    if not isinstance(broadcast, bool):
        raise InvalidParameter(f"broadcast must be a bool, not {type(broadcast).__name__}")
    n = _check_name(name)
    d = _check_server(domain, "domain", MAX_DOMAIN_BYTES, domain=True)
    if d and not broadcast:
        raise InvalidParameter(
            f"domain {domain!r} given for a unicast; only a broadcast has a domain"
        )
    h = _check_server(sender_host, "sender_host", MAX_HOST_BYTES, domain=False)
    return n, d, h


def _cap(n: int, d: int, h: int, broadcast: bool) -> int:
    room = MAX_DATAGRAM - HEADER_SIZE - n - d - h
    return min(room, MAX_BROADCAST_MESSAGE) if broadcast else room


# -- public API ----------------------------------------------------------------------------


def max_message(name: str, *, broadcast: bool, domain: str = "", sender_host: str = "") -> int:
    """The largest payload, in bytes, a datagram with these fields can carry.

    Args:
        name: the mailslot name after ``\\mailslot\\`` (see :class:`Datagram`).
        broadcast: True for a ``*`` or domain broadcast.
        domain: the broadcast's domain, ``""`` for a ``*`` broadcast or a unicast.
        sender_host: the sender's host name as it will be put in the datagram.

    Returns:
        :data:`MAX_BROADCAST_MESSAGE` (424) for a broadcast; for a unicast
        ``65507 - 16 - N - D - H`` with N, D, H the UTF-8 lengths (at most
        :data:`MAX_UNICAST_MESSAGE`).

    Raises:
        InvalidParameter: a field is not valid (the rules of :class:`Datagram`).
    """
    n, d, h = _fields(name, broadcast, domain, sender_host)
    return _cap(len(n), len(d), len(h), broadcast)


def encode(d: Datagram) -> bytes:
    """The wire bytes of one datagram (16-byte header, then name, domain, host, payload).

    Returns:
        ``16 + N + D + H + L`` bytes, at most :data:`MAX_DATAGRAM`.

    Raises:
        InvalidParameter: a field breaks a rule of :class:`Datagram`, or the payload is
            longer than :func:`max_message` allows (the message names the limit).
    """
    if not isinstance(d, Datagram):
        raise InvalidParameter(f"encode takes a Datagram, not {type(d).__name__}")
    n, dom, h = _fields(d.name, d.broadcast, d.domain, d.sender_host)
    payload = d.payload
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise InvalidParameter(f"payload must be bytes, not {type(payload).__name__}")
    body = bytes(payload)
    pid = d.sender_pid
    if isinstance(pid, bool) or not isinstance(pid, int) or not 0 <= pid <= MAX_PID:
        raise InvalidParameter(f"sender_pid {pid!r} is outside 0..{MAX_PID}")
    cap = _cap(len(n), len(dom), len(h), d.broadcast)
    if len(body) > cap:
        if d.broadcast:
            raise InvalidParameter(
                f"message is {len(body)} bytes; a broadcast mailslot message is limited to "
                f"{MAX_BROADCAST_MESSAGE} bytes"
            )
        raise InvalidParameter(
            f"message is {len(body)} bytes; with this name and host a mailslot datagram "
            f"holds at most {cap} bytes (the datagram limit is {MAX_DATAGRAM} bytes)"
        )
    flags = FLAG_BROADCAST if d.broadcast else 0
    header = HEADER.pack(MAGIC, VERSION, flags, len(n), len(dom), len(h), pid, len(body))
    return b"".join((header, n, dom, h, body))


def _text(mv: memoryview, start: int, end: int, what: str) -> str:
    """Strict UTF-8 of ``mv[start:end]`` (at most 255 bytes); raises InvalidData."""
    with mv[start:end] as part:
        raw = bytes(part)
    try:
        return raw.decode("utf-8", "strict")
    except UnicodeDecodeError as exc:
        raise InvalidData(
            f"mailslot datagram: {what} is not valid UTF-8 ({exc.reason} at byte {exc.start})"
        ) from None


def decode(data: bytes | bytearray | memoryview) -> Datagram:
    """Parse one received datagram.

    Args:
        data: exactly one datagram, as ``recvfrom`` or a NATS message gave it.

    Returns:
        The :class:`Datagram`; ``encode`` of it gives ``data`` back byte for byte.

    Raises:
        InvalidData: for any malformed input (short, trailing bytes, bad magic, unknown
            version or flags, a length over its cap, bad UTF-8, a bad name), with a message
            naming the field and the limit. A receiver drops such a datagram.
        InvalidParameter: ``data`` is not a C-contiguous buffer (a caller error, not data).
    """
    try:
        outer = memoryview(data)
    except TypeError:
        raise InvalidParameter(f"data must be bytes-like, not {type(data).__name__}") from None
    with outer:
        if not outer.c_contiguous:
            raise InvalidParameter("data must be a C-contiguous buffer")
        with outer.cast("B") as mv:
            return _decode(mv)


def _decode(mv: memoryview) -> Datagram:
    size = len(mv)
    if size < HEADER_SIZE:
        raise InvalidData(
            f"mailslot datagram: {size} bytes is shorter than the {HEADER_SIZE}-byte header"
        )
    if size > MAX_DATAGRAM:
        raise InvalidData(
            f"mailslot datagram: {size} bytes exceeds the limit of {MAX_DATAGRAM} bytes"
        )
    magic, version, flags, n, d, h, pid, length = HEADER.unpack_from(mv)
    if magic != MAGIC:
        raise InvalidData(f"mailslot datagram: bad magic {magic!r}; expected {MAGIC!r}")
    if version != VERSION:
        raise InvalidData(
            f"mailslot datagram: version {version} is not supported (this receiver knows {VERSION})"
        )
    if flags & ~KNOWN_FLAGS:
        raise InvalidData(
            f"mailslot datagram: unknown flags 0x{flags:02x} (only 0x{KNOWN_FLAGS:02x} is defined)"
        )
    broadcast = bool(flags & FLAG_BROADCAST)
    if n == 0:
        raise InvalidData(
            f"mailslot datagram: name length is 0; a name has 1..{MAX_NAME_BYTES} bytes"
        )
    if n > MAX_NAME_BYTES:
        raise InvalidData(
            f"mailslot datagram: name length {n} exceeds the limit of {MAX_NAME_BYTES} bytes"
        )
    if d and not broadcast:
        raise InvalidData(
            f"mailslot datagram: domain length {d} on a unicast; the limit without BROADCAST is 0"
        )
    if broadcast and length > MAX_BROADCAST_MESSAGE:
        raise InvalidData(
            f"mailslot datagram: payload length {length} exceeds the broadcast limit of "
            f"{MAX_BROADCAST_MESSAGE} bytes"
        )
    total = HEADER_SIZE + n + d + h + length
    if total > MAX_DATAGRAM:
        raise InvalidData(
            f"mailslot datagram: payload length {length} makes the datagram {total} bytes; "
            f"the limit is {MAX_DATAGRAM} bytes"
        )
    if size < total:
        raise InvalidData(
            f"mailslot datagram: truncated: {size} bytes where the header announces {total}"
        )
    if size > total:
        raise InvalidData(
            f"mailslot datagram: trailing bytes: {size} bytes where the header announces {total}"
        )
    at = HEADER_SIZE
    name = _text(mv, at, at + n, "name")
    at += n
    domain = _text(mv, at, at + d, "domain")
    at += d
    host = _text(mv, at, at + h, "sender host")
    at += h
    problem = _name_problem(name)
    if problem:
        raise InvalidData(f"mailslot datagram: name {name!r} {problem}")
    problem = _server_problem(domain, domain=True)
    if problem:
        raise InvalidData(f"mailslot datagram: domain {domain!r} {problem}")
    problem = _server_problem(host, domain=False)
    if problem:
        raise InvalidData(f"mailslot datagram: sender host {host!r} {problem}")
    with mv[at:total] as body:
        payload = bytes(body)
    return Datagram(
        name=name,
        payload=payload,
        broadcast=broadcast,
        domain=domain,
        sender_host=host,
        sender_pid=pid,
    )


def _port_base() -> int:
    raw = os.environ.get(PORT_BASE_ENV)
    if raw is None:
        return DEFAULT_PORT_BASE
    try:
        base = int(raw)
    except ValueError:
        raise InvalidParameter(
            f"{PORT_BASE_ENV}={raw!r} is not an integer; it must be within "
            f"{MIN_PORT_BASE}..{MAX_PORT_BASE}"
        ) from None
    if not MIN_PORT_BASE <= base <= MAX_PORT_BASE:
        raise InvalidParameter(
            f"{PORT_BASE_ENV}={base} is outside {MIN_PORT_BASE}..{MAX_PORT_BASE} "
            f"(the range of {PORT_SPAN} ports must fit below 65536)"
        )
    return base


def udp_port(name: str) -> int:
    """The UDP port of a mailslot name: ``base + crc32(UTF-8 of fold(name)) % 4096``.

    Every name has its own port, so a unicast datagram reaches a socket of that name
    (Linux hands a unicast datagram to only one of the sockets sharing a port). Names are
    case-insensitive: ``Foo`` and ``FOO`` share a port. ``base`` is
    ``$WINIPC_MAILSLOT_PORT_BASE`` (default 17000), read at each call.

    Args:
        name: the mailslot name after ``\\mailslot\\`` (not the full ``\\\\*\\mailslot\\x``).

    Returns:
        A port in ``base .. base + 4095``.

    Raises:
        InvalidParameter: ``name`` is not a valid mailslot name, or
            ``WINIPC_MAILSLOT_PORT_BASE`` is not an integer within 1024..61439.
    """
    _check_name(name)
    base = _port_base()
    return base + zlib.crc32(fold(name).encode("utf-8")) % PORT_SPAN


def _token(text: str) -> str:
    return fold(text).encode("utf-8").hex()


def nats_subject(name: str, *, host: str | None = None, domain: str | None = None) -> str:
    """The NATS subject a mailslot datagram is published on.

    Every variable token is the lowercase hex of the UTF-8 of the case-folded string
    (NATS tokens cannot hold ``.``, ``*``, ``>`` or spaces)::

        winipc.mailslot.v1.all.<name>                 '*' broadcast (no host, no domain)
        winipc.mailslot.v1.domain.<domain>.<name>     broadcast to a domain
        winipc.mailslot.v1.host.<host>.<name>         unicast to one host

    Args:
        name: the mailslot name after ``\\mailslot\\``.
        host: the target host of a unicast.
        domain: the target domain of a broadcast.

    Returns:
        The subject, a str of ASCII letters, digits and dots.

    Raises:
        InvalidParameter: both ``host`` and ``domain`` given, an empty one, or a name,
            host or domain that breaks the rules of :class:`Datagram`.
    """
    _check_name(name)
    if host is not None and domain is not None:
        raise InvalidParameter("give host (unicast) or domain (broadcast), not both")
    if domain is not None:
        _check_server(domain, "domain", MAX_DOMAIN_BYTES, domain=True, minimum=1)
        return f"{SUBJECT_PREFIX}.domain.{_token(domain)}.{_token(name)}"
    if host is not None:
        _check_server(host, "host", MAX_HOST_BYTES, domain=False, minimum=1)
        return f"{SUBJECT_PREFIX}.host.{_token(host)}.{_token(name)}"
    return f"{SUBJECT_PREFIX}.all.{_token(name)}"
