"""Messages and their properties, as MSMQ defines them (mq.h's PROPID_M_* and MQMSG_*).

A :class:`Message` is what :meth:`Queue.send` takes and what receive and peek return.
Properties a sender sets are checked here, once, with errors naming the property and the
limit (:class:`~winipc.errors.IllegalPropertyValue`); properties the queue sets (id,
times, sender, class) are filled in by the backend.

Bodies are ``bytes`` (stored and returned as they are, MSMQ's ``VT_UI1|VT_VECTOR``) or
any msgpack value (``None``, bool, int, float, str, bytes, list, dict): ``body_type``
says which, so a ``bytes`` body and a msgpack-encoded one never mix up. Nothing is ever
unpickled.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import math
import os
import uuid
from typing import Any

import msgpack

from winipc import errors as W

#: MQ_MIN_PRIORITY .. MQ_MAX_PRIORITY; MSMQ's default priority is 3.
MIN_PRIORITY = 0
MAX_PRIORITY = 7
DEFAULT_PRIORITY = 3
#: MQ_MAX_MSG_LABEL_LEN (characters).
MAX_LABEL = 250
#: Longest correlation id accepted (characters; MSMQ's is 20 bytes, printed "{guid}\\n").
MAX_CORRELATION_ID = 255
#: Longest queue name in response_queue / admin_queue (characters).
MAX_QUEUE_REF = 1024
#: Largest body accepted (bytes): MSMQ's limit is 4 MB; winipc allows 64 MiB locally.
MAX_BODY = 64 * 1024 * 1024
#: Largest app_specific value (PROPID_M_APPSPECIFIC is VT_UI4).
MAX_APP_SPECIFIC = 0xFFFFFFFF
#: A time-to-live longer than this (seconds) is "forever" (MSMQ's INFINITE / LONG_LIVED).
MAX_TTL = 0xFFFFFFFE

BODY_BYTES = "bytes"
BODY_MSGPACK = "msgpack"


class Delivery(enum.IntEnum):
    """PROPID_M_DELIVERY."""

    #: MQMSG_DELIVERY_EXPRESS: committed to the queue file without waiting for the disk;
    #: survives the sender's or receiver's crash, may be lost if the machine crashes.
    EXPRESS = 0
    #: MQMSG_DELIVERY_RECOVERABLE: on disk (fdatasync) before send returns.
    RECOVERABLE = 1


class Ack(enum.IntFlag):
    """PROPID_M_ACKNOWLEDGE: which acknowledgement messages go to the admin queue."""

    NONE = 0
    POSITIVE_ARRIVAL = 0x01
    POSITIVE_RECEIVE = 0x02
    NEGATIVE_ARRIVAL = 0x04
    NEGATIVE_RECEIVE = 0x08
    NACK_REACH_QUEUE = 0x04
    FULL_REACH_QUEUE = 0x05
    NACK_RECEIVE = 0x0C
    FULL_RECEIVE = 0x0E


class MessageClass(enum.IntEnum):
    """PROPID_M_CLASS: a normal message, or which acknowledgement this is."""

    NORMAL = 0x0000
    REPORT = 0x0001
    ACK_REACH_QUEUE = 0x0002
    ACK_RECEIVE = 0x4000
    NACK_BAD_DST_Q = 0x8000
    NACK_PURGED = 0x8001
    NACK_REACH_QUEUE_TIMEOUT = 0x8002
    NACK_Q_EXCEED_QUOTA = 0x8003
    NACK_ACCESS_DENIED = 0x8004
    NACK_NOT_TRANSACTIONAL_Q = 0x8009
    NACK_NOT_TRANSACTIONAL_MSG = 0x800A
    NACK_Q_DELETED = 0xC000
    NACK_Q_PURGED = 0xC001
    NACK_RECEIVE_TIMEOUT = 0xC002

    @property
    def is_nack(self) -> bool:
        return bool(self.value & 0x8000)


_SENDER_FIELDS = (
    "label",
    "priority",
    "correlation_id",
    "app_specific",
    "response_queue",
    "admin_queue",
    "time_to_reach_queue",
    "time_to_be_received",
    "delivery",
    "acknowledge",
    "use_dead_letter",
)
_SENDER_SET = frozenset(_SENDER_FIELDS)
_EXPRESS, _RECOVERABLE, _ACK_NONE = Delivery.EXPRESS, Delivery.RECOVERABLE, Ack.NONE


@dataclasses.dataclass
class Message:
    """One message: a body and MSMQ's message properties.

    Set by the sender (checked by :func:`validate`):
        body: ``bytes`` or any msgpack value.
        label: up to 250 characters (PROPID_M_LABEL).
        priority: 0..7, higher first, FIFO within a priority (PROPID_M_PRIORITY).
            Transactional queues ignore it (MSMQ sends transactional messages at 0).
        correlation_id: up to 255 characters, or None (PROPID_M_CORRELATIONID).
        app_specific: 0..2**32-1 (PROPID_M_APPSPECIFIC).
        response_queue, admin_queue: queue path or format names, or None.
        time_to_reach_queue, time_to_be_received: seconds, or None for forever
            (PROPID_M_TIME_TO_REACH_QUEUE / _TIME_TO_BE_RECEIVED). An expired message is
            moved to a dead-letter queue when ``use_dead_letter`` is set, else discarded;
            with ``Ack.NEGATIVE_RECEIVE`` a NACK_RECEIVE_TIMEOUT goes to the admin queue.
        delivery: :class:`Delivery` (default RECOVERABLE; MSMQ's default is EXPRESS).
        acknowledge: :class:`Ack` flags; needs ``admin_queue``.
        use_dead_letter: MQMSG_DEADLETTER in PROPID_M_JOURNAL.

    Set by the queue (ignored on send):
        id: ``"{GUID}\\\\N"``, MSMQ's 20-byte id in its printed form (PROPID_M_MSGID).
        lookup_id: the message's 64-bit position in its queue (PROPID_M_LOOKUPID).
        message_class: :class:`MessageClass` (acknowledgements are messages too).
        sent_time, arrived_time: seconds since the epoch.
        source_machine: the sending host's name; sender_pid, sender_uid: who sent it.
        destination_queue: the queue's path name as created.
        transactional: sent inside a transaction.
        abort_count: transactional receives of it that aborted (MSMQ 4.0's abort count).
        body_type: ``"bytes"`` or ``"msgpack"``.
    """

    body: Any = b""
    label: str = ""
    priority: int = DEFAULT_PRIORITY
    correlation_id: str | None = None
    app_specific: int = 0
    response_queue: str | None = None
    admin_queue: str | None = None
    time_to_reach_queue: float | None = None
    time_to_be_received: float | None = None
    delivery: Delivery = Delivery.RECOVERABLE
    acknowledge: Ack = Ack.NONE
    use_dead_letter: bool = False
    # --- set by the queue
    id: str = ""
    lookup_id: int = 0
    message_class: MessageClass = MessageClass.NORMAL
    sent_time: float = 0.0
    arrived_time: float = 0.0
    source_machine: str = ""
    sender_pid: int = 0
    sender_uid: int = -1
    destination_queue: str = ""
    transactional: bool = False
    abort_count: int = 0
    body_type: str = BODY_BYTES

    @property
    def expires_at(self) -> float | None:
        """When the message's time-to-be-received runs out (seconds since the epoch)."""
        if self.time_to_be_received is None:
            return None
        return self.sent_time + self.time_to_be_received

    def properties(self) -> dict[str, Any]:
        """Every property but the body, as JSON-friendly values (the CLI's ``--json``)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "body":
                continue
            v = getattr(self, f.name)
            out[f.name] = v.name if isinstance(v, enum.Enum) else v
        out["acknowledge"] = int(self.acknowledge)
        return out


def _bad(prop: str, value: object, limit: str) -> W.IllegalPropertyValue:
    return W.IllegalPropertyValue(f"message property {prop}={value!r}: {limit}")


def _check_ttl(prop: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(prop, value, "must be seconds (a number) or None for forever")
    v = float(value)
    if math.isnan(v) or v < 0:
        raise _bad(prop, value, "must be >= 0 seconds")
    return None if v >= MAX_TTL else v


def _check_queue_ref(prop: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_QUEUE_REF:
        raise _bad(prop, value, f"must be a queue path or format name of 1..{MAX_QUEUE_REF} characters")
    return value


def encode_body(body: Any) -> tuple[bytes, str]:
    """The stored bytes of a body and its body type; raises IllegalPropertyValue."""
    if isinstance(body, (bytes, bytearray, memoryview)):
        data = bytes(body)
        kind = BODY_BYTES
    else:
        try:
            data = msgpack.packb(body, use_bin_type=True, strict_types=False)
        except (TypeError, ValueError, OverflowError) as exc:
            raise _bad("body", type(body).__name__, f"must be bytes or a msgpack value ({exc})") from None
        kind = BODY_MSGPACK
    if len(data) > MAX_BODY:
        raise _bad("body", f"<{len(data)} bytes>", f"at most {MAX_BODY} bytes")
    return data, kind


def decode_body(data: bytes, kind: str) -> Any:
    """The body a receiver gets back (msgpack decoded with bounds, never pickle)."""
    if kind == BODY_BYTES:
        return data
    if kind == BODY_MSGPACK:
        try:
            return msgpack.unpackb(data, raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises several types on bad data
            raise W.CorruptQueueError(f"message body does not decode as msgpack: {exc}") from None
    raise W.CorruptQueueError(f"unknown body type {kind!r}")


def validate(message: Message) -> Message:
    """Check the sender-set properties of ``message`` (returns it; raises IllegalPropertyValue)."""
    m = message
    label = m.label
    if not isinstance(label, str):
        raise _bad("label", label, "must be a str")
    if len(label) > MAX_LABEL:
        raise W.IllegalPropertyValue(
            f"message property label: {len(label)} characters, at most {MAX_LABEL} (MQ_MAX_MSG_LABEL_LEN)",
            winerror=W.MQ_ERROR_LABEL_TOO_LONG,
        )
    pri = m.priority
    if isinstance(pri, bool) or not isinstance(pri, int) or not MIN_PRIORITY <= pri <= MAX_PRIORITY:
        raise _bad("priority", pri, f"must be an int {MIN_PRIORITY}..{MAX_PRIORITY}")
    cid = m.correlation_id
    if cid is not None and (not isinstance(cid, str) or len(cid) > MAX_CORRELATION_ID):
        raise _bad("correlation_id", cid, f"must be a str of at most {MAX_CORRELATION_ID} characters or None")
    app = m.app_specific
    if isinstance(app, bool) or not isinstance(app, int) or not 0 <= app <= MAX_APP_SPECIFIC:
        raise _bad("app_specific", app, f"must be an int 0..{MAX_APP_SPECIFIC}")
    # the common case (no queue references, no time limits) costs no calls
    if m.response_queue is not None:
        m.response_queue = _check_queue_ref("response_queue", m.response_queue)
    if m.admin_queue is not None:
        m.admin_queue = _check_queue_ref("admin_queue", m.admin_queue)
    if m.time_to_reach_queue is not None:
        m.time_to_reach_queue = _check_ttl("time_to_reach_queue", m.time_to_reach_queue)
    if m.time_to_be_received is not None:
        m.time_to_be_received = _check_ttl("time_to_be_received", m.time_to_be_received)
    delivery = m.delivery
    if delivery is not _EXPRESS and delivery is not _RECOVERABLE:  # members are singletons
        try:
            m.delivery = Delivery(delivery)
        except ValueError:
            raise _bad("delivery", delivery, "must be Delivery.EXPRESS or Delivery.RECOVERABLE") from None
    if m.acknowledge is not _ACK_NONE:
        try:
            m.acknowledge = Ack(m.acknowledge)
        except (ValueError, TypeError):
            raise _bad("acknowledge", m.acknowledge, "must be Ack flags (0..0x0F)") from None
        if int(m.acknowledge) & ~0x0F:
            raise _bad("acknowledge", m.acknowledge, "must be Ack flags (0..0x0F)")
        if m.acknowledge and m.admin_queue is None:
            raise _bad("acknowledge", m.acknowledge, "acknowledgements need an admin_queue")
    if type(m.use_dead_letter) is not bool:
        m.use_dead_letter = bool(m.use_dead_letter)
    return m


def make_message(body: Any, props: dict[str, Any]) -> Message:
    """A validated Message from ``send(body, **props)``; a Message body is copied."""
    if props and not props.keys() <= _SENDER_SET:
        unknown = sorted(set(props) - _SENDER_SET)
        if isinstance(body, Message):
            raise W.IllegalPropertyValue(f"unknown message properties: {', '.join(unknown)}")
        raise W.IllegalPropertyValue(
            f"unknown message properties: {', '.join(unknown)} (known: {', '.join(_SENDER_FIELDS)})"
        )
    if isinstance(body, Message):
        return validate(dataclasses.replace(body, **props))
    return validate(Message(body=body, **props))


# --- message ids: "{GUID}\N", one GUID per process (regenerated after fork), N counting up

_id_prefix = ""
_id_counter: itertools.count[int] = itertools.count(1)


def _new_id_state() -> None:
    global _id_prefix, _id_counter
    _id_prefix = "{" + str(uuid.uuid4()).upper() + "}\\"
    _id_counter = itertools.count(1)


_new_id_state()
os.register_at_fork(after_in_child=_new_id_state)


def new_message_id() -> str:
    """A fresh message id: this process's GUID and a counter (unique without coordination;
    ``next`` on the counter is atomic under the GIL, and a forked child draws a new GUID)."""
    return f"{_id_prefix}{next(_id_counter)}"


#: The properties stored beside a body, in the order of the store's and the wire's tables.
STORED_FIELDS = tuple(f.name for f in dataclasses.fields(Message) if f.name != "body")


#: Value types stored as they are (anything else that is an IntEnum or IntFlag is stored as int).
_PLAIN_TYPES = frozenset({str, int, float, bool, type(None)})


def to_record(m: Message) -> dict[str, Any]:
    """The properties of ``m`` as plain values (for msgpack), the body excluded. A property
    equal to its default (same type and value) is left out: a reader takes an absent one
    as the default (:func:`from_record` does), and a smaller record is a smaller row."""
    rec = {}
    plain = _PLAIN_TYPES
    attrs = m.__dict__
    for name, default in _STORED_DEFAULTS:
        v = attrs[name]
        t = type(v)
        if v is default or (t is type(default) and v == default):
            continue
        if t not in plain and isinstance(v, (enum.IntEnum, enum.IntFlag)):
            v = int(v)
        rec[name] = v
    return rec


_TYPES: dict[str, tuple[type, ...]] = {
    "label": (str,),
    "priority": (int,),
    "correlation_id": (str, type(None)),
    "app_specific": (int,),
    "response_queue": (str, type(None)),
    "admin_queue": (str, type(None)),
    "time_to_reach_queue": (int, float, type(None)),
    "time_to_be_received": (int, float, type(None)),
    "delivery": (int,),
    "acknowledge": (int,),
    "use_dead_letter": (bool,),
    "id": (str,),
    "lookup_id": (int,),
    "message_class": (int,),
    "sent_time": (int, float),
    "arrived_time": (int, float),
    "source_machine": (str,),
    "sender_pid": (int,),
    "sender_uid": (int,),
    "destination_queue": (str,),
    "transactional": (bool,),
    "abort_count": (int,),
    "body_type": (str,),
}


#: The exact types each property may have without an isinstance check (bool is an int).
_EXACT: dict[str, frozenset[type]] = {name: frozenset(types) for name, types in _TYPES.items()}
#: Every property's default (none has a default factory): a Message is built from these.
_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(Message)}
#: (name, default) of every stored property, in STORED_FIELDS order (see :func:`to_record`).
_STORED_DEFAULTS: tuple[tuple[str, Any], ...] = tuple((name, _DEFAULTS[name]) for name in STORED_FIELDS)
#: Enum members by value, looked up before the (slower) enum constructors.
_DELIVERIES: dict[Any, Delivery] = {d.value: d for d in Delivery}
_ACKS: dict[Any, Ack] = {v: Ack(v) for v in range(16)}
_CLASSES: dict[Any, MessageClass] = {c.value: c for c in MessageClass}
_new_message = object.__new__


def from_record(rec: Any, body: Any) -> Message:
    """A Message from a stored or received property record; raises CorruptQueueError."""
    if not isinstance(rec, dict):
        raise W.CorruptQueueError("message properties are not a map")
    exact = _EXACT
    kw: dict[str, Any] = {}
    for name, value in rec.items():
        ok = exact.get(name)
        if ok is None:
            continue  # a newer writer's property: ignored, as MSMQ ignores unknown ones
        if type(value) not in ok and not isinstance(value, _TYPES[name]):
            raise W.CorruptQueueError(f"message property {name} has type {type(value).__name__}")
        kw[name] = value
    try:
        if "delivery" in kw:
            v = kw["delivery"]
            found_d = _DELIVERIES.get(v)
            kw["delivery"] = Delivery(v) if found_d is None else found_d
        if "acknowledge" in kw:
            v = kw["acknowledge"]
            found = _ACKS.get(v)
            kw["acknowledge"] = Ack(v) if found is None else found
        if "message_class" in kw:
            v = kw["message_class"]
            found_cls = _CLASSES.get(v)
            kw["message_class"] = MessageClass(v) if found_cls is None else found_cls
    except ValueError as exc:
        raise W.CorruptQueueError(f"message property out of range: {exc}") from None
    # Message(body=body, **kw) without its generated __init__ (the same attributes, in
    # field order): every value is checked above and no field has a default factory
    m: Message = _new_message(Message)
    attrs = m.__dict__
    attrs.update(_DEFAULTS)
    attrs.update(kw)
    attrs["body"] = body
    return m
