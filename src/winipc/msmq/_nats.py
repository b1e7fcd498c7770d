"""The NATS JetStream backend of :mod:`winipc.msmq` (``nats://host:port/queue``).

A queue is four JetStream streams on the server (docs/wire/msmq-nats.md has the
byte-level mapping, for other languages):

* ``WINIPC_MSMQ_<tok>``: the queue itself, subjects ``winipc.msmq.<tok>.p0`` ..
  ``.p7`` (one per priority), work-queue retention, ``max_bytes`` = the quota
  (``discard: new``), one durable pull consumer per priority (``p0`` .. ``p7``);
* ``WINIPC_MSMQ_<tok>__JOURNAL`` / ``__POISON`` / ``__DEADLETTER``: the subqueues,
  subjects ``winipc.msmq.<tok>.journal`` ..., one durable pull consumer ``r`` each
  (the journal's ``max_bytes`` is the journal quota, ``discard: old``).

``<tok>`` is the case-folded queue name with every byte outside ``[a-z0-9-]`` written
``_xx`` (hex). Message properties travel in headers (``Winipc-*``), the body is the
payload, the MSMQ message id is ``Nats-Msg-Id`` (the server drops a second publish of
one id within the stream's duplicate window, 2 minutes: exactly-once publishing).

A plain receive is, by default, MSMQ's: a look at which priorities hold messages
(STREAM.INFO), a pull of one message from the highest and the delete of its sequence,
confirmed before receive returns (at most once, also across a crash; a receive by id or
cursor elsewhere that took it first makes the delete fail, and the receive moves on).
A handle opened with ``prefetch=N`` pulls up to N messages ahead from the highest
priority that may hold messages (known from publish notifications and the consumers'
pending counts, a look only when those cannot say) and sends each ``+ACK`` without
waiting for the server's confirmation: at-least-once. A transaction holds the delivery
un-acknowledged (``+WPI`` keeps it) and acknowledges on commit or ``-NAK``s on abort.
Peek reads the stream by sequence (STREAM.MSG.GET) and consumes nothing. A plain send
publishes over the sending handle's own connection from the caller's thread (one round
trip). docs/wire/msmq-nats.md ("How a receive finds its message cheaply") has the
details and the trade-offs.

Durability: a JetStream server acknowledges a publish once the message is in its
store's write buffer; nats-server before 2.10 never fsyncs before acknowledging, and
2.10+ does only with ``sync_interval: always``. :func:`server_durability` reads what
the server does; where a recoverable send is not on disk when acknowledged, the first
recoverable send of each handle warns with :class:`DurabilityWarning` and
:meth:`NatsQueue.stat` says so (``recoverable_is_durable=False``).
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import binascii
import bisect
import collections
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import datetime
import hashlib
import importlib
import json
import math
import os
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

from winipc import errors as W
from winipc._backends import posix as B
from winipc._backends.nats import NatsLink, nats_url
from winipc._core.security import SecurityAttributes
from winipc.msmq import _message as M
from winipc.msmq._api import (
    Cursor,
    Queue,
    QueueAccess,
    QueueInfo,
    QueueStat,
    ShareMode,
    Transaction,
    TxArg,
    _Single,
    check_queue_properties,
)
from winipc.msmq._names import (
    SUB_DEADLETTER,
    SUB_JOURNAL,
    SUB_POISON,
    SUBQUEUES,
    QueueRef,
    parse,
)

T = TypeVar("T")

#: Subject prefix of every winipc queue subject.
SUBJECT_PREFIX = "winipc.msmq"
#: Stream name prefix of every winipc queue stream.
STREAM_PREFIX = "WINIPC_MSMQ_"
#: Version of the header mapping (header ``Winipc-Msmq``).
WIRE_VERSION = "1"
#: Seconds a delivery may stay unacknowledged before the server redelivers it (the
#: consumers' ``ack_wait``, fixed when the queue is created). Open transactions keep
#: their messages with ``+WPI`` every third of it; a receiver that dies loses its
#: messages back to the queue after at most this long.
ACK_WAIT = 30.0
#: Seconds within which a second publish of one message id is dropped by the server.
DUPLICATE_WINDOW = 120.0
#: Seconds a JetStream API call may take before IoTimeout.
API_TIMEOUT = 5.0
#: Longest single server-side wait of a blocking receive (seconds); it then re-checks.
LONG_PULL = 30.0
#: Seconds a receiving handle trusts its arrival notifications before it looks at the
#: stream's subjects again (redeliveries after the ack wait are not notified).
LOOK_EVERY = 1.0
#: Largest ``prefetch`` a receiving handle may ask for (``msmq.open(..., prefetch=N)``):
#: the most messages it pulls at once and holds, unacknowledged, for its next receives.
MAX_PREFETCH = 256
#: Receives in a row, each within PULL_AHEAD_GAP seconds of the one before, after which a
#: prefetching handle keeps a pull waiting on the server for the next messages (see
#: NatsQueue._pull_ahead): its receives then take them in the caller's thread.
PULL_AHEAD_AFTER = 2
PULL_AHEAD_GAP = 0.05
#: Seconds such a pull waits on the server (it asks for up to ``prefetch`` messages).
PULL_AHEAD_WAIT = 0.25
#: Plain sends go over a connection of the sending handle, from the sending thread
#: (see _DirectSender); False: every call goes through the process's shared link.
DIRECT_SENDS = True
#: Seconds after which an unused direct send connection is replaced before the next send
#: (a server drops clients whose pings went unanswered, 2 minutes apart by default).
DIRECT_IDLE = 20.0
#: Seconds a receive handed out from the prefetch buffer may wait for its ``+ACK`` to be
#: sent (together with the others of that moment: one write instead of one each).
ACK_DELAY = 0.002
#: Messages pending at a priority from which a receiving handle stops being notified of
#: publishes at that priority and below (see NatsQueue._rewatch).
BACKLOG = 4
#: Seconds a receive waits on the server for a message it was notified of but did not
#: find yet (the notification can arrive before the stream stored the message).
SUSPECT_FOR = 0.5
#: Longest queue label (characters, MQ_MAX_Q_LABEL_LEN).

_SUBSTREAM = {SUB_JOURNAL: "__JOURNAL", SUB_POISON: "__POISON", SUB_DEADLETTER: "__DEADLETTER"}
_PRIORITIES = tuple(range(M.MAX_PRIORITY, M.MIN_PRIORITY - 1, -1))  # 7 .. 0


class DurabilityWarning(UserWarning):
    """A recoverable message was acknowledged by a NATS server that does not sync it to
    disk first (it may be lost if the server's machine crashes). Filter it with
    ``warnings.filterwarnings("ignore", category=DurabilityWarning)``."""


# ----------------------------------------------------------------------------- names


def default_url() -> str | None:
    """The NATS server for remote path names (``HOST\\\\private$\\\\q``): ``$WINIPC_NATS_URL``."""
    return nats_url(None)


def _encode_token(text: str) -> str:
    out = []
    for ch in text:
        if ch.isascii() and (ch.isdigit() or "a" <= ch <= "z" or ch == "-"):
            out.append(ch)
        else:
            out.extend(f"_{b:02x}" for b in ch.encode("utf-8"))
    tok = "".join(out)
    if len(tok) > 120:  # stream names become directory names: keep them short
        tok = tok[:96] + "__H" + hashlib.sha256(tok.encode()).hexdigest()[:20]
    return tok


@dataclasses.dataclass(frozen=True)
class _Names:
    """Streams, subjects and consumers of one queue on one server."""

    url: str
    key: str  # the case-folded queue identity
    tok: str

    @classmethod
    def of(cls, ref: QueueRef) -> _Names:
        url = ref.url
        if url is None:
            url = default_url()
            if url is None:
                raise W.QueueNotAvailable(
                    f"queue {ref}: remote queues go through NATS: set WINIPC_NATS_URL or use nats://server:port/queue"
                )
            key = f"{ref.host.casefold()}\\{ref.key}"
        else:
            key = ref.name.casefold()
        return cls(url=url, key=key, tok=_encode_token(key))

    @property
    def stream(self) -> str:
        return STREAM_PREFIX + self.tok

    def sub_stream(self, sub: str) -> str:
        return self.stream + _SUBSTREAM[sub] if sub else self.stream

    def subject(self, priority: int) -> str:
        return f"{SUBJECT_PREFIX}.{self.tok}.p{priority}"

    def sub_subject(self, sub: str) -> str:
        return f"{SUBJECT_PREFIX}.{self.tok}.{sub}"

    @property
    def wake(self) -> str:
        return f"{SUBJECT_PREFIX}.{self.tok}.wake"

    @property
    def receivers(self) -> str:
        return f"{SUBJECT_PREFIX}.{self.tok}.receivers"

    @property
    def all_subjects(self) -> str:
        return f"{SUBJECT_PREFIX}.{self.tok}.*"


def _same_server(a: str, b: str) -> bool:
    def norm(u: str) -> set[str]:
        out = set()
        for one in u.split(","):
            s = urlsplit(one.strip())
            out.add(f"{(s.hostname or '').casefold()}:{s.port or 4222}")
        return out

    return bool(norm(a) & norm(b))


# ----------------------------------------------------------------------------- headers

_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")
H_VERSION = "Winipc-Msmq"
H_ID = "Nats-Msg-Id"
H_EXPECTED_STREAM = "Nats-Expected-Stream"
_STR_HEADERS = {
    "label": "Winipc-Label",
    "correlation_id": "Winipc-Correlation-Id",
    "response_queue": "Winipc-Response-Queue",
    "admin_queue": "Winipc-Admin-Queue",
    "source_machine": "Winipc-Source-Machine",
    "destination_queue": "Winipc-Destination-Queue",
}
_INT_HEADERS = {
    "priority": "Winipc-Priority",
    "app_specific": "Winipc-App-Specific",
    "delivery": "Winipc-Delivery",
    "acknowledge": "Winipc-Acknowledge",
    "message_class": "Winipc-Class",
    "sender_pid": "Winipc-Sender-Pid",
    "sender_uid": "Winipc-Sender-Uid",
}
_FLOAT_HEADERS = {
    "time_to_reach_queue": "Winipc-Time-To-Reach-Queue",
    "time_to_be_received": "Winipc-Time-To-Be-Received",
    "sent_time": "Winipc-Sent-Time",
}
_BOOL_HEADERS = {"use_dead_letter": "Winipc-Dead-Letter", "transactional": "Winipc-Transactional"}
H_BODY_TYPE = "Winipc-Body-Type"
H_ARRIVED = "Winipc-Arrived-Time"  # set on copies moved to a subqueue: the original arrival
H_ABORTS = "Winipc-Abort-Count"  # set on copies moved to a subqueue


#: Values a reader assumes for an absent header (the Message defaults): not written.
_INT_DEFAULTS = {"priority": M.DEFAULT_PRIORITY, "app_specific": 0, "delivery": int(M.Delivery.RECOVERABLE),
                 "acknowledge": 0, "message_class": int(M.MessageClass.NORMAL)}


_SENDER_STR = ("source_machine", "destination_queue")
_SENDER_INT = ("sender_pid", "sender_uid")
#: (stream, machine, pid, uid, destination) -> the headers every message of that sender
#: to that queue has; bounded.
_static_headers: dict[tuple[str, str, int, int, str], dict[str, str]] = {}


def _quote(v: str) -> str:
    return v if v.isascii() and v.isalnum() else quote(v, safe=_SAFE)


def _headers(m: M.Message, stream: str) -> dict[str, str]:
    """The headers of a message (``Winipc-*``): properties equal to the Message defaults
    are left out (an absent header means the default; fewer headers are cheaper to
    write and to parse, in every receiver and in the server)."""
    key = (stream, m.source_machine, int(m.sender_pid), int(m.sender_uid), m.destination_queue)
    static = _static_headers.get(key)
    if static is None:
        static = {H_VERSION: WIRE_VERSION, H_EXPECTED_STREAM: stream}
        for name in _SENDER_STR:
            v = getattr(m, name)
            if v:
                static[_STR_HEADERS[name]] = _quote(v)
        for name in _SENDER_INT:
            static[_INT_HEADERS[name]] = str(int(getattr(m, name)))
        if len(_static_headers) > 256:
            _static_headers.clear()
        _static_headers[key] = static
    h = dict(static)
    h[H_ID] = m.id
    if m.body_type != M.BODY_BYTES:
        h[H_BODY_TYPE] = m.body_type
    for name, hdr in _STR_HEADERS.items():
        if name in _SENDER_STR:
            continue
        v = getattr(m, name)
        if v is not None and (v != "" or name == "correlation_id"):
            h[hdr] = _quote(v)
    for name, hdr in _INT_HEADERS.items():
        if name in _SENDER_INT:
            continue
        iv = int(getattr(m, name))
        if _INT_DEFAULTS.get(name) != iv:
            h[hdr] = str(iv)
    for name, hdr in _FLOAT_HEADERS.items():
        v = getattr(m, name)
        if v is not None:
            h[hdr] = repr(float(v))
    for name, hdr in _BOOL_HEADERS.items():
        if getattr(m, name):
            h[hdr] = "1"
    return h


def _parse_raw_headers(raw: bytes) -> dict[str, str]:
    """``NATS/1.0\\r\\nKey: value\\r\\n...`` (STREAM.MSG.GET's ``hdrs``) -> lower-cased keys."""
    out: dict[str, str] = {}
    lines = raw.decode("utf-8", "replace").split("\r\n")
    for line in lines[1:]:
        if not line:
            continue
        k, sep, v = line.partition(":")
        if sep:
            out.setdefault(k.strip().lower(), v.strip())
    return out


def _lower(h: dict[str, Any] | None) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in (h or {}).items()}


def _foreign_id(stream: str, seq: int) -> str:
    return "{" + str(uuid.uuid5(uuid.NAMESPACE_URL, "winipc-msmq:" + stream)).upper() + "}\\" + str(seq)


_LOW_STR = tuple((name, hdr.lower()) for name, hdr in _STR_HEADERS.items())
_LOW_INT = tuple((name, hdr.lower()) for name, hdr in _INT_HEADERS.items())
_LOW_FLOAT = tuple((name, hdr.lower()) for name, hdr in _FLOAT_HEADERS.items())
_LOW_BOOL = tuple((name, hdr.lower()) for name, hdr in _BOOL_HEADERS.items())
_LOW_VERSION, _LOW_ID, _LOW_ARRIVED, _LOW_ABORTS, _LOW_BODY_TYPE = (
    H_VERSION.lower(), H_ID.lower(), H_ARRIVED.lower(), H_ABORTS.lower(), H_BODY_TYPE.lower())


def _decode(h: dict[str, str], data: bytes, *, stream: str, seq: int, arrived: float, aborts: int) -> M.Message:
    """A Message from lower-cased headers and the payload; raises CorruptQueueError."""
    if _LOW_VERSION not in h:
        # a plain NATS publish to a queue subject: a bytes body with default properties
        mid = h.get(_LOW_ID) or _foreign_id(stream, seq)
        return M.Message(body=data, id=mid, lookup_id=seq, arrived_time=arrived, sent_time=arrived,
                         abort_count=aborts)
    kw: dict[str, Any] = {}
    get = h.get
    try:
        for name, hdr in _LOW_STR:
            v = get(hdr)
            if v is not None:
                kw[name] = unquote(v, errors="strict") if "%" in v else v
        for name, hdr in _LOW_INT:
            v = get(hdr)
            if v is not None:
                kw[name] = int(v)
        for name, hdr in _LOW_FLOAT:
            v = get(hdr)
            if v is not None:
                f = float(v)
                if math.isnan(f):
                    raise ValueError("NaN")
                kw[name] = f
        for name, hdr in _LOW_BOOL:
            v = get(hdr)
            if v is not None:
                kw[name] = v == "1"
        if _LOW_ARRIVED in h:
            arrived = float(h[_LOW_ARRIVED])
        if _LOW_ABORTS in h:
            aborts = max(aborts, int(h[_LOW_ABORTS]))
    except (ValueError, UnicodeDecodeError) as exc:
        raise W.CorruptQueueError(f"message {seq} of stream {stream}: bad property header ({exc})") from None
    kind = get(_LOW_BODY_TYPE, M.BODY_BYTES)
    kw["id"] = get(_LOW_ID) or _foreign_id(stream, seq)
    kw["lookup_id"] = seq
    kw["arrived_time"] = arrived
    kw["abort_count"] = aborts
    kw["body_type"] = kind
    body = M.decode_body(data, kind)
    return M.from_record(kw, body)


def _parse_time(text: str) -> float:
    """RFC 3339 with nanoseconds (JetStream's) -> seconds since the epoch."""
    try:
        main, _, frac = text.rstrip("Z").partition(".")
        dt = datetime.datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
        return dt.timestamp() + (float("0." + frac) if frac else 0.0)
    except ValueError:
        return time.time()


@dataclasses.dataclass
class _Delivery:
    """One message pulled from a consumer (not yet acknowledged)."""

    stream: str
    consumer: str
    reply: str
    seq: int
    delivered: int
    arrived: float
    headers: dict[str, str]
    data: bytes
    pending: int = 0  # messages of the consumer not yet delivered after this one


def _parse_ack_subject(reply: str) -> tuple[str, str, int, int, float, int] | None:
    """``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>`` (v1) or the
    v2 form with domain and account hash -> (stream, consumer, delivered, sseq, seconds,
    pending)."""
    t = reply.split(".")
    if len(t) < 9 or t[0] != "$JS" or t[1] != "ACK":
        return None
    try:
        if len(t) == 9:
            return t[2], t[3], int(t[4]), int(t[5]), int(t[7]) / 1e9, int(t[8])
        return t[4], t[5], int(t[6]), int(t[7]), int(t[9]) / 1e9, int(t[10]) if len(t) > 10 else 0
    except ValueError:
        return None


# ----------------------------------------------------------------------------- server calls


def _msmq_error(exc: BaseException, what: str) -> BaseException:
    if isinstance(exc, W.MsmqError | W.CorruptQueueError | W.InvalidHandle | W.NotSupported):
        return exc
    if isinstance(exc, W.Timeout):
        return W.IoTimeout(f"{what}: the NATS server did not answer in time ({exc.strerror})")
    if isinstance(exc, (W.BadNetPath, W.AccessDenied, OSError)):
        return W.QueueNotAvailable(f"{what}: {exc}")
    return exc


def _acquire(url: str, what: str) -> NatsLink:
    try:
        return NatsLink.acquire(url)
    except (W.BadNetPath, W.AccessDenied) as exc:
        raise W.QueueNotAvailable(f"{what}: {exc}") from None


def _boxed(fn: Callable[[Any], Awaitable[T]]) -> Callable[[Any], Awaitable[tuple[bool, Any]]]:
    """``fn`` with its winipc errors returned, not raised: the link would take an
    IoTimeout (a TimeoutError) raised inside for its own call timing out."""

    async def run(nc: Any) -> tuple[bool, Any]:
        try:
            return True, await fn(nc)
        except W.WinIPCError as exc:
            return False, exc

    return run


def _run(link: NatsLink, fn: Callable[[Any], Awaitable[T]], *, timeout: float | None, what: str,
         receiver: NatsQueue | None = None) -> T:
    """``await fn(nc)`` on the link's loop from a caller's thread; winipc errors raised.

    One hop to the loop and back (:meth:`NatsLink.spawn` and the future's result), with
    no time-out task on the loop: ``timeout`` (seconds, None: none) is kept by the
    waiting thread, which cancels ``fn`` when it passes (IoTimeout).

    First the receiving handles of this link with ``+ACK`` s not yet confirmed get them
    confirmed (all but ``receiver``, the handle receiving with this call): whatever
    this process does after a receive returned finds the message gone."""
    if threading.current_thread() is link.thread:
        raise W.NotSupported(f"{what}: blocking NATS calls cannot be made from the link's own thread")
    owed = [q for q in _deferred_on(link) if q is not receiver]
    if owed:
        inner = fn

        async def fn(nc: Any) -> T:
            for q in owed:
                await q._confirm_acks(nc)
            return await inner(nc)

    try:
        fut: concurrent.futures.Future[tuple[bool, Any]] = link.spawn(_boxed(fn))  # type: ignore[arg-type,assignment]
    except Exception as exc:
        err = _msmq_error(exc, what)
        if err is exc:
            raise
        raise err from None
    try:
        ok, value = fut.result(timeout)
    except concurrent.futures.TimeoutError:
        fut.cancel()
        raise W.IoTimeout(f"{what}: the NATS server did not answer within {timeout:g} s") from None
    except concurrent.futures.CancelledError:
        raise W.QueueNotAvailable(f"{what}: the NATS link was closed") from None
    except Exception as exc:
        err = _msmq_error(link._translate(exc, what, timeout), what)  # nats-py's errors, as NatsLink.call does
        raise err from None
    if not ok:
        raise value
    out: T = value
    return out


@contextlib.contextmanager
def _linked(url: str, what: str) -> Iterator[NatsLink]:
    link = _acquire(url, what)
    try:
        yield link
    finally:
        link.release()


def _nats_errors() -> Any:
    import nats.errors

    return nats.errors


async def _api(nc: Any, subject: str, body: dict[str, Any] | None = None, *, timeout: float = API_TIMEOUT) -> dict[str, Any]:
    """One JetStream API request (``$JS.API.<subject>``); returns the decoded answer."""
    errors = _nats_errors()
    payload = b"" if body is None else json.dumps(body).encode()
    try:
        msg = await nc.request("$JS.API." + subject, payload, timeout=timeout)
    except errors.NoRespondersError:
        raise W.QueueNotAvailable("the NATS server has no JetStream (start it with -js)") from None
    except errors.TimeoutError:
        raise W.IoTimeout(f"JetStream API {subject}: no answer within {timeout:g} s") from None
    try:
        out = json.loads(msg.data)
    except ValueError:
        raise W.MsmqError(f"JetStream API {subject}: unreadable answer") from None
    if not isinstance(out, dict):
        raise W.MsmqError(f"JetStream API {subject}: unreadable answer")
    return out


def _api_error(resp: dict[str, Any]) -> tuple[int, str] | None:
    err = resp.get("error")
    if not isinstance(err, dict):
        return None
    return int(err.get("err_code", 0) or 0), str(err.get("description", "error"))


ERR_STREAM_NOT_FOUND = 10059
ERR_STREAM_NAME_IN_USE = 10058
ERR_NO_MESSAGE = 10037
ERR_MSG_DELETE = 10057  # STREAM.MSG.DELETE failed ("no message found": deleted already)
ERR_MAX_BYTES = 10077


async def _stream_info(nc: Any, stream: str, ref: object, *, subjects: bool = False) -> dict[str, Any]:
    resp = await _api(nc, f"STREAM.INFO.{stream}", {"subjects_filter": ">"} if subjects else None)
    err = _api_error(resp)
    if err is not None:
        if err[0] == ERR_STREAM_NOT_FOUND:
            raise W.QueueNotFound(f"queue {ref} does not exist (no JetStream stream {stream})")
        raise W.MsmqError(f"queue {ref}: {err[1]}")
    return resp


class _Inbox:
    """A receiving handle's reply subscription for its pulls (loop-only): one
    subscription for the handle's life instead of a SUB and UNSUB per pull.

    A pull of one message has exactly one answer (the message, or a status when there is
    none). JetStream delivers a pulled message under its own subject, so answers are
    told apart by order only: pulls take turns, each takes the next answer. A pull that
    gives up waiting (cancelled, or no answer in time) drops the subscription, so a late
    answer is never handed out (the server redelivers it after the ack wait, as before)."""

    def __init__(self) -> None:
        self.subject = ""
        self.sub: Any = None
        self.lock = asyncio.Lock()

    async def ensure(self, nc: Any) -> Any:
        if self.sub is None:
            self.subject = nc.new_inbox()
            self.sub = await nc.subscribe(self.subject)
        return self.sub

    async def close(self) -> None:
        sub, self.sub = self.sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


async def _pull(nc: Any, inbox: _Inbox, stream: str, consumer: str, *, expires: float | None,
                timeout: float = API_TIMEOUT, batch: int = 1) -> list[_Delivery]:
    """Pull up to ``batch`` messages from a durable consumer: what is there at once
    (``expires=None``, no_wait) or waiting on the server up to ``expires`` seconds for
    the first. Empty when there is none.

    The answer is the messages and, when fewer than ``batch`` came, a status ending it
    (404 no messages, 408 request timeout)."""
    if expires is None:
        req = _NO_WAIT if batch == 1 else json.dumps({"batch": batch, "no_wait": True}).encode()
    else:
        req = json.dumps({"batch": batch, "expires": int(expires * 1e9)}).encode()
    wait = timeout if expires is None else expires + timeout
    out: list[_Delivery] = []
    async with inbox.lock:  # pulls take turns: each reads its own answer
        sub = await inbox.ensure(nc)
        done = False
        try:
            await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}", req, reply=inbox.subject)
            while len(out) < batch:
                try:
                    msg = await sub.next_msg(wait if not out else timeout)
                except _nats_errors().TimeoutError:
                    break  # the consumer (or stream) is gone; the caller checks
                h = _lower(msg.headers)
                status = h.get("status")
                if status is not None and not msg.data and not msg.reply:
                    if status == "409" and "deleted" in h.get("description", "").lower():
                        done = True
                        raise W.QueueDeleted(f"stream {stream}: the consumer was deleted")
                    done = True
                    return out
                meta = _parse_ack_subject(msg.reply or "")
                if meta is None:
                    continue
                out.append(_Delivery(stream=meta[0], consumer=meta[1], reply=msg.reply, seq=meta[3],
                                     delivered=meta[2], arrived=meta[4], headers=h, data=bytes(msg.data),
                                     pending=meta[5]))
            done = len(out) == batch
        finally:
            if not done:
                await inbox.close()  # a late answer must not be read as the next pull's
    return out


_NO_WAIT = json.dumps({"batch": 1, "no_wait": True}).encode()


async def _ack(nc: Any, reply: str, kind: bytes = b"+ACK", *, sync: bool = True) -> None:
    if sync:
        with contextlib.suppress(_nats_errors().TimeoutError):
            await nc.request(reply, kind, timeout=API_TIMEOUT)
    else:
        await nc.publish(reply, kind)


async def _get_msg(nc: Any, stream: str, seq: int, subject: str | None = None) -> tuple[int, dict[str, str], bytes, float] | None:
    """STREAM.MSG.GET: the message at ``seq`` (or the first at/after it on ``subject``)."""
    body: dict[str, Any] = {"seq": seq}
    if subject is not None:
        body["next_by_subj"] = subject
    resp = await _api(nc, f"STREAM.MSG.GET.{stream}", body)
    err = _api_error(resp)
    if err is not None:
        if err[0] == ERR_NO_MESSAGE or "no message" in err[1]:
            return None
        if err[0] == ERR_STREAM_NOT_FOUND:
            raise W.QueueDeleted(f"stream {stream} was deleted")
        raise W.MsmqError(f"stream {stream}: {err[1]}")
    m = resp.get("message") or {}
    try:
        hdrs = _parse_raw_headers(base64.b64decode(m.get("hdrs") or b"", validate=True))
        data = base64.b64decode(m.get("data") or b"", validate=True)
    except (binascii.Error, ValueError):
        raise W.CorruptQueueError(f"stream {stream} message {seq}: undecodable") from None
    return int(m.get("seq", seq)), hdrs, data, _parse_time(str(m.get("time", "")))


def _ack_consumer(reply: str) -> str:
    """The consumer part of a delivery's reply subject (``$JS.ACK.<stream>.<consumer>``)."""
    t = reply.split(".")
    return ".".join(t[:4] if len(t) == 9 else t[:6])


def _buffer(buf: collections.deque[tuple[float, _Delivery]], now: float, d: _Delivery) -> None:
    """Put a delivery in a prefetch buffer in stream order (FIFO within a priority), also
    when the answers of two pulls were read out of turn."""
    if not buf or buf[-1][1].seq < d.seq:
        buf.append((now, d))
        return
    items = list(buf)
    items.insert(bisect.bisect([x[1].seq for x in items], d.seq), (now, d))
    buf.clear()
    buf.extend(items)


async def _delete_msg(nc: Any, stream: str, seq: int) -> bool:
    resp = await _api(nc, f"STREAM.MSG.DELETE.{stream}", {"seq": seq, "no_erase": True})
    err = _api_error(resp)
    if err is None:
        return True
    if err[0] == ERR_STREAM_NOT_FOUND:
        raise W.QueueDeleted(f"stream {stream} was deleted")
    return False


async def _nothing(nc: Any) -> None:
    return None


def _loop_running() -> bool:
    """Whether an asyncio event loop runs in this thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class _DirectSender:
    """A sending handle's own NATS connection, driven by the one thread that sends on it
    (a private event loop run for the length of each send, as a plain nats-py program
    does): a send is then one round trip from the caller's thread, with no hand-over
    to the shared link's thread and back (two thread wake-ups fewer per message).

    Between sends nothing runs on it; a connection the server dropped meanwhile (it
    closes clients that leave its pings unanswered for minutes) is replaced on the next
    send. Any failure other than a winipc error retires it for good, and that send goes
    through the shared link again (same message ids: de-duplicated by the server)."""

    def __init__(self, url: str, thread: int) -> None:
        self.url = url
        self.thread = thread
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.nc: Any = None
        self.broken = False
        self.used = 0.0  # time.monotonic() of the last send

    def _connect(self) -> None:
        nats = importlib.import_module("nats")
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
            _direct_senders.add(self)

        async def connect() -> Any:
            nc = await nats.connect(
                [u.strip() for u in self.url.split(",")], allow_reconnect=False, connect_timeout=API_TIMEOUT,
                max_reconnect_attempts=0, name=f"winipc pid {os.getpid()} sender")
            return nc

        self.nc = self.loop.run_until_complete(connect())

    def run(self, fn: Callable[[Any], Awaitable[None]]) -> bool:
        """``await fn(nc)`` on this connection; False (and retired) when it failed in a
        way the shared link should retry. Winipc errors are raised."""
        try:
            now = time.monotonic()
            if self.nc is None or not self.nc.is_connected or now - self.used > DIRECT_IDLE:
                # idle: the server may have dropped it (unanswered pings): a fresh one
                self._close_quietly()
                self._connect()
            self.used = now
            assert self.loop is not None
            self.loop.run_until_complete(fn(self.nc))
            return True
        except W.IoTimeout:
            pass  # no PubAck on this connection: the shared link retries (de-duplicated)
        except W.WinIPCError:
            raise
        except Exception:
            pass
        self.broken = True
        self._close_quietly()
        return False

    def _close_quietly(self) -> None:
        nc, self.nc = self.nc, None
        if nc is not None and self.loop is not None and self.pid == os.getpid():
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(asyncio.wait_for(nc.close(), 2.0))

    def close(self) -> None:
        """Close the connection and the loop (from any thread; one with an asyncio loop
        running hands the work to a helper thread)."""
        if _loop_running():
            helper = threading.Thread(target=self.close, name="winipc-nats-sender-close", daemon=True)
            helper.start()
            helper.join(5.0)
            return
        with self.lock:
            self.broken = True
            self._close_quietly()
            if self.loop is not None and self.pid == os.getpid():
                with contextlib.suppress(Exception):
                    self.loop.close()
            self.loop = None
        _direct_senders.discard(self)


#: Receiving handles of this process (with notification subscriptions).
_receivers: weakref.WeakSet[NatsQueue] = weakref.WeakSet()

def _receivers_on(link: NatsLink) -> list[NatsQueue]:
    """The receiving handles of this process on ``link``."""
    for _ in range(3):
        try:
            return [q for q in list(_receivers) if q._link is link]
        except RuntimeError:  # the set changed meanwhile (another thread)
            continue
    return []


#: Open direct senders, closed at exit if their handles were not.
_direct_senders: weakref.WeakSet[_DirectSender] = weakref.WeakSet()


@atexit.register
def _close_direct_senders() -> None:
    for d in list(_direct_senders):
        with contextlib.suppress(Exception):
            d.close()


async def _publish(nc: Any, subject: str, headers: dict[str, str], data: bytes, *, what: str) -> dict[str, Any]:
    """A JetStream publish; returns the PubAck (``seq``, ``duplicate``)."""
    errors = _nats_errors()
    try:
        msg = await nc.request(subject, data, timeout=API_TIMEOUT, headers=headers)
    except errors.NoRespondersError:
        raise W.QueueDeleted(f"{what}: no stream takes {subject} (the queue was deleted)") from None
    except errors.TimeoutError:
        raise W.IoTimeout(f"{what}: the NATS server did not acknowledge within {API_TIMEOUT:g} s "
                          "(the message may still arrive; a retry with the same id is de-duplicated)") from None
    try:
        ack = json.loads(msg.data)
    except ValueError:
        raise W.MessageStorageFailed(f"{what}: unreadable acknowledgement") from None
    err = _api_error(ack)
    if err is not None:
        if err[0] == ERR_MAX_BYTES or "maximum bytes" in err[1] or "maximum messages" in err[1]:
            raise W.InsufficientResources(f"{what}: the queue's quota is full ({err[1]})")
        if "expected stream" in err[1]:
            raise W.QueueDeleted(f"{what}: {err[1]}")
        raise W.MessageStorageFailed(f"{what}: {err[1]}")
    return ack  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------- durability

_durability_cache: dict[str, tuple[bool, str]] = {}
_durability_lock = threading.Lock()


def _version(text: str) -> tuple[int, ...]:
    out = []
    for part in text.split("-", 1)[0].split("."):
        try:
            out.append(int(part))
        except ValueError:
            break
    return tuple(out)


def server_durability(link: NatsLink) -> tuple[bool, str]:
    """Whether the server syncs a JetStream message to disk before acknowledging it, and
    why we think so (words for QueueStat.durability).

    Reads the server version from its INFO; for nats-server >= 2.10 asks ``$SYS`` varz
    (answered only for the system account) for ``sync_always``. Unknown means no.
    """
    with _durability_lock:
        if link.url in _durability_cache:
            return _durability_cache[link.url]
    info = link.server_info
    version = str(info.get("version", "?"))
    synced = False
    if _version(version) >= (2, 10):

        async def varz(nc: Any) -> Any:
            try:
                msg = await nc.request("$SYS.REQ.SERVER.PING.VARZ", b"{}", timeout=0.5)
                return json.loads(msg.data)
            except Exception:
                return None

        try:
            data = link.call(varz, timeout=2.0, what="read the server's varz")
        except W.WinIPCError:
            data = None
        js: Any = (data or {}).get("data", {}).get("jetstream", {}) if isinstance(data, dict) else {}
        cfg = js.get("config", {}) if isinstance(js, dict) else {}
        synced = isinstance(cfg, dict) and bool(cfg.get("sync_always"))
    if synced:
        text = f"on disk before send returns: nats-server {version} runs with sync_interval: always"
    else:
        why = ("never fsyncs JetStream file storage before acknowledging" if _version(version) < (2, 10)
               else "was not shown to run with sync_interval: always (its varz is for the system account only)")
        text = (f"NOT on disk when acknowledged: nats-server {version} {why}; a recoverable message can be lost "
                "if the server's machine crashes (configure sync_interval: always on nats-server >= 2.10; "
                "see docs/wire/msmq-nats.md)")
    with _durability_lock:
        _durability_cache[link.url] = (synced, text)
    return synced, text


# ----------------------------------------------------------------------------- queue properties


def _meta_of(info: dict[str, Any], ref: object) -> dict[str, Any]:
    cfg = info.get("config") or {}
    try:
        meta = json.loads(cfg.get("description") or "")
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get("winipc") != "msmq/1":
        raise W.QueueNotFound(f"queue {ref}: stream {cfg.get('name')} is not a winipc queue")
    return meta


def _info_of(meta: dict[str, Any]) -> QueueInfo:
    return QueueInfo(
        path=str(meta.get("path", "")),
        format_name=str(meta.get("format_name", "")),
        label=str(meta.get("label", "")),
        transactional=bool(meta.get("transactional")),
        quota=meta.get("quota"),
        journal=bool(meta.get("journal")),
        journal_quota=meta.get("journal_quota"),
        max_aborts=int(meta.get("max_aborts", 5)),
        created=float(meta.get("created", 0.0)),
        owner_uid=int(meta.get("owner_uid", -1)),
        backend="nats",
    )


def _check_create_args(ref: QueueRef, label: object, quota: object, journal_quota: object, max_aborts: object,
                       security: SecurityAttributes | None) -> None:
    check_queue_properties(ref, label, quota, journal_quota, max_aborts)
    if security is not None and getattr(security, "opens_to_others", True):
        raise W.NotSupported(
            "security on NATS queues is the server's: accounts and subject permissions decide who may "
            "send or receive (docs/wire/msmq-nats.md); pass security=None"
        )


def _consumer(name: str, subject: str, ack_wait: float, max_deliver: int) -> dict[str, Any]:
    return {
        "durable_name": name,
        "ack_policy": "explicit",
        "deliver_policy": "all",
        "filter_subject": subject,
        "ack_wait": int(ack_wait * 1e9),
        "max_deliver": max_deliver,
        "max_ack_pending": -1,
        "max_waiting": 4096,
    }


def create_queue(
    ref: QueueRef,
    *,
    transactional: bool = False,
    label: str = "",
    quota: int | None = None,
    journal: bool = False,
    journal_quota: int | None = None,
    max_aborts: int = 5,
    security: SecurityAttributes | None = None,
) -> QueueInfo:
    """MQCreateQueue on a NATS server: create the queue's streams and consumers.

    ``quota`` and ``journal_quota`` are bytes of stored messages as the server counts them
    (subject, headers and body). Raises QueueExists, IllegalPropertyValue,
    QueueNotAvailable (server unreachable or without JetStream), NotSupported (security).
    """
    _check_create_args(ref, label, quota, journal_quota, max_aborts, security)
    names = _Names.of(ref)
    main = ref.main()
    meta = {
        "winipc": "msmq/1",
        "path": main.path,
        "format_name": main.format_name,
        "label": label,
        "transactional": bool(transactional),
        "quota": quota,
        "journal": bool(journal),
        "journal_quota": journal_quota,
        "max_aborts": max_aborts,
        "created": time.time(),
        "owner_uid": B.uid(),
        "ack_wait": ACK_WAIT,
    }
    dup = int(DUPLICATE_WINDOW * 1e9)

    def stream_cfg(name: str, subjects: list[str], max_bytes: int | None, discard: str, desc: str) -> dict[str, Any]:
        return {"name": name, "subjects": subjects, "retention": "workqueue", "storage": "file",
                "max_bytes": -1 if max_bytes is None else max_bytes, "discard": discard,
                "duplicate_window": dup, "num_replicas": 1, "description": desc}

    async def op(nc: Any) -> None:
        resp = await _api(nc, f"STREAM.INFO.{names.stream}")
        if _api_error(resp) is None:
            raise W.QueueExists(f"queue {main} exists already")
        cfg = stream_cfg(names.stream, [names.subject(p) for p in range(8)], quota, "new", json.dumps(meta))
        resp = await _api(nc, f"STREAM.CREATE.{names.stream}", cfg)
        err = _api_error(resp)
        if err is not None:
            if err[0] == ERR_STREAM_NAME_IN_USE:
                raise W.QueueExists(f"queue {main} exists already")
            raise W.MsmqError(f"create queue {main}: {err[1]}", winerror=W.MQ_ERROR_INVALID_PARAMETER)
        try:
            max_deliver = max_aborts + 2
            for p in range(8):
                c = _consumer(f"p{p}", names.subject(p), ACK_WAIT, max_deliver)
                await _check(_api(nc, f"CONSUMER.DURABLE.CREATE.{names.stream}.p{p}",
                                  {"stream_name": names.stream, "config": c}), main)
            for sub in SUBQUEUES:
                stream = names.sub_stream(sub)
                qb = journal_quota if sub == SUB_JOURNAL else None
                await _check(_api(nc, f"STREAM.CREATE.{stream}", stream_cfg(
                    stream, [names.sub_subject(sub)], qb, "old" if sub == SUB_JOURNAL else "new",
                    json.dumps({"winipc": "msmq/1-sub", "of": names.stream}))), main)
                c = _consumer("r", names.sub_subject(sub), ACK_WAIT, -1)
                await _check(_api(nc, f"CONSUMER.DURABLE.CREATE.{stream}.r", {"stream_name": stream, "config": c}), main)
        except BaseException:
            for stream in [names.stream, *(names.sub_stream(s) for s in SUBQUEUES)]:
                with contextlib.suppress(Exception):
                    await _api(nc, f"STREAM.DELETE.{stream}")
            raise

    with _linked(names.url, f"create queue {main}") as link:
        _run(link, op, timeout=60.0, what=f"create queue {main}")
    return _info_of(meta)


async def _check(coro: Awaitable[dict[str, Any]], ref: object) -> dict[str, Any]:
    resp = await coro
    err = _api_error(resp)
    if err is not None:
        raise W.MsmqError(f"queue {ref}: {err[1]}")
    return resp


def delete_queue(ref: QueueRef) -> None:
    """MQDeleteQueue: delete the queue's streams (and their messages). Raises QueueNotFound."""
    if ref.subqueue:
        raise W.IllegalQueuePathname(f"queue {ref}: delete the queue itself, not a subqueue")
    names = _Names.of(ref)

    async def op(nc: Any) -> None:
        info = await _stream_info(nc, names.stream, ref)
        _meta_of(info, ref)
        for sub in SUBQUEUES:
            with contextlib.suppress(W.MsmqError):
                await _api(nc, f"STREAM.DELETE.{names.sub_stream(sub)}")
        await _api(nc, f"STREAM.DELETE.{names.stream}")
        with contextlib.suppress(Exception):
            await nc.publish(names.wake, b"deleted")

    with _linked(names.url, f"delete queue {ref}") as link:
        _run(link, op, timeout=30.0, what=f"delete queue {ref}")


def _read_meta(link: NatsLink, names: _Names, ref: QueueRef) -> dict[str, Any]:
    async def op(nc: Any) -> dict[str, Any]:
        return _meta_of(await _stream_info(nc, names.stream, ref), ref)

    return _run(link, op, timeout=API_TIMEOUT * 2, what=f"queue {ref}")


def queue_info(ref: QueueRef) -> QueueInfo:
    """MQGetQueueProperties. Raises QueueNotFound, QueueNotAvailable."""
    names = _Names.of(ref)
    with _linked(names.url, f"queue {ref}") as link:
        return _info_of(_read_meta(link, names, ref))


def list_queues(url: str) -> list[QueueInfo]:
    """The winipc queues on the NATS server at ``url`` (MQMgmtGetInfo's PRIVATEQ list)."""
    checked = nats_url(url, argument="where")
    assert checked is not None

    async def op(nc: Any) -> list[QueueInfo]:
        out: list[QueueInfo] = []
        offset = 0
        while True:
            resp = await _api(nc, "STREAM.LIST", {"offset": offset, "subject": SUBJECT_PREFIX + ".>"})
            streams = resp.get("streams") or []
            for s in streams:
                name = (s.get("config") or {}).get("name", "")
                if not name.startswith(STREAM_PREFIX) or any(name.endswith(x) for x in _SUBSTREAM.values()):
                    continue
                with contextlib.suppress(W.MsmqError):
                    out.append(_info_of(_meta_of(s, name)))
            offset += len(streams)
            if not streams or offset >= int(resp.get("total", 0)):
                return out

    with _linked(checked, f"list queues on {url}") as link:
        return _run(link, op, timeout=60.0, what=f"list queues on {url}")


def purge_queue(ref: QueueRef) -> int:
    """MQPurgeQueue: remove every message of the queue (or subqueue); returns how many."""
    names = _Names.of(ref)
    with _linked(names.url, f"purge {ref}") as link:
        return _purge(link, names, ref)


def _purge(link: NatsLink, names: _Names, ref: QueueRef) -> int:
    stream = names.sub_stream(ref.subqueue)

    async def op(nc: Any) -> int:
        resp = await _api(nc, f"STREAM.PURGE.{stream}", {})
        err = _api_error(resp)
        if err is not None:
            if err[0] == ERR_STREAM_NOT_FOUND:
                raise W.QueueNotFound(f"queue {ref} does not exist")
            raise W.MsmqError(f"purge {ref}: {err[1]}")
        return int(resp.get("purged", 0))

    return _run(link, op, timeout=30.0, what=f"purge {ref}")


def check_prefetch(prefetch: object) -> int:
    """``prefetch`` as given to ``msmq.open()``: an int from 0 to :data:`MAX_PREFETCH`.

    Raises MsmqError(MQ_ERROR_INVALID_PARAMETER) naming the argument and the limit."""
    if isinstance(prefetch, bool) or not isinstance(prefetch, int) or not 0 <= prefetch <= MAX_PREFETCH:
        raise W.MsmqError(f"prefetch={prefetch!r}: an int from 0 (no prefetch: exact receives, the default) "
                          f"to {MAX_PREFETCH}", winerror=W.MQ_ERROR_INVALID_PARAMETER)
    return prefetch


def open_queue(ref: QueueRef, access: QueueAccess, share: ShareMode, *, prefetch: int = 0) -> NatsQueue:
    """MQOpenQueue on a NATS server (``prefetch``: see :func:`winipc.msmq.open`). Raises
    QueueNotFound, SharingViolation, QueueNotAvailable, MsmqError
    (MQ_ERROR_UNSUPPORTED_FORMATNAME_OPERATION) for send access to a subqueue,
    MsmqError(MQ_ERROR_INVALID_PARAMETER) for a bad ``prefetch`` or one without receive
    access."""
    prefetch = check_prefetch(prefetch)
    if prefetch and not access & QueueAccess.RECEIVE:
        raise W.MsmqError(f"{ref}: prefetch={prefetch} is for receiving handles (open with receive access)",
                          winerror=W.MQ_ERROR_INVALID_PARAMETER)
    if access & QueueAccess.SEND and ref.subqueue:
        raise W.MsmqError(f"{ref}: messages cannot be sent to a subqueue",
                          winerror=W.MQ_ERROR_UNSUPPORTED_FORMATNAME_OPERATION)
    names = _Names.of(ref)
    link = _acquire(names.url, f"open queue {ref}")
    try:
        meta = _read_meta(link, names, ref)
        return NatsQueue(ref, names, link, meta, access, share, prefetch=prefetch)
    except BaseException:
        link.release()
        raise


def begin_transaction(url: str) -> NatsTransaction:
    """MQBeginTransaction for queues on the NATS server at ``url`` (see NatsTransaction).

    Raises QueueNotAvailable when the server cannot be reached."""
    checked = nats_url(url, argument="url")
    assert checked is not None
    return NatsTransaction(_acquire(checked, "begin a NATS transaction"))


# ----------------------------------------------------------------------------- process-wide locks

#: The transaction a wait loop on the link's loop receives for (or _PEEK for peeks).
_current_tx: contextvars.ContextVar[Any] = contextvars.ContextVar("winipc_msmq_nats_tx", default=None)
_PEEK = object()

#: (url, stream, seq) -> the open transaction of this process holding that message.
_held: dict[tuple[str, str, int], NatsTransaction] = {}
_held_lock = threading.Lock()


def _is_held(url: str, stream: str, seq: int) -> bool:
    with _held_lock:
        return (url, stream, seq) in _held


#: (url, stream, seq) of messages this process deleted by sequence lately (by id,
#: correlation id or cursor), so a receiving handle that prefetched one does not hand it
#: out again.
_deleted: collections.OrderedDict[tuple[str, str, int], None] = collections.OrderedDict()
_DELETED_KEEP = 4096


def _note_deleted(url: str, stream: str, seq: int) -> None:
    with _held_lock:
        _deleted[(url, stream, seq)] = None
        while len(_deleted) > _DELETED_KEEP:
            _deleted.popitem(last=False)


def _was_deleted(url: str, stream: str, seq: int) -> bool:
    with _held_lock:
        return (url, stream, seq) in _deleted


#: Tasks started on a link's loop without an owner to keep them alive.
_tasks: set[asyncio.Task[None]] = set()

#: Receiving handles with deferred +ACKs (id -> handle, under _held_lock): any call this
#: process makes on their link sends those first, so what it does after a receive finds
#: the message gone, as with an acknowledgement sent before receive returned.
_deferring: dict[int, NatsQueue] = {}


def _deferred_on(link: NatsLink) -> list[NatsQueue]:
    if not _deferring:
        return []
    with _held_lock:
        return [q for q in _deferring.values() if q._link is link]


@atexit.register
def _send_deferred_acks() -> None:
    with _held_lock:
        queues = list(_deferring.values())
    for q in queues:
        if q._acks and not q._closed:
            with contextlib.suppress(Exception):
                q._run(q._drain, 1.0, "acknowledge")




# ----------------------------------------------------------------------------- transactions


@dataclasses.dataclass
class _Held:
    queue: NatsQueue
    stream: str
    seq: int
    message: M.Message
    raw_headers: dict[str, str]
    data: bytes
    reply: str | None  # the consumer delivery to ack / nak; None for a by-sequence take
    delivered: int = 1


@dataclasses.dataclass
class _Pending:
    queue: NatsQueue
    subject: str
    headers: dict[str, str]
    data: bytes
    message: M.Message


class NatsTransaction(Transaction):
    """A unit of work over queues of one NATS server (ITransaction).

    JetStream 2.9 has no multi-message transactions, so this is not atomic across
    messages if the process dies during commit: sends are buffered and published on
    commit in order, each with its ``Nats-Msg-Id`` (a retried commit is de-duplicated
    within the 2-minute window: exactly once); received messages stay unacknowledged
    (kept with ``+WPI``) and are acknowledged on commit, ``-NAK``'ed on abort (their
    delivery count is the abort count; past the queue's ``max_aborts`` they move to
    ``;poison`` and the original is terminated). A process that dies with an open
    transaction gets its received messages redelivered after the queue's ack wait
    (:data:`ACK_WAIT`, 30 s by default).
    """

    def __init__(self, link: NatsLink) -> None:
        self.id = f"nats:{uuid.uuid4()}"
        self.link = link
        self.url = link.url
        self._lock = threading.RLock()
        self._done = False
        self._sends: list[_Pending] = []
        self._sent_upto = 0
        self._held: list[_Held] = []
        self._keepalive: concurrent.futures.Future[None] | None = None

    @property
    def closed(self) -> bool:
        return self._done

    def _check_open(self) -> None:
        if self._done:
            raise W.TransactionSequence(f"transaction {self.id} is already finished")

    def _add_send(self, p: _Pending) -> None:
        with self._lock:
            self._check_open()
            self._sends.append(p)

    def _hold(self, h: _Held) -> bool:
        """Record a received message; False when this process holds it already."""
        key = (self.url, h.stream, h.seq)
        with self._lock, _held_lock:
            self._check_open()
            if key in _held:
                return False
            _held[key] = self
            self._held.append(h)
        if h.reply is not None:
            self._start_keepalive()
        return True

    def _start_keepalive(self) -> None:
        if self._keepalive is not None:
            return
        period = min((h.queue._ack_wait for h in self._held), default=ACK_WAIT) / 3

        async def beat(nc: Any) -> None:
            while True:
                await asyncio.sleep(period)
                for h in list(self._held):
                    if h.reply is not None:
                        with contextlib.suppress(Exception):
                            await nc.publish(h.reply, b"+WPI")

        self._keepalive = self.link.spawn(beat)

    def _stop_keepalive(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None

    def _release_all(self) -> None:
        with _held_lock:
            for h in self._held:
                if _held.get((self.url, h.stream, h.seq)) is self:
                    del _held[(self.url, h.stream, h.seq)]

    def commit(self) -> None:
        """ITransaction::Commit: publish the sends, acknowledge the receives.

        Raises TransactionSequence when already finished; a failure part-way leaves the
        transaction open, and commit may be retried (sends are de-duplicated by id) or
        the transaction aborted."""
        with self._lock:
            self._check_open()

            async def op(nc: Any) -> None:
                while self._sent_upto < len(self._sends):
                    p = self._sends[self._sent_upto]
                    ack = await _publish(nc, p.subject, p.headers, p.data, what=f"commit a send to {p.queue.ref}")
                    p.message.lookup_id = int(ack.get("seq", 0))
                    self._sent_upto += 1
                    await p.queue._after_arrival(nc, p.message)
                for h in self._held:
                    await h.queue._finish_receive(nc, h)
                for q in {id(p.queue): p.queue for p in self._sends}.values():
                    with contextlib.suppress(Exception):
                        await nc.publish(q._names.wake, b"")

            _run(self.link, op, timeout=None if len(self._sends) > 100 else 60.0, what=f"commit {self.id}")
            self._finish()

    def abort(self) -> None:
        """ITransaction::Abort: drop the sends, return the receives (``-NAK``). Idempotent."""
        with self._lock:
            if self._done:
                return

            async def op(nc: Any) -> None:
                woken: dict[int, NatsQueue] = {}
                for h in self._held:
                    await h.queue._abort_receive(nc, h)
                    woken[id(h.queue)] = h.queue
                for q in woken.values():
                    with contextlib.suppress(Exception):
                        await nc.publish(q._names.wake, b"")

            try:
                if self._held and not self.link.closed:
                    _run(self.link, op, timeout=60.0, what=f"abort {self.id}")
            finally:
                self._finish()

    def _finish(self) -> None:
        self._stop_keepalive()
        self._release_all()
        self._done = True
        self._held = []
        self._sends = []
        self.link.release()

    def __repr__(self) -> str:
        return f"<NatsTransaction {self.id} {'finished' if self._done else 'open'}>"


# ----------------------------------------------------------------------------- queues


class _Waker:
    """Arrival notifications of one queue handle (a core NATS subscription), loop-only.

    ``seen`` collects the subjects published to since the receive path last looked (the
    hints of where messages are); ``unknown`` is set by a notification that names no
    priority (the ``wake`` subject: an abort or commit returned messages)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.last: str = ""
        self.subs: dict[str, Any] = {}  # subject -> core subscription
        self.seen: set[str] = set()
        self.unknown = False
        self.on_ring: Callable[[], None] | None = None  # also called on each notification

    def ring(self, subject: str) -> None:
        self.last = subject
        self.seen.add(subject)
        ev, self.event = self.event, asyncio.Event()
        ev.set()
        if self.on_ring is not None:
            self.on_ring()

    async def _cb(self, msg: Any) -> None:
        self.ring(msg.subject)

    def poke(self) -> None:
        """Wake the waits on the loop without a notification (a delivery was buffered)."""
        ev, self.event = self.event, asyncio.Event()
        ev.set()

    async def watch(self, nc: Any, subjects: set[str]) -> bool:
        """Subscribe to exactly ``subjects``; True when one was added (what was published
        there meanwhile made no notification: the caller looks at the stream)."""
        added = False
        for subject in [s for s in self.subs if s not in subjects]:
            sub = self.subs.pop(subject)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        for subject in subjects:
            if subject not in self.subs:
                self.subs[subject] = await nc.subscribe(subject, cb=self._cb)
                added = True
        if added:
            await nc.flush(API_TIMEOUT)
            self.unknown = True
        return added

    async def close(self) -> None:
        subs, self.subs = self.subs, {}
        for sub in subs.values():
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


class NatsQueue(Queue):
    """An open queue on a NATS JetStream server (MQOpenQueue's handle). Thread-safe."""

    def __init__(self, ref: QueueRef, names: _Names, link: NatsLink, meta: dict[str, Any],
                 access: QueueAccess, share: ShareMode, *, prefetch: int = 0) -> None:
        self.ref = ref
        self.access = access
        #: 0: exact receives (MSMQ's: removed before receive returns, at most once);
        #: N > 0: up to N messages pulled ahead, +ACKs deferred (at least once)
        self.prefetch = prefetch
        self._ahead_req = json.dumps({"batch": max(1, prefetch), "expires": int(PULL_AHEAD_WAIT * 1e9)}).encode()
        self._names = names
        self._link = link
        self._meta = meta
        self._info = _info_of(meta)
        self._ack_wait = float(meta.get("ack_wait", ACK_WAIT))
        self._closed = False
        self._warned = False
        self._waker: _Waker | None = None
        self._inbox = _Inbox()
        self._looked = -math.inf  # time.monotonic() of the last look at the stream's subjects
        self._more: dict[int, int] = {}  # consumer index -> messages pending after the last pulled
        self._suspect: dict[int, float] = {}  # consumer index -> when a notified pull found nothing
        # consumer index -> prefetched deliveries (time.monotonic() fetched, delivery), loop-only
        self._buf: dict[int, collections.deque[tuple[float, _Delivery]]] = {}
        self._streak = 0  # pulls in a row that left messages pending (prefetch once > 1)
        self._lock = threading.Lock()  # _buf's deques and _acks, shared with receive()'s fast path
        self._cond = threading.Condition(self._lock)  # notified: a delivery buffered, a pull ended, a notification
        self._bg_sub: Any = None  # reply subscription of the pulls ahead
        self._bg_subject = ""
        self._bg_level: int | None = None  # the consumer a pull ahead is waiting on (see _pull_ahead)
        self._bg_got = 0  # messages it brought so far
        self._bg_started = 0.0  # time.monotonic() it was asked
        self._last_receive = 0.0  # time.monotonic() of the last receive that returned a message
        self._quick = 0  # receives in a row that came soon after the one before
        self._acks: list[str] = []  # +ACKs of handed out messages not sent yet
        self._ack_task = False  # a task on the loop will send _acks
        self._link_nc: Any = None  # the client, as the loop's coroutines were given it
        self._direct: _DirectSender | None = None  # own connection for plain sends (see _DirectSender)
        self._send_what = f"send to {ref}"
        self._host = B.host_name()  # PROPID_M_SRC_MACHINE_ID of this handle's messages
        self._unconfirmed: dict[str, str] = {}  # consumer -> last +ACK sent without confirmation
        self._excl_sub: Any = None
        self._sub = ref.subqueue
        self._stream = names.sub_stream(self._sub)
        if self._sub:
            self._subjects = [names.sub_subject(self._sub)]
            self._consumers = ["r"]
        elif self._info.transactional:
            self._subjects = [names.subject(0)]
            self._consumers = ["p0"]
        else:
            self._subjects = [names.subject(p) for p in _PRIORITIES]
            self._consumers = [f"p{p}" for p in _PRIORITIES]
        self._index = {s: i for i, s in enumerate(self._subjects)}
        self._watching = len(self._subjects)  # notified of the subjects self._subjects[:_watching]
        if access & (QueueAccess.RECEIVE | QueueAccess.PEEK):
            self._register_receiver(share)

    # -- properties

    @property
    def info(self) -> QueueInfo:
        return self._info

    @property
    def closed(self) -> bool:
        return self._closed

    def _check(self, need: QueueAccess) -> None:
        if self._closed:
            raise W.MsmqError(f"queue handle {self.ref} is closed", winerror=W.MQ_ERROR_INVALID_HANDLE)
        if not self.access & need:
            raise W.QueueAccessDenied(f"queue {self.ref} was opened for {self.access.name}, not {need.name}")

    def _run(self, fn: Callable[[Any], Awaitable[T]], timeout: float | None, what: str, *,
             receiving: bool = False) -> T:
        return _run(self._link, fn, timeout=timeout, what=f"{what} on {self.ref}",
                    receiver=self if receiving else None)

    # -- exclusive receive (MQ_DENY_RECEIVE_SHARE), by asking the other receivers

    def _register_receiver(self, share: ShareMode) -> None:
        subject = self._names.receivers + (f".{self._sub}" if self._sub else "")
        mine = b"1" if share == ShareMode.DENY_RECEIVE_SHARE else b"0"
        errors = _nats_errors()

        async def op(nc: Any) -> Any:
            try:
                answer = await nc.request(subject, b"?", timeout=0.5)
                other: bytes | None = bytes(answer.data)
            except (errors.NoRespondersError, errors.TimeoutError):
                other = None
            if other is not None and (share == ShareMode.DENY_RECEIVE_SHARE or other == b"1"):
                raise W.SharingViolation(
                    f"queue {self.ref} is open for receiving elsewhere" if share == ShareMode.DENY_RECEIVE_SHARE
                    else f"queue {self.ref} is open for exclusive receive (MQ_DENY_RECEIVE_SHARE)")

            async def answer_cb(msg: Any) -> None:
                if msg.reply:
                    with contextlib.suppress(Exception):
                        await nc.publish(msg.reply, mine)

            return await nc.subscribe(subject, cb=answer_cb)

        self._excl_sub = self._run(op, API_TIMEOUT * 2, "open")

    # -- sending

    def _tx(self, transaction: TxArg, sending: bool) -> NatsTransaction | None:
        if transaction is None:
            if sending and self.transactional:
                raise W.TransactionUsage(
                    f"queue {self.ref} is transactional: send within a transaction or with SINGLE_MESSAGE")
            return None
        if isinstance(transaction, _Single):
            if not sending:
                raise W.TransactionUsage("SINGLE_MESSAGE is for sends; receive with a transaction or without one")
            if not self.transactional:
                raise W.TransactionUsage(f"queue {self.ref} is not transactional: send without a transaction")
            return None
        if not isinstance(transaction, NatsTransaction):
            raise W.TransactionUsage(
                f"{transaction!r} is not a NATS transaction (use winipc.msmq._nats.begin_transaction(url))")
        if not _same_server(transaction.url, self._names.url):
            raise W.TransactionUsage(f"{transaction!r} is for another NATS server than queue {self.ref}")
        if transaction.closed:
            raise W.TransactionSequence(f"transaction {transaction.id} is already finished")
        if not self.transactional:
            raise W.TransactionUsage(
                f"queue {self.ref} is not transactional: {'send' if sending else 'receive'} without a transaction")
        return transaction

    def _prepare(self, m: M.Message, in_tx: bool) -> _Pending:
        data, kind = M.encode_body(m.body)
        m.body_type = kind
        m.id = M.new_message_id()
        m.sent_time = m.arrived_time = time.time()
        m.source_machine = self._host
        m.sender_pid = os.getpid()
        m.sender_uid = B.uid()
        m.destination_queue = self._info.path
        m.transactional = in_tx
        m.abort_count = 0
        if self.transactional:
            m.priority = 0  # MSMQ sends transactional messages at priority 0
        if isinstance(m.body, (bytearray, memoryview)):
            m.body = data
        headers = _headers(m, self._names.stream)
        subject = self._names.subject(m.priority)
        limit = self._link.max_payload
        size = len(data)
        if size + 16384 > limit:  # headers are a few hundred bytes: count them only near the limit
            size += len(subject) + sum(len(k) + len(v) + 4 for k, v in headers.items()) + 16
        if size > limit:
            raise W.IllegalPropertyValue(
                f"message property body: {len(data)} bytes (with headers {size}); the NATS server at "
                f"{self._link.display_url} accepts at most max_payload={limit} bytes per message")
        return _Pending(self, subject, headers, data, m)

    def _warn_durability(self, messages: Iterable[M.Message]) -> None:
        if self._warned or not any(m.delivery == M.Delivery.RECOVERABLE for m in messages):
            return
        synced, text = server_durability(self._link)
        self._warned = True
        if not synced:
            warnings.warn(f"queue {self.ref}: a recoverable message is {text}", DurabilityWarning, stacklevel=4)

    def send(self, body: Any = b"", *, transaction: TxArg = None, **props: Any) -> M.Message:
        """MQSendMessage to the queue's stream (see :meth:`Queue.send`).

        The message is stored when this returns (the server's PubAck). Raises
        IllegalPropertyValue (a bad property, or a body over the server's max_payload,
        bytes), TransactionUsage, InsufficientResources (quota), QueueAccessDenied,
        QueueDeleted, QueueNotAvailable, IoTimeout (no PubAck within API_TIMEOUT
        seconds: the message may be stored; a resend of it is de-duplicated). Warns
        DurabilityWarning once per handle when the server does not sync recoverable
        messages.
        """
        self._check(QueueAccess.SEND)
        tx = self._tx(transaction, sending=True)
        m = M.make_message(body, props)
        m.message_class = M.MessageClass.NORMAL
        return self._send_prepared([m], tx, transactional=tx is not None or self.transactional)[0]

    def send_many(self, messages: Iterable[Any], *, transaction: TxArg = None) -> list[M.Message]:
        """Send several messages. Within a NatsTransaction they are published on commit;
        otherwise one after another (not atomic: a failure part-way leaves the earlier
        ones stored, and the error says which failed)."""
        self._check(QueueAccess.SEND)
        tx = self._tx(transaction, sending=True)
        prepared = []
        for item in messages:
            m = M.make_message(item, {})
            m.message_class = M.MessageClass.NORMAL
            prepared.append(m)
        return self._send_prepared(prepared, tx, transactional=tx is not None or self.transactional)

    def _send_prepared(self, prepared: list[M.Message], tx: NatsTransaction | None, *, transactional: bool) -> list[M.Message]:
        pending = [self._prepare(m, transactional) for m in prepared]
        self._warn_durability(prepared)
        if tx is not None:
            for p in pending:
                tx._add_send(p)
            return prepared

        async def op(nc: Any) -> None:
            for p in pending:
                ack = await _publish(nc, p.subject, p.headers, p.data, what=self._send_what)
                p.message.lookup_id = int(ack.get("seq", 0))
                await self._after_arrival(nc, p.message)

        direct = self._direct_sender()
        if direct is not None:
            try:
                if _deferred_on(self._link):
                    self._run(_nothing, API_TIMEOUT * 2, "send")  # receives of this process first
                if direct.run(op):
                    if self._link_receivers_prefetch():
                        # the arrival notification travels on the link's connection: let it
                        # reach this process's receivers before send returns
                        self._run(lambda nc: nc.flush(API_TIMEOUT), API_TIMEOUT * 2, "send")
                    return prepared
            finally:
                direct.lock.release()
        self._run(op, None if len(pending) > 100 else 30.0, "send")
        return prepared

    def _link_receivers_prefetch(self) -> bool:
        """Whether a receiving handle of this process on this link holds messages ahead."""
        if not _receivers:
            return False
        try:
            receivers = list(_receivers)
        except RuntimeError:  # one was added meanwhile (another thread): assume so
            return True
        return any(q._link is self._link and (q._buf or q._bg_level is not None) for q in receivers)

    def _direct_sender(self) -> _DirectSender | None:
        """This handle's own connection for plain sends from the thread that first sent
        (locked: release ``.lock``), or None: another thread, a ``tls://`` server, an
        asyncio loop running in this thread, or it could not connect."""
        d = self._direct
        me = threading.get_ident()
        if d is None:
            if not DIRECT_SENDS or self._closed or "tls://" in self._names.url.lower():
                return None
            with self._lock:
                if self._direct is None:
                    self._direct = _DirectSender(self._names.url, me)
                d = self._direct
        if d.thread != me or d.pid != os.getpid() or d.broken or not d.lock.acquire(blocking=False):
            return None
        if _loop_running():
            d.lock.release()
            return None
        return d

    async def _after_arrival(self, nc: Any, m: M.Message) -> None:
        if m.acknowledge & M.Ack.POSITIVE_ARRIVAL:
            await self._post_ack(nc, m, M.MessageClass.ACK_REACH_QUEUE)

    async def _post_ack(self, nc: Any, orig: M.Message, cls: M.MessageClass) -> None:
        """An acknowledgement message on ``orig.admin_queue`` when it is a queue of this
        server (others are not reachable from here: skipped)."""
        if orig.admin_queue is None:
            return
        try:
            ref = parse(orig.admin_queue)
            names = _Names.of(ref)
        except W.WinIPCError:
            return
        if ref.subqueue or not _same_server(names.url, self._names.url):
            return
        try:
            meta = _meta_of(await _stream_info(nc, names.stream, ref), ref)
        except W.MsmqError:
            return
        ack = M.Message(body=b"", label=orig.label, correlation_id=orig.id,
                        priority=0 if meta.get("transactional") else orig.priority)
        data, ack.body_type = M.encode_body(b"")
        ack.message_class = cls
        ack.id = M.new_message_id()
        ack.sent_time = time.time()
        ack.source_machine = B.host_name()
        ack.sender_pid = os.getpid()
        ack.sender_uid = B.uid()
        ack.destination_queue = str(meta.get("path", ""))
        ack.transactional = bool(meta.get("transactional"))
        with contextlib.suppress(W.MsmqError):
            await _publish(nc, names.subject(ack.priority), _headers(ack, names.stream), data,
                           what=f"acknowledgement to {ref}")

    # -- moving and finishing messages

    async def _copy_to(self, nc: Any, sub: str, headers: dict[str, str], data: bytes, arrived: float,
                       aborts: int = 0) -> None:
        h = {k: v for k, v in headers.items() if not k.lower().startswith(("status", "nats-expected"))}
        # keep the original spelling of the headers we write ourselves
        out: dict[str, str] = {}
        for k, v in h.items():
            out[_canonical(k)] = v
        out[H_EXPECTED_STREAM] = self._names.sub_stream(sub)
        out.setdefault(H_ARRIVED, repr(arrived))
        if aborts:
            out[H_ABORTS] = str(aborts)
        if H_ID not in out:
            out[H_ID] = _foreign_id(self._stream, 0) + "-" + uuid.uuid4().hex
        await _publish(nc, self._names.sub_subject(sub), out, data, what=f"move a message of {self.ref} to ;{sub}")

    async def _finish_receive(self, nc: Any, h: _Held, *, confirm: bool = True) -> None:
        """Commit of a received message: journal copy, remove, receive acknowledgement.

        ``confirm=False`` (a receive outside a transaction) sends the ``+ACK`` without
        waiting for the server's confirmation: it is on its way when receive returns, and
        the message comes back (after the ack wait) only if the connection or process
        dies before the server has it."""
        if self._info.journal and not self._sub:
            await self._copy_to(nc, SUB_JOURNAL, h.raw_headers, h.data, h.message.arrived_time)
        if h.reply is not None:
            self._link_nc = nc
            if confirm:
                await _ack(nc, h.reply)
            else:
                self._defer_ack(h.reply)
            _note_deleted(self._names.url, h.stream, h.seq)  # peeks here skip it from now on
        else:
            await _delete_msg(nc, h.stream, h.seq)
        if h.message.acknowledge & M.Ack.POSITIVE_RECEIVE:
            await self._post_ack(nc, h.message, M.MessageClass.ACK_RECEIVE)

    async def _abort_receive(self, nc: Any, h: _Held) -> None:
        if h.reply is None:
            return  # taken by sequence: it never left the stream
        if not self._sub and h.delivered > self._info.max_aborts:
            await self._copy_to(nc, SUB_POISON, h.raw_headers, h.data, h.message.arrived_time, h.delivered)
            await _ack(nc, h.reply, b"+TERM")
            return
        await _ack(nc, h.reply, b"-NAK")

    async def _screen(self, nc: Any, d: _Delivery) -> M.Message | None:
        """Check a pulled message: poison (delivered too often), expired (dead letter),
        corrupt (nak and raise). None when it was moved away."""
        aborts = d.delivered - 1
        if not self._sub and aborts > self._info.max_aborts:
            await self._copy_to(nc, SUB_POISON, d.headers, d.data, d.arrived, aborts)
            await _ack(nc, d.reply, b"+TERM")
            return None
        try:
            m = _decode(d.headers, d.data, stream=d.stream, seq=d.seq, arrived=d.arrived, aborts=aborts)
        except W.CorruptQueueError:
            await _ack(nc, d.reply, b"-NAK")
            raise
        exp = m.expires_at
        if exp is not None and exp <= time.time() and not self._sub:
            if m.use_dead_letter:
                await self._copy_to(nc, SUB_DEADLETTER, d.headers, d.data, d.arrived)
            await _ack(nc, d.reply, b"+TERM")
            if m.acknowledge & M.Ack.NEGATIVE_RECEIVE:
                await self._post_ack(nc, m, M.MessageClass.NACK_RECEIVE_TIMEOUT)
            return None
        return m

    async def _take_delivery(self, nc: Any, d: _Delivery, tx: NatsTransaction | None) -> M.Message | None:
        m = await self._screen(nc, d)
        if m is None:
            return None
        h = _Held(self, d.stream, d.seq, m, d.headers, d.data, d.reply, d.delivered)
        if tx is not None:
            if not tx._hold(h):
                # this process's transaction took it by sequence: let that one finish it
                await _ack(nc, d.reply, b"-NAK")
                return None
            return m
        if _is_held(self._names.url, d.stream, d.seq):
            await _ack(nc, d.reply, b"-NAK")
            return None
        if not self.prefetch:
            return m if await self._take_exactly(nc, h) else None
        await self._finish_receive(nc, h, confirm=False)
        if d.consumer in self._consumers and self._waker is not None:
            self._arm(self._consumers.index(d.consumer))
        return m

    async def _take_exactly(self, nc: Any, h: _Held) -> bool:
        """A plain receive without prefetch (MSMQ's semantics): the pulled message is
        removed from the stream (STREAM.MSG.DELETE of its sequence, confirmed) before
        receive returns, so it is received at most once, also across a crash. The
        server deletes a sequence once: a receive by id, correlation id or cursor
        (which delete by sequence too) in any process that took it first makes the
        delete fail, and this receive moves on (False) instead of handing it out a
        second time. The ``+ACK`` that ends the consumer's delivery follows without
        waiting (the message is gone either way; :meth:`stat` has it confirmed first)."""
        assert h.reply is not None
        try:
            resp = await _api(nc, f"STREAM.MSG.DELETE.{h.stream}", {"seq": h.seq, "no_erase": True})
        except BaseException:
            with contextlib.suppress(Exception):
                await nc.publish(h.reply, b"-NAK")  # not received: back to the queue
            raise
        err = _api_error(resp)
        if err is not None and not (err[0] == ERR_MSG_DELETE and ("no message" in err[1] or "EOF" in err[1])):
            with contextlib.suppress(Exception):
                await nc.publish(h.reply, b"-NAK")
            if err[0] == ERR_STREAM_NOT_FOUND:
                raise W.QueueDeleted(f"queue {self.ref} was deleted")
            raise W.MsmqError(f"receive on {self.ref}: the server did not remove the message ({err[1]})")
        with contextlib.suppress(Exception):
            await nc.publish(h.reply, b"+ACK")
        if err is not None:
            return False  # gone: a receive by sequence took it first
        self._unconfirmed[_ack_consumer(h.reply)] = h.reply
        if self._waker is None:
            _receivers.add(self)  # (a waiting handle is there already) for stat()
        if self._info.journal and not self._sub:
            await self._copy_to(nc, SUB_JOURNAL, h.raw_headers, h.data, h.message.arrived_time)
        if h.message.acknowledge & M.Ack.POSITIVE_RECEIVE:
            await self._post_ack(nc, h.message, M.MessageClass.ACK_RECEIVE)
        return True

    # -- the receive loop

    async def _nonempty(self, nc: Any) -> list[int]:
        """Indexes into self._consumers that have stored messages, highest priority first."""
        if len(self._subjects) == 1:
            return [0]
        try:
            info = await _stream_info(nc, self._stream, self.ref, subjects=True)
        except W.QueueNotFound:
            raise W.QueueDeleted(f"queue {self.ref} was deleted") from None
        counts = (info.get("state") or {}).get("subjects") or {}
        return [i for i, s in enumerate(self._subjects) if counts.get(s)]

    async def _candidates(self, nc: Any) -> tuple[list[int], set[int]]:
        """The consumers (indexes, highest priority first) a receive should pull from, and
        which of them are only hinted by an arrival notification.

        Without a round trip when this handle's notifications say enough: the subjects
        published to since the last look, and the consumers whose last pulled message
        said more were pending. A look at the stream (STREAM.INFO, which priorities hold
        messages) when there is no notification subscription yet, after a ``wake``
        (returned messages make no publish), and at least every :data:`LOOK_EVERY`
        seconds (redeliveries after the ack wait make none either)."""
        waker = self._waker
        now = time.monotonic()
        if len(self._subjects) == 1:
            if waker is not None:
                waker.unknown = False
                waker.seen.clear()
            return [0], set()
        if waker is None or waker.unknown or now - self._looked > LOOK_EVERY or not self.prefetch:
            # without prefetch every receive looks: a message sent at a higher priority
            # (by any process) before receive was called is received first, whether or
            # not its notification reached this process yet
            if waker is not None:
                waker.unknown = False
                waker.seen.clear()
                self._looked = now
            return await self._nonempty(nc), set()
        hinted: set[int] = set()
        for subject in waker.seen:
            i = self._index.get(subject)
            if i is not None:
                hinted.add(i)
            else:
                waker.unknown = True  # a wake: look at the stream next time
        waker.seen.clear()
        more = {i for i, n in self._more.items() if n}
        return sorted(hinted | more | set(self._suspect)), hinted - more

    async def _fetch(self, nc: Any, i: int, expires: float | None) -> bool:
        """Pull from consumer ``i`` into this handle's prefetch buffer; False when nothing
        came. Asks for one message, or with ``prefetch`` for several (up to it, never more
        than the consumer said were pending) once this handle's receives keep finding
        more waiting: a receiver working through a backlog pays one round trip per
        batch, and one that takes a single message never holds others back."""
        if self._bg_level == i:
            # a pull ahead waits on this consumer: another pull would overtake it (the
            # server serves waiting pulls in turn), so wait for its deliveries instead
            waker = self._waker
            if expires and waker is not None and not self._buf.get(i):
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(waker.event.wait(), expires)
            return bool(self._buf.get(i))
        want = 1
        if self._streak > 0 and self.prefetch > 1:
            want = max(1, min(self.prefetch, 2 ** self._streak, self._more.get(i, 0)))
        await self._flush_acks(nc)  # written together with the pull
        got = await _pull(nc, self._inbox, self._stream, self._consumers[i], expires=expires, batch=want)
        if not got:
            self._more.pop(i, None)
            self._streak = 0
            return False
        self._more[i] = got[-1].pending
        self._streak = self._streak + 1 if got[-1].pending else 0
        now = time.monotonic()
        with self._lock:
            buf = self._buf.setdefault(i, collections.deque())
            for d in got:
                _buffer(buf, now, d)
        return True

    async def _hand_out(self, nc: Any, i: int, tx: NatsTransaction | None) -> M.Message | None:
        """The next buffered delivery of consumer ``i``, received (or held in ``tx``);
        None when the buffer ran out or held nothing receivable."""
        buf = self._buf.get(i)
        while True:
            with self._lock:
                if not buf:
                    return None
                t, d = buf.popleft()
            if time.monotonic() - t > self._ack_wait / 3:
                # held too long to be sure the server has not given it to another receiver
                await _ack(nc, d.reply, b"-NAK", sync=False)
                continue
            if _was_deleted(self._names.url, d.stream, d.seq):
                await _ack(nc, d.reply, sync=False)  # taken by id or cursor meanwhile
                continue
            m = await self._take_delivery(nc, d, tx)
            if m is not None:
                return m

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _arm(self, i: int) -> None:
        """After a receive from consumer ``i`` (either thread): note the pace, and once
        receives follow each other closely (:data:`PULL_AHEAD_AFTER` in a row, each
        within :data:`PULL_AHEAD_GAP` seconds), start a pull ahead on ``i``."""
        now = time.monotonic()
        self._quick = self._quick + 1 if now - self._last_receive < PULL_AHEAD_GAP else 0
        self._last_receive = now
        if not self.prefetch or self._quick < PULL_AHEAD_AFTER or self._bg_level is not None or self._closed:
            return
        with self._lock:
            if self._bg_level is not None or self._buf.get(i):
                return
            self._bg_level = i
            self._bg_started = now
        try:
            if threading.current_thread() is self._link.thread:
                task = asyncio.get_running_loop().create_task(self._pull_ahead(self._link_nc, i))
                _tasks.add(task)
                task.add_done_callback(_tasks.discard)
            else:
                self._link.spawn(lambda nc: self._pull_ahead(nc, i))
        except (W.WinIPCError, RuntimeError):
            with self._lock:
                self._bg_level = None

    async def _pull_ahead(self, nc: Any, i: int) -> None:
        """Ask consumer ``i`` for up to ``prefetch`` messages, the server waiting up
        to :data:`PULL_AHEAD_WAIT` seconds for them; :meth:`_on_ahead` puts each in the
        prefetch buffer as it comes (the caller's thread takes it from there, see
        :meth:`_fast_receive`). A reply subscription of its own, so it never holds up
        this handle's other pulls."""
        self._link_nc = nc
        try:
            if self._bg_sub is None:
                self._bg_subject = nc.new_inbox()
                self._bg_sub = await nc.subscribe(self._bg_subject, cb=self._on_ahead)
            self._bg_got = 0
            await self._flush_acks(nc)
            await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{self._stream}.{self._consumers[i]}", self._ahead_req,
                             reply=self._bg_subject)
        except Exception:
            self._end_ahead()
            raise

    async def _on_ahead(self, msg: Any) -> None:
        i = self._bg_level
        if not msg.data and not msg.reply:  # a status: expired (408), nothing (404), gone (409)
            self._end_ahead()
            return
        meta = _parse_ack_subject(msg.reply or "")
        if meta is None:
            return
        if i is None or self._closed:
            await _ack(self._link_nc, msg.reply, b"-NAK", sync=False)  # nobody asked for it
            return
        d = _Delivery(stream=meta[0], consumer=meta[1], reply=msg.reply, seq=meta[3], delivered=meta[2],
                      arrived=meta[4], headers=_lower(msg.headers), data=bytes(msg.data), pending=meta[5])
        self._more[i] = d.pending
        self._bg_got += 1
        again = False
        now = time.monotonic()
        with self._cond:
            buf = self._buf.setdefault(i, collections.deque())
            _buffer(buf, now, d)
            if self._bg_got >= self.prefetch:
                # all came: ask for the next ones at once while receives keep pace
                again = now - self._last_receive < PULL_AHEAD_GAP and len(buf) <= self.prefetch // 2
                if again:
                    self._bg_got = 0
                    self._bg_started = now
                else:
                    self._bg_level = None
            self._cond.notify_all()
        if self._waker is not None:
            self._waker.poke()  # a receive waiting on the loop takes it from the buffer
        if again:
            try:
                await self._flush_acks(self._link_nc)
                await self._link_nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{self._stream}.{self._consumers[i]}",
                                            self._ahead_req, reply=self._bg_subject)
            except Exception:
                self._end_ahead()

    def _end_ahead(self) -> None:
        with self._cond:
            self._bg_level = None
            self._cond.notify_all()
        if self._waker is not None:
            self._waker.poke()

    async def _drop_ahead(self, nc: Any) -> None:
        """Forget a pull ahead that never ended (no status came): its reply subscription
        goes, so a late answer reaches no one (redelivered after the ack wait)."""
        sub, self._bg_sub = self._bg_sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._end_ahead()

    async def _release_prefetched(self, nc: Any) -> None:
        """Give back every buffered, not handed out delivery (``-NAK``: at once, its
        delivery count raised by one)."""
        until = time.monotonic() + PULL_AHEAD_WAIT + 1.0
        while self._bg_level is not None and time.monotonic() < until:
            await asyncio.sleep(0.01)  # the pull ahead ends by itself (expiry) within PULL_AHEAD_WAIT
        await self._drop_ahead(nc)
        with self._lock:
            bufs, self._buf = self._buf, {}
        for buf in bufs.values():
            for _, d in buf:
                with contextlib.suppress(Exception):
                    await _ack(nc, d.reply, b"-NAK", sync=False)

    async def _flush_acks(self, nc: Any) -> None:
        """Send the deferred ``+ACK`` s of messages handed out by :meth:`_fast_receive`."""
        with self._lock:
            acks, self._acks = self._acks, []
        for reply in acks:
            with contextlib.suppress(Exception):
                await nc.publish(reply, b"+ACK")
            self._unconfirmed[_ack_consumer(reply)] = reply

    async def _confirm_acks(self, nc: Any) -> None:
        """Send the deferred ``+ACK`` s and wait for the server's confirmation of the last
        one of each consumer (sent again as a request: the server confirms a repeated
        ``+ACK`` too, and handles a consumer's acknowledgements in order)."""
        await self._flush_acks(nc)
        last, self._unconfirmed = list(self._unconfirmed.values()), {}
        with _held_lock, self._lock:
            if not self._acks:
                _deferring.pop(id(self), None)
        if last:
            await asyncio.gather(*(_ack(nc, reply) for reply in last), return_exceptions=True)

    async def _ack_later(self, nc: Any) -> None:
        await asyncio.sleep(ACK_DELAY)
        with self._lock:
            self._ack_task = False
        await self._flush_acks(nc)

    def _fast_receive(self) -> M.Message | None:
        """A plain receive served from the prefetch buffer in the caller's thread, without
        a trip to the link's loop; None when the loop must do it.

        Only when nothing can come before the buffered message: no notification of a
        higher priority, no higher consumer known to have messages, a look at the
        stream less than :data:`LOOK_EVERY` seconds ago; and only for a message that
        needs nothing but its ``+ACK`` (not poison, not expired, no journal copy, no
        receive acknowledgement). The ``+ACK`` is sent within :data:`ACK_DELAY`
        seconds, with the other handed out messages' (or with the next pull, or on
        close), without waiting for the server's confirmation."""
        waker = self._waker
        if waker is None or waker.unknown or self._info.journal or not self._buf:
            return None
        if time.monotonic() - self._looked > LOOK_EVERY and len(self._subjects) > 1:
            return None
        index = self._index
        above = min([index.get(s, -1) for s in tuple(waker.seen)]
                    + [j for j, n in list(self._more.items()) if n] + list(self._suspect), default=len(index))
        with self._lock:
            levels = [j for j, b in self._buf.items() if b]
            if not levels:
                return None
            i = min(levels)
            if above < i:
                return None
            t, d = self._buf[i].popleft()
        m: M.Message | None = None
        now = time.monotonic()
        if (now - t <= self._ack_wait / 3 and (self._sub or d.delivered - 1 <= self._info.max_aborts)
                and not _was_deleted(self._names.url, d.stream, d.seq) and not _is_held(self._names.url, d.stream, d.seq)):
            with contextlib.suppress(W.CorruptQueueError):
                m = _decode(d.headers, d.data, stream=d.stream, seq=d.seq, arrived=d.arrived, aborts=d.delivered - 1)
            if m is not None:
                exp = m.expires_at
                if (exp is not None and exp <= time.time() and not self._sub) or m.acknowledge & M.Ack.POSITIVE_RECEIVE:
                    m = None
        if m is None:
            with self._lock:
                self._buf.setdefault(i, collections.deque()).appendleft((t, d))
            return None
        _note_deleted(self._names.url, d.stream, d.seq)
        self._defer_ack(d.reply)
        self._arm(i)
        return m

    def _defer_ack(self, reply: str) -> None:
        """Queue the ``+ACK`` of a handed out message: sent within :data:`ACK_DELAY`
        seconds with the others queued meanwhile (one write), or sooner with this
        handle's next pull, on close, on stat, at exit."""
        with self._lock:
            self._acks.append(reply)
            start = not self._ack_task
            self._ack_task = True
        if start:
            try:
                if threading.current_thread() is self._link.thread:
                    task = asyncio.get_running_loop().create_task(self._ack_later(self._link_nc))
                    _tasks.add(task)
                    task.add_done_callback(_tasks.discard)
                else:
                    self._link.spawn(self._ack_later)
            except (W.WinIPCError, RuntimeError):
                with self._lock:
                    self._ack_task = False
        with _held_lock:
            _deferring[id(self)] = self

    async def _try_receive(self, nc: Any, tx: NatsTransaction | None, again: bool = True) -> M.Message | None:
        order, hinted = await self._candidates(nc)
        for i in sorted(set(order) | {j for j, b in self._buf.items() if b}):
            while True:
                if self._buf.get(i):
                    m = await self._hand_out(nc, i, tx)
                    if m is not None:
                        await self._rewatch(nc)
                        return m
                    continue
                if not await self._fetch(nc, i, None):
                    if i in hinted and i not in self._suspect:
                        # notified, but not stored yet (or taken by another receiver)
                        self._suspect[i] = time.monotonic()
                    elif i in self._suspect and time.monotonic() - self._suspect[i] > SUSPECT_FOR:
                        del self._suspect[i]
                    break
                self._suspect.pop(i, None)
        if again and self._waker is not None and self._waker.unknown:
            return await self._try_receive(nc, tx, False)  # a wake came meanwhile: look once more
        return None

    async def _ensure_waker(self, nc: Any) -> _Waker:
        if self._waker is None:
            waker = _Waker()
            waker.on_ring = self._notify
            _receivers.add(self)
            await waker.watch(nc, {self._names.wake, *self._subjects})
            self._waker = waker
        return self._waker

    async def _rewatch(self, nc: Any, *, peeking: bool = False) -> bool:
        """Notifications only where they can change what the next receive returns.

        A handle working through a backlog at one priority (messages buffered, or the
        consumer said several more are pending) listens only to the higher priorities'
        subjects (and ``wake``): every message published at its own priority or below
        would otherwise reach it twice, as a notification and as a delivery. Once the
        backlog is worked off it listens to all again and looks at the stream (what came
        meanwhile). A queue with one consumer waits in a pull on the server and needs no
        notification but ``wake``; peeks listen to everything. True when a subscription
        was added (the caller looks again before waiting)."""
        waker = self._waker
        if waker is None:
            return False
        if peeking:
            level = len(self._subjects)
        elif len(self._subjects) == 1:
            level = 0
        else:
            # enter at BACKLOG pending messages, leave once none are left (no flapping)
            least = 1 if self._watching < len(self._subjects) else BACKLOG
            level = len(self._subjects) if self._bg_level is None else self._bg_level
            for i in range(level):
                if self._buf.get(i) or self._more.get(i, 0) >= least:
                    level = i
                    break
        if level == self._watching:
            return False
        self._watching = level
        return await waker.watch(nc, {self._names.wake, *self._subjects[:level]})

    async def _wait_loop(self, nc: Any, attempt: Callable[[Any], Awaitable[M.Message | None]],
                         timeout: float | None, what: str, *, pull_wait: bool) -> M.Message:
        deadline = None if timeout is None else time.monotonic() + timeout
        waker = await self._ensure_waker(nc) if timeout != 0 else None
        woken: int | None = None  # the consumer a publish notification just named
        while True:
            self._check_alive(what)
            event = waker.event if waker is not None else None
            if woken is None:
                m = await attempt(nc)
                if m is not None:
                    return m
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise W.IoTimeout(f"{what} on {self.ref}: no message within {timeout:g} s")
            assert waker is not None and event is not None
            tx = _current_tx.get()
            peeking = tx is _PEEK
            if await self._rewatch(nc, peeking=peeking):
                continue  # listening to more subjects now: look before waiting
            if pull_wait:
                # one consumer: wait on the server (wakes on arrival and on redelivery)
                if await self._fetch(nc, 0, min(LONG_PULL, remaining if remaining is not None else LONG_PULL)):
                    m = await self._hand_out(nc, 0, tx)
                    if m is not None:
                        await self._rewatch(nc)
                        return m
                continue
            if not peeking and (woken is not None or self._suspect):
                # a publish reached us before (or as) the stream stored it: wait for it on
                # the server (a pull with expires), not with repeated looks
                if woken is not None:
                    i, short, woken = woken, SUSPECT_FOR, None
                else:
                    i = min(self._suspect)
                    short = SUSPECT_FOR - (time.monotonic() - self._suspect.pop(i))
                if remaining is not None:
                    short = min(short, remaining)
                if short > 0 and await self._fetch(nc, i, short):
                    m = await self._hand_out(nc, i, tx)
                    if m is not None:
                        await self._rewatch(nc)
                        return m
                continue
            cap = min(self._ack_wait / 2, LOOK_EVERY)
            try:
                await asyncio.wait_for(event.wait(), cap if remaining is None else min(cap, remaining))
            except asyncio.TimeoutError:
                continue
            self._check_alive(what)
            if peeking:
                await asyncio.sleep(0.02)  # let the stream store what was just published
                continue
            hinted = [self._index[s] for s in waker.seen if s in self._index]
            known = [i for i, n in self._more.items() if n]
            if hinted and not (known and min(known) < min(hinted)):
                woken = min(hinted)
                waker.seen.discard(self._subjects[woken])

    def _check_alive(self, what: str) -> None:
        if self._closed:
            raise W.OperationCancelled(f"{what} on {self.ref}: the handle was closed")

    def _timeout(self, timeout: object) -> float | None:
        if timeout is None:
            return None
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout != timeout or timeout < 0:
            raise W.MsmqError(f"timeout={timeout!r}: seconds >= 0, or None to wait forever",
                              winerror=W.MQ_ERROR_INVALID_PARAMETER)
        return None if math.isinf(timeout) else float(timeout)

    def _receive_coro(self, timeout: float | None, tx: NatsTransaction | None) -> Callable[[Any], Awaitable[M.Message]]:
        async def attempt(nc: Any) -> M.Message | None:
            return await self._try_receive(nc, tx)

        async def op(nc: Any) -> M.Message:
            pull_wait = len(self._consumers) == 1
            return await self._with_tx(tx, self._wait_loop(nc, attempt, timeout, "receive", pull_wait=pull_wait))

        return op

    async def _with_tx(self, tx: Any, coro: Awaitable[M.Message]) -> M.Message:
        # the wait loop reads the transaction for its server-side pulls (loop-thread only;
        # one receive per handle at a time uses it, others get their own via a context var)
        token = _current_tx.set(tx)
        try:
            return await coro
        finally:
            _current_tx.reset(token)

    def receive(self, timeout: float | None = None, *, transaction: TxArg = None) -> M.Message:
        """MQReceiveMessage: the first message (highest priority, then oldest), removed
        (or held in ``transaction``). Waits up to ``timeout`` seconds (None: forever) for
        an arrival without polling. Without ``prefetch`` (the default) the message is
        deleted on the server before this returns: at most once, never one another
        receive took. With ``prefetch=N`` it may come from this handle's prefetch (taken
        in this thread) and its ``+ACK`` is not waited for: at least once (see
        :func:`winipc.msmq.open`, docs/wire/msmq-nats.md). Raises IoTimeout,
        TransactionUsage, OperationCancelled (the handle was closed), QueueDeleted,
        CorruptQueueError (a message that does not decode; it is returned to the queue
        and moves to ``;poison`` after max_aborts tries)."""
        self._check(QueueAccess.RECEIVE)
        t = self._timeout(timeout)
        tx = self._tx(transaction, sending=False)
        if tx is None and self.prefetch and (self._buf or self._bg_level is not None):
            deadline = None if t is None else time.monotonic() + t
            while True:
                m = self._fast_receive()
                if m is not None:
                    return m
                left = None if deadline is None else deadline - time.monotonic()
                if self._bg_level is not None and time.monotonic() - self._bg_started > PULL_AHEAD_WAIT + API_TIMEOUT:
                    with contextlib.suppress(W.WinIPCError):
                        self._run(self._drop_ahead, API_TIMEOUT, "receive")  # its end never came
                with self._cond:
                    if self._bg_level is None or self._closed or any(self._buf.values()):
                        break
                    if left is not None and left <= 0:
                        break
                    waker = self._waker
                    if waker is None or waker.unknown or waker.seen:
                        break  # a notification: the loop decides
                    self._cond.wait(PULL_AHEAD_WAIT if left is None else min(left, PULL_AHEAD_WAIT))
            if deadline is not None:
                t = max(0.0, deadline - time.monotonic())
        return self._run(self._receive_coro(t, tx), None, "receive", receiving=tx is None)

    async def areceive(self, timeout: float | None = None, *, transaction: TxArg = None) -> M.Message:
        """The asyncio twin of :meth:`receive`: runs on the NATS link's loop; cancelling
        the task withdraws the pull (nothing is lost)."""
        self._check(QueueAccess.RECEIVE)
        t = self._timeout(timeout)
        tx = self._tx(transaction, sending=False)
        return await self._arun(self._receive_coro(t, tx), "receive")

    async def _arun(self, fn: Callable[[Any], Awaitable[T]], what: str) -> T:
        try:
            ok, value = await self._link.acall(_boxed(fn), timeout=None, what=f"{what} on {self.ref}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            err = _msmq_error(exc, what)
            if err is exc:
                raise
            raise err from None
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    # -- peeking and scanning (by stream sequence)

    def _order(self) -> list[str]:
        return self._subjects

    async def _scan(self, nc: Any, pred: Callable[[M.Message], bool], *, start: tuple[int, int] | None = None,
                    skip_expired: bool = True) -> tuple[int, int, M.Message] | None:
        """The first stored message (priority order) matching ``pred``, at or after
        ``start`` = (subject index, sequence); one STREAM.MSG.GET per message looked at."""
        subjects = self._order()
        nonempty = await self._nonempty(nc)
        for i in nonempty:
            if start is not None and i < start[0]:
                continue
            seq = start[1] if start is not None and i == start[0] else 1
            while True:
                got = await _get_msg(nc, self._stream, seq, subjects[i])
                if got is None:
                    break
                s, h, data, arrived = got
                seq = s + 1
                if _is_held(self._names.url, self._stream, s) or _was_deleted(self._names.url, self._stream, s):
                    continue
                m = _decode(h, data, stream=self._stream, seq=s, arrived=arrived, aborts=0)
                exp = m.expires_at
                if skip_expired and exp is not None and exp <= time.time() and not self._sub:
                    continue
                if pred(m):
                    return i, s, m
        return None

    def _peek_coro(self, timeout: float | None, pred: Callable[[M.Message], bool],
                   start: Callable[[], tuple[int, int] | None] | None = None) -> Callable[[Any], Awaitable[M.Message]]:
        found: list[tuple[int, int]] = []

        async def attempt(nc: Any) -> M.Message | None:
            r = await self._scan(nc, pred, start=start() if start else None)
            if r is None:
                return None
            found[:] = [(r[0], r[1])]
            return r[2]

        async def op(nc: Any) -> M.Message:
            token = _current_tx.set(_PEEK)
            try:
                return await self._wait_loop(nc, attempt, timeout, "peek", pull_wait=False)
            finally:
                _current_tx.reset(token)

        op.found = found  # type: ignore[attr-defined]
        return op

    def peek(self, timeout: float | None = None) -> M.Message:
        """MQ_ACTION_PEEK_CURRENT: the first ready message, left in the queue (read by
        stream sequence; messages held by this process's open transactions are skipped,
        those held by other processes' are not). Raises IoTimeout."""
        self._check(QueueAccess.RECEIVE | QueueAccess.PEEK)
        return self._run(self._peek_coro(self._timeout(timeout), lambda m: True), None, "peek")

    async def apeek(self, timeout: float | None = None) -> M.Message:
        """The asyncio twin of :meth:`peek` (runs on the NATS link's loop)."""
        self._check(QueueAccess.RECEIVE | QueueAccess.PEEK)
        return await self._arun(self._peek_coro(self._timeout(timeout), lambda m: True), "peek")

    def _take_seq_coro(self, pred: Callable[[M.Message], bool], tx: NatsTransaction | None,
                       timeout: float | None, missing: Callable[[], BaseException] | None) -> Callable[[Any], Awaitable[M.Message]]:
        async def attempt(nc: Any) -> M.Message | None:
            while True:
                r = await self._scan(nc, pred)
                if r is None:
                    if missing is not None:
                        raise missing()
                    return None
                _, seq, m = r
                if await self._take_seq(nc, seq, m, tx):
                    return m

        async def op(nc: Any) -> M.Message:
            if missing is not None:
                got = await attempt(nc)
                assert got is not None
                return got
            return await self._wait_loop(nc, attempt, timeout, "receive", pull_wait=False)

        return op

    async def _take_seq(self, nc: Any, seq: int, m: M.Message, tx: NatsTransaction | None) -> bool:
        """Receive the message at ``seq`` out of consumer order (by id, correlation id or
        cursor): delete it from the stream (or hold it in ``tx`` until commit)."""
        got = await _get_msg(nc, self._stream, seq)
        if got is None:
            return False
        _, headers, data, _ = got
        h = _Held(self, self._stream, seq, m, headers, data, None)
        if tx is not None:
            return tx._hold(h)
        if _is_held(self._names.url, self._stream, seq):
            return False
        if not await _delete_msg(nc, self._stream, seq):
            return False
        _note_deleted(self._names.url, self._stream, seq)
        if self._info.journal and not self._sub:
            await self._copy_to(nc, SUB_JOURNAL, headers, data, m.arrived_time)
        if m.acknowledge & M.Ack.POSITIVE_RECEIVE:
            await self._post_ack(nc, m, M.MessageClass.ACK_RECEIVE)
        return True

    def receive_by_id(self, message_id: str, *, transaction: TxArg = None) -> M.Message:
        """ReceiveById: scans the stream (one request per stored message, O(n)); raises
        MessageNotFound. In a transaction the message is deleted on commit; other
        processes can still receive it meanwhile (only this process sees the lock)."""
        self._check(QueueAccess.RECEIVE)
        tx = self._tx(transaction, sending=False)

        def missing() -> BaseException:
            return W.MessageNotFound(f"queue {self.ref}: no message with id {message_id!r}")

        return self._run(self._take_seq_coro(lambda m: m.id == message_id, tx, 0.0, missing), None, "receive by id")

    def peek_by_id(self, message_id: str) -> M.Message:
        """PeekById: scans the stream (O(n) requests); raises MessageNotFound."""
        self._check(QueueAccess.RECEIVE | QueueAccess.PEEK)

        async def op(nc: Any) -> M.Message:
            r = await self._scan(nc, lambda m: m.id == message_id)
            if r is None:
                raise W.MessageNotFound(f"queue {self.ref}: no message with id {message_id!r}")
            return r[2]

        return self._run(op, None, "peek by id")

    def receive_by_correlation_id(self, correlation_id: str, timeout: float | None = 0.0, *,
                                  transaction: TxArg = None) -> M.Message:
        """ReceiveByCorrelationId: scans the stream (O(n) requests per look), waiting up
        to ``timeout`` seconds for one to arrive; raises IoTimeout."""
        self._check(QueueAccess.RECEIVE)
        tx = self._tx(transaction, sending=False)
        t = self._timeout(timeout)
        return self._run(self._take_seq_coro(lambda m: m.correlation_id == correlation_id, tx, t, None), None,
                         "receive by correlation id")

    def peek_by_correlation_id(self, correlation_id: str, timeout: float | None = 0.0) -> M.Message:
        """PeekByCorrelationId: scans the stream (O(n) requests per look); raises IoTimeout."""
        self._check(QueueAccess.RECEIVE | QueueAccess.PEEK)
        t = self._timeout(timeout)
        return self._run(self._peek_coro(t, lambda m: m.correlation_id == correlation_id), None,
                         "peek by correlation id")

    def cursor(self) -> NatsCursor:
        """MQCreateCursor: a cursor walking the stream by sequence in priority order."""
        self._check(QueueAccess.RECEIVE | QueueAccess.PEEK)
        return NatsCursor(self)

    # -- management

    def stat(self) -> QueueStat:
        """Counts (stream state minus deliveries awaiting acknowledgement), bytes as the
        server counts them (headers included) and what "recoverable" means here."""
        self._check(QueueAccess.RECEIVE | QueueAccess.PEEK | QueueAccess.SEND)
        names = self._names

        async def op(nc: Any) -> tuple[int, int, int, dict[str, int]]:
            # receives of this process end their deliveries with +ACKs not waited for:
            # have them confirmed, or a received message could still count as locked
            for q in [self, *_receivers_on(self._link)]:
                if q is self or q._unconfirmed or q._acks:
                    await q._confirm_acks(nc)
            info = await _stream_info(nc, self._stream, self.ref)
            state = info.get("state") or {}
            locked = 0
            for c in self._consumers:
                resp = await _api(nc, f"CONSUMER.INFO.{self._stream}.{c}")
                if _api_error(resp) is None:
                    locked += int(resp.get("num_ack_pending", 0))
            subs: dict[str, int] = {}
            if not self._sub:
                for sub in SUBQUEUES:
                    with contextlib.suppress(W.MsmqError):
                        si = await _stream_info(nc, names.sub_stream(sub), self.ref)
                        subs[sub] = int((si.get("state") or {}).get("messages", 0))
            return int(state.get("messages", 0)), int(state.get("bytes", 0)), locked, subs

        n, nbytes, locked, subs = self._run(op, 30.0, "stat")
        synced, text = server_durability(self._link)
        return QueueStat(
            info=self._info,
            messages=max(0, n - locked),
            bytes=nbytes,
            locked=locked,
            journal_messages=subs.get(SUB_JOURNAL, 0),
            poison_messages=subs.get(SUB_POISON, 0),
            deadletter_messages=subs.get(SUB_DEADLETTER, 0),
            durability=text,
            recoverable_is_durable=synced,
        )

    def purge(self) -> int:
        """MQPurgeQueue: remove every stored message (held ones too); returns how many."""
        self._check(QueueAccess.RECEIVE | QueueAccess.PEEK | QueueAccess.SEND)
        return _purge(self._link, self._names, self.ref)

    async def _drain(self, nc: Any) -> None:
        """Send the deferred ``+ACK`` s and wait until the server has them."""
        await self._confirm_acks(nc)

    def close(self) -> None:
        """MQCloseQueue (idempotent): wakes this handle's blocked receives
        (OperationCancelled) and gives the connection back."""
        if self._closed:
            return
        self._closed = True
        waker, excl, inbox = self._waker, self._excl_sub, self._inbox

        async def op(nc: Any) -> None:
            if excl is not None:
                with contextlib.suppress(Exception):
                    await excl.unsubscribe()
            if waker is not None:
                await waker.close()
            if waker is not None:
                waker.ring("")
            await self._confirm_acks(nc)
            with _held_lock:
                _deferring.pop(id(self), None)
            await self._release_prefetched(nc)
            await inbox.close()
            with contextlib.suppress(Exception):
                await nc.flush(API_TIMEOUT)  # acknowledgements sent without waiting reach the server

        with contextlib.suppress(W.WinIPCError):
            if not self._link.closed:
                self._link.call(op, timeout=API_TIMEOUT, what=f"close {self.ref}")
        if self._direct is not None:
            self._direct.close()
        self._link.release()


def _canonical(key: str) -> str:
    """``winipc-label`` -> ``Winipc-Label`` (header names as written by winipc)."""
    return "-".join(p[:1].upper() + p[1:] for p in key.split("-"))


class NatsCursor(Cursor):
    """MQCreateCursor on a NATS queue: a position (priority, stream sequence); peeks read
    by sequence, receive_current deletes that sequence from the stream."""

    def __init__(self, queue: NatsQueue) -> None:
        self._q = queue
        self._pos: tuple[int, int] | None = None
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise W.MsmqError("cursor is closed", winerror=W.MQ_ERROR_INVALID_HANDLE)
        self._q._check(QueueAccess.RECEIVE | QueueAccess.PEEK)

    def _peek_from(self, start: tuple[int, int] | None, timeout: float | None) -> M.Message:
        q = self._q
        op = q._peek_coro(q._timeout(timeout), lambda m: True, start=lambda: start)
        m = q._run(op, None, "cursor peek")
        found = op.found  # type: ignore[attr-defined]
        self._pos = found[0]
        return m

    def peek_current(self, timeout: float | None = 0.0) -> M.Message:
        """MQ_ACTION_PEEK_CURRENT: the message under the cursor (first call: the head).
        Raises IoTimeout, MessageAlreadyReceived when it was taken since."""
        self._check()
        if self._pos is None:
            return self._peek_from(None, timeout)
        q = self._q
        _, seq = self._pos

        async def op(nc: Any) -> M.Message:
            got = await _get_msg(nc, q._stream, seq)
            if got is None or _is_held(q._names.url, q._stream, seq):
                raise W.MessageAlreadyReceived(f"queue {q.ref}: the message under the cursor was received")
            s, h, data, arrived = got
            return _decode(h, data, stream=q._stream, seq=s, arrived=arrived, aborts=0)

        return q._run(op, None, "cursor peek")

    def peek_next(self, timeout: float | None = 0.0) -> M.Message:
        """MQ_ACTION_PEEK_NEXT; raises IllegalCursorAction before a first peek_current, IoTimeout."""
        self._check()
        if self._pos is None:
            raise W.IllegalCursorAction("peek_next before peek_current: the cursor is not on a message")
        i, seq = self._pos
        return self._peek_from((i, seq + 1), timeout)

    def receive_current(self, timeout: float | None = 0.0, *, transaction: TxArg = None) -> M.Message:
        """MQ_ACTION_RECEIVE with the cursor; raises MessageAlreadyReceived."""
        self._check()
        q = self._q
        q._check(QueueAccess.RECEIVE)
        tx = q._tx(transaction, sending=False)
        if self._pos is None:
            self._peek_from(None, timeout)
        assert self._pos is not None
        _, seq = self._pos

        async def op(nc: Any) -> M.Message:
            got = await _get_msg(nc, q._stream, seq)
            if got is None:
                raise W.MessageAlreadyReceived(f"queue {q.ref}: the message under the cursor was received")
            s, h, data, arrived = got
            m = _decode(h, data, stream=q._stream, seq=s, arrived=arrived, aborts=0)
            if not await q._take_seq(nc, seq, m, tx):
                raise W.MessageAlreadyReceived(f"queue {q.ref}: the message under the cursor was received")
            return m

        return q._run(op, None, "cursor receive")

    def close(self) -> None:
        """MQCloseCursor (idempotent)."""
        self._closed = True


__all__ = [
    "ACK_WAIT",
    "DUPLICATE_WINDOW",
    "DurabilityWarning",
    "NatsCursor",
    "NatsQueue",
    "NatsTransaction",
    "begin_transaction",
    "create_queue",
    "default_url",
    "delete_queue",
    "list_queues",
    "open_queue",
    "purge_queue",
    "queue_info",
    "server_durability",
]
