"""The NATS backend: a small synchronous facade over nats-py for winipc's network mode.

nats-py (the ``nats`` package, ``pip install winipc[nats]``) is asyncio-only; winipc's
mechanisms are synchronous. A :class:`NatsLink` is one NATS connection per (process, URL),
shared by every winipc object of the process that uses that URL and reference-counted
(:meth:`NatsLink.acquire` / :meth:`NatsLink.release`). Each link owns a daemon thread
running a private asyncio event loop; every nats-py call runs on that loop, and the
blocking methods of the link wait for it with a timeout.

Threads::

    caller threads            link thread "winipc-nats-<host:port>"
    --------------            ---------------------------------------
    publish() ----submit----> nc.publish(); nc.flush()   (PING/PONG round trip)
       <------- result ------
    subscribe() --submit----> nc.subscribe(); nc.flush()
                              message arrives -> callback(data)   (runs HERE)

Semantics (core NATS, no JetStream):

- Delivery is at most once. A message published while nobody is subscribed, or while
  a subscriber's connection is down, is lost (as a mailslot datagram would be).
- :meth:`NatsLink.publish` returns once the server has the message (a flush: PING/PONG).
- :meth:`NatsLink.subscribe` returns once the server has registered the subscription, so
  a publish that starts after it returns — from any connection — is delivered to it.
- Messages of one subscription reach its callback in the order the server sent them;
  one publisher's messages to one subject arrive in the order published.
- Connecting is bounded (``connect_timeout``, 2 s by default) and never retries forever:
  an unreachable server raises :class:`~winipc.errors.BadNetPath` promptly. Once a link
  is established, a lost connection is repaired by nats-py's reconnect logic, which keeps
  trying (every 2 s, without limit) for as long as the link is held; subscriptions are
  re-registered on reconnect. While disconnected, publishes are buffered by nats-py (up
  to 2 MiB) and :meth:`~NatsLink.publish` raises :class:`~winipc.errors.Timeout` if the
  server does not confirm within ``timeout`` — the buffered message may still be
  delivered after the reconnect. Messages published by others during the outage are
  not delivered to this link's subscriptions.
- ``tls://`` URLs demand an encrypted connection: nats-py upgrades to TLS only when the
  server asks for it, so the link checks after every (re)connect and refuses a
  plaintext one (:class:`~winipc.errors.AccessDenied`). Certificates are verified
  against the system's trust store.

Fork: a link belongs to the process that created it. In a child made by ``fork()`` the
registry starts empty (``os.register_at_fork``), :meth:`NatsLink.acquire` connects
afresh, and a link object inherited from the parent raises
:class:`~winipc.errors.InvalidHandle` (its thread does not exist in the child). The
inherited objects are kept, unused and never closed, so nothing the child does can touch
the parent's connection.

JetStream (later): :meth:`NatsLink.call` runs any coroutine on the link's loop with the
raw nats-py client, for code that needs more than publish/subscribe.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib
import logging
import math
import os
import threading
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from winipc import errors as W

_log = logging.getLogger("winipc.nats")

T = TypeVar("T")

#: Environment variable naming the NATS server when no URL is given explicitly.
ENV_URL = "WINIPC_NATS_URL"
#: URL schemes accepted (those nats-py understands for TCP; ``tls://`` demands TLS).
SCHEMES = ("nats", "tls")
#: Seconds a first connection may take before :class:`~winipc.errors.BadNetPath`.
CONNECT_TIMEOUT = 2.0
#: Seconds between reconnect attempts of an established link.
RECONNECT_WAIT = 2.0
#: Seconds the final release waits for the connection to close and the thread to end.
CLOSE_TIMEOUT = 5.0
#: Seconds the cleanup after a failed first connection may take.
FAILED_CLOSE_TIMEOUT = 1.0
_INSTALL_HINT = "NATS network mode needs nats-py: install winipc[nats] (pip install 'winipc[nats]')"


# --- the nats-py surface winipc uses (nats-py's own annotations are incomplete; the
# --- module is loaded as Any and narrowed to these protocols at one place, _connect)


class _Msg(Protocol):
    @property
    def data(self) -> bytes: ...


class _Sub(Protocol):
    async def unsubscribe(self, limit: int = ...) -> None: ...


class _Client(Protocol):
    options: dict[str, Any]

    @property
    def max_payload(self) -> int: ...

    @property
    def is_closed(self) -> bool: ...

    @property
    def is_connected(self) -> bool: ...

    async def publish(self, subject: str, payload: bytes = ...) -> None: ...

    async def subscribe(
        self, subject: str, *, cb: Callable[[_Msg], Awaitable[None]]
    ) -> _Sub: ...

    async def flush(self, timeout: float = ...) -> None: ...

    async def close(self) -> None: ...


def _load_nats() -> Any:
    """The ``nats`` module; :class:`~winipc.errors.NotSupported` when it is not installed."""
    try:
        return importlib.import_module("nats")
    except ImportError as exc:
        raise W.NotSupported(_INSTALL_HINT) from exc


# --- URLs


def _redact(url: str) -> str:
    """``url`` without user info (for messages, logs and thread names)."""
    parts = []
    for one in url.split(","):
        s = urlsplit(one.strip())
        host = s.netloc.rpartition("@")[2]
        parts.append(f"{s.scheme}://{host}" if s.scheme else one.strip())
    return ",".join(parts)


def nats_url(explicit: str | None = None, *, argument: str = "url") -> str | None:
    """The NATS server URL to use: ``explicit``, else ``$WINIPC_NATS_URL``, else ``None``.

    The environment is read on every call. A URL is ``nats://host[:port]`` or
    ``tls://host[:port]`` (port 4222 by default, user info allowed), or several of them
    separated by commas (servers of one cluster). ``None`` means network mode is off.

    Args:
        explicit: a URL given by the caller; ``None`` (or ``""``) defers to the environment.
        argument: the caller's name for the URL argument, used in error messages.

    Returns:
        The URL, stripped of surrounding blanks, or ``None``.

    Raises:
        InvalidParameter: the URL (naming ``argument``, or ``WINIPC_NATS_URL`` when it
            came from the environment) has another scheme, no host, a bad port, a path,
            query or fragment, or is not a string.
    """
    name = argument
    value: object = explicit
    if explicit is None or explicit == "":
        value = os.environ.get(ENV_URL) or None
        name = ENV_URL
        if value is None:
            return None
    if not isinstance(value, str):
        raise W.InvalidParameter(f"{name} must be a str URL such as 'nats://host:4222', not {type(value).__name__}")
    url = value.strip()
    for one in url.split(","):
        _check_one_url(one.strip(), name)
    return url


def _check_one_url(url: str, name: str) -> None:
    shown = _redact(url) if "://" in url else url
    if "://" not in url:
        raise W.InvalidParameter(f"{name}={shown!r}: a NATS URL needs a scheme: nats://host:port or tls://host:port")
    try:
        s = urlsplit(url)
        port = s.port
    except ValueError as exc:
        raise W.InvalidParameter(f"{name}={shown!r}: {exc}") from None
    if s.scheme.lower() not in SCHEMES:
        raise W.InvalidParameter(f"{name}={shown!r}: scheme {s.scheme!r} is not one of nats://, tls://")
    if not s.hostname:
        raise W.InvalidParameter(f"{name}={shown!r}: no host")
    if port == 0:
        raise W.InvalidParameter(f"{name}={shown!r}: port must be 1..65535")
    if s.path not in ("", "/") or s.query or s.fragment:
        raise W.InvalidParameter(f"{name}={shown!r}: a NATS URL has no path, query or fragment")


# --- arguments


def _check_subject(subject: object, *, wildcards: bool) -> str:
    """A NATS subject: dot-separated non-empty tokens, no blanks or control characters."""
    if not isinstance(subject, str):
        raise W.InvalidParameter(f"subject must be a str, not {type(subject).__name__}")
    if not subject or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in subject):
        raise W.InvalidParameter(f"subject {subject!r} must be non-empty, without blanks or control characters")
    tokens = subject.split(".")
    for i, tok in enumerate(tokens):
        if not tok:
            raise W.InvalidParameter(f"subject {subject!r} has an empty token")
        if tok in ("*", ">") or "*" in tok or ">" in tok:
            if not wildcards:
                raise W.InvalidParameter(f"subject {subject!r}: wildcards ('*', '>') are not allowed when publishing")
            if tok not in ("*", ">") or (tok == ">" and i != len(tokens) - 1):
                raise W.InvalidParameter(f"subject {subject!r}: '*' must be a whole token and '>' the last token")
    return subject


def _check_timeout(timeout: object, name: str = "timeout") -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise W.InvalidParameter(f"{name} must be seconds (float) or None, not {type(timeout).__name__}")
    t = float(timeout)
    if not t > 0 or math.isnan(t):
        raise W.InvalidParameter(f"{name} must be > 0 seconds or None (wait forever), got {timeout!r}")
    return None if math.isinf(t) else t


# --- the per-process registry


class _Registry:
    """Links of this process by URL; replaced wholesale in a child after fork."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.links: dict[str, NatsLink] = {}


_registry = _Registry()
_orphans: list[NatsLink] = []  # links inherited through fork(): kept, never used or closed


def _after_fork_in_child() -> None:
    global _registry
    _orphans.extend(_registry.links.values())
    _registry = _Registry()


os.register_at_fork(after_in_child=_after_fork_in_child)


# --- links


class NatsLink:
    """One NATS connection of this process, shared per URL and reference-counted.

    Get one with :meth:`acquire`; give it back with :meth:`release` (or use it as a
    context manager, which releases on exit). The connection closes and the link's
    thread ends when the last holder releases it.

    Attributes:
        url: the URL as acquired (may contain user info; see :attr:`display_url`).
    """

    url: str

    def __init__(self, url: str, nats: Any = None, *, _token: object = None) -> None:
        if _token is not _TOKEN:
            raise TypeError("use NatsLink.acquire(url)")
        self.url = url
        self._nats: Any = nats
        self._pid = os.getpid()
        self._refs = 1
        self._released = False
        self._tls = any(urlsplit(u.strip()).scheme.lower() == "tls" for u in url.split(","))
        self._client: _Client | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run_loop, name=f"winipc-nats-{self.display_url}", daemon=True
        )
        self._connect_errors: list[BaseException] = []
        self._up: asyncio.Event | None = None  # set on (re)connect and on close; loop-only
        self._tasks: set[asyncio.Task[None]] = set()  # fire-and-forget tasks, kept alive

    # -- acquiring and releasing

    @classmethod
    def acquire(cls, url: str, *, connect_timeout: float = CONNECT_TIMEOUT) -> NatsLink:
        """The link of this process for ``url``, connecting on first use.

        Args:
            url: a NATS URL as :func:`nats_url` accepts (``nats://host:port``, ...).
            connect_timeout: seconds (> 0) a new connection may take (``None``: the
                default, 2 s); an existing link is returned at once. Other threads'
                ``acquire`` calls wait meanwhile.

        Returns:
            The shared link, its reference count raised by one: call :meth:`release`
            once for each :meth:`acquire`.

        Raises:
            InvalidParameter: bad ``url`` or ``connect_timeout``.
            NotSupported: nats-py is not installed ("install winipc[nats]").
            BadNetPath: the server cannot be reached (refused, unreachable, no answer
                within ``connect_timeout``).
            AccessDenied: the server refused our credentials, or a ``tls://`` server
                offered no TLS.
        """
        if not url:  # no fallback to the environment here: callers resolve with nats_url()
            raise W.InvalidParameter(f"url must be a NATS URL such as 'nats://127.0.0.1:4222', not {url!r}")
        checked = nats_url(url, argument="url")
        assert checked is not None
        t = _check_timeout(connect_timeout, "connect_timeout")
        nats = _load_nats()
        reg = _registry
        with reg.lock:
            link = reg.links.get(checked)
            if link is not None and link._usable():
                link._refs += 1
                return link
            link = cls(checked, nats, _token=_TOKEN)
            link._start(CONNECT_TIMEOUT if t is None else t)
            reg.links[checked] = link
            return link

    def release(self) -> None:
        """Give back one reference; the last one closes the connection and ends the thread.

        Waits (at most a few seconds) for the connection to close and the thread to end,
        unless called on the link's own thread (from a subscription callback), where the
        shutdown is only scheduled. In a child process after ``fork()`` this is a no-op.

        Raises:
            InvalidHandle: the link was released more times than it was acquired.
        """
        if self._pid != os.getpid():
            return
        reg = _registry
        with reg.lock:
            if self._released:
                raise W.InvalidHandle(f"NATS link to {self.display_url} released more times than acquired")
            self._refs -= 1
            if self._refs > 0:
                return
            self._released = True
            if reg.links.get(self.url) is self:
                del reg.links[self.url]
        self._shutdown()

    def __enter__(self) -> NatsLink:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    # -- properties

    @property
    def display_url(self) -> str:
        """The URL without user info (passwords, tokens), for messages and logs."""
        return _redact(self.url)

    @property
    def closed(self) -> bool:
        """True once released, or when nats-py gave the connection up for good."""
        c = self._client
        return self._released or c is None or c.is_closed

    @property
    def connected(self) -> bool:
        """True while the connection is up (False during a reconnect)."""
        c = self._client
        return not self._released and c is not None and c.is_connected

    @property
    def max_payload(self) -> int:
        """The largest message payload, in bytes, the server accepts (its INFO ``max_payload``)."""
        return self._nc().max_payload

    @property
    def thread(self) -> threading.Thread:
        """The link's event-loop thread (callbacks run on it)."""
        return self._thread

    # -- operations

    def publish(self, subject: str, data: bytes, *, timeout: float | None = 5.0) -> None:
        """Publish ``data`` on ``subject`` and wait until the server has it.

        Args:
            subject: a NATS subject without wildcards (``"winipc.mailslot.x"``).
            data: the payload, bytes-like, at most :attr:`max_payload` bytes.
            timeout: seconds (> 0) to wait for the server's confirmation; ``None`` waits
                forever.

        Raises:
            InvalidParameter: bad ``subject``, ``timeout``, or ``data`` larger than the
                server's ``max_payload`` (the message names the limit); nothing is sent.
            Timeout: no confirmation within ``timeout`` (the message may still arrive).
            BadNetPath: the connection is gone for good.
            InvalidHandle: the link was released, or belongs to the parent of a fork.
            NotSupported: called on the link's own thread (a callback), which would
                deadlock.
        """
        _check_subject(subject, wildcards=False)
        t = _check_timeout(timeout)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise W.InvalidParameter(f"data must be bytes, not {type(data).__name__}")
        payload = bytes(data)
        limit = self.max_payload
        if len(payload) > limit:
            raise W.InvalidParameter(
                f"data is {len(payload)} bytes; the NATS server at {self.display_url} "
                f"accepts at most max_payload={limit} bytes per message"
            )

        async def op(nc: _Client) -> None:
            await nc.publish(subject, payload)
            await self._confirm(nc, t)

        self._submit(op, t, f"publish to {subject!r}")

    def subscribe(
        self, subject: str, callback: Callable[[bytes], None], *, timeout: float | None = 5.0
    ) -> Subscription:
        """Call ``callback(data)`` for each message on ``subject``, from now on.

        The callback runs on the link's thread, one message at a time, in arrival order.
        It must not block (hand the data to a queue, set an event): while it runs no
        other message of this link is processed, and blocking link calls from it raise
        :class:`~winipc.errors.NotSupported`. Exceptions it raises are logged (logger
        ``winipc.nats``) and the next message is delivered as usual.

        Returns only after the server has registered the subscription: any publish that
        starts after this returns is delivered to it.

        Args:
            subject: a NATS subject; ``*`` matches one token, a final ``>`` the rest.
            callback: called with each message's payload (bytes).
            timeout: seconds (> 0) to wait for the server's confirmation; ``None`` waits
                forever.

        Returns:
            A :class:`Subscription`; ``close()`` it to stop.

        Raises:
            InvalidParameter: bad ``subject``, ``callback`` or ``timeout``.
            Timeout: the server did not confirm within ``timeout`` (nothing stays
                subscribed).
            BadNetPath, InvalidHandle, NotSupported: as for :meth:`publish`.
        """
        _check_subject(subject, wildcards=True)
        if not callable(callback):
            raise W.InvalidParameter(f"callback must be callable, not {type(callback).__name__}")
        t = _check_timeout(timeout)
        display = self.display_url

        async def on_msg(msg: _Msg) -> None:
            try:
                callback(msg.data)
            except Exception:
                _log.exception("callback for NATS subject %r on %s raised", subject, display)

        async def op(nc: _Client) -> _Sub:
            sub = await nc.subscribe(subject, cb=on_msg)
            try:
                await self._confirm(nc, t)
            except BaseException:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
                raise
            return sub

        sub = self._submit(op, t, f"subscribe to {subject!r}")
        return Subscription(self, sub, subject)

    def call(
        self,
        fn: Callable[[Any], Awaitable[T]],
        *,
        timeout: float | None = 5.0,
        what: str = "NATS call",
    ) -> T:
        """Run ``await fn(client)`` on the link's loop and return its result (backend use).

        ``client`` is the raw ``nats.aio.client.Client``; this is the hook for features
        beyond publish/subscribe (JetStream: ``client.jetstream()``).

        Args:
            fn: an async function of the client.
            timeout: seconds (> 0) the whole call may take; ``None`` waits forever.
            what: what the call does, for error messages.

        Raises:
            Timeout: ``fn`` did not finish within ``timeout`` (it is cancelled).
            BadNetPath, AccessDenied, InvalidParameter: nats-py errors, translated.
            InvalidHandle, NotSupported: as for :meth:`publish`.
        """
        return self._submit(fn, _check_timeout(timeout), what)

    # -- additions for JetStream users (winipc.msmq's NATS backend)

    @property
    def server_info(self) -> dict[str, Any]:
        """A copy of the INFO the server sent when we connected (``version``,
        ``max_payload`` in bytes, ``jetstream``, ...); empty when unknown."""
        info: Any = getattr(self._nc(), "_server_info", None)
        return dict(info) if isinstance(info, dict) else {}

    def spawn(self, fn: Callable[[Any], Awaitable[None]]) -> concurrent.futures.Future[None]:
        """Start ``await fn(client)`` on the link's loop without waiting for it (a
        background task such as a keep-alive); cancel the returned future to stop it.

        Raises InvalidHandle when the link was released."""
        nc = self._nc()
        try:
            return asyncio.run_coroutine_threadsafe(fn(nc), self._loop)  # type: ignore[arg-type]
        except RuntimeError:
            raise W.InvalidHandle(f"NATS link to {self.display_url} was released") from None

    async def acall(
        self,
        fn: Callable[[Any], Awaitable[T]],
        *,
        timeout: float | None = 5.0,
        what: str = "NATS call",
    ) -> T:
        """The asyncio twin of :meth:`call`, for a coroutine running on another event
        loop: ``await fn(client)`` runs on the link's loop, and cancelling the awaiting
        task cancels it there. ``timeout`` is seconds (None: no limit); errors are
        translated as for :meth:`call`."""
        nc = self._nc()
        t = _check_timeout(timeout)

        async def bounded() -> T:
            return await asyncio.wait_for(fn(nc), t)

        try:
            fut = asyncio.run_coroutine_threadsafe(bounded(), self._loop)
        except RuntimeError:
            raise W.InvalidHandle(f"NATS link to {self.display_url} was released") from None
        try:
            return await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            fut.cancel()
            raise
        except Exception as exc:
            raise self._translate(exc, what, t) from exc

    def __repr__(self) -> str:
        state = "released" if self._released else f"refs={self._refs}"
        return f"<NatsLink {self.display_url} {state}>"

    # -- internals

    def _usable(self) -> bool:
        return self._pid == os.getpid() and not self.closed

    def _nc(self) -> _Client:
        if self._pid != os.getpid():
            raise W.InvalidHandle(
                f"NATS link to {self.display_url} was created in process {self._pid} "
                f"before fork(); acquire a new one in this process"
            )
        c = self._client
        if self._released or c is None:
            raise W.InvalidHandle(f"NATS link to {self.display_url} was released")
        return c

    def _run_loop(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    def _start(self, connect_timeout: float) -> None:
        """Start the thread and connect; on failure, stop the thread and raise."""
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._connect(connect_timeout), self._loop)
        try:
            fut.result(connect_timeout + CLOSE_TIMEOUT)
        except BaseException as exc:
            fut.cancel()
            self._released = True
            self._shutdown()
            if isinstance(exc, concurrent.futures.TimeoutError):
                raise W.BadNetPath(
                    f"The network path was not found: no answer from the NATS server at "
                    f"{self.display_url} within {connect_timeout:g} s"
                ) from None
            raise

    async def _connect(self, connect_timeout: float) -> None:
        nats = self._nats
        display = self.display_url
        errors: Any = nats.errors
        connect_errors = self._connect_errors

        async def error_cb(exc: Exception) -> None:
            if self._client is None:  # still connecting: keep it for the final message
                connect_errors.append(exc)
            elif isinstance(exc, errors.SlowConsumerError):
                _log.warning("NATS %s: a subscription callback is too slow, messages dropped: %s", display, exc)
            else:
                _log.info("NATS %s: %s: %s", display, type(exc).__name__, exc)

        async def disconnected_cb() -> None:
            if self._client is not None and not self._released:
                _log.info("NATS %s: disconnected; reconnecting", display)

        async def reconnected_cb() -> None:
            _log.info("NATS %s: reconnected", display)
            if self._tls and self._client is not None and not _encrypted(self._client):
                _log.error("NATS %s: reconnected without TLS; closing the link", display)
                # not awaited here: close() cancels the reconnect task running this callback
                task = asyncio.get_running_loop().create_task(self._client.close())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            up.set()

        async def closed_cb() -> None:
            up.set()  # wake waiters: they see is_closed

        up = self._up = asyncio.Event()

        raw: Any = nats.NATS()
        nc: _Client = raw
        servers = [u.strip() for u in self.url.split(",")]
        try:
            await asyncio.wait_for(
                raw.connect(
                    servers,
                    error_cb=error_cb,
                    disconnected_cb=disconnected_cb,
                    reconnected_cb=reconnected_cb,
                    closed_cb=closed_cb,
                    name=f"winipc pid {os.getpid()}",
                    # first connection: fail fast (two quick tries per server, no waits) ...
                    allow_reconnect=False,
                    connect_timeout=connect_timeout,
                    max_reconnect_attempts=1,
                    reconnect_time_wait=0,
                ),
                connect_timeout,
            )
        except BaseException as exc:
            # Bounded: after a failed TLS handshake nats-py's close() waits forever for a
            # transport that is already closed (the socket itself is closed by then).
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), FAILED_CLOSE_TIMEOUT)
            raise self._connect_error(exc, connect_timeout) from exc
        if self._tls and not _encrypted(nc):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), FAILED_CLOSE_TIMEOUT)
            raise W.AccessDenied(
                f"Access is denied: the NATS server at {display} offers no TLS, and a tls:// "
                f"URL demands it (use nats:// for plaintext)"
            )
        # ... then, once established, let nats-py repair lost connections for as long as
        # the link is held.
        nc.options["allow_reconnect"] = True
        nc.options["max_reconnect_attempts"] = -1
        nc.options["reconnect_time_wait"] = RECONNECT_WAIT
        self._client = nc

    async def _confirm(self, nc: _Client, timeout: float | None) -> None:
        """Wait until the server has everything sent so far (a PING/PONG round trip).

        While nats-py reconnects, its ``flush()`` returns at once without a round trip,
        so wait for the connection to be back first (bounded by the caller's timeout).
        """
        up = self._up
        assert up is not None
        while not nc.is_connected:
            if nc.is_closed:
                raise self._nats.errors.ConnectionClosedError
            up.clear()
            await up.wait()
        await nc.flush(_flush_timeout(timeout))

    def _connect_error(self, exc: BaseException, connect_timeout: float) -> BaseException:
        """The winipc error for a failed first connection."""
        errors: Any = self._nats.errors
        if isinstance(exc, asyncio.CancelledError):
            return exc
        if isinstance(exc, errors.AuthorizationError) or any(
            isinstance(e, errors.AuthorizationError) for e in self._connect_errors
        ):
            return W.AccessDenied(f"Access is denied: the NATS server at {self.display_url} refused our credentials")
        if isinstance(exc, errors.NoServersError) and self._connect_errors:
            exc = self._connect_errors[-1]
        if isinstance(exc, _TIMEOUTS):
            detail = f"no answer within {connect_timeout:g} s"
        else:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return W.BadNetPath(f"The network path was not found: cannot reach the NATS server at {self.display_url} ({detail})")

    def _submit(self, fn: Callable[[Any], Awaitable[T]], timeout: float | None, what: str) -> T:
        """Run ``fn(client)`` on the loop, bounded by ``timeout``; translate errors."""
        nc = self._nc()
        if threading.current_thread() is self._thread:
            raise W.NotSupported(
                f"{what}: blocking NATS calls cannot be made from the link's own thread "
                f"(a subscription callback); hand the work to another thread"
            )

        async def bounded() -> T:
            return await asyncio.wait_for(fn(nc), timeout)

        try:
            fut = asyncio.run_coroutine_threadsafe(bounded(), self._loop)
        except RuntimeError:  # the loop was closed by a concurrent release
            raise W.InvalidHandle(f"NATS link to {self.display_url} was released") from None
        try:
            return fut.result(None if timeout is None else timeout + CLOSE_TIMEOUT)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise W.Timeout(f"This operation returned because the timeout period expired: {what} "
                            f"on {self.display_url} ({timeout:g} s)") from None
        except concurrent.futures.CancelledError:
            raise W.InvalidHandle(f"{what}: NATS link to {self.display_url} was released") from None
        except Exception as exc:
            raise self._translate(exc, what, timeout) from exc

    def _translate(self, exc: Exception, what: str, timeout: float | None) -> Exception:
        """The winipc error for a nats-py error raised by ``what``; others pass unchanged."""
        if isinstance(exc, W.WinIPCError):
            return exc
        errors: Any = self._nats.errors
        where = f"{what} on {self.display_url}"
        if isinstance(exc, _TIMEOUTS):  # asyncio's and nats-py's timeouts
            return W.Timeout(f"This operation returned because the timeout period expired: {where} "
                             f"({'no limit' if timeout is None else f'{timeout:g} s'})")
        if isinstance(exc, errors.MaxPayloadError):
            return W.InvalidParameter(f"{where}: payload larger than the server's max_payload={self.max_payload} bytes")
        if isinstance(exc, errors.BadSubjectError):
            return W.InvalidParameter(f"{where}: invalid subject")
        if isinstance(exc, errors.AuthorizationError):
            return W.AccessDenied(f"Access is denied: {where}: {exc}")
        if isinstance(exc, errors.ConnectionClosedError):
            if self._released:
                return W.InvalidHandle(f"{where}: the link was released")
            return W.BadNetPath(f"The network path was not found: {where}: the connection is closed")
        if isinstance(exc, (errors.Error, OSError)):
            return W.BadNetPath(f"The network path was not found: {where}: {type(exc).__name__}: {exc}")
        return exc

    def _shutdown(self) -> None:
        """Close the connection, stop the loop, end the thread (waits unless on it)."""
        loop = self._loop
        if not self._thread.is_alive():
            if not loop.is_closed() and not self._thread.ident:
                loop.close()  # never started
            return
        nc = self._client

        async def close() -> None:
            if nc is not None and not nc.is_closed:
                try:
                    await asyncio.wait_for(nc.close(), CLOSE_TIMEOUT)
                except Exception as exc:
                    _log.warning("NATS %s: closing the connection failed: %s", self.display_url, exc)
            loop.stop()

        fut = asyncio.run_coroutine_threadsafe(close(), loop)
        if threading.current_thread() is self._thread:
            return
        with contextlib.suppress(Exception):
            fut.result(CLOSE_TIMEOUT + 1)
        if not fut.done():
            loop.call_soon_threadsafe(loop.stop)
        self._thread.join(CLOSE_TIMEOUT)
        if self._thread.is_alive():  # pragma: no cover - a stuck nats-py
            _log.warning("NATS %s: the link thread did not end", self.display_url)


_TOKEN = object()
#: Timeout exceptions (asyncio's is not the builtin one before Python 3.11).
_TIMEOUTS = (TimeoutError, asyncio.TimeoutError, concurrent.futures.TimeoutError)


def _flush_timeout(timeout: float | None) -> float:
    return 1e9 if timeout is None else timeout


def _encrypted(nc: _Client) -> bool:
    """Whether the client's current connection runs over TLS (False if unknown)."""
    transport: Any = getattr(nc, "_transport", None)
    writer: Any = getattr(transport, "_io_writer", None)
    try:
        return writer is not None and writer.get_extra_info("ssl_object") is not None
    except Exception:
        return False


class Subscription:
    """Interest in one subject on a :class:`NatsLink`; :meth:`close` ends it.

    Attributes:
        subject: the subject subscribed to.
        link: the link it runs on.
    """

    def __init__(self, link: NatsLink, sub: _Sub, subject: str) -> None:
        self.link = link
        self.subject = subject
        self._sub: _Sub | None = sub
        self._lock = threading.Lock()

    @property
    def closed(self) -> bool:
        """True after :meth:`close`, or once the link is released."""
        return self._sub is None or self.link.closed

    def close(self, *, timeout: float | None = 5.0) -> None:
        """Unsubscribe; idempotent, never raises.

        When it returns (called from another thread than the link's), the callback is not
        running and will not be called again. Called from the callback itself, the
        unsubscribe is scheduled and takes effect after the callback returns. A no-op
        once the link is released, and in a child process after ``fork()``.
        """
        with self._lock:
            sub, self._sub = self._sub, None
        link = self.link
        if sub is None or link._pid != os.getpid() or link.closed:
            return
        t = _check_timeout(timeout)

        async def unsubscribe(nc: _Client) -> None:
            await sub.unsubscribe()
            if nc.is_connected:  # else the server forgot it already, and so will nats-py
                await nc.flush(_flush_timeout(t))

        if threading.current_thread() is link._thread:
            nc = link._client
            if nc is not None:
                task = link._loop.create_task(unsubscribe(nc))
                link._tasks.add(task)
                task.add_done_callback(link._tasks.discard)
                task.add_done_callback(_log_task_error)
            return
        try:
            link.call(unsubscribe, timeout=t, what=f"unsubscribe from {self.subject!r}")
        except W.WinIPCError as exc:
            _log.info("NATS %s: unsubscribe from %r: %s", link.display_url, self.subject, exc)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Subscription {self.subject!r} on {self.link.display_url}{' closed' if self.closed else ''}>"


def _log_task_error(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        _log.info("NATS: scheduled unsubscribe failed: %s", task.exception())


__all__ = ["CONNECT_TIMEOUT", "ENV_URL", "NatsLink", "Subscription", "nats_url"]
