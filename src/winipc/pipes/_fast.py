"""The shared-memory fast path of named pipes: negotiation, spin policy, arrays.

Two local winipc processes connected by a named pipe move their payloads through a pair
of rings in one shared memory region (``winipc._native.ring``, docs/fastpath.md), the way
Windows ALPC moves big messages through shared sections; the pipe's socket stays for
control (handles, disconnect) and liveness. Negotiation (docs/wire/pipe-messages.md):

* a server instance that speaks the fast path listens at ``<pid>.<n>.fp1.sock``;
* a client that speaks it, connecting there, binds its socket to an abstract address
  ``\\0winipc.fp1.<random>`` before it connects, creates the region (a sealed memfd) and
  sends it as the first bytes of the connection: a control frame of kind 2 (FASTPATH)
  with the descriptor as SCM_RIGHTS;
* the server sees the bound address when it accepts, takes the region (validating its
  seals, size and header: the client is not trusted) and from then on both sides move
  data through the rings only.

Anything else (socat, ``nc -U``, an asyncio end, a process without the extension,
``WINIPC_FASTPATH=0``) keeps the plain socket format. Nothing changes in the API.
"""

from __future__ import annotations

import os
import secrets
import socket
import struct
import time
from typing import Any

from winipc import errors as W
from winipc._wire import framing

#: the ring extension module, or None where it is not built (pipes stay on the socket)
_ring: Any = None
try:
    from winipc._native import ring as _loaded

    _ring = _loaded
except ImportError:  # pragma: no cover - a broken install; winipc._native says None itself
    pass

#: suffix of an instance socket whose server speaks the fast path, version 1
SLOT_SUFFIX = ".fp1.sock"
#: prefix of the abstract address a fast-path client binds before it connects
OFFER_PREFIX = b"\0winipc.fp1."
#: control frame kinds of the fast path (see docs/wire/pipe-messages.md)
CONTROL_FASTPATH = 2
CONTROL_DOORBELL = 3
DOORBELL_FRAME = framing.control_frame(CONTROL_DOORBELL, b"")
OFFER_FRAME = framing.control_frame(CONTROL_FASTPATH, b"\x01")
#: bytes per ring (one ring per direction); see docs/fastpath.md for the measurements
RING_CAPACITY = 4 * 1024 * 1024
#: seconds the server waits for an offering client's region after accepting it
OFFER_TIMEOUT = 5.0
#: how long a reader may spin (seconds) before it sleeps, when a spare core exists
SPIN_SECONDS = 50e-6


def enabled(requested: bool | None) -> bool:
    """Whether this end speaks the fast path: not for False, nor with ``WINIPC_FASTPATH=0``."""
    if _ring is None or requested is False:
        return False
    return os.environ.get("WINIPC_FASTPATH", "1").strip().lower() not in ("0", "off", "no", "false")


def spin_ns(peer_pid: int) -> int:
    """Nanoseconds to spin before sleeping: only when a spare core exists.

    ``WINIPC_SPIN`` overrides: ``0``/``off`` never spins, a number is microseconds,
    ``auto`` (default) spins :data:`SPIN_SECONDS` when the two processes may run on two
    different CPUs (the union of their affinity masks has two or more). A spin is
    bounded: an idle pipe spins once, then sleeps in the kernel.
    """
    raw = os.environ.get("WINIPC_SPIN", "auto").strip().lower()
    if raw in ("0", "off", "no", "false"):
        return 0
    if raw not in ("", "auto"):
        try:
            return max(0, min(int(float(raw) * 1000), 10_000_000))
        except ValueError:
            pass
    try:
        cpus = set(os.sched_getaffinity(0))
        try:
            cpus |= set(os.sched_getaffinity(peer_pid))
        except OSError:
            pass
    except (AttributeError, OSError):
        cpus = set(range(os.cpu_count() or 1))
    if len(cpus) < 2:
        return 0  # both pinned to one CPU: spinning would only keep the peer off it
    return int(SPIN_SECONDS * 1e9)


def client_socket() -> socket.socket:
    """An AF_UNIX stream socket bound to a fresh fast-path offer address."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(OFFER_PREFIX + secrets.token_hex(8).encode())
    except BaseException:
        sock.close()
        raise
    return sock


def is_offer(addr: Any) -> bool:
    """Whether an accepted peer's address says it will send a fast-path region."""
    return isinstance(addr, bytes) and addr.startswith(OFFER_PREFIX)


def make_region() -> int:
    """A new region (memfd) with two rings of :data:`RING_CAPACITY` bytes."""
    assert _ring is not None
    try:
        return int(_ring.create(RING_CAPACITY))
    except OSError as exc:
        raise W.WinIPCError(f"cannot create the fast-path region: {exc}", winerror=8) from None


def send_offer(sock: socket.socket, fd: int) -> None:
    """Client: the FASTPATH frame with the region's descriptor, first on the connection."""
    socket.send_fds(sock, [OFFER_FRAME], [fd])


def receive_offer(sock: socket.socket, timeout: float = OFFER_TIMEOUT) -> int:
    """Server: the region an offering client sends first; its descriptor.

    Raises:
        InvalidData: the client sent something else, or nothing in time.
    """
    deadline = time.monotonic() + timeout
    sock.settimeout(timeout)
    fds: list[int] = []
    try:
        data, fds, _flags, _addr = socket.recv_fds(sock, len(OFFER_FRAME), 2)
        while data and len(data) < len(OFFER_FRAME) and not fds:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            more, fds, _flags, _addr = socket.recv_fds(sock, len(OFFER_FRAME) - len(data), 2)
            if not more:
                break
            data += more
    except OSError as exc:
        for fd in fds:
            os.close(fd)
        raise W.InvalidData(f"no fast-path region from the client: {exc}") from None
    finally:
        sock.settimeout(None)
    if data != OFFER_FRAME or len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise W.InvalidData("the client's first frame is not a fast-path offer with one descriptor")
    os.set_inheritable(fds[0], False)
    return fds[0]


def endpoint(fd: int, side: int, sock: socket.socket, max_message: int) -> Any:
    """Map the region ``fd`` as ``side`` (0 server, 1 client); ``fd`` stays open.

    Raises:
        InvalidData: the region is not a valid sealed fast-path region.
    """
    assert _ring is not None
    try:
        return _ring.Endpoint(fd, side, sock.fileno(), max_message=max(max_message, 1))
    except ValueError as exc:
        raise W.InvalidData(f"the peer's fast-path region is invalid: {exc}") from None


# --------------------------------------------------------------------------- arrays
_ARRAY_MAGIC = b"WNDA"
_ARRAY_HEAD = struct.Struct("<4sBBHI")  # magic, version, flags, reserved, header length
_ARRAY_ALIGN = 64
_ARRAY_HEADER_MAX = 4096


def array_header(arr: Any) -> bytes:
    """The bytes that precede an array's data in a message (docs/wire/pipe-messages.md)."""
    import msgpack
    import numpy as np

    if not isinstance(arr, np.ndarray):
        raise W.InvalidParameter(f"send_array needs a numpy.ndarray, not {type(arr).__name__}")
    if arr.dtype.hasobject:
        raise W.InvalidParameter("arrays of Python objects cannot be sent (they would need pickle)")
    descr = np.lib.format.dtype_to_descr(arr.dtype)
    order = "F" if arr.flags.f_contiguous and not arr.flags.c_contiguous else "C"
    meta = bytes(msgpack.packb({"descr": descr, "shape": list(arr.shape), "order": order}, use_bin_type=True))
    if len(meta) > _ARRAY_HEADER_MAX:
        raise W.InvalidParameter(f"the array's description is {len(meta)} bytes; the limit is {_ARRAY_HEADER_MAX}")
    head = _ARRAY_HEAD.pack(_ARRAY_MAGIC, 1, 0, 0, len(meta)) + meta
    pad = -len(head) % _ARRAY_ALIGN
    return head + b"\0" * pad


def array_data(arr: Any) -> memoryview:
    """The array's bytes without a copy when it is contiguous (one copy otherwise)."""
    import numpy as np

    if not (arr.flags.c_contiguous or arr.flags.f_contiguous):
        arr = np.ascontiguousarray(arr)
    order = "F" if arr.flags.f_contiguous and not arr.flags.c_contiguous else "C"
    return memoryview(arr.reshape(-1, order=order).view(np.uint8) if arr.size else b"")


def array_from(buf: Any) -> Any:
    """The array a message holds, as a read-only view of ``buf`` (no copy).

    Raises:
        InvalidData: not an array message, or its description or size is inconsistent.
    """
    import msgpack
    import numpy as np

    view = memoryview(buf).cast("B")
    if view.nbytes < _ARRAY_HEAD.size:
        raise W.InvalidData("not an array message: too short")
    magic, version, _flags, _res, meta_len = _ARRAY_HEAD.unpack_from(view)
    if magic != _ARRAY_MAGIC or version != 1:
        raise W.InvalidData("not an array message (magic or version)")
    if meta_len > _ARRAY_HEADER_MAX or _ARRAY_HEAD.size + meta_len > view.nbytes:
        raise W.InvalidData(f"array description of {meta_len} bytes is too long")
    try:
        meta = msgpack.unpackb(bytes(view[_ARRAY_HEAD.size : _ARRAY_HEAD.size + meta_len]), raw=False)
        dtype = np.lib.format.descr_to_dtype(meta["descr"])
        shape = tuple(int(n) for n in meta["shape"])
        order = meta["order"]
    except Exception as exc:
        raise W.InvalidData(f"bad array description: {exc}") from None
    if dtype.hasobject or order not in ("C", "F") or any(n < 0 for n in shape) or len(shape) > 64:
        raise W.InvalidData("bad array description: object dtype, order, or shape")
    start = _ARRAY_HEAD.size + meta_len
    start += -start % _ARRAY_ALIGN
    count = 1
    for n in shape:
        count *= n
    need = count * dtype.itemsize
    if start + need != view.nbytes:
        raise W.InvalidData(f"array of shape {shape} and dtype {dtype} needs {need} bytes; the message has {view.nbytes - start}")
    flat = np.frombuffer(view, dtype=np.uint8, count=need, offset=start)
    arr = flat.view(dtype).reshape(shape, order=order)
    arr.flags.writeable = False
    return arr


# --------------------------------------------------------------------------- ring errors
class _Never(Exception):
    """Stands for the ring's exceptions where the extension is not built."""


SocketEvent: type[Exception] = _ring.SocketEvent if _ring is not None else _Never
ControlPending: type[Exception] | None = _ring.ControlPending if _ring is not None else None


def socket_ended(sock: socket.socket) -> bool:
    """Whether the peer has hung up the control socket (non-blocking)."""
    import select

    p = select.poll()
    p.register(sock, select.POLLIN | getattr(select, "POLLRDHUP", 0x2000))
    return any(
        ev & (select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0x2000))
        for _fd, ev in p.poll(0)
    )
