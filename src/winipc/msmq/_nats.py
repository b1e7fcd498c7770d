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

Receive is a pull of one message from the highest non-empty priority's consumer and an
acknowledgement (``+ACK`` waiting for the server's confirmation); a transaction holds
the delivery un-acknowledged (``+WPI`` keeps it) and acknowledges on commit or ``-NAK``s
on abort. Peek reads the stream by sequence (STREAM.MSG.GET) and consumes nothing.

Durability: a JetStream server acknowledges a publish once the message is in its
store's write buffer; nats-server before 2.10 never fsyncs before acknowledging, and
2.10+ does only with ``sync_interval: always``. :func:`server_durability` reads what
the server does; where a recoverable send is not on disk when acknowledged, the first
recoverable send of each handle warns with :class:`DurabilityWarning` and
:meth:`NatsQueue.stat` says so (``recoverable_is_durable=False``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import datetime
import hashlib
import json
import math
import os
import threading
import time
import uuid
import warnings
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


def _headers(m: M.Message, stream: str) -> dict[str, str]:
    h = {H_VERSION: WIRE_VERSION, H_ID: m.id, H_EXPECTED_STREAM: stream, H_BODY_TYPE: m.body_type}
    for name, hdr in _STR_HEADERS.items():
        v = getattr(m, name)
        if v is not None and (v != "" or name == "correlation_id"):
            h[hdr] = quote(v, safe=_SAFE)
    for name, hdr in _INT_HEADERS.items():
        h[hdr] = str(int(getattr(m, name)))
    for name, hdr in _FLOAT_HEADERS.items():
        v = getattr(m, name)
        if v is not None:
            h[hdr] = repr(float(v))
    for name, hdr in _BOOL_HEADERS.items():
        h[hdr] = "1" if getattr(m, name) else "0"
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


def _decode(h: dict[str, str], data: bytes, *, stream: str, seq: int, arrived: float, aborts: int) -> M.Message:
    """A Message from lower-cased headers and the payload; raises CorruptQueueError."""
    if H_VERSION.lower() not in h:
        # a plain NATS publish to a queue subject: a bytes body with default properties
        mid = h.get(H_ID.lower()) or _foreign_id(stream, seq)
        return M.Message(body=data, id=mid, lookup_id=seq, arrived_time=arrived, sent_time=arrived,
                         abort_count=aborts)
    kw: dict[str, Any] = {}
    try:
        for name, hdr in _STR_HEADERS.items():
            v = h.get(hdr.lower())
            if v is not None:
                kw[name] = unquote(v, errors="strict")
        for name, hdr in _INT_HEADERS.items():
            v = h.get(hdr.lower())
            if v is not None:
                kw[name] = int(v)
        for name, hdr in _FLOAT_HEADERS.items():
            v = h.get(hdr.lower())
            if v is not None:
                f = float(v)
                if math.isnan(f):
                    raise ValueError("NaN")
                kw[name] = f
        for name, hdr in _BOOL_HEADERS.items():
            v = h.get(hdr.lower())
            if v is not None:
                kw[name] = v == "1"
        if H_ARRIVED.lower() in h:
            arrived = float(h[H_ARRIVED.lower()])
        if H_ABORTS.lower() in h:
            aborts = max(aborts, int(h[H_ABORTS.lower()]))
    except (ValueError, UnicodeDecodeError) as exc:
        raise W.CorruptQueueError(f"message {seq} of stream {stream}: bad property header ({exc})") from None
    kind = h.get(H_BODY_TYPE.lower(), M.BODY_BYTES)
    kw["id"] = h.get(H_ID.lower()) or _foreign_id(stream, seq)
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


def _parse_ack_subject(reply: str) -> tuple[str, str, int, int, float] | None:
    """``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>`` (v1) or the
    v2 form with domain and account hash -> (stream, consumer, delivered, sseq, seconds)."""
    t = reply.split(".")
    if len(t) < 9 or t[0] != "$JS" or t[1] != "ACK":
        return None
    try:
        if len(t) == 9:
            return t[2], t[3], int(t[4]), int(t[5]), int(t[7]) / 1e9
        return t[4], t[5], int(t[6]), int(t[7]), int(t[9]) / 1e9
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


def _run(link: NatsLink, fn: Callable[[Any], Awaitable[T]], *, timeout: float | None, what: str) -> T:
    try:
        ok, value = link.call(_boxed(fn), timeout=timeout, what=what)
    except Exception as exc:
        err = _msmq_error(exc, what)
        if err is exc:
            raise
        raise err from None
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


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
ERR_MAX_BYTES = 10077


async def _stream_info(nc: Any, stream: str, ref: object, *, subjects: bool = False) -> dict[str, Any]:
    resp = await _api(nc, f"STREAM.INFO.{stream}", {"subjects_filter": ">"} if subjects else None)
    err = _api_error(resp)
    if err is not None:
        if err[0] == ERR_STREAM_NOT_FOUND:
            raise W.QueueNotFound(f"queue {ref} does not exist (no JetStream stream {stream})")
        raise W.MsmqError(f"queue {ref}: {err[1]}")
    return resp


async def _pull(nc: Any, stream: str, consumer: str, *, expires: float | None, timeout: float = API_TIMEOUT) -> _Delivery | None:
    """Pull one message from a durable consumer: at once (``expires=None``, no_wait) or
    waiting on the server up to ``expires`` seconds. None when there is none."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, future=fut, max_msgs=1)
    req: dict[str, Any] = {"batch": 1}
    if expires is None:
        req["no_wait"] = True
    else:
        req["expires"] = int(expires * 1e9)
    try:
        await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}", json.dumps(req).encode(), reply=inbox)
        wait = timeout if expires is None else expires + timeout
        try:
            msg = await asyncio.wait_for(fut, wait)
        except asyncio.TimeoutError:
            return None  # the consumer (or stream) is gone; the caller checks
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    h = _lower(msg.headers)
    status = h.get("status")
    if status is not None and not msg.data and not msg.reply:
        if status == "409" and "deleted" in h.get("description", "").lower():
            raise W.QueueDeleted(f"stream {stream}: the consumer was deleted")
        return None
    meta = _parse_ack_subject(msg.reply or "")
    if meta is None:
        return None
    return _Delivery(stream=meta[0], consumer=meta[1], reply=msg.reply, seq=meta[3], delivered=meta[2],
                     arrived=meta[4], headers=h, data=bytes(msg.data))


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


async def _delete_msg(nc: Any, stream: str, seq: int) -> bool:
    resp = await _api(nc, f"STREAM.MSG.DELETE.{stream}", {"seq": seq, "no_erase": True})
    err = _api_error(resp)
    if err is None:
        return True
    if err[0] == ERR_STREAM_NOT_FOUND:
        raise W.QueueDeleted(f"stream {stream} was deleted")
    return False


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


def open_queue(ref: QueueRef, access: QueueAccess, share: ShareMode) -> NatsQueue:
    """MQOpenQueue on a NATS server. Raises QueueNotFound, SharingViolation,
    QueueNotAvailable, MsmqError(MQ_ERROR_UNSUPPORTED_FORMATNAME_OPERATION) for send
    access to a subqueue."""
    if access & QueueAccess.SEND and ref.subqueue:
        raise W.MsmqError(f"{ref}: messages cannot be sent to a subqueue",
                          winerror=W.MQ_ERROR_UNSUPPORTED_FORMATNAME_OPERATION)
    names = _Names.of(ref)
    link = _acquire(names.url, f"open queue {ref}")
    try:
        meta = _read_meta(link, names, ref)
        return NatsQueue(ref, names, link, meta, access, share)
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
    """Arrival notifications of one queue handle (a core NATS subscription), loop-only."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.last: str = ""
        self.sub: Any = None

    def ring(self, subject: str) -> None:
        self.last = subject
        ev, self.event = self.event, asyncio.Event()
        ev.set()


class NatsQueue(Queue):
    """An open queue on a NATS JetStream server (MQOpenQueue's handle). Thread-safe."""

    def __init__(self, ref: QueueRef, names: _Names, link: NatsLink, meta: dict[str, Any],
                 access: QueueAccess, share: ShareMode) -> None:
        self.ref = ref
        self.access = access
        self._names = names
        self._link = link
        self._meta = meta
        self._info = _info_of(meta)
        self._ack_wait = float(meta.get("ack_wait", ACK_WAIT))
        self._closed = False
        self._warned = False
        self._waker: _Waker | None = None
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

    def _run(self, fn: Callable[[Any], Awaitable[T]], timeout: float | None, what: str) -> T:
        return _run(self._link, fn, timeout=timeout, what=f"{what} on {self.ref}")

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
        m.source_machine = B.host_name()
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
        size = len(data) + len(subject) + sum(len(k) + len(v) + 4 for k, v in headers.items()) + 16
        limit = self._link.max_payload
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
        return self.send_many([M.make_message(body, props)], transaction=transaction)[0]

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
                ack = await _publish(nc, p.subject, p.headers, p.data, what=f"send to {self.ref}")
                p.message.lookup_id = int(ack.get("seq", 0))
                await self._after_arrival(nc, p.message)

        self._run(op, None if len(pending) > 100 else 30.0, "send")
        return prepared

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

    async def _finish_receive(self, nc: Any, h: _Held) -> None:
        """Commit of a received message: journal copy, remove, receive acknowledgement."""
        if self._info.journal and not self._sub:
            await self._copy_to(nc, SUB_JOURNAL, h.raw_headers, h.data, h.message.arrived_time)
        if h.reply is not None:
            await _ack(nc, h.reply)
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
        await self._finish_receive(nc, h)
        return m

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

    async def _try_receive(self, nc: Any, tx: NatsTransaction | None) -> M.Message | None:
        for i in await self._nonempty(nc):
            while True:
                d = await _pull(nc, self._stream, self._consumers[i], expires=None)
                if d is None:
                    break
                m = await self._take_delivery(nc, d, tx)
                if m is not None:
                    return m
        return None

    async def _ensure_waker(self, nc: Any) -> _Waker:
        if self._waker is None:
            waker = _Waker()

            async def cb(msg: Any) -> None:
                waker.ring(msg.subject)

            subject = self._subjects[0] if len(self._subjects) == 1 else self._names.all_subjects
            waker.sub = await nc.subscribe(subject, cb=cb)
            if len(self._subjects) == 1:
                waker.sub2 = await nc.subscribe(self._names.wake, cb=cb)  # type: ignore[attr-defined]
            await nc.flush(API_TIMEOUT)
            self._waker = waker
        return self._waker

    async def _wait_loop(self, nc: Any, attempt: Callable[[Any], Awaitable[M.Message | None]],
                         timeout: float | None, what: str, *, pull_wait: bool) -> M.Message:
        deadline = None if timeout is None else time.monotonic() + timeout
        waker = await self._ensure_waker(nc) if timeout != 0 else None
        while True:
            self._check_alive(what)
            event = waker.event if waker is not None else None
            m = await attempt(nc)
            if m is not None:
                return m
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise W.IoTimeout(f"{what} on {self.ref}: no message within {timeout:g} s")
            assert waker is not None and event is not None
            if pull_wait:
                # one consumer: wait on the server (wakes on arrival and on redelivery)
                d = await _pull(nc, self._stream, self._consumers[0],
                                expires=min(LONG_PULL, remaining if remaining is not None else LONG_PULL))
                if d is not None:
                    m = await self._take_delivery(nc, d, _current_tx.get())
                    if m is not None:
                        return m
                continue
            cap = self._ack_wait / 2
            try:
                await asyncio.wait_for(event.wait(), cap if remaining is None else min(cap, remaining))
            except asyncio.TimeoutError:
                continue
            self._check_alive(what)
            last = waker.last
            if last in self._subjects and _current_tx.get() is not _PEEK:
                # the publish may reach us before the stream stored it: wait for it there
                i = self._subjects.index(last)
                m = await attempt(nc)
                if m is not None:
                    return m
                short = 0.5 if remaining is None else max(0.0, min(0.5, deadline - time.monotonic()))  # type: ignore[operator]
                if short > 0:
                    d = await _pull(nc, self._stream, self._consumers[i], expires=short)
                    if d is not None:
                        m = await self._take_delivery(nc, d, _current_tx.get())
                        if m is not None:
                            return m
            elif _current_tx.get() is _PEEK:
                await asyncio.sleep(0.02)  # let the stream store what was just published

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
        """MQReceiveMessage: pull the first message (highest priority, then oldest) and
        acknowledge it (or hold it in ``transaction``). Waits up to ``timeout`` seconds
        (None: forever) for an arrival without polling; raises IoTimeout,
        TransactionUsage, OperationCancelled (the handle was closed), QueueDeleted,
        CorruptQueueError (a message that does not decode; it is returned to the queue
        and moves to ``;poison`` after max_aborts tries)."""
        self._check(QueueAccess.RECEIVE)
        t = self._timeout(timeout)
        tx = self._tx(transaction, sending=False)
        return self._run(self._receive_coro(t, tx), None, "receive")

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
                if _is_held(self._names.url, self._stream, s):
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

    def close(self) -> None:
        """MQCloseQueue (idempotent): wakes this handle's blocked receives
        (OperationCancelled) and gives the connection back."""
        if self._closed:
            return
        self._closed = True
        waker, excl = self._waker, self._excl_sub

        async def op(nc: Any) -> None:
            for sub in (getattr(waker, "sub", None), getattr(waker, "sub2", None), excl):
                if sub is not None:
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()
            if waker is not None:
                waker.ring("")

        with contextlib.suppress(W.WinIPCError):
            if not self._link.closed:
                self._link.call(op, timeout=API_TIMEOUT, what=f"close {self.ref}")
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
