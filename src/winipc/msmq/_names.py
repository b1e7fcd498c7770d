"""Queue path names and format names, as MSMQ writes them.

Accepted (case-insensitive, as MSMQ's; the creator's spelling is kept for display):

* path names: ``.\\private$\\orders`` (a private queue on this machine), ``.\\orders``
  (a public queue on this machine), ``HOST\\private$\\orders`` and ``HOST\\orders``
  (``HOST`` is this machine's name, or another machine reached over NATS);
* format names: ``DIRECT=OS:.\\private$\\orders`` (and ``FormatName:DIRECT=OS:...``),
  with the subqueue suffixes ``;journal``, ``;poison`` and ``;deadletter``;
* the system dead-letter queue: ``.\\system$;deadletter`` (also ``DIRECT=OS:.\\system$;deadletter``);
* NATS: ``nats://host:port/orders`` or ``tls://host:port/orders`` (a JetStream stream).

A queue name is 1..124 characters (MQ_MAX_Q_NAME_LEN) without ``\\``, ``;``, ``/``,
NUL or control characters.
"""

from __future__ import annotations

import dataclasses
import re
import socket
from urllib.parse import quote, urlsplit

from winipc import errors as W

#: MQ_MAX_Q_NAME_LEN (characters).
MAX_QUEUE_NAME = 124

SUB_MAIN = ""
SUB_JOURNAL = "journal"
SUB_POISON = "poison"
SUB_DEADLETTER = "deadletter"
SUBQUEUES = (SUB_JOURNAL, SUB_POISON, SUB_DEADLETTER)

_BAD_CHARS = re.compile(r"[\\;/\x00-\x1f\x7f]")


@dataclasses.dataclass(frozen=True)
class QueueRef:
    """A parsed queue name.

    Attributes:
        host: ``"."`` for this machine, else the host name as written.
        private: a private queue (``private$``), else public.
        name: the queue name as written (display spelling).
        subqueue: ``""`` for the queue itself, or ``"journal"``, ``"poison"``, ``"deadletter"``.
        system: the system dead-letter queue (``.\\system$;deadletter``).
        url: for NATS queues, the server URL (``nats://host:port``); else ``None``.
    """

    host: str
    private: bool
    name: str
    subqueue: str = SUB_MAIN
    system: bool = False
    url: str | None = None

    @property
    def key(self) -> str:
        """The case-folded identity of the queue itself (subqueue excluded)."""
        if self.system:
            return "system$"
        return ("private$\\" if self.private else "") + self.name.casefold()

    @property
    def local(self) -> bool:
        return self.url is None and is_local_host(self.host)

    @property
    def path(self) -> str:
        """The path name of the queue itself (``.\\private$\\orders``)."""
        if self.url is not None:
            return f"{self.url}/{self.name}"
        if self.system:
            return f"{self.host}\\system$"
        return f"{self.host}\\{'private$' + chr(92) if self.private else ''}{self.name}"

    @property
    def format_name(self) -> str:
        """``DIRECT=OS:...`` with the subqueue suffix (``nats://...`` for NATS queues)."""
        base = self.path if self.url is not None else f"DIRECT=OS:{self.path}"
        return base + (f";{self.subqueue}" if self.subqueue else "")

    def main(self) -> QueueRef:
        """The queue itself (no subqueue)."""
        return dataclasses.replace(self, subqueue=SUB_MAIN)

    def sub(self, subqueue: str) -> QueueRef:
        return dataclasses.replace(self, subqueue=subqueue)

    def file_stem(self) -> str:
        """A file-system-safe, case-folded name for the local store (``priv.orders``)."""
        if self.system:
            return "system$"
        kind = "priv" if self.private else "pub"
        return kind + "." + quote(self.name.casefold(), safe="-_.")

    def __str__(self) -> str:
        return self.path + (f";{self.subqueue}" if self.subqueue else "")


_hostnames: frozenset[str] | None = None


def is_local_host(host: str) -> bool:
    """True for ``.``, ``localhost`` and this machine's names."""
    global _hostnames
    h = host.casefold()
    if h in (".", "localhost"):
        return True
    if _hostnames is None:
        names = {socket.gethostname().casefold()}
        try:
            names.add(socket.getfqdn().casefold())
        except OSError:
            pass
        names |= {n.split(".", 1)[0] for n in names}
        _hostnames = frozenset(names)
    return h in _hostnames


def _check_name(name: str, whole: str, error: type[W.MsmqError]) -> None:
    if not name:
        raise error(f"queue name {whole!r}: the queue name part is empty")
    if len(name) > MAX_QUEUE_NAME:
        raise error(f"queue name {whole!r}: {len(name)} characters, at most {MAX_QUEUE_NAME} (MQ_MAX_Q_NAME_LEN)")
    if _BAD_CHARS.search(name):
        raise error(f"queue name {whole!r}: must not contain \\, ;, /, NUL or control characters")


def _split_subqueue(text: str, whole: str, error: type[W.MsmqError]) -> tuple[str, str]:
    if ";" not in text:
        # MSMQ's path form of the journal: ".\private$\orders\journal$"
        if text.casefold().endswith("\\journal$"):
            return text[: -len("\\journal$")], SUB_JOURNAL
        return text, SUB_MAIN
    base, _, suffix = text.partition(";")
    sub = suffix.casefold()
    if sub not in SUBQUEUES:
        raise error(f"queue name {whole!r}: unknown subqueue {suffix!r} (use journal, poison or deadletter)")
    return base, sub


def parse(text: object, *, argument: str = "path") -> QueueRef:
    """Parse a path name, format name or NATS URL; raises IllegalQueuePathname / IllegalFormatName."""
    if not isinstance(text, str):
        raise W.IllegalQueuePathname(f"{argument} must be a str queue path name, not {type(text).__name__}")
    whole = text
    if "://" in text:
        return _parse_url(text, argument)
    error: type[W.MsmqError] = W.IllegalQueuePathname
    body = text
    low = body.casefold()
    if low.startswith("formatname:"):
        body = body[len("formatname:") :]
        low = body.casefold()
        error = W.IllegalFormatName
    if low.startswith("direct="):
        error = W.IllegalFormatName
        rest = body[len("direct=") :]
        proto, sep, addr = rest.partition(":")
        if not sep or proto.casefold() != "os":
            raise W.IllegalFormatName(
                f"{argument} {whole!r}: only DIRECT=OS: format names are supported (TCP/HTTP addressing goes through nats://)"
            )
        body = addr
    elif "=" in low.split("\\", 1)[0]:
        raise W.IllegalFormatName(f"{argument} {whole!r}: unsupported format name (use DIRECT=OS:host\\queue)")
    body, sub = _split_subqueue(body, whole, error)
    parts = body.split("\\")
    if len(parts) < 2 or not parts[0]:
        raise error(f"{argument} {whole!r}: expected HOST\\name or HOST\\private$\\name (HOST is '.' for this machine)")
    host = parts[0]
    if len(parts) == 2 and parts[1].casefold() == "system$":
        if sub != SUB_DEADLETTER:
            raise error(f"{argument} {whole!r}: the system queue is .\\system$;deadletter")
        return QueueRef(host=host, private=True, name="system$", subqueue=SUB_DEADLETTER, system=True)
    if len(parts) == 3 and parts[1].casefold() == "private$":
        name, private = parts[2], True
    elif len(parts) == 2:
        name, private = parts[1], False
    else:
        raise error(f"{argument} {whole!r}: expected HOST\\name or HOST\\private$\\name")
    _check_name(name, whole, error)
    return QueueRef(host=host, private=private, name=name, subqueue=sub)


def _parse_url(text: str, argument: str) -> QueueRef:
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise W.IllegalFormatName(f"{argument} {text!r}: {exc}") from None
    if parts.scheme not in ("nats", "tls"):
        raise W.IllegalFormatName(f"{argument} {text!r}: scheme must be nats:// or tls://")
    if not parts.hostname:
        raise W.IllegalFormatName(f"{argument} {text!r}: no server host")
    path = parts.path.lstrip("/")
    path, sub = _split_subqueue(path, text, W.IllegalFormatName)
    _check_name(path, text, W.IllegalFormatName)
    netloc = parts.netloc
    url = f"{parts.scheme}://{netloc}"
    del port
    return QueueRef(host=parts.hostname, private=False, name=path, subqueue=sub, url=url)
