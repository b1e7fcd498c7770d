"""``winipc pipe serve|send|cat``: a named-pipe server and clients for the shell.

End of input on a byte or message pipe: a client that has nothing more to send shuts
down its writing side (a half-close of the socket underneath), which the server reads as
ERROR_BROKEN_PIPE while the client can still read the replies. The server then waits
until the client has read everything (FlushFileBuffers) and disconnects it
(DisconnectNamedPipe), which the client sees as the end of the replies.

Remote pipes (``\\\\HOST\\pipe\\NAME``, docs/pipes.md): ``serve --remote`` lets clients on
other machines in over TLS, admitted by their certificate's common name; ``send`` and
``cat`` reach such a pipe with a client certificate (options in :mod:`winipc.cli._tls`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import click

from winipc import errors as W
from winipc._core import namespace
from winipc._core.names import pipe_name
from winipc.cli._common import note, raise_interrupt
from winipc.cli._tls import CA, CERT, KEY, TlsFiles, pipe_port_status, tls_options
from winipc.pipes import OpenMode, PipeConnection, PipeInstance, connect, wait_named_pipe

_IDLE = 3600.0  # a finite wait, so that cancel_io() can wake it (it polls then)
_POLL = 0.25  # how often a helper thread looks whether its session ended
_FLUSH_STEP = 0.5


def _as_line(message: bytes) -> bytes:
    """A message printed on its own line."""
    return message if message.endswith(b"\n") else message + b"\n"


class _Output:
    """Raw bytes to stdout, thread-safe; a final newline for a terminal."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = b"\n"

    def write(self, data: bytes) -> None:
        if not data:
            return
        with self._lock:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            self._last = data[-1:]

    def finish(self) -> None:
        with self._lock:
            if self._last != b"\n" and sys.stdout.isatty():
                sys.stdout.buffer.write(b"\n")
                sys.stdout.buffer.flush()
                self._last = b"\n"


# --------------------------------------------------------------------------- server


class _Stopped(Exception):
    pass


class _Server:
    """N pipe instances, one thread each, serving clients one after another."""

    def __init__(
        self,
        name: str,
        message: bool,
        echo: bool,
        command: str | None,
        instances: int,
        remote: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.remote = remote or {}  # PipeInstance's remote-client arguments
        self.message = message
        self.echo = echo
        self.command = command
        self.count = instances
        self.stop = threading.Event()
        self.out = _Output()
        self.instances: list[PipeInstance] = []
        self.threads: list[tuple[threading.Thread, threading.Event]] = []
        self.failures: list[W.WinIPCError] = []
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._procs_lock = threading.Lock()

    # ------------------------------------------------------------- lifecycle
    def open(self) -> None:
        try:
            for _ in range(self.count):
                self.instances.append(
                    PipeInstance(
                        self.name, message=self.message, max_instances=self.count, **self.remote
                    )
                )
        except BaseException:
            for inst in self.instances:
                inst.close()
            raise

    def run(self) -> None:
        """Serve until every worker has ended (or a signal interrupts the wait)."""
        for i, inst in enumerate(self.instances):
            done = threading.Event()
            t = threading.Thread(
                target=self._worker, args=(inst, done), name=f"pipe-instance-{i}", daemon=True
            )
            self.threads.append((t, done))
            t.start()
        # Wait on events, not Thread.join: a join interrupted by a signal (Ctrl-C) can
        # mark a running thread as finished in CPython, which would let us exit while
        # it still closes its instance.
        for _t, done in self.threads:
            while not done.wait(_IDLE):
                pass

    def shutdown(self) -> None:
        self.stop.set()
        for inst in self.instances:
            with contextlib.suppress(W.WinIPCError):
                inst.cancel_io()  # wakes connect() and reads
        self._kill_procs()
        self._wait_workers(3.0)
        for inst, (_t, done) in zip(self.instances, self.threads, strict=False):
            if not done.is_set():  # blocked writing to a client that does not read
                with contextlib.suppress(OSError):
                    inst.socket.shutdown(socket.SHUT_RDWR)
        self._wait_workers(2.0)
        served = [done for _t, done in self.threads]
        for inst, done in itertools.zip_longest(self.instances, served):
            if done is None or not done.is_set():  # never served, or still stuck
                with contextlib.suppress(W.WinIPCError):
                    inst.close()

    def _wait_workers(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        for _t, done in self.threads:
            done.wait(max(0.0, deadline - time.monotonic()))

    def _kill_procs(self) -> None:
        with self._procs_lock:
            procs = list(self._procs)
        for p in procs:
            with contextlib.suppress(OSError):
                p.terminate()

    # ------------------------------------------------------------- serving
    def _recv(self, inst: PipeInstance, done: threading.Event | None = None) -> bytes:
        """The next message or bytes from the client; BrokenPipe at its end."""
        while True:
            if self.stop.is_set() or (done is not None and done.is_set()):
                raise _Stopped()
            try:
                return inst.recv(timeout=_IDLE if done is None else _POLL)
            except W.SemTimeout:
                continue
            except W.OperationAborted:
                raise _Stopped() from None

    def _worker(self, inst: PipeInstance, done: threading.Event) -> None:
        try:
            while not self.stop.is_set():
                try:
                    inst.connect(timeout=_IDLE)
                except W.SemTimeout:
                    continue
                except W.OperationAborted:
                    break
                except W.WinIPCError as exc:
                    if not self.stop.is_set():
                        self.failures.append(exc)
                        note(f"error: {exc}")
                    break
                try:
                    pid: int | str = inst.client_pid
                except W.WinIPCError:
                    pid = "?"
                peer = inst.remote
                where = f" from {peer.computer_name} ({peer.principal})" if peer is not None else ""
                note(f"client {pid} connected{where}")
                try:
                    self._session(inst)
                    self._flush(inst)
                except _Stopped:
                    pass
                except W.BrokenPipe:
                    pass  # the client closed without reading everything
                except Exception as exc:
                    note(f"error: client {pid}: {exc}")
                with contextlib.suppress(W.WinIPCError):
                    inst.disconnect()
                note(f"client {pid} gone")
        finally:
            try:
                with contextlib.suppress(W.WinIPCError):
                    inst.close()
            finally:
                done.set()

    def _flush(self, inst: PipeInstance) -> None:
        """Let the client read every reply before we disconnect it (FlushFileBuffers)."""
        while not self.stop.is_set():
            try:
                inst.flush(timeout=_FLUSH_STEP)
                return
            except W.SemTimeout:
                continue

    def _session(self, inst: PipeInstance) -> None:
        if self.command is not None and not self.message:
            self._exec_stream(inst, self.command)
            return
        while True:
            try:
                data = self._recv(inst)
            except W.BrokenPipe:
                return  # the client has sent everything
            if self.echo:
                inst.write(data)
            elif self.command is not None:
                inst.write(self._exec_once(self.command, data))
            else:
                self.out.write(_as_line(data) if self.message else data)

    def _track(self, proc: subprocess.Popen[bytes], add: bool) -> None:
        with self._procs_lock:
            if add:
                self._procs.add(proc)
            else:
                self._procs.discard(proc)
        if add and self.stop.is_set():
            proc.terminate()

    def _exec_once(self, command: str, data: bytes) -> bytes:
        proc = subprocess.Popen(command, shell=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._track(proc, True)
        try:
            out, _ = proc.communicate(data)
        finally:
            self._track(proc, False)
        if self.stop.is_set():
            raise _Stopped()
        return out

    def _exec_stream(self, inst: PipeInstance, command: str) -> None:
        """One run of ``command`` per client: client -> its stdin, its stdout -> client."""
        proc = subprocess.Popen(command, shell=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._track(proc, True)
        done = threading.Event()
        assert proc.stdin is not None and proc.stdout is not None
        stdin = proc.stdin

        def feed() -> None:
            try:
                while True:
                    stdin.write(self._recv(inst, done))
                    stdin.flush()
            except (W.BrokenPipe, _Stopped, OSError):
                pass  # the client's end of input, or the command stopped reading
            finally:
                with contextlib.suppress(OSError):
                    stdin.close()

        feeder = threading.Thread(target=feed, name="pipe-exec-feed", daemon=True)
        feeder.start()
        try:
            while chunk := os.read(proc.stdout.fileno(), 65536):
                inst.write(chunk)
        finally:
            done.set()
            if proc.poll() is None and self.stop.is_set():
                proc.terminate()
            proc.stdout.close()
            proc.wait()
            self._track(proc, False)
            feeder.join()
        if self.stop.is_set():
            raise _Stopped()



# --------------------------------------------------------------------------- client


def _client_tls(name: str, tls: TlsFiles) -> ssl.SSLContext | None:
    """The client context for NAME: None for a pipe on this machine (where the TLS options
    are refused), else one from the options, which must give a client certificate.

    Raises:
        click.UsageError: options that do not fit NAME (the option is named).
        click.BadParameter: a file that does not load (named).
    """
    oname = pipe_name(name)
    if oname.is_local:
        tls.refuse(f"applies to a pipe on another machine (\\\\HOST\\pipe\\NAME); "
                   f"{oname.display} is on this one")
        return None
    tls.check_pair()
    if not tls.has_identity:
        raise click.UsageError(
            f"{oname.display} is on another machine: give {CERT} and {KEY} (its server admits "
            f"remote clients by their certificate; {CA} names the CA its certificate is checked against)"
        )
    return tls.client_context()


def _open_client(
    name: str, message: bool | None, wait: float | None, tls: ssl.SSLContext | None
) -> PipeConnection:
    """Connect to the pipe with the access its direction allows; wait while it is busy.

    A pipe on another machine (``tls`` given) is opened for reading and writing: its
    direction is known only once connected.
    """
    oname = pipe_name(name)
    opts: dict[str, Any]
    if oname.is_local:
        _path, rec = namespace.lookup(oname)
        mode = OpenMode(int(rec.attrs.get("open_mode", OpenMode.DUPLEX)))
        is_message = bool(rec.attrs.get("message"))
        opts = {
            "read": bool(mode & OpenMode.OUTBOUND),
            "write": bool(mode & OpenMode.INBOUND),
            "read_message": is_message if message is None else message,
        }
        limit: float | None = float(rec.attrs.get("default_timeout", 0.05)) if wait is None else wait
    else:
        opts = {"tls": tls}
        limit = wait  # None: the remote pipe's own default time-out, asked of its machine
    deadline = None if limit is None else time.monotonic() + limit
    waited_default = False
    while True:
        try:
            conn = connect(name, **opts)
            break
        except W.PipeBusy as exc:
            if deadline is None:  # once, as CallNamedPipe with NMPWAIT_USE_DEFAULT_WAIT
                if waited_default:
                    raise
                waited_default = True
                try:
                    wait_named_pipe(name)
                except W.SemTimeout:
                    raise W.PipeBusy(f"{exc.strerror} (waited the pipe's default time-out)") from None
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise
            try:
                wait_named_pipe(name, remaining)
            except W.SemTimeout:
                raise W.PipeBusy(f"{exc.strerror} (waited {limit:g} s)") from None
    if not oname.is_local:
        try:
            conn.set_read_mode(conn.message_type if message is None else message)
        except BaseException:
            conn.close()
            raise
    return conn


def _half_close(conn: PipeConnection) -> None:
    with contextlib.suppress(OSError):
        conn.socket.shutdown(socket.SHUT_WR)


def _pump(conn: PipeConnection, source: Iterator[bytes], quiet: float | None, out: _Output) -> None:
    """Send ``source`` (then end our input) while copying the replies to ``out``.

    Reading ends when the server closes or disconnects, or after ``quiet`` seconds
    without data.
    """
    failure: list[BaseException] = []

    def send() -> None:
        try:
            for chunk in source:
                conn.write(chunk)
        except W.BrokenPipe:
            pass  # the server closed first; reading tells the rest
        except BaseException as exc:
            failure.append(exc)
        finally:
            _half_close(conn)

    writer = threading.Thread(target=send, name="pipe-writer", daemon=True)
    if conn.can_write:
        writer.start()
    if conn.can_read:
        as_lines = conn.read_message_mode
        while True:
            try:
                data = conn.recv(timeout=_IDLE if quiet is None else quiet)
            except W.SemTimeout:
                if quiet is not None:
                    break
                continue
            except W.BrokenPipe:
                break
            out.write(_as_line(data) if as_lines else data)
    if conn.can_write:
        writer.join(0.5 if conn.can_read else None)
    if failure:
        raise failure[0]


def _stdin_chunks(lines: bool) -> Iterator[bytes]:
    """Stdin in chunks as they come, or line by line (without line endings).

    Reads the file descriptor, not ``sys.stdin``: the reading thread may still be
    blocked in it when the command ends, and must not hold the buffer's lock then.
    """
    fd = sys.stdin.fileno()
    pending = b""
    while chunk := os.read(fd, 65536):
        if not lines:
            yield chunk
            continue
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.removesuffix(b"\r")
    if lines and pending:
        yield pending.removesuffix(b"\r")


# --------------------------------------------------------------------------- commands


@click.group("pipe")
def pipe_group() -> None:
    """Named pipes: run a server, send to one, or connect stdin/stdout to one.

    NAME is \\\\.\\pipe\\NAME or just NAME; \\\\HOST\\pipe\\NAME is a pipe on another
    machine (send, cat: over TLS with a client certificate; see serve --remote).
    """


@pipe_group.command("serve")
@click.argument("name")
@click.option("--message", is_flag=True, help="A message-type pipe (default: byte-type).")
@click.option("--echo", is_flag=True, help="Send back whatever a client sends.")
@click.option(
    "--exec",
    "command",
    metavar="CMD",
    help="Run shell command CMD per client (byte pipe) or per message (message pipe); "
    "its stdin is the client's data, its stdout goes back.",
)
@click.option(
    "--instances",
    type=click.IntRange(1, 255),
    metavar="N",
    default=1,
    show_default=True,
    help="Instances, i.e. clients served at once (255 = unlimited).",
)
@click.option(
    "--remote",
    is_flag=True,
    help="Take clients from other machines too (\\\\HOST\\pipe\\NAME), over TLS through the "
    "pipe port ($WINIPC_PIPE_PORT, default 10445); needs --tls-cert, --tls-key and --tls-ca.",
)
@click.option(
    "--remote-client",
    "remote_clients",
    multiple=True,
    metavar="CN",
    help="With --remote: admit remote clients whose certificate's common name is CN; repeat "
    "for several. Default: any certificate --tls-ca verifies.",
)
@tls_options("server", "Used with --remote.")
def serve_cmd(
    name: str,
    message: bool,
    echo: bool,
    command: str | None,
    instances: int,
    remote: bool,
    remote_clients: tuple[str, ...],
    tls_cert: str | None,
    tls_key: str | None,
    tls_ca: str | None,
) -> None:
    """Serve the named pipe NAME until Ctrl-C or SIGTERM.

    Without --echo or --exec, what clients send is printed to stdout (each message of a
    message pipe on its own line). Status lines go to stderr. Stopping closes every
    instance, so the pipe disappears with the server.

    With --remote, clients on other machines connect to \\\\THISHOST\\pipe\\NAME over TLS:
    this server presents --tls-cert, and admits clients whose certificate --tls-ca signs
    and whose common name --remote-client lists (PIPE_REJECT_REMOTE_CLIENTS off).
    """
    if echo and command is not None:
        raise click.UsageError("choose --echo or --exec, not both")
    server = _Server(name, message, echo, command, instances,
                     _remote_args(remote, remote_clients, TlsFiles(tls_cert, tls_key, tls_ca)))
    old_term = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        server.open()
    except BaseException:
        signal.signal(signal.SIGTERM, old_term)
        raise
    try:
        what = "echo" if echo else f"exec {command!r}" if command is not None else "print"
        note(
            f"serving {server.instances[0].name}: {'message' if message else 'byte'} pipe, "
            f"{what}, {instances} instance{'s' if instances > 1 else ''}"
            f"{_remote_note(remote_clients) if remote else ''}; Ctrl-C to stop"
        )
        server.run()
    except KeyboardInterrupt:
        note("stopping")
    else:
        if server.failures:
            raise server.failures[0]
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            server.shutdown()
        finally:
            signal.signal(signal.SIGTERM, old_term)


def _remote_args(remote: bool, clients: tuple[str, ...], tls: TlsFiles) -> dict[str, Any]:
    """PipeInstance's arguments for ``serve --remote`` (none without it).

    Raises:
        click.UsageError: remote options without --remote, or --remote without its files.
        click.BadParameter: a file that does not load (named).
    """
    if not remote:
        tls.refuse("applies with --remote")
        if clients:
            raise click.UsageError("--remote-client applies with --remote")
        return {}
    missing = [opt for opt in (CERT, KEY, CA) if opt not in tls.given]
    if missing:
        raise click.UsageError(
            f"--remote needs {CERT}, {KEY} and {CA} (missing: {', '.join(missing)}): remote "
            "clients come over TLS and are known by their certificates"
        )
    return {
        "reject_remote_clients": False,
        "tls": tls.server_context(),
        "remote_clients": list(clients) if clients else "*",
    }


def _remote_note(clients: tuple[str, ...]) -> str:
    """What the status line says about remote clients (once they can come)."""
    who = ", ".join(clients) if clients else "any certificate --tls-ca verifies"
    return f"; remote clients: {who} ({pipe_port_status()})"


_message_option = click.option(
    "--message/--byte",
    "message",
    default=None,
    help="Message-read mode (one message out, one reply back) or byte-read mode. "
    "Default: the pipe's type.",
)
_wait_option = click.option(
    "--wait",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="When every instance is busy, wait this long for one (WaitNamedPipe). "
    "Default: the pipe's default time-out (50 ms unless its server chose another).",
)


@pipe_group.command("send")
@click.argument("name")
@click.argument("data")
@_message_option
@_wait_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    metavar="SECONDS",
    help="Stop waiting for a reply after this long without data.",
)
@tls_options("client", "For a pipe on another machine (\\\\HOST\\pipe\\NAME).")
def send_cmd(
    name: str,
    data: str,
    message: bool | None,
    wait: float | None,
    timeout: float,
    tls_cert: str | None,
    tls_key: str | None,
    tls_ca: str | None,
) -> None:
    """Connect to NAME, write DATA and print the reply, if any.

    DATA is text (sent as UTF-8), or - to send stdin. In message mode DATA is one message
    and the reply is one message (TransactNamedPipe). In byte mode the reply is what the
    server sends until it closes, or until --timeout seconds pass without data.

    NAME may be \\\\HOST\\pipe\\NAME on another machine: give --tls-cert and --tls-key
    (and --tls-ca for a server certificate the system's CAs do not sign).
    """
    tls = _client_tls(name, TlsFiles(tls_cert, tls_key, tls_ca))
    payload = sys.stdin.buffer.read() if data == "-" else data.encode()
    out = _Output()
    with _open_client(name, message, wait, tls) as conn:
        if conn.read_message_mode and conn.can_read and conn.can_write:
            try:
                out.write(conn.transact(payload, conn.max_message_size, timeout))
            except (W.SemTimeout, W.BrokenPipe) as exc:
                note(f"no reply: {exc}")
        else:
            _pump(conn, iter([payload]), timeout, out)
    out.finish()


@pipe_group.command("cat")
@click.argument("name")
@_message_option
@_wait_option
@tls_options("client", "For a pipe on another machine (\\\\HOST\\pipe\\NAME).")
def cat_cmd(
    name: str,
    message: bool | None,
    wait: float | None,
    tls_cert: str | None,
    tls_key: str | None,
    tls_ca: str | None,
) -> None:
    """Copy stdin to the pipe NAME and the pipe to stdout, until both ends are done.

    Like socat: at the end of stdin the pipe's sending side is closed, and the command
    ends when the server closes or disconnects. In message mode each line of stdin is
    one message, and each message received is printed on its own line.

    NAME may be \\\\HOST\\pipe\\NAME on another machine, as for send.
    """
    tls = _client_tls(name, TlsFiles(tls_cert, tls_key, tls_ca))
    out = _Output()
    with _open_client(name, message, wait, tls) as conn:
        _pump(conn, _stdin_chunks(conn.read_message_mode), None, out)
    out.finish()
