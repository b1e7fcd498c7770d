"""``winipc event|mutex|sem``: synchronization objects from the shell.

A named kernel object lives while a handle to it is open (Windows' rule), so the
commands that create one (``event create``, ``sem create``, ``mutex hold``) keep it
until Ctrl-C or SIGTERM; the others (``set``, ``wait``, ``release``, ...) open the
object another process holds, act, and exit. Waits exit with status 0 when the object
was signaled and 1 on time-out.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import IO, Any, TypeVar

import click

from winipc import errors as W
from winipc._core.handles import Handle
from winipc.cli._common import ErrorReportingGroup, note, raise_interrupt
from winipc.sync import Event, Mutex, Semaphore

_FOREVER = 3600.0


class _TimedOut(click.ClickException):
    """A wait that timed out: ``timeout: MESSAGE`` on stderr, exit status 1."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"timeout: {self.message}", err=True, file=file)




@contextmanager
def _until_stopped() -> Iterator[None]:
    """SIGTERM acts as Ctrl-C, and either ends the block quietly (``stopping``)."""
    old = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    except KeyboardInterrupt:
        note("stopping")
    finally:
        signal.signal(signal.SIGTERM, old)


@contextmanager
def _no_interrupts() -> Iterator[None]:
    """Ctrl-C and SIGTERM are ignored in the block, so that a clean-up runs whole."""
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


H = TypeVar("H", bound=Handle)


@contextmanager
def _held(obj: H) -> Iterator[H]:
    """``obj`` until the block ends, then closed without interruption."""
    try:
        yield obj
    finally:
        with _no_interrupts():
            obj.close()


def _sleep(seconds: float | None = None) -> None:
    """Sleep ``seconds``, or until Ctrl-C / SIGTERM."""
    if seconds is not None:
        time.sleep(seconds)
        return
    while True:
        time.sleep(_FOREVER)


def _after(timeout: float | None) -> str:
    return "" if timeout is None else f" after {timeout:g} s"


_timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    default=None,
    help="Give up after SECONDS (exit status 1); default: wait forever. 0 only looks.",
)


# =========================================================================== event


@click.group("event", cls=ErrorReportingGroup)
def event_group() -> None:
    """Events: create (and hold), set, reset, pulse, wait.

    NAME is Local\\NAME (the default for a plain NAME) or Global\\NAME, as for every
    kernel object.
    """


@event_group.command("create")
@click.argument("name")
@click.option("--manual", is_flag=True, help="Manual reset: stays set until reset (default: auto reset).")
@click.option("--initial", is_flag=True, help="Start signaled.")
def event_create_cmd(name: str, manual: bool, initial: bool) -> None:
    """Create the event NAME and hold it until Ctrl-C or SIGTERM.

    The event exists only while a handle to it is open, so it would vanish when a
    command that only created it exits: this one keeps it. If NAME exists already, it
    is opened (its state is left as it is) and held the same way.
    """
    with _until_stopped(), _held(Event(name, manual_reset=manual, initial_state=initial)) as ev:
        kind = "manual-reset" if manual else "auto-reset"
        if ev.already_exists:
            what = "opened the existing event"
        else:
            what = f"created {kind} event, {'signaled' if initial else 'non-signaled'}"
        note(f"holding {ev.name}: {what}; Ctrl-C or SIGTERM to close it")
        _sleep()


def _open_event(name: str) -> closing[Event]:
    return closing(Event.open(name))


@event_group.command("set")
@click.argument("name")
def event_set_cmd(name: str) -> None:
    """Signal the event NAME (SetEvent)."""
    with _open_event(name) as ev:
        ev.set()
    click.echo(f"set {ev.name}")


@event_group.command("reset")
@click.argument("name")
def event_reset_cmd(name: str) -> None:
    """Make the event NAME non-signaled (ResetEvent)."""
    with _open_event(name) as ev:
        ev.reset()
    click.echo(f"reset {ev.name}")


@event_group.command("pulse")
@click.argument("name")
def event_pulse_cmd(name: str) -> None:
    """Release the processes waiting on NAME now, then reset it (PulseEvent)."""
    with _open_event(name) as ev:
        ev.pulse()
    click.echo(f"pulsed {ev.name}")


@event_group.command("wait")
@click.argument("name")
@_timeout_option
def event_wait_cmd(name: str, timeout: float | None) -> None:
    """Wait until the event NAME is signaled (exit 0), or time out (exit 1).

    An auto-reset event is reset by the wait, as WaitForSingleObject does.
    """
    with _open_event(name) as ev:
        if not ev.wait(timeout):
            raise _TimedOut(f"{ev.name} is still not signaled{_after(timeout)}")
    click.echo(f"{ev.name} signaled")


# =========================================================================== mutex


@click.group("mutex", cls=ErrorReportingGroup)
def mutex_group() -> None:
    """Mutexes: hold one, or wait until it is free."""


def _acquire(m: Mutex, timeout: float | None) -> bool:
    """Take ownership; say so when the previous owner died holding it."""
    try:
        return m.acquire(timeout)
    except W.AbandonedMutex:
        note(f"{m.name}: the previous owner ended without releasing it (WAIT_ABANDONED); owned now")
        return True


@mutex_group.command("hold")
@click.argument("name")
@click.option(
    "--seconds",
    type=click.FloatRange(min=0),
    metavar="S",
    default=None,
    help="Release after S seconds and exit; default: until Ctrl-C or SIGTERM.",
)
@_timeout_option
def mutex_hold_cmd(name: str, seconds: float | None, timeout: float | None) -> None:
    """Create or open the mutex NAME, take it, and hold it.

    Waits while another process owns it. Released on exit; a holder that is killed
    (SIGKILL) leaves it abandoned, and the next waiter is told so.
    """
    owned = False
    with _until_stopped(), _held(Mutex(name)) as m:
        if not _acquire(m, timeout):
            raise _TimedOut(f"{m.name} is still owned by another thread{_after(timeout)}")
        owned = True
        try:
            until = "Ctrl-C or SIGTERM" if seconds is None else f"{seconds:g} s"
            note(f"holding {m.name}: owned by this process; released after {until}")
            _sleep(seconds)
        finally:
            with _no_interrupts():
                m.release()
    if owned:
        click.echo(f"released {m.name}")


@mutex_group.command("wait")
@click.argument("name")
@_timeout_option
def mutex_wait_cmd(name: str, timeout: float | None) -> None:
    """Wait until the mutex NAME is free (exit 0; taken and given back at once), or time out (exit 1)."""
    with closing(Mutex.open(name)) as m:
        if not _acquire(m, timeout):
            raise _TimedOut(f"{m.name} is still owned by another thread{_after(timeout)}")
        m.release()
    click.echo(f"{m.name} free")


# =========================================================================== semaphore


@click.group("sem", cls=ErrorReportingGroup)
def sem_group() -> None:
    """Semaphores: create (and hold), release, wait."""


@sem_group.command("create")
@click.argument("name")
@click.option("--initial", type=click.IntRange(min=0), default=0, show_default=True, metavar="N", help="Count at creation.")
@click.option("--max", "maximum", type=click.IntRange(1, 0x7FFF_FFFF), default=1, show_default=True, metavar="M", help="Largest count.")
def sem_create_cmd(name: str, initial: int, maximum: int) -> None:
    """Create the semaphore NAME and hold it until Ctrl-C or SIGTERM.

    The semaphore exists only while a handle to it is open, so this command keeps one.
    If NAME exists already, it is opened (count and maximum unchanged) and held.
    """
    if initial > maximum:
        raise click.BadParameter(f"{initial} is more than --max {maximum}", param_hint="--initial")
    with _until_stopped(), _held(Semaphore(name, initial, maximum)) as sem:
        if sem.already_exists:
            what = f"opened the existing semaphore (count {sem.count}, maximum {sem.maximum})"
        else:
            what = f"created with count {initial}, maximum {maximum}"
        note(f"holding {sem.name}: {what}; Ctrl-C or SIGTERM to close it")
        _sleep()


@sem_group.command("release")
@click.argument("name")
@click.argument("count", type=click.IntRange(min=1), default=1, required=False)
def sem_release_cmd(name: str, count: int) -> None:
    """Add COUNT (default 1) to the semaphore NAME; print the count it had before.

    Past the maximum: error 298 (ERROR_TOO_MANY_POSTS) and the count is unchanged.
    """
    with closing(Semaphore.open(name)) as sem:
        click.echo(str(sem.release(count)))


@sem_group.command("wait")
@click.argument("name")
@_timeout_option
def sem_wait_cmd(name: str, timeout: float | None) -> None:
    """Take one count of the semaphore NAME (exit 0), or time out (exit 1)."""
    with closing(Semaphore.open(name)) as sem:
        if not sem.acquire(timeout):
            raise _TimedOut(f"{sem.name} still has a count of 0{_after(timeout)}")
    click.echo(f"took one count of {sem.name}")


__all__ = ["event_group", "mutex_group", "sem_group"]
