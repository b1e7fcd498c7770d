"""Names, roots, lifetime, handles (inheritance and duplication), framing, error translation."""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import winipc
from winipc import errors as W
from winipc import pipes
from winipc._core import namespace, roots
from winipc._core.names import parse, pipe_name
from winipc._wire import framing

from conftest import run_py, wait_line


@pytest.mark.parametrize(
    ("raw", "family", "server", "scope", "name"),
    [
        (r"\\.\pipe\Name", "pipe", ".", "global", "Name"),
        (r"\\SERVER\pipe\x", "pipe", "SERVER", "global", "x"),
        (r"\\.\mailslot\a\b", "mailslot", ".", "global", r"a\b"),
        (r"\\*\mailslot\m", "mailslot", "*", "global", "m"),
        (r"\\localhost\PIPE\p", "pipe", ".", "global", "p"),
        (r"Global\Ev", "kernel", ".", "global", "Ev"),
        (r"local\Ev", "kernel", ".", "local", "Ev"),
        ("plain", "kernel", ".", "local", "plain"),
    ],
)
def test_every_win32_name_form(raw: str, family: str, server: str, scope: str, name: str) -> None:
    n = parse(raw)
    assert (n.family, n.server, n.scope, n.name) == (family, server, scope, name)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "empty"),
        (r"\\.\pipe\a/b", "'/'"),
        ("a\0b", "NUL"),
        ("\\\\.\\pipe\\" + "x" * 300, "limit is 256"),
        (r"\\.\what\x", "unknown prefix"),
        (r"Session\x", "unknown prefix"),
        (r"\\*\pipe\x", "broadcast"),
        (r"\\.\pipe\a\b", "contains '\\'"),
        ("\\\\.\\pipe\\", "empty"),
    ],
)
def test_invalid_names_say_why(raw: str, why: str) -> None:
    with pytest.raises(W.InvalidName, match=re.escape(why)) as e:
        parse(raw)
    assert e.value.winerror == 123


def test_case_insensitive_keys() -> None:
    assert parse(r"Global\ABC").storage_id == parse(r"global\abc").storage_id
    assert parse(r"\\.\pipe\Ärger").key == parse(r"\\.\PIPE\äRGER").key
    assert parse(r"Global\x").storage_id != pipe_name("x").storage_id  # separate namespaces


def test_root_is_read_at_every_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(mode=0o700)
    b.mkdir(mode=0o700)
    monkeypatch.setenv("WINIPC_ROOT", str(a))
    one = pipes.PipeInstance(r"\\.\pipe\same")
    monkeypatch.setenv("WINIPC_ROOT", str(b))
    two = pipes.PipeInstance(r"\\.\pipe\same", first_instance=True)  # another root: no clash
    assert one.path.startswith(str(a)) and two.path.startswith(str(b))
    assert roots.local_root() == str(b / f"local-{os.geteuid()}")
    assert os.stat(roots.local_root()).st_mode & 0o777 == 0o700
    two.close()
    monkeypatch.setenv("WINIPC_ROOT", str(a))
    one.close()
    assert [p for p in os.listdir(a) if not p.startswith("local-")] == []


def test_lifetime_last_handle_and_sigkill_reclaim() -> None:
    a = pipes.PipeInstance(r"\\.\pipe\life")
    b = pipes.PipeInstance(r"\\.\pipe\life")
    [info] = namespace.list_objects()
    assert (info.type, info.handles, info.alive, info.creator_pid) == ("pipe", 2, True, os.getpid())
    a.close()
    assert namespace.list_objects()[0].handles == 1
    b.close()
    assert namespace.list_objects() == []  # gone with the last handle
    holder = run_py(
        r"""
from winipc import pipes
import time
p = pipes.PipeInstance(r"\\.\pipe\life")
print("held", flush=True)
time.sleep(60)
"""
    )
    wait_line(holder, "held")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    for f in (holder.stdout, holder.stderr):
        assert f is not None
        f.close()
    [dead] = namespace.list_objects()
    assert dead.alive is False and dead.handles == 0
    with pytest.raises(W.FileNotFound):
        pipes.connect(r"\\.\pipe\life")  # a dead leftover is never opened
    assert [o.name for o in namespace.clean()] == [r"\\.\pipe\life"]
    assert namespace.list_objects() == []


def test_rm_takes_a_live_name_away() -> None:
    inst = pipes.PipeInstance(r"\\.\pipe\gone")
    namespace.remove(pipe_name("gone"))
    with pytest.raises(W.FileNotFound):
        pipes.connect(r"\\.\pipe\gone")
    with pipes.PipeInstance(r"\\.\pipe\gone", first_instance=True):
        inst.close()  # the old holder's close must not remove the new object
        assert len(namespace.list_objects()) == 1
    with pytest.raises(W.FileNotFound):
        namespace.remove(pipe_name("gone"))


def test_spawn_redirects_stdout_through_an_anonymous_pipe() -> None:
    r, w = pipes.create_pipe()
    proc = winipc.spawn([sys.executable, "-c", "print('from child')"], stdout=w)
    w.close()
    out = b""
    try:
        while True:
            out += r.read(100, timeout=20)
    except W.BrokenPipe:
        pass
    assert proc.wait(20) == 0
    r.close()
    assert out == b"from child\n"


def test_inherited_handle_by_value() -> None:
    r, w = pipes.create_pipe()
    child = r"""
import sys, winipc
h = winipc.inherited_handle(int(sys.argv[1]))
h.write(b"inherited!")
h.close()
"""
    env = dict(os.environ, PYTHONPATH=os.path.dirname(winipc.__path__[0]))
    proc = winipc.spawn([sys.executable, "-c", child, str(int(w))], inherit=[w], env=env)
    w.close()
    assert r.read_exact(10, timeout=20) == b"inherited!"
    assert proc.wait(20) == 0
    r.close()
    with pytest.raises(W.InvalidHandle):
        winipc.inherited_handle(12345)


def test_duplicate_handle_into_another_process_over_a_pipe() -> None:
    child = r"""
from winipc import pipes
inst = pipes.PipeInstance(r"\\.\pipe\dup")
print("ready", flush=True)
inst.connect()
end = inst.recv_handle(timeout=20)
end.write(b"via duplicated handle")
end.close()
inst.recv()
inst.close()
"""
    proc = run_py(child)
    try:
        wait_line(proc, "ready")
        r, w = pipes.create_pipe()
        c = pipes.connect(r"\\.\pipe\dup")
        c.send_handle(w)
        w.close()  # our copy closed; the child's stays open
        assert r.read_exact(21, timeout=20) == b"via duplicated handle"
        with pytest.raises(W.BrokenPipe):
            r.read(1, timeout=20)  # the child closed its copy: no writer left
        c.write(b"bye")
        c.close()
        r.close()
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for f in (proc.stdout, proc.stderr):
            if f:
                f.close()


def test_closed_handle_is_invalid_handle() -> None:
    inst = pipes.PipeInstance(r"\\.\pipe\closed")
    inst.close()
    inst.close()  # twice is harmless
    assert inst.closed
    for call in (inst.fileno, lambda: inst.read(1), lambda: inst.write(b"x"), inst.connect):
        with pytest.raises(W.InvalidHandle) as e:
            call()
        assert e.value.winerror == 6


def test_no_raw_oserror_escapes() -> None:
    """Every failure case of the public API raises a winipc error, never a bare OSError."""
    cases = [
        lambda: pipes.connect(r"\\.\pipe\nothere"),
        lambda: pipes.wait_named_pipe(r"\\.\pipe\nothere", 0),
        lambda: pipes.call_named_pipe(r"\\.\pipe\nothere", b"x"),
        lambda: pipes.PipeInstance(r"bad/name"),
        lambda: pipes.PipeInstance(r"\\.\pipe\x", max_instances=-1),
        lambda: namespace.remove(pipe_name("nothere")),
        lambda: winipc.spawn(["/nonexistent/program"]),
        lambda: winipc.SecurityAttributes(allow=[("user:no-such-user-xyz", "r")]),
        lambda: winipc.SecurityAttributes(allow=[("everyone", "z")]),
        lambda: pipes.create_pipe(-1),
    ]
    for case in cases:
        with pytest.raises(OSError) as e:
            case()
        assert isinstance(e.value, W.WinIPCError), repr(e.value)
        assert e.value.winerror


def test_error_tree_builtin_bases_and_pickling() -> None:
    import pickle

    for code, base in [
        (2, FileNotFoundError), (5, PermissionError), (183, FileExistsError), (109, BrokenPipeError),
        (231, BlockingIOError), (121, TimeoutError), (123, ValueError), (233, BrokenPipeError),
    ]:
        e = W.from_winerror(code, "m")
        assert isinstance(e, base) and e.winerror == code
        again = pickle.loads(pickle.dumps(e))  # crossing a process boundary keeps the type
        assert type(again) is type(e) and again.winerror == code and again.strerror == "m"
    more = pickle.loads(pickle.dumps(W.MoreData(b"part")))
    assert more.data == b"part" and more.winerror == 234


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), cap=st.integers(0, 100))
def test_frame_decoder_fuzz_parses_or_raises_invalid_data(data: bytes, cap: int) -> None:
    dec = framing.FrameDecoder(cap)
    try:
        dec.feed(data)
        while dec.next_event() is not None:
            pass
    except W.InvalidData:
        pass


@given(msgs=st.lists(st.binary(max_size=2000), max_size=10), split=st.integers(1, 50))
def test_frame_roundtrip_any_split(msgs: list[bytes], split: int) -> None:
    wire = b"".join(framing.message_header(len(m)) + m for m in msgs)
    dec = framing.FrameDecoder()
    got: list[bytes] = []
    for i in range(0, len(wire), split):
        dec.feed(wire[i : i + split])
        while (ev := dec.next_event()) is not None:
            assert isinstance(ev, framing.Message)
            got.append(ev.data)
    assert got == msgs and not dec.in_frame


def test_frame_decoder_caps_before_allocating() -> None:
    dec = framing.FrameDecoder(1000)
    dec.feed(framing.HEADER.pack(2_000_000_000))
    with pytest.raises(W.InvalidData, match="limit is 1000"):
        dec.next_event()


CORPUS = Path(__file__).parent / "corpus" / "framing"


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.bin")), ids=lambda p: p.name)
def test_frame_decoder_corpus_replay(path: Path) -> None:
    """Inputs that once mattered (edge cases and fuzz finds), replayed as plain tests."""
    dec = framing.FrameDecoder(1 << 20)
    events = []
    try:
        dec.feed(path.read_bytes())
        while (ev := dec.next_event()) is not None:
            events.append(ev)
    except W.InvalidData:
        return
    assert all(isinstance(e, (framing.Message, framing.Control)) for e in events)
