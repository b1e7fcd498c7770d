"""The queue interface both backends implement (local SQLite store, NATS JetStream).

:class:`Queue` is an open queue handle (MQOpenQueue's QUEUEHANDLE); :class:`Cursor` a
cursor on it (MQCreateCursor); :class:`Transaction` a unit of work
(MQBeginTransaction's ITransaction). The backends subclass these; the module functions
of :mod:`winipc.msmq` pick the backend from the name (``nats://`` or ``tls://`` means
JetStream, anything else the local store).
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import enum
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from winipc import errors as W
from winipc.msmq._message import Message
from winipc.msmq._names import QueueRef


class QueueAccess(enum.IntFlag):
    """MQOpenQueue's dwAccess."""

    RECEIVE = 0x01  # MQ_RECEIVE_ACCESS (receive and peek)
    SEND = 0x02  # MQ_SEND_ACCESS
    PEEK = 0x20  # MQ_PEEK_ACCESS


class ShareMode(enum.IntEnum):
    """MQOpenQueue's dwShareMode."""

    DENY_NONE = 0  # MQ_DENY_NONE
    DENY_RECEIVE_SHARE = 1  # MQ_DENY_RECEIVE_SHARE: the only receiver on the machine


def parse_access(access: QueueAccess | int | str) -> QueueAccess:
    """``"send"``, ``"receive"``, ``"peek"`` (or ``"send|receive"``) or flags -> QueueAccess."""
    if isinstance(access, str):
        out = QueueAccess(0)
        for word in access.replace(",", "|").split("|"):
            word = word.strip().lower()
            try:
                out |= QueueAccess[word.upper()]
            except KeyError:
                raise W.MsmqError(
                    f"access {access!r}: unknown word {word!r} (use send, receive, peek)",
                    winerror=W.MQ_ERROR_INVALID_PARAMETER,
                ) from None
        access = out
    if isinstance(access, bool) or not isinstance(access, int) or not access or int(access) & ~0x23:
        raise W.MsmqError(
            f"access {access!r}: must be QueueAccess flags (SEND, RECEIVE, PEEK)",
            winerror=W.MQ_ERROR_INVALID_PARAMETER,
        )
    return QueueAccess(access)


#: MQ_MAX_Q_LABEL_LEN (characters).
MAX_QUEUE_LABEL = 124


def check_queue_properties(ref: QueueRef, label: object, quota: object, journal_quota: object,
                           max_aborts: object) -> None:
    """Check MQCreateQueue's properties (both backends); raises IllegalPropertyValue,
    IllegalQueuePathname for a subqueue."""
    if not isinstance(label, str) or len(label) > MAX_QUEUE_LABEL:
        raise W.IllegalPropertyValue(f"queue label: a str of at most {MAX_QUEUE_LABEL} characters (MQ_MAX_Q_LABEL_LEN)")
    for name, v in (("quota", quota), ("journal_quota", journal_quota)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= 2**62):
            raise W.IllegalPropertyValue(f"queue {name}={v!r}: bytes, an int 1..2**62, or None for no limit")
    if isinstance(max_aborts, bool) or not isinstance(max_aborts, int) or not 0 <= max_aborts <= 1_000_000:
        raise W.IllegalPropertyValue(f"queue max_aborts={max_aborts!r}: an int 0..1000000")
    if ref.subqueue:
        raise W.IllegalQueuePathname(f"queue {ref}: a subqueue is created with its queue, not on its own")


@dataclasses.dataclass
class QueueInfo:
    """A queue's properties (MQGetQueueProperties' PROPID_Q_*)."""

    path: str  # PROPID_Q_PATHNAME, the creator's spelling
    format_name: str
    label: str = ""  # PROPID_Q_LABEL
    transactional: bool = False  # PROPID_Q_TRANSACTION
    quota: int | None = None  # PROPID_Q_QUOTA, bytes; None for no limit
    journal: bool = False  # PROPID_Q_JOURNAL
    journal_quota: int | None = None  # PROPID_Q_JOURNAL_QUOTA, bytes
    max_aborts: int = 5  # receives that may abort before a message moves to ;poison
    created: float = 0.0  # PROPID_Q_CREATE_TIME, seconds since the epoch
    owner_uid: int = -1
    backend: str = "local"  # "local" or "nats"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class QueueStat:
    """Counts and durability of a queue (MQMgmtGetInfo's PROPID_MGMT_QUEUE_*)."""

    info: QueueInfo
    messages: int  # PROPID_MGMT_QUEUE_MESSAGE_COUNT (ready to receive; excludes locked ones)
    bytes: int  # PROPID_MGMT_QUEUE_USED_QUOTA (bodies of every stored message, bytes)
    locked: int = 0  # received inside transactions still open
    journal_messages: int = 0
    poison_messages: int = 0
    deadletter_messages: int = 0
    #: what "recoverable" means here, in words: e.g. "fdatasync before send returns"
    #: or "NOT on disk when acknowledged: the server does not sync (see docs/msmq.md)".
    durability: str = ""
    recoverable_is_durable: bool = True

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Single:
    """MQ_SINGLE_MESSAGE: a send that is its own transaction (for transactional queues)."""

    _instance: _Single | None = None

    def __new__(cls) -> _Single:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "SINGLE_MESSAGE"


#: Pass as ``transaction=`` to send one message to a transactional queue on its own.
SINGLE_MESSAGE = _Single()


class Transaction(abc.ABC):
    """A unit of work over sends and receives (ITransaction).

    Use as a context manager: commit on a normal exit, abort on an exception. Sends are
    invisible until commit; a message received inside the transaction is hidden from
    other receivers until commit (then gone) or abort (then back, its abort count
    increased).
    """

    id: str

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """True once committed or aborted."""

    @abc.abstractmethod
    def commit(self) -> None:
        """ITransaction::Commit. Raises TransactionSequence when already finished."""

    @abc.abstractmethod
    def abort(self) -> None:
        """ITransaction::Abort (idempotent after a failed commit)."""

    def __enter__(self) -> Transaction:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.closed:
            return
        if et is None:
            self.commit()
        else:
            self.abort()


TxArg = Transaction | _Single | None


class Cursor(abc.ABC):
    """A cursor over a queue's messages (MQCreateCursor): peek current/next, receive current."""

    @abc.abstractmethod
    def peek_current(self, timeout: float | None = 0.0) -> Message:
        """MQ_ACTION_PEEK_CURRENT: the message under the cursor (first call: the head).

        Waits up to ``timeout`` seconds for one when the queue is empty; raises IoTimeout.
        """

    @abc.abstractmethod
    def peek_next(self, timeout: float | None = 0.0) -> Message:
        """MQ_ACTION_PEEK_NEXT: move to the next message and peek it; raises IoTimeout,
        IllegalCursorAction before a first peek_current."""

    @abc.abstractmethod
    def receive_current(self, timeout: float | None = 0.0, *, transaction: TxArg = None) -> Message:
        """MQ_ACTION_RECEIVE with the cursor: take the message under it.

        Raises MessageAlreadyReceived when another receiver took it first.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """MQCloseCursor."""

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Queue(abc.ABC):
    """An open queue (MQOpenQueue). Thread-safe; one per process per use is typical."""

    ref: QueueRef
    access: QueueAccess

    @property
    def path(self) -> str:
        """The queue's path name as given when opened."""
        return str(self.ref)

    @property
    def format_name(self) -> str:
        return self.ref.format_name

    @property
    @abc.abstractmethod
    def info(self) -> QueueInfo:
        """The queue's properties."""

    @property
    def transactional(self) -> bool:
        return self.info.transactional

    @property
    @abc.abstractmethod
    def closed(self) -> bool: ...

    # --- sending

    @abc.abstractmethod
    def send(self, body: Any = b"", *, transaction: TxArg = None, **props: Any) -> Message:
        """MQSendMessage: send ``body`` (bytes or a msgpack value, or a :class:`Message`)
        with message properties as keywords (``label=``, ``priority=``, ...).

        Returns the message as stored (with its ``id``). Raises IllegalPropertyValue for a
        bad property (naming it and the limit), TransactionUsage when a transactional
        queue is sent to without a transaction (use SINGLE_MESSAGE) or a
        non-transactional one within one, InsufficientResources over the quota,
        QueueAccessDenied without send access.
        """

    @abc.abstractmethod
    def send_many(self, messages: Iterable[Any], *, transaction: TxArg = None) -> list[Message]:
        """Send several messages (bodies or Messages) with one commit: every one is stored
        (and, for recoverable ones, on disk) before this returns, or none is."""

    # --- receiving

    @abc.abstractmethod
    def receive(self, timeout: float | None = None, *, transaction: TxArg = None) -> Message:
        """MQReceiveMessage(MQ_ACTION_RECEIVE): take the first message (highest priority,
        then oldest). Waits up to ``timeout`` seconds (None: forever) without polling;
        raises IoTimeout."""

    @abc.abstractmethod
    def peek(self, timeout: float | None = None) -> Message:
        """MQ_ACTION_PEEK_CURRENT without a cursor: the first message, left in the queue."""

    @abc.abstractmethod
    def receive_by_id(self, message_id: str, *, transaction: TxArg = None) -> Message:
        """MQReceiveMessageByLookupId / System.Messaging's ReceiveById: raises MessageNotFound."""

    @abc.abstractmethod
    def peek_by_id(self, message_id: str) -> Message:
        """PeekById: raises MessageNotFound."""

    @abc.abstractmethod
    def receive_by_correlation_id(
        self, correlation_id: str, timeout: float | None = 0.0, *, transaction: TxArg = None
    ) -> Message:
        """ReceiveByCorrelationId: the first message with that correlation id; waits up
        to ``timeout`` seconds, then raises IoTimeout."""

    @abc.abstractmethod
    def peek_by_correlation_id(self, correlation_id: str, timeout: float | None = 0.0) -> Message:
        """PeekByCorrelationId."""

    @abc.abstractmethod
    def cursor(self) -> Cursor:
        """MQCreateCursor."""

    async def areceive(self, timeout: float | None = None, *, transaction: TxArg = None) -> Message:
        """The asyncio twin of :meth:`receive` (runs the wait in a worker thread that
        close() or task cancellation stops)."""
        return await asyncio.to_thread(self.receive, timeout, transaction=transaction)

    async def apeek(self, timeout: float | None = None) -> Message:
        """The asyncio twin of :meth:`peek`."""
        return await asyncio.to_thread(self.peek, timeout)

    # --- management

    @abc.abstractmethod
    def stat(self) -> QueueStat:
        """Counts, bytes used and what "recoverable" means on this backend."""

    @abc.abstractmethod
    def purge(self) -> int:
        """MQPurgeQueue: remove every ready message; returns how many."""

    @abc.abstractmethod
    def close(self) -> None:
        """MQCloseQueue (idempotent)."""

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else self.access.name
        return f"<{type(self).__name__} {self.path!r} {state}>"
