"""The runner's side of a worker process: start it, talk JSON lines, watch it, end it.

See :mod:`winipc.bench.worker` for the protocol. The worker is started with
``subprocess`` (a fresh interpreter, never a fork), its stderr kept in a temporary file
for error messages, and a watchdog kills it if a step hangs, so a broken scenario fails
the run instead of blocking it.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from winipc.bench.registry import Scenario, Setup
from winipc.bench.workload import BenchError, VerificationError


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


class _LineReader:
    """Lines from a pipe with a time-out (no buffered-file surprises under select)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buf = b""

    def readline(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._fd], [], [], left)[0]:
                raise TimeoutError
            chunk = os.read(self._fd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line


class WorkerSession:
    """One worker process serving one scenario; see :mod:`winipc.bench.worker`."""

    def __init__(
        self, scenario: Scenario, cpu: int | None, setup: Setup, fault: str | None
    ) -> None:
        self.scenario = scenario
        env = dict(os.environ)
        pkg_parent = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pkg_parent, env.get("PYTHONPATH")]))
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "winipc.bench.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            bufsize=0,
            env=env,
        )
        assert self._proc.stdout is not None
        self._lines = _LineReader(self._proc.stdout.fileno())
        self.killed = False
        self.address = ""
        job = {
            "scenario": scenario.name,
            "module": type(scenario).__module__,
            "sys_path": [p for p in sys.path if p],
            "cpu": cpu,
            "setup": {"workdir": setup.workdir, "tag": setup.tag, "secret": setup.secret},
            "fault": fault,
            "accept_timeout": 30.0,
        }
        try:
            self.command(job)
            ready = self.reply(30.0)
            self.address = str(ready["address"])
        except BaseException:
            self.close()
            raise

    def command(self, obj: dict[str, Any]) -> None:
        """Send one JSON line to the worker."""
        assert self._proc.stdin is not None
        data = (json.dumps(obj) + "\n").encode()
        try:
            while data:
                data = data[self._proc.stdin.write(data) or 0 :]
        except BrokenPipeError:
            raise self._failure("the worker is gone") from None

    def reply(self, timeout: float = 60.0) -> dict[str, Any]:
        """The worker's next answer.

        Raises:
            VerificationError: the worker found damaged data.
            BenchError: the worker failed, died or said nothing within ``timeout``.
        """
        try:
            line = self._lines.readline(timeout)
        except TimeoutError:
            raise self._failure(f"no answer within {timeout} s") from None
        if line is None:
            raise self._failure("the worker ended")
        obj = _parse(line)
        if obj is None:
            raise self._failure(f"unexpected output {line[:200]!r}")
        if not obj.get("ok", True):
            cls = VerificationError if obj.get("verification") else BenchError
            raise cls(str(obj.get("error")))
        return obj

    def explain(self, exc: BaseException) -> BenchError:
        """Turn a data-path error into the worker's own account of it, when it has one."""
        if isinstance(exc, BenchError):
            return exc
        try:
            line = self._lines.readline(2.0)
        except TimeoutError:
            line = None
        said = _parse(line) if line else None
        if said is not None and not said.get("ok", True):
            cls = VerificationError if said.get("verification") else BenchError
            return cls(str(said.get("error")))
        return self._failure(f"{type(exc).__name__}: {exc}")

    def _failure(self, what: str) -> BenchError:
        if self.killed:
            what += " (the watchdog ended a stuck worker)"
        self._stderr.seek(0)
        err = self._stderr.read().decode(errors="replace").strip()
        tail = f"\nworker stderr:\n{err[-2000:]}" if err else ""
        return BenchError(f"worker failed: {what}{tail}")

    def kill(self) -> None:
        """End the worker now (watchdog)."""
        self.killed = True
        if self._proc.poll() is None:
            self._proc.kill()

    @contextmanager
    def watchdog(self, seconds: float) -> Iterator[None]:
        """Kill the worker if the block takes longer than ``seconds``, so nothing hangs."""
        timer = threading.Timer(seconds, self.kill)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    def close(self) -> None:
        """Ask the worker to quit, wait for it, release the pipes."""
        proc = self._proc
        try:
            if proc.poll() is None and proc.stdin is not None:
                with suppress(OSError):
                    proc.stdin.write(b'{"op": "quit"}\n')
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
                proc.wait()
        finally:
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
            self._stderr.close()


@contextmanager
def blame(worker: WorkerSession | None, where: str) -> Iterator[None]:
    """Re-raise failures as :class:`BenchError` saying where, with the worker's account."""
    try:
        yield
    except BenchError as exc:
        raise type(exc)(f"{where}: {exc}") from None
    except Exception as exc:
        err = worker.explain(exc) if worker is not None else BenchError(f"{exc}")
        raise type(err)(f"{where}: {err}") from exc
