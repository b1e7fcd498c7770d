"""MSMQ-style message queuing: durable, transactional queues with no daemon.

On one machine a queue is one SQLite database (WAL) in the queue store; across machines
the same API runs on a NATS JetStream stream (``nats://host:port/name``)::

    from winipc import msmq

    msmq.create_queue(r".\\private$\\orders", transactional=True)
    with msmq.open(r".\\private$\\orders", "send") as q:
        q.send({"sku": 42}, label="order", transaction=msmq.SINGLE_MESSAGE)
    with msmq.open(r".\\private$\\orders", "receive") as q, msmq.transaction() as tx:
        order = q.receive(timeout=5, transaction=tx).body

The module functions stand for MQCreateQueue, MQDeleteQueue, MQOpenQueue, MQPurgeQueue,
MQGetQueueProperties / MQMgmtGetInfo and MQBeginTransaction; see docs/msmq.md.
"""

from __future__ import annotations

import importlib
from typing import Any

from winipc import errors as W
from winipc._core.security import SecurityAttributes
from winipc.msmq import _local
from winipc.msmq._api import (
    SINGLE_MESSAGE,
    Cursor,
    Queue,
    QueueAccess,
    QueueInfo,
    QueueStat,
    ShareMode,
    Transaction,
    parse_access,
)
from winipc.msmq._message import (
    DEFAULT_PRIORITY,
    MAX_BODY,
    MAX_LABEL,
    MAX_PRIORITY,
    MIN_PRIORITY,
    Ack,
    Delivery,
    Message,
    MessageClass,
)
from winipc.msmq._names import QueueRef, parse


def _nats_backend() -> Any:
    """The NATS backend module, imported on first use (it needs nats-py)."""
    return importlib.import_module("winipc.msmq._nats")


def _backend(ref: QueueRef) -> Any:
    if ref.url is not None:
        return _nats_backend()
    if not ref.local:
        url = _nats_backend().default_url()
        if url is None:
            raise W.QueueNotAvailable(
                f"queue {ref}: host {ref.host!r} is not this machine; remote queues go through "
                "NATS: name one as nats://server:port/queue or set WINIPC_NATS_URL"
            )
        return _nats_backend()
    return _local


def create_queue(
    path: str,
    *,
    transactional: bool = False,
    label: str = "",
    quota: int | None = None,
    journal: bool = False,
    journal_quota: int | None = None,
    max_aborts: int = 5,
    security: SecurityAttributes | None = None,
) -> QueueInfo:
    """MQCreateQueue: create a queue and return its properties.

    Args:
        path: ``.\\private$\\name``, ``.\\name`` or ``nats://server:port/name``.
        transactional: PROPID_Q_TRANSACTION: sends need a transaction (or SINGLE_MESSAGE).
        label: PROPID_Q_LABEL, up to 124 characters.
        quota: PROPID_Q_QUOTA, bytes of message bodies the queue may hold (None: no limit).
        journal: PROPID_Q_JOURNAL: keep a copy of each received message in ``;journal``.
        journal_quota: PROPID_Q_JOURNAL_QUOTA, bytes (None: no limit); the oldest journal
            copies are dropped to make room.
        max_aborts: a message whose transactional receive aborted more than this many
            times moves to the ``;poison`` subqueue (MSMQ 4.0 poison handling).
        security: who else may send, receive or peek (default: the owner only; 0600 files).

    Raises QueueExists, IllegalQueuePathname, IllegalPropertyValue, QueueAccessDenied.
    """
    ref = parse(path)
    return _backend(ref).create_queue(  # type: ignore[no-any-return]
        ref,
        transactional=transactional,
        label=label,
        quota=quota,
        journal=journal,
        journal_quota=journal_quota,
        max_aborts=max_aborts,
        security=security,
    )


def delete_queue(path: str) -> None:
    """MQDeleteQueue: delete a queue and its messages. Raises QueueNotFound.

    Open handles then get QueueDeleted; senders who asked for NEGATIVE_RECEIVE
    acknowledgements get NACK_Q_DELETED on their admin queues.
    """
    ref = parse(path)
    _backend(ref).delete_queue(ref)


def open(
    path: str,
    access: QueueAccess | int | str = "receive",
    *,
    share: ShareMode | int = ShareMode.DENY_NONE,
    prefetch: int = 0,
) -> Queue:
    """MQOpenQueue: open a queue (or a subqueue: ``;journal``, ``;poison``, ``;deadletter``).

    Args:
        path: a path name, ``DIRECT=OS:`` format name or ``nats://server:port/name``.
        access: ``"send"``, ``"receive"`` (receive and peek), ``"peek"`` or QueueAccess flags.
        share: ShareMode.DENY_RECEIVE_SHARE to be the only receiver (else SharingViolation).
        prefetch: NATS queues only, an int from 0 to 256 (``_nats.MAX_PREFETCH``).
            0 (the default): MSMQ's receive. A plain receive returns a message only once
            the server has removed it for this receive (at most once, also across a
            crash; never a message another receive took), and a message sent at a
            higher priority before receive is called, by any process, comes first.
            N > 0: a receiving handle that keeps receiving pulls up to N messages ahead
            and holds them unacknowledged, and a plain receive's ``+ACK`` is sent after
            it returns without waiting (within ~2 ms): faster, but **at least once**.
            A message is received again (``abort_count`` 1, after the queue's ack wait,
            30 s) when this process dies before that ``+ACK`` reached the server, and a
            held message that a receive by id, correlation id or cursor in another
            process takes can be handed out by this handle too. Held messages not handed
            out go back when the handle is closed (or after the ack wait, if the process
            dies) with their delivery count raised: received later with ``abort_count``
            1, and moved to ``;poison`` after ``max_aborts`` such returns. A message sent
            at a higher priority is received before the held ones once its publish
            notification reached this process (normally before that send returns; a
            send from this process makes sure of it). Transactional receives are exact
            either way. docs/wire/msmq-nats.md has the details.

    Raises QueueNotFound, QueueAccessDenied, SharingViolation, IllegalQueuePathname,
    MsmqError(MQ_ERROR_INVALID_PARAMETER) for a ``prefetch`` that is not such an int, one
    other than 0 on a local queue (its receives read the queue file: nothing to prefetch),
    or one on a handle without receive access.
    """
    if isinstance(prefetch, bool) or not isinstance(prefetch, int):
        raise W.MsmqError(f"prefetch={prefetch!r}: an int (0: no prefetch)", winerror=W.MQ_ERROR_INVALID_PARAMETER)
    ref = parse(path)
    backend = _backend(ref)
    acc, mode = parse_access(access), ShareMode(share)
    if backend is _local:
        if prefetch:
            raise W.MsmqError(
                f"prefetch={prefetch}: local queue {path} has nothing to prefetch (its receives read the "
                "queue file); prefetch is for nats:// queues",
                winerror=W.MQ_ERROR_INVALID_PARAMETER,
            )
        return _local.open_queue(ref, acc, mode)
    return backend.open_queue(ref, acc, mode, prefetch=prefetch)  # type: ignore[no-any-return]


open_queue = open


def purge_queue(path: str) -> int:
    """MQPurgeQueue: remove every ready message; returns how many."""
    ref = parse(path)
    return _backend(ref).purge_queue(ref)  # type: ignore[no-any-return]


def queue_info(path: str) -> QueueInfo:
    """MQGetQueueProperties. Raises QueueNotFound."""
    ref = parse(path)
    return _backend(ref).queue_info(ref)  # type: ignore[no-any-return]


def list_queues(where: str | None = None) -> list[QueueInfo]:
    """The queues of this machine's store (``where=None``) or of a NATS server
    (``where="nats://host:port"``): MQMgmtGetInfo(MACHINE)'s PRIVATEQ list."""
    if where is not None and "://" in where:
        return _nats_backend().list_queues(where)  # type: ignore[no-any-return]
    return _local.list_queues()


def transaction() -> Transaction:
    """MQBeginTransaction: an internal transaction over local queues (commit or abort it,
    or use it as a context manager)."""
    return _local.begin_transaction()


def integrity_check(path: str) -> list[str]:
    """Check a local queue file: SQLite's integrity_check and every record's checksum.

    Returns the problems found (empty when clean); never raises CorruptQueueError.
    """
    ref = parse(path)
    if ref.url is not None:
        raise W.MsmqError(f"{path}: integrity checks are for local queues", winerror=W.MQ_ERROR_INVALID_PARAMETER)
    return _local.integrity_check(ref)


__all__ = [
    "DEFAULT_PRIORITY",
    "MAX_BODY",
    "MAX_LABEL",
    "MAX_PRIORITY",
    "MIN_PRIORITY",
    "SINGLE_MESSAGE",
    "Ack",
    "Cursor",
    "Delivery",
    "Message",
    "MessageClass",
    "Queue",
    "QueueAccess",
    "QueueInfo",
    "QueueRef",
    "QueueStat",
    "ShareMode",
    "Transaction",
    "create_queue",
    "delete_queue",
    "integrity_check",
    "list_queues",
    "open",
    "open_queue",
    "parse",
    "purge_queue",
    "queue_info",
    "transaction",
]
