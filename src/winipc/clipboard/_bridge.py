"""The desktop clipboard bridge: winipc's clipboard kept in step with the desktop's.

When an X11 or Wayland session is present (or on macOS), text and images are carried both
ways between the winipc clipboard and the desktop clipboard, through the desktop's own
command-line tools, run as child processes with a time limit each:

============  ==========================================  ==================================
``name``      tools                                       carries
============  ==========================================  ==================================
wayland       ``wl-copy`` / ``wl-paste`` (wl-clipboard)   text, PNG images
x11-xclip     ``xclip`` (the CLIPBOARD selection)         text, PNG images
x11-xsel      ``xsel`` (when xclip is missing)            text
macos         ``pbcopy`` / ``pbpaste``                    text
============  ==========================================  ==================================

The bridge speaks mime types: ``"text/plain;charset=utf-8"`` (:data:`TEXT`) and
``"image/png"`` (:data:`PNG`); the clipboard module maps them to CF_UNICODETEXT and CF_DIB
(:func:`dib_to_png` / :func:`png_to_dib` convert, with Pillow).

X11 and Wayland have no clipboard store: a program that copies *owns* the selection and
serves every paste itself. ``push`` therefore starts a server process (``xclip -i``,
``xsel --nodetach``, ``wl-copy --foreground``) that offers the data until another program
takes the selection, when it ends by itself; :meth:`close` ends it (or, with
``keep_selection=True``, leaves it serving after this process is gone, the way the ``xclip``
command itself works). One such process can offer one type only, so when both text and an
image are pushed the desktop is offered the **text**: a Windows program that puts both
(a spreadsheet's cells, a document's selection) means the text, and a program that copies
an image puts the image alone. macOS's ``pbcopy`` carries text only, so there images stay
in winipc's clipboard.

``pull`` returns the desktop's content only when another program changed it since this
bridge's last push or pull (it compares a SHA-256 digest of the content; see
:func:`digest` and :attr:`BridgeBase.last_digest` to share that state between processes).

Nothing from the desktop is ever unpickled; every read is capped (:data:`MAX_BYTES`) before
it is buffered, and every tool run has a time limit. A desktop that stops answering makes
``push`` do nothing and ``pull`` return None (logged at debug level, logger
``winipc.clipboard``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import selectors
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Protocol

from winipc import errors as W

if TYPE_CHECKING:
    from PIL import Image as _PILImage

__all__ = [
    "MAX_BYTES",
    "MAX_PIXELS",
    "PNG",
    "TEXT",
    "BridgeBase",
    "DesktopBridge",
    "MacBridge",
    "WaylandBridge",
    "XclipBridge",
    "XselBridge",
    "detect",
    "dib_to_png",
    "digest",
    "have_pillow",
    "png_to_dib",
]

#: the mime type of text (UTF-8 bytes, no terminating NUL)
TEXT = "text/plain;charset=utf-8"
#: the mime type of images (a PNG file's bytes)
PNG = "image/png"
MIME_TYPES = (TEXT, PNG)
#: the largest item the bridge pushes or reads from the desktop (bytes)
MAX_BYTES = 256 * 1024 * 1024
#: the largest image dib_to_png / png_to_dib convert (pixels; 8192 x 8192)
MAX_PIXELS = 1 << 26
#: seconds each tool run may take (a look at the clipboard, text)
TIMEOUT = 2.0
#: seconds a tool run moving an image may take
DATA_TIMEOUT = 10.0
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_STDERR_CAP = 64 * 1024
_CHUNK = 1 << 16
_DISABLED = ("0", "off", "no", "false", "none", "disabled")

_log = logging.getLogger("winipc.clipboard")


class DesktopBridge(Protocol):
    """What the clipboard module needs from a desktop bridge (see :func:`detect`)."""

    name: str

    def push(self, items: Mapping[str, bytes]) -> None:
        """Set the desktop clipboard to ``items`` (mime type -> bytes)."""

    def pull(self) -> dict[str, bytes] | None:
        """The desktop's content when another program changed it since the last push/pull."""

    def close(self) -> None:
        """End the bridge (and the server process it started)."""


def digest(items: Mapping[str, bytes]) -> bytes:
    """SHA-256 of a clipboard content (mime type -> bytes), independent of key order.

    The bridge compares these to tell whether the desktop changed; a clipboard that keeps
    state across processes can store the digest of what it last pushed or pulled and give
    it to a new bridge through :attr:`BridgeBase.last_digest`.
    """
    h = hashlib.sha256()
    for mime in sorted(items):
        data = items[mime]
        m = mime.encode()
        h.update(struct.pack("<Q", len(m)) + m + struct.pack("<Q", len(data)))
        h.update(data)
    return h.digest()


# --------------------------------------------------------------------------- tool runs


@dataclass(frozen=True)
class _Result:
    returncode: int
    stdout: bytes
    stderr: bytes


def _which(tool: str, env: Mapping[str, str]) -> str | None:
    return shutil.which(tool, path=env.get("PATH", os.defpath))


def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()


def _reap(proc: subprocess.Popen[bytes], grace: float = 0.0) -> None:
    """End ``proc`` if it still runs (SIGTERM, then SIGKILL after ``grace`` s) and wait for it."""
    if proc.poll() is None:
        if grace > 0:
            with contextlib.suppress(OSError):
                proc.terminate()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait()
    _close_pipes(proc)


def _feed(proc: subprocess.Popen[bytes], data: bytes, deadline: float) -> bool:
    """Write ``data`` to ``proc``'s stdin and close it; False on a time-out or a broken pipe."""
    stdin = proc.stdin
    assert stdin is not None
    fd = stdin.fileno()
    os.set_blocking(fd, False)
    view = memoryview(data)
    pos = 0
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_WRITE)
            while pos < len(view):
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    return False
                try:
                    pos += os.write(fd, view[pos : pos + _CHUNK])
                except BlockingIOError:
                    continue
        return True
    except OSError:  # BrokenPipeError: the tool ended early
        return False
    finally:
        with contextlib.suppress(OSError):
            stdin.close()


def _run(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    data: bytes | None = None,
    timeout: float = TIMEOUT,
    cap: int = MAX_BYTES,
) -> _Result | None:
    """Run a tool to its end, feeding ``data``; None when it cannot start, exceeds ``timeout``
    seconds or writes more than ``cap`` bytes (it is killed then)."""
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            close_fds=True,
        )
    except OSError as e:
        _log.debug("clipboard bridge: cannot run %s: %s", argv[0], e)
        return None
    try:
        return _communicate(proc, argv, data, timeout, cap)
    finally:
        _reap(proc)


def _communicate(
    proc: subprocess.Popen[bytes], argv: Sequence[str], data: bytes | None, timeout: float, cap: int
) -> _Result | None:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None and proc.stderr is not None
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    out: list[bytes] = []
    err: list[bytes] = []
    size = err_size = 0
    view = memoryview(data if data is not None else b"")
    pos = 0
    in_fd = -1
    with selectors.DefaultSelector() as sel:
        sel.register(out_fd, selectors.EVENT_READ)
        sel.register(err_fd, selectors.EVENT_READ)
        if proc.stdin is not None:
            if view:
                in_fd = proc.stdin.fileno()
                os.set_blocking(in_fd, False)
                sel.register(in_fd, selectors.EVENT_WRITE)
            else:
                proc.stdin.close()
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                _log.debug("clipboard bridge: %s took more than %.1f s; killed", argv[0], timeout)
                return None
            for key, _ in sel.select(left):
                fd = key.fd
                if fd == in_fd:
                    try:
                        pos += os.write(fd, view[pos : pos + _CHUNK])
                    except BlockingIOError:
                        continue
                    except OSError:  # the tool stopped reading
                        pos = len(view)
                    if pos >= len(view):
                        sel.unregister(fd)
                        in_fd = -1
                        assert proc.stdin is not None
                        proc.stdin.close()
                    continue
                chunk = os.read(fd, _CHUNK)
                if not chunk:
                    sel.unregister(fd)
                elif fd == out_fd:
                    size += len(chunk)
                    if size > cap:
                        _log.debug("clipboard bridge: %s wrote more than %d bytes; killed", argv[0], cap)
                        return None
                    out.append(chunk)
                elif err_size < _STDERR_CAP:
                    err_size += len(chunk)
                    err.append(chunk)
    try:
        rc = proc.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        _log.debug("clipboard bridge: %s did not end within %.1f s; killed", argv[0], timeout)
        return None
    return _Result(rc, b"".join(out), b"".join(err))


class _Server:
    """A tool process that serves the selection (``xclip -i``, ``wl-copy --foreground``...)."""

    def __init__(self, proc: subprocess.Popen[bytes], errfile: IO[bytes]) -> None:
        self.proc = proc
        self.errfile = errfile

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_text(self) -> bytes:
        try:
            return os.pread(self.errfile.fileno(), _STDERR_CAP, 0)
        except OSError:
            return b""

    def stop(self) -> None:
        _reap(self.proc, grace=1.0)
        self.errfile.close()

    def detach(self) -> None:
        """Leave it serving; a daemon thread reaps it when it ends."""

        def reap() -> None:
            self.proc.wait()
            _close_pipes(self.proc)
            self.errfile.close()

        if self.alive():
            threading.Thread(target=reap, name="winipc-clipboard-reaper", daemon=True).start()
        else:
            self.stop()


def _start_server(argv: Sequence[str], env: Mapping[str, str], data: bytes, timeout: float) -> _Server | None:
    errfile = tempfile.TemporaryFile()  # noqa: SIM115 (kept open while the server runs)
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=errfile,
            env=dict(env),
            close_fds=True,
            start_new_session=True,  # a Ctrl-C on the terminal must not end the selection
        )
    except OSError as e:
        errfile.close()
        _log.debug("clipboard bridge: cannot run %s: %s", argv[0], e)
        return None
    server = _Server(proc, errfile)
    if not _feed(proc, data, time.monotonic() + timeout):
        _log.debug("clipboard bridge: %s did not take its %d bytes in time", argv[0], len(data))
        server.stop()
        return None
    return server


# --------------------------------------------------------------------------- items


def _normalize(items: Mapping[str, bytes], max_bytes: int) -> dict[str, bytes]:
    """The items the bridge carries, checked: other mime types are left out."""
    if not isinstance(items, Mapping):
        raise W.InvalidParameter(f"items must be a mapping of mime type to bytes, not {type(items).__name__}")
    out: dict[str, bytes] = {}
    for mime, value in items.items():
        if not isinstance(mime, str):
            raise W.InvalidParameter(f"items' keys must be mime type strings, not {type(mime).__name__}")
        key = mime.lower().replace(" ", "")
        if key not in MIME_TYPES:
            continue
        if isinstance(value, str):
            raise W.InvalidParameter(f"items[{mime!r}] must be bytes, not str (encode it as UTF-8)")
        try:
            data = bytes(memoryview(value))
        except TypeError:
            raise W.InvalidParameter(f"items[{mime!r}] must be bytes-like, not {type(value).__name__}") from None
        if len(data) > max_bytes:
            raise W.InvalidParameter(f"items[{mime!r}] is {len(data)} bytes, more than the limit of {max_bytes} bytes")
        if key == TEXT:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as e:
                raise W.InvalidParameter(f"items[{mime!r}] is not UTF-8 ({e.reason} at byte {e.start})") from None
        elif not data.startswith(PNG_SIGNATURE):
            raise W.InvalidParameter(f"items[{mime!r}] is not a PNG file (no PNG signature)")
        if data:
            out[key] = data
    return out


def _utf8(data: bytes, encoding: str = "utf-8") -> bytes:
    """Text from the desktop as valid UTF-8 (undecodable bytes become U+FFFD)."""
    return data.decode(encoding, errors="replace").encode("utf-8")


# --------------------------------------------------------------------------- bridges


class BridgeBase:
    """Common logic of the desktop bridges: change detection, the server process, closing.

    Args:
        tools: tool name -> absolute path (e.g. ``{"xclip": "/usr/bin/xclip"}``).
        env: the environment the tools run in (``DISPLAY``, ``WAYLAND_DISPLAY``,
            ``XAUTHORITY``...); default ``os.environ``.
        timeout: seconds each tool run may take (default 2).
        data_timeout: seconds a run moving an image may take (default 10).
        max_bytes: the largest item pushed or read (bytes; default 256 MiB).

    Attributes:
        name: which bridge (``"x11-xclip"``, ``"x11-xsel"``, ``"wayland"``, ``"macos"``).
        images: whether this bridge carries ``image/png``.
        last_error: what went wrong in the last failed push or read (for diagnostics).

    Thread-safe. A bridge is also a context manager (``close()`` on exit); push and pull on
    a closed bridge raise :class:`~winipc.errors.InvalidHandle`.
    """

    name = ""
    images = True

    def __init__(
        self,
        tools: Mapping[str, str],
        env: Mapping[str, str] | None = None,
        *,
        timeout: float = TIMEOUT,
        data_timeout: float = DATA_TIMEOUT,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        for arg, value in (("timeout", timeout), ("data_timeout", data_timeout)):
            if not isinstance(value, (int, float)) or not value > 0:
                raise W.InvalidParameter(f"{arg} must be seconds > 0, not {value!r}")
        if not isinstance(max_bytes, int) or not 0 < max_bytes <= MAX_BYTES:
            raise W.InvalidParameter(f"max_bytes must be 1..{MAX_BYTES} bytes, not {max_bytes!r}")
        self.tools = dict(tools)
        self.env = dict(os.environ if env is None else env)
        self.timeout = float(timeout)
        self.data_timeout = float(data_timeout)
        self.max_bytes = max_bytes
        self.last_error: str | None = None
        self._lock = threading.RLock()
        self._server: _Server | None = None
        self._last: bytes | None = None  # digest of what the desktop shows, as last seen or set
        self._last_pulled = False  # whether _last came from pull (echo suppression)
        self._closed = False

    # -- the public face

    @property
    def last_digest(self) -> bytes | None:
        """:func:`digest` of the desktop content this bridge last pushed or pulled (None: none).

        ``pull`` reports the desktop's content only when its digest differs. Set it (e.g. to
        the digest of what the winipc clipboard holds, shared between processes) so a new
        bridge does not report content that is already in step.
        """
        return self._last

    @last_digest.setter
    def last_digest(self, value: bytes | None) -> None:
        with self._lock:
            self._last = value
            self._last_pulled = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def server_pid(self) -> int | None:
        """The process id of the server process serving our push, while it runs."""
        s = self._server
        return s.pid if s is not None and s.alive() else None

    def push(self, items: Mapping[str, bytes]) -> None:
        """Set the desktop clipboard to ``items`` (mime type -> bytes).

        Carried types: :data:`TEXT` (UTF-8) and :data:`PNG`; others are left out. When both
        are given, X11 and Wayland are offered the text (one type per owner; see the module
        docstring); macOS and xsel carry text only. With nothing carried (``{}``, or an
        image on a text-only bridge), the bridge gives up the selection if it holds it and
        leaves another program's content alone. Pushing back what :meth:`pull` returned,
        while the desktop still shows it, does nothing (no echo).

        Returns once the desktop serves the data (X11: xclip owns the selection). A desktop
        that fails or does not answer within the time limits is logged (debug) and left
        as it is: the winipc clipboard works alone. Mirrors the desktop half of
        SetClipboardData + CloseClipboard.

        Raises:
            InvalidParameter: ``items`` is not a mapping of str to bytes, the text is not
                UTF-8, the image is not a PNG, or an item is larger than ``max_bytes``.
            InvalidHandle: the bridge is closed.
        """
        norm = _normalize(items, self.max_bytes)
        offer: tuple[str, bytes] | None = None
        if TEXT in norm:
            offer = (TEXT, norm[TEXT])
        elif PNG in norm and self.images:
            offer = (PNG, norm[PNG])
        with self._lock:
            self._check_open()
            if offer is None:
                self._stop_server()
                return
            if self._last_pulled and digest(norm) == self._last and not self._serving():
                current = self._read()
                if current is not None and digest(current) == self._last:
                    return  # the desktop already shows it (it came from there)
            if self._offer(*offer):
                self._last = digest({offer[0]: offer[1]})
                self._last_pulled = False
                self.last_error = None

    def pull(self) -> dict[str, bytes] | None:
        """The desktop's content, when another program changed it since our last push/pull.

        Returns ``{TEXT: utf-8 bytes}`` and/or ``{PNG: png bytes}``; None when unchanged,
        when the desktop clipboard is empty or holds nothing the bridge carries, and when
        the desktop fails or does not answer in time. The first pull of a new bridge
        reports the desktop's current content unless :attr:`last_digest` says it is
        already known. Mirrors reading the desktop as GetClipboardData would.

        Raises:
            InvalidHandle: the bridge is closed.
        """
        with self._lock:
            self._check_open()
            if self._serving():
                return None  # our server still owns the selection: nobody changed it
            self._stop_server()
            content = self._read()
            if not content:
                return None
            d = digest(content)
            if d == self._last:
                return None
            self._last = d
            self._last_pulled = True
            return content

    def close(self, *, keep_selection: bool = False) -> None:
        """End the bridge: stop the server process serving our last push, if it still runs.

        With ``keep_selection=True`` the server keeps serving the desktop (until another
        program copies, as the ``xclip`` command does), so a paste works after this process
        has ended. Idempotent.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            server, self._server = self._server, None
            if server is not None:
                if keep_selection:
                    server.detach()
                else:
                    server.stop()

    def __enter__(self) -> BridgeBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"server={self.server_pid}"
        return f"<{type(self).__name__} {self.name} {state}>"

    # -- for subclasses

    def _offer(self, mime: str, data: bytes) -> bool:
        """Make the desktop offer ``data`` as ``mime``; True when it does."""
        raise NotImplementedError

    def _read(self) -> dict[str, bytes] | None:
        """The desktop's current content (None: empty, nothing carried, or failure)."""
        raise NotImplementedError

    def _tool(self, name: str, *args: str) -> list[str]:
        return [self.tools[name], *args]

    def _run(self, argv: Sequence[str], *, data: bytes | None = None, image: bool = False) -> _Result | None:
        return _run(
            argv,
            self.env,
            data=data,
            timeout=self.data_timeout if image else self.timeout,
            cap=self.max_bytes,
        )

    def _check_open(self) -> None:
        if self._closed:
            raise W.InvalidHandle(f"the {self.name} clipboard bridge is closed")

    def _serving(self) -> bool:
        return self._server is not None and self._server.alive()

    def _stop_server(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def _fail(self, what: str) -> bool:
        self.last_error = what
        _log.debug("clipboard bridge %s: %s", self.name, what)
        return False

    def _serve(self, argv: Sequence[str], mime: str, data: bytes) -> bool:
        """Start a server process for ``data`` and wait until the desktop serves it."""
        timeout = self.data_timeout if mime == PNG else self.timeout
        server = _start_server(argv, self.env, data, timeout)
        if server is None:
            return self._fail(f"{argv[0]} could not start or take the data")
        deadline = time.monotonic() + timeout
        ready = False
        while True:
            if self._ready(server, mime, data):
                ready = True
                break
            if not server.alive():
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(0.005)
        if not ready:
            msg = server.stderr_text().decode("utf-8", "replace").strip()
            server.stop()
            return self._fail(f"{argv[0]} did not serve the clipboard: {msg or 'timed out'}")
        old, self._server = self._server, server
        if old is not None:
            old.stop()  # it lost the selection to the new one already
        return True

    def _ready(self, server: _Server, mime: str, data: bytes) -> bool:
        """Whether the desktop serves ``data`` now (default: read it back)."""
        return self._read_one(mime) == data

    def _read_one(self, mime: str) -> bytes | None:
        content = self._read()
        return None if content is None else content.get(mime)


class XclipBridge(BridgeBase):
    """X11's CLIPBOARD selection through ``xclip`` (text as UTF8_STRING, images as image/png).

    Reads ask the owner for ``TARGETS`` first, then take text from ``text/plain;charset=utf-8``,
    ``UTF8_STRING`` or ``STRING`` (Latin-1) and the image from ``image/png``.
    """

    name = "x11-xclip"
    _TEXT_TARGETS = (("UTF8_STRING", "utf-8"), (TEXT, "utf-8"), ("STRING", "latin-1"))

    def _xclip(self, *args: str) -> list[str]:
        return self._tool("xclip", *args, "-selection", "clipboard")

    def _offer(self, mime: str, data: bytes) -> bool:
        target = "UTF8_STRING" if mime == TEXT else PNG
        return self._serve(self._xclip("-quiet", "-i", "-t", target), mime, data)

    def _ready(self, server: _Server, mime: str, data: bytes) -> bool:
        # With -quiet, xclip says so on stderr once it has called XSetSelectionOwner; the
        # request reaches the X server a moment later (its next XNextEvent flushes it), so
        # then read the data back as a paste would.
        if b"Waiting for selection request" not in server.stderr_text():
            return False
        target = "UTF8_STRING" if mime == TEXT else PNG
        r = self._run(self._xclip("-o", "-t", target), image=mime == PNG)
        return r is not None and r.returncode == 0 and r.stdout == data

    def _read(self) -> dict[str, bytes] | None:
        r = self._run(self._xclip("-o", "-t", "TARGETS"))
        if r is None:
            return None
        if r.returncode != 0:
            # no owner, or an old owner that does not answer TARGETS: try the text itself
            r = self._run(self._xclip("-o", "-t", "UTF8_STRING"))
            if r is None or r.returncode != 0 or not r.stdout:
                return None
            return {TEXT: _utf8(r.stdout)}
        targets = {t.strip() for t in r.stdout.decode("latin-1").splitlines()}
        out: dict[str, bytes] = {}
        for target, encoding in self._TEXT_TARGETS:
            if target in targets:
                t = self._run(self._xclip("-o", "-t", target))
                if t is not None and t.returncode == 0 and t.stdout:
                    out[TEXT] = _utf8(t.stdout, encoding)
                    break
        if PNG in targets:
            p = self._run(self._xclip("-o", "-t", PNG), image=True)
            if p is not None and p.returncode == 0 and p.stdout.startswith(PNG_SIGNATURE):
                out[PNG] = p.stdout
        return out or None


class XselBridge(BridgeBase):
    """X11's CLIPBOARD selection through ``xsel`` (text only)."""

    name = "x11-xsel"
    images = False

    def _offer(self, mime: str, data: bytes) -> bool:
        return self._serve(self._tool("xsel", "--clipboard", "--input", "--nodetach"), mime, data)

    def _read(self) -> dict[str, bytes] | None:
        r = self._run(self._tool("xsel", "--clipboard", "--output"))
        if r is None or r.returncode != 0 or not r.stdout:
            return None
        return {TEXT: _utf8(r.stdout)}


class WaylandBridge(BridgeBase):
    """The Wayland clipboard through wl-clipboard's ``wl-copy`` and ``wl-paste``.

    Compositors without a data-control protocol (GNOME's Mutter before ext-data-control)
    make wl-paste map a window for a moment to get focus; XWayland's X11 bridge has no such
    flicker (``WINIPC_CLIPBOARD_BRIDGE=x11`` selects it).
    """

    name = "wayland"
    _TEXT_TYPES = (TEXT, "UTF8_STRING", "text/plain", "STRING", "TEXT")

    def _offer(self, mime: str, data: bytes) -> bool:
        return self._serve(self._tool("wl-copy", "--foreground", "--type", mime), mime, data)

    def _ready(self, server: _Server, mime: str, data: bytes) -> bool:
        r = self._run(self._tool("wl-paste", "--no-newline", "--type", mime), image=mime == PNG)
        return r is not None and r.returncode == 0 and r.stdout == data

    def _read(self) -> dict[str, bytes] | None:
        r = self._run(self._tool("wl-paste", "--list-types"))
        if r is None or r.returncode != 0:
            return None
        types = {t.strip() for t in r.stdout.decode("latin-1").splitlines()}
        out: dict[str, bytes] = {}
        for t in self._TEXT_TYPES:
            if t in types:
                p = self._run(self._tool("wl-paste", "--no-newline", "--type", t))
                if p is not None and p.returncode == 0 and p.stdout:
                    out[TEXT] = _utf8(p.stdout, "latin-1" if t == "STRING" else "utf-8")
                    break
        if PNG in types:
            p = self._run(self._tool("wl-paste", "--no-newline", "--type", PNG), image=True)
            if p is not None and p.returncode == 0 and p.stdout.startswith(PNG_SIGNATURE):
                out[PNG] = p.stdout
        return out or None


class MacBridge(BridgeBase):
    """The macOS pasteboard through ``pbcopy`` / ``pbpaste`` (text only, in UTF-8).

    Images stay in winipc's clipboard: pbcopy and pbpaste carry text only.
    """

    name = "macos"
    images = False

    def __init__(self, tools: Mapping[str, str], env: Mapping[str, str] | None = None, **kw: Any) -> None:
        super().__init__(tools, env, **kw)
        # pbcopy/pbpaste take and give text in the locale's encoding: make it UTF-8
        self.env["LANG"] = "en_US.UTF-8"
        self.env["LC_ALL"] = "en_US.UTF-8"

    def _offer(self, mime: str, data: bytes) -> bool:
        r = self._run(self._tool("pbcopy"), data=data)
        if r is None or r.returncode != 0:
            return self._fail("pbcopy failed" + (f": {r.stderr.decode('utf-8', 'replace').strip()}" if r else ""))
        return True

    def _read(self) -> dict[str, bytes] | None:
        r = self._run(self._tool("pbpaste", "-Prefer", "txt"))
        if r is None or r.returncode != 0 or not r.stdout:
            return None
        return {TEXT: _utf8(r.stdout)}


if TYPE_CHECKING:

    def _conforms(bridge: BridgeBase) -> DesktopBridge:  # mypy checks the protocol here
        return bridge


# --------------------------------------------------------------------------- detect


def _answers(r: _Result | None, tool: str, words: tuple[bytes, ...]) -> bool:
    """Whether a probe run shows a desktop that answers (an empty clipboard is fine)."""
    if r is None:
        _log.debug("clipboard bridge: %s did not answer in time", tool)
        return False
    if r.returncode != 0 and any(w in r.stderr.lower() for w in words):
        _log.debug("clipboard bridge: %s: %s", tool, r.stderr.decode("utf-8", "replace").strip())
        return False
    return True


def detect(env: Mapping[str, str] | None = None, *, timeout: float = TIMEOUT) -> BridgeBase | None:
    """The bridge to this session's desktop clipboard, or None when there is none.

    Looks at ``env`` (default ``os.environ``), which is also the environment the tools run
    in: ``WAYLAND_DISPLAY`` with ``wl-copy`` and ``wl-paste`` on ``PATH`` gives the Wayland
    bridge; ``DISPLAY`` with ``xclip`` (else ``xsel``) the X11 bridge; macOS (with ``pbcopy``)
    the macOS bridge. A display that does not answer (probed once, ``timeout`` seconds)
    gives None, quietly (logged at debug level).

    ``WINIPC_CLIPBOARD_BRIDGE=0`` (or ``off``) disables the bridge; ``=wayland``, ``=x11`` or
    ``=macos`` tries only that one (e.g. X11 through XWayland).
    """
    e = dict(os.environ if env is None else env)
    choice = e.get("WINIPC_CLIPBOARD_BRIDGE", "").strip().lower()
    if choice in _DISABLED:
        _log.debug("clipboard bridge disabled by WINIPC_CLIPBOARD_BRIDGE=%s", choice)
        return None
    kinds: tuple[str, ...] = ("wayland", "x11", "macos")
    if choice in kinds:
        kinds = (choice,)
    for kind in kinds:
        bridge = _try(kind, e, timeout)
        if bridge is not None:
            return bridge
    return None


def _try(kind: str, env: dict[str, str], timeout: float) -> BridgeBase | None:
    if kind == "wayland" and env.get("WAYLAND_DISPLAY"):
        copy, paste = _which("wl-copy", env), _which("wl-paste", env)
        if copy and paste:
            r = _run([paste, "--list-types"], env, timeout=timeout, cap=_STDERR_CAP)
            if _answers(r, "wl-paste", (b"connect", b"wayland")):
                return WaylandBridge({"wl-copy": copy, "wl-paste": paste}, env, timeout=timeout)
    elif kind == "x11" and env.get("DISPLAY"):
        xclip = _which("xclip", env)
        if xclip:
            r = _run([xclip, "-o", "-selection", "clipboard", "-t", "TARGETS"], env, timeout=timeout, cap=_STDERR_CAP)
            return XclipBridge({"xclip": xclip}, env, timeout=timeout) if _answers(r, "xclip", (b"display",)) else None
        xsel = _which("xsel", env)
        if xsel:
            r = _run([xsel, "--clipboard", "--output"], env, timeout=timeout, cap=MAX_BYTES)
            return XselBridge({"xsel": xsel}, env, timeout=timeout) if _answers(r, "xsel", (b"display",)) else None
    elif kind == "macos" and sys.platform == "darwin":
        copy, paste = _which("pbcopy", env), _which("pbpaste", env)
        if copy and paste:
            return MacBridge({"pbcopy": copy, "pbpaste": paste}, env, timeout=timeout)
    return None


# --------------------------------------------------------------------------- CF_DIB <-> PNG

BI_RGB = 0
BI_RLE8 = 1
BI_RLE4 = 2
BI_BITFIELDS = 3
BI_JPEG = 4
BI_PNG = 5
BI_ALPHABITFIELDS = 6
LCS_SRGB = 0x73524742  # 'sRGB'
LCS_GM_IMAGES = 4
_INFO = struct.Struct("<IiiHHIIiiII")  # BITMAPINFOHEADER, 40 bytes
_HEADER_SIZES = (40, 52, 56, 108, 124)  # INFO, V2, V3, V4, V5
_VALID_BITS = {
    BI_RGB: (1, 4, 8, 16, 24, 32),
    BI_RLE8: (8,),
    BI_RLE4: (4,),
    BI_BITFIELDS: (16, 32),
    BI_ALPHABITFIELDS: (16, 32),
}
# 32-bit channel masks (R, G, B) whose bytes Pillow's raw decoder reads directly
_RAW32 = {(0x00FF0000, 0x0000FF00, 0x000000FF): "BGR", (0x000000FF, 0x0000FF00, 0x00FF0000): "RGB"}


def have_pillow() -> bool:
    """Whether Pillow is installed (needed by :func:`dib_to_png` and :func:`png_to_dib`)."""
    try:
        import PIL.Image  # noqa: F401
    except ImportError:
        return False
    return True


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise W.NotSupported(
            "converting between CF_DIB and PNG needs Pillow (pip install 'winipc[desktop]')"
        ) from None
    return Image


def _bytes_arg(name: str, value: Any) -> bytes:
    if isinstance(value, str):
        raise W.InvalidParameter(f"{name} must be bytes, not str")
    try:
        data = bytes(memoryview(value))
    except TypeError:
        raise W.InvalidParameter(f"{name} must be bytes-like, not {type(value).__name__}") from None
    if len(data) > MAX_BYTES:
        raise W.InvalidData(f"{name} is {len(data)} bytes, more than the limit of {MAX_BYTES} bytes")
    return data


@dataclass(frozen=True)
class _Dib:
    header_size: int
    width: int
    height: int  # rows (positive)
    top_down: bool
    bits: int
    compression: int
    masks: tuple[int, int, int, int]  # R, G, B, A (A = 0: none)
    offset: int  # where the pixels start
    size_image: int
    stride: int  # bytes per row (uncompressed)


def _parse_dib(dib: bytes) -> _Dib:
    """Check a packed DIB's header (BITMAPINFOHEADER or V2..V5) and find its pixels."""
    n = len(dib)
    if n < 4:
        raise W.InvalidData(f"dib: {n} bytes is shorter than a BITMAPINFOHEADER (40 bytes)")
    (size,) = struct.unpack_from("<I", dib)
    if size == 12:
        raise W.NotSupported("dib: a BITMAPCOREHEADER (OS/2, biSize 12) is not supported")
    if size not in _HEADER_SIZES:
        raise W.InvalidData(f"dib: biSize {size} is not a BITMAPINFOHEADER size (40, 52, 56, 108 or 124)")
    if n < size:
        raise W.InvalidData(f"dib: {n} bytes is shorter than its {size}-byte header")
    _, width, height, planes, bits, compression, size_image, _, _, clr_used, _ = _INFO.unpack_from(dib)
    if planes != 1:
        raise W.InvalidData(f"dib: biPlanes is {planes}, must be 1")
    if compression in (BI_JPEG, BI_PNG):
        if size_image > n - size:
            raise W.InvalidData(f"dib: biSizeImage {size_image} is more than the {n - size} bytes after the header")
        return _Dib(size, width, abs(height), height < 0, bits, compression, (0, 0, 0, 0), size, size_image, 0)
    if compression not in _VALID_BITS:
        raise W.NotSupported(f"dib: biCompression {compression} is not supported")
    if bits not in _VALID_BITS[compression]:
        raise W.InvalidData(f"dib: biBitCount {bits} is not valid with biCompression {compression}")
    if width <= 0 or height == 0:
        raise W.InvalidData(f"dib: {width} x {height} pixels; width must be > 0 and height not 0")
    if height < 0 and compression in (BI_RLE8, BI_RLE4):
        raise W.InvalidData("dib: a top-down (negative biHeight) DIB cannot be RLE-compressed")
    rows = abs(height)
    if width * rows > MAX_PIXELS:
        raise W.InvalidData(f"dib: {width} x {rows} pixels is more than the limit of {MAX_PIXELS} pixels")
    offset = size
    masks = (0, 0, 0, 0)
    if compression in (BI_BITFIELDS, BI_ALPHABITFIELDS):
        if size >= 52:  # the masks are in the header (V2..V5)
            r, g, b = struct.unpack_from("<III", dib, 40)
            a = struct.unpack_from("<I", dib, 52)[0] if size >= 56 else 0
        else:  # they follow a BITMAPINFOHEADER
            count = 4 if compression == BI_ALPHABITFIELDS else 3
            if n < size + 4 * count:
                raise W.InvalidData(f"dib: {n} bytes is too short for the header and its {count} color masks")
            r, g, b, *rest = struct.unpack_from(f"<{count}I", dib, size)
            a = rest[0] if rest else 0
            offset += 4 * count
        masks = (r, g, b, a)
    if bits <= 8:
        if clr_used > 1 << bits:
            raise W.InvalidData(f"dib: biClrUsed {clr_used} is more than {1 << bits} colors for {bits} bits")
        colors = clr_used or 1 << bits
    else:
        colors = clr_used  # an optional palette for palette devices, skipped
    if colors > (n - offset) // 4:
        raise W.InvalidData(f"dib: the {colors}-color table does not fit in {n} bytes")
    offset += 4 * colors
    stride = (width * bits + 31) // 32 * 4
    if compression in (BI_RGB, BI_BITFIELDS, BI_ALPHABITFIELDS) and n - offset < stride * rows:
        raise W.InvalidData(
            f"dib: {n - offset} bytes of pixels; {width} x {rows} at {bits} bits needs {stride * rows}"
        )
    return _Dib(size, width, rows, height < 0, bits, compression, masks, offset, size_image, stride)


def _pil_errors() -> tuple[type[BaseException], ...]:
    Image = _pil()
    return (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError)


def _open(Image: Any, data: bytes, formats: list[str], what: str) -> _PILImage.Image:
    """Open and load an image with Pillow, its size capped at MAX_PIXELS."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=formats)
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise W.InvalidData(f"{what}: {w} x {h} pixels is more than the limit of {MAX_PIXELS} pixels")
            img.load()
    except W.WinIPCError:
        raise
    except (*_pil_errors(), Image.DecompressionBombWarning) as e:
        cls = W.NotSupported if str(e).lower().startswith("unsupported") else W.InvalidData
        raise cls(f"{what}: {e}") from None
    return img  # type: ignore[no-any-return]


def _alpha_flat(alpha: bytes) -> int | None:
    """0 or 255 when every alpha byte is that value, else None."""
    if not alpha.strip(b"\x00"):
        return 0
    if not alpha.strip(b"\xff"):
        return 255
    return None


def _to_png(img: _PILImage.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def dib_to_png(dib: bytes) -> bytes:
    """Convert a CF_DIB or CF_DIBV5 (a packed DIB) to PNG file bytes.

    A packed DIB is a BITMAPINFOHEADER (40 bytes; or a V2..V5 header: 52, 56, 108, 124),
    the color masks after a 40-byte header when biCompression is BI_BITFIELDS (3) or
    BI_ALPHABITFIELDS (6), an optional color table, and the pixel rows, bottom-up unless
    biHeight is negative, each padded to 4 bytes. Handled here: 24-bit BI_RGB; 32-bit
    BI_RGB, BI_BITFIELDS and BI_ALPHABITFIELDS (8-bit channels, either byte order);
    everything else Pillow's BMP decoder reads (1/4/8-bit palettes, 16-bit 555/565, RLE8,
    RLE4); BI_PNG and BI_JPEG (the embedded image).

    A 32-bit DIB's fourth byte is taken as straight (not premultiplied) alpha, except that
    all-zero alpha means opaque (Windows' BI_RGB rule: that byte is usually unused); an
    image whose alpha is all 255 becomes an RGB PNG.

    Raises:
        InvalidData: the DIB is malformed or truncated, or larger than :data:`MAX_PIXELS`.
        NotSupported: Pillow is not installed, or a valid DIB variant it cannot decode.
        InvalidParameter: ``dib`` is not bytes-like.
    """
    data = _bytes_arg("dib", dib)
    Image = _pil()
    info = _parse_dib(data)
    body = data[info.offset :]
    if info.compression in (BI_JPEG, BI_PNG):
        if info.size_image:
            body = body[: info.size_image]
        if info.compression == BI_PNG:
            if not body.startswith(PNG_SIGNATURE):
                raise W.InvalidData("dib: a BI_PNG DIB without a PNG signature")
            _open(Image, body, ["PNG"], "dib")  # checks it decodes, within the size limit
            return body
        return _to_png(_opaque(_open(Image, body, ["JPEG"], "dib")))
    orientation = 1 if info.top_down else -1
    rawmode: str | None = None
    alpha_mask = 0
    if info.bits == 24 and info.compression == BI_RGB:
        pixels = body[: info.stride * info.height]
        img = Image.frombytes("RGB", (info.width, info.height), pixels, "raw", "BGR", info.stride, orientation)
        return _to_png(img)
    if info.bits == 32:
        if info.compression == BI_RGB:
            rawmode = "BGR"
            alpha_mask = 0xFF000000
        else:
            r, g, b, alpha_mask = info.masks
            rawmode = _RAW32.get((r, g, b))
            if alpha_mask not in (0, 0xFF000000):
                rawmode = None
    if rawmode is not None:
        pixels = body[: info.stride * info.height]
        flat = _alpha_flat(pixels[3::4]) if alpha_mask else 0
        if flat is None:
            mode, raw = "RGBA", rawmode + "A"
        else:
            mode, raw = "RGB", rawmode + "X"
        img = Image.frombytes(mode, (info.width, info.height), pixels, "raw", raw, info.stride, orientation)
        return _to_png(img)
    # the rest: Pillow's BMP decoder, behind a BITMAPFILEHEADER that points at the pixels
    file_header = struct.pack("<2sIHHI", b"BM", 14 + len(data), 0, 0, 14 + info.offset)
    return _to_png(_opaque(_open(Image, file_header + data, ["BMP"], "dib")))


def _opaque(img: _PILImage.Image) -> _PILImage.Image:
    """An RGB or RGBA image (palettes and grey levels expanded)."""
    if img.mode in ("RGB", "RGBA"):
        return img
    alpha = img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info
    return img.convert("RGBA" if alpha else "RGB")


def png_to_dib(png: bytes, *, v5: bool = False) -> bytes:
    """Convert PNG file bytes to a packed DIB for CF_DIB (or CF_DIBV5 with ``v5=True``).

    CF_DIB: a 40-byte BITMAPINFOHEADER, BI_RGB, bottom-up rows padded to 4 bytes; 24 bits
    per pixel (BGR) for an opaque image, 32 (BGRA, straight alpha) when the PNG has
    transparency. CF_DIBV5 (``v5=True``): a 124-byte BITMAPV5HEADER, 32 bits, BI_BITFIELDS
    with masks R 0x00FF0000, G 0x0000FF00, B 0x000000FF, A 0xFF000000, sRGB.
    Resolution is not carried (biXPelsPerMeter = 0).

    Raises:
        InvalidData: not a PNG, malformed, or larger than :data:`MAX_PIXELS` pixels.
        NotSupported: Pillow is not installed.
        InvalidParameter: ``png`` is not bytes-like.
    """
    data = _bytes_arg("png", png)
    Image = _pil()
    if not data.startswith(PNG_SIGNATURE):
        raise W.InvalidData("png: not a PNG file (no PNG signature)")
    img = _opaque(_open(Image, data, ["PNG"], "png"))
    w, h = img.size
    alpha = img.mode == "RGBA"
    try:
        if v5 or alpha:
            if not alpha:
                img = img.convert("RGBA")
            stride = w * 4
            pixels = img.tobytes("raw", "BGRA", stride, -1)
            bits = 32
        else:
            stride = (w * 3 + 3) // 4 * 4
            pixels = img.tobytes("raw", "BGR", stride, -1)
            bits = 24
    except (*_pil_errors(),) as e:
        raise W.InvalidData(f"png: {e}") from None
    if not v5:
        return _INFO.pack(40, w, h, 1, bits, BI_RGB, len(pixels), 0, 0, 0, 0) + pixels
    header = (
        _INFO.pack(124, w, h, 1, 32, BI_BITFIELDS, len(pixels), 0, 0, 0, 0)
        + struct.pack("<IIIII", 0x00FF0000, 0x0000FF00, 0x000000FF, 0xFF000000, LCS_SRGB)
        + bytes(36 + 12)  # CIEXYZTRIPLE endpoints, gamma R/G/B: unused with sRGB
        + struct.pack("<IIII", LCS_GM_IMAGES, 0, 0, 0)  # intent, profile data, size, reserved
    )
    return header + pixels
