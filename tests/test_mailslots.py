"""Local mailslots: CreateMailslot semantics between real processes."""

from __future__ import annotations

import array
import os
import pwd
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from winipc import errors as W
from winipc._backends import os_backend as B
from winipc._core.security import SecurityAttributes
from winipc.mailslots import Mailslot, MailslotInfo, open_mailslot, write_mailslot
from winipc.mailslots import _local as L
from winipc.sync import Event, wait_any
from xuser import USER
from xuser import python_for as _python_for
from xuser import second_user as _second_user

from conftest import run_py, wait_line

WRITER = r"""
import sys
from winipc.mailslots import open_mailslot
name, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open_mailslot(name) as w:
    for i in range(n):
        w.write(f"{tag}:{i}".encode())
print("done", flush=True)
"""


def test_fresh_mailslot_info_and_reads_that_time_out() -> None:
    with Mailslot(r"\\.\mailslot\ms-info", read_timeout=0) as slot:
        assert slot.info() == MailslotInfo(0, None, 0, 0.0)
        with pytest.raises(W.SemTimeout) as e:
            slot.read()
        assert e.value.winerror == 121
        slot.set_read_timeout(0.3)
        t0 = time.monotonic()
        with pytest.raises(W.SemTimeout):
            slot.read()
        assert time.monotonic() - t0 >= 0.3  # a timed read never returns early
        assert slot.info().read_timeout == 0.3
        slot.set_read_timeout(None)
        assert slot.info().read_timeout is None
        with pytest.raises(W.SemTimeout):
            slot.read(timeout=0)  # an explicit timeout wins over the mailslot's
    with Mailslot("ms-info", max_message_size=0xFFFF_FFFF) as slot:
        assert slot.name == r"\\.\mailslot\ms-info"
        assert slot.info().max_message_size == 0xFFFF_FFFF


def test_messages_are_whole_in_order_counted_and_sized() -> None:
    with Mailslot(r"\\.\mailslot\ms-order", read_timeout=0) as slot:
        w1 = open_mailslot(r"\\.\MAILSLOT\MS-ORDER")  # names are case-insensitive
        w2 = open_mailslot(r"\\.\mailslot\ms-order")
        w1.write(b"a")
        assert slot.info() == MailslotInfo(0, 1, 1, 0.0)
        w2.write(b"bc")
        w2.write(b"")  # a zero-length message is a message
        assert slot.info() == MailslotInfo(0, 1, 3, 0.0)
        assert slot.read() == b"a"
        assert slot.info().next_size == 2 and slot.info().message_count == 2
        with pytest.raises(W.InsufficientBuffer) as e:
            slot.read(1)
        assert e.value.winerror == 122
        assert slot.info().message_count == 2  # the message stayed
        assert slot.read(2) == b"bc"
        assert slot.info() == MailslotInfo(0, 0, 1, 0.0)
        assert slot.read() == b""
        assert slot.info() == MailslotInfo(0, None, 0, 0.0)
        w1.close()
        w2.close()


def test_many_writer_processes_each_in_its_own_order(procs: list[subprocess.Popen[str]]) -> None:
    name = r"\\.\mailslot\ms-many"
    writers, per = 6, 400
    with Mailslot(name, read_timeout=10) as slot:
        procs += [run_py(WRITER, name, f"w{k}", str(per)) for k in range(writers)]
        got = [slot.read().decode() for _ in range(writers * per)]
        for p in procs:
            assert wait_line(p, "done") == "done"
        assert slot.info().message_count == 0
    for k in range(writers):
        seq = [int(m.split(":")[1]) for m in got if m.startswith(f"w{k}:")]
        assert seq == list(range(per)), f"writer {k} out of order: {seq[:20]}"


def test_messages_are_kept_until_read_after_their_writers_exit(procs: list[subprocess.Popen[str]]) -> None:
    name = r"\\.\mailslot\ms-kept"
    with Mailslot(name, read_timeout=0) as slot:
        for k in range(3):
            p = run_py(WRITER, name, f"k{k}", "40")
            procs.append(p)
            assert wait_line(p, "done") == "done"
            p.wait(10)
        assert slot.info().message_count == 120
        got = [slot.read().decode() for _ in range(120)]
        assert got == [f"k{k}:{i}" for k in range(3) for i in range(40)]  # sequential writers: arrival order


CAUSAL = r"""
import sys
from winipc.mailslots import open_mailslot
w = open_mailslot(sys.argv[1])
print("open", flush=True)
for line in sys.stdin:
    w.write(line.strip().encode())
    print("wrote", flush=True)
"""


def test_order_across_writers_follows_the_order_of_the_writes(procs: list[subprocess.Popen[str]]) -> None:
    """A message written after another (in real time) is read after it, whatever the writer."""
    name = r"\\.\mailslot\ms-causal"
    with Mailslot(name, read_timeout=5) as slot:
        a = run_py(CAUSAL, name, stdin=subprocess.PIPE)
        b = run_py(CAUSAL, name, stdin=subprocess.PIPE)
        procs += [a, b]
        wait_line(a, "open")
        wait_line(b, "open")
        order = []
        for i in range(30):
            p = (a, b)[(i * 7 + i // 3) % 2]
            assert p.stdin is not None
            p.stdin.write(f"{i}\n")
            p.stdin.flush()
            wait_line(p, "wrote")
            order.append(str(i))
        got = [slot.read().decode() for _ in range(30)]
        assert got == order


BIG = r"""
import hashlib, os, sys
from winipc.mailslots import open_mailslot
sizes = [int(s) for s in sys.argv[2:]]
with open_mailslot(sys.argv[1]) as w:
    for n in sizes:
        data = os.urandom(n)
        w.write(data)
        print(hashlib.sha256(data).hexdigest(), flush=True)
"""


def test_large_messages_travel_whole(procs: list[subprocess.Popen[str]]) -> None:
    import hashlib

    name = r"\\.\mailslot\ms-big"
    sizes = [L.INLINE_MAX, L.INLINE_MAX + 1, 1 << 20, 5 << 20, 3]
    with Mailslot(name, read_timeout=30) as slot:
        p = run_py(BIG, name, *map(str, sizes))
        procs.append(p)
        for n in sizes:
            digest = wait_line(p, "", timeout=30)
            data = slot.read()
            assert len(data) == n
            assert hashlib.sha256(data).hexdigest() == digest


def test_message_over_the_maximum_is_refused_at_the_writer_and_nothing_arrives() -> None:
    with Mailslot(r"\\.\mailslot\ms-max", max_message_size=424, read_timeout=0) as slot:
        w = open_mailslot(r"\\.\mailslot\ms-max")
        assert w.max_message_size == 424
        with pytest.raises(W.InvalidParameter, match=r"425 bytes.*at most 424"):
            w.write(b"x" * 425)
        w.write(b"y" * 424)
        assert slot.info().message_count == 1
        assert slot.read() == b"y" * 424
        assert slot.info().message_count == 0
        with pytest.raises(W.InvalidParameter, match="bytes-like"):
            w.write("text")
        w.close()


def test_win32_errors_for_names_and_arguments(procs: list[subprocess.Popen[str]]) -> None:
    with pytest.raises(W.FileNotFound) as e:
        open_mailslot(r"\\.\mailslot\ms-missing")
    assert e.value.winerror == 2
    with pytest.raises(W.FileNotFound):
        write_mailslot("ms-missing", b"x")
    for bad in (r"\\*\mailslot\x", r"\\otherhost\mailslot\x"):
        with pytest.raises(W.InvalidName, match="created on this machine"):
            Mailslot(bad)
    for bad in ("", r"\\.\mailslot\a\\b", r"\\.\pipe\x", "a/b"):
        with pytest.raises(W.InvalidName):
            Mailslot(bad)
    for kw, fragment in (
        ({"max_message_size": -1}, "max_message_size must be 0..4294967295"),
        ({"max_message_size": 1 << 32}, "max_message_size"),
        ({"read_timeout": -1}, "read_timeout must be seconds"),
        ({"read_timeout": float("nan")}, "read_timeout"),
    ):
        with pytest.raises(W.InvalidParameter, match=fragment):
            Mailslot("ms-bad", **kw)  # type: ignore[arg-type]
    with Mailslot(r"\\.\mailslot\ms-dup"):
        with pytest.raises(W.AlreadyExists) as e2:
            Mailslot(r"\\.\mailslot\MS-DUP")
        assert e2.value.winerror == 183
        p = run_py(
            """
            from winipc import errors as W
            from winipc.mailslots import Mailslot
            try:
                Mailslot(r"\\\\.\\mailslot\\ms-dup")
            except W.AlreadyExists as e:
                print("refused", e.winerror, flush=True)
            """
        )
        procs.append(p)
        assert wait_line(p, "refused") == "refused 183"
    slot = Mailslot(r"\\.\mailslot\ms-dup")  # the name is free again once closed
    slot.close()
    with pytest.raises(W.InvalidHandle):
        slot.read()


def test_closing_the_mailslot_ends_a_read_blocked_in_another_thread() -> None:
    import threading

    slot = Mailslot(r"\\.\mailslot\ms-block")  # read_timeout None: waits forever
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            slot.read()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    while slot.info().message_count == 0 and not errors and t.is_alive():
        if wait_any([slot], 0.05) is None:  # gives the reader time to block
            break
    slot.close()
    t.join(10)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], (W.OperationAborted, W.InvalidHandle)), errors


def test_writer_learns_that_the_server_closed() -> None:
    slot = Mailslot(r"\\.\mailslot\ms-gone")
    w = open_mailslot(r"\\.\mailslot\ms-gone")
    w.write(b"1")
    slot.close()
    with pytest.raises(W.FileNotFound, match="closed by its server"):
        for _ in range(3):
            w.write(b"2")
    w.close()
    with pytest.raises(W.InvalidHandle):
        w.write(b"3")


SERVER = r"""
import sys
from winipc.mailslots import Mailslot
s = Mailslot(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
"""


def test_a_killed_server_frees_the_name(procs: list[subprocess.Popen[str]]) -> None:
    name = r"\\.\mailslot\ms-killed"
    p = run_py(SERVER, name, stdin=subprocess.PIPE)
    procs.append(p)
    wait_line(p, "ready")
    w = open_mailslot(name)
    w.write(b"lost with its server")
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    with pytest.raises(W.FileNotFound):
        for _ in range(3):
            w.write(b"x")
    w.close()
    with pytest.raises(W.FileNotFound):
        open_mailslot(name)
    with Mailslot(name, read_timeout=0) as again:  # reclaimed, not adopted: it starts empty
        assert again.info().message_count == 0


def test_wait_any_wakes_on_a_message_and_only_on_a_message(procs: list[subprocess.Popen[str]]) -> None:
    name = r"\\.\mailslot\ms-wait"
    with Mailslot(name) as slot, Event(None) as ev:
        silent = open_mailslot(name)  # a writer that connects without writing signals nothing
        assert wait_any([ev, slot], 0.2) is None
        p = run_py(
            """
            import sys, time
            from winipc.mailslots import write_mailslot
            time.sleep(0.2)
            write_mailslot(sys.argv[1], b"wake")
            """,
            name,
        )
        procs.append(p)
        assert wait_any([ev, slot], 10) == 1
        assert wait_any([ev, slot], 0) == 1  # still signalled: waiting does not consume
        assert slot.read() == b"wake"
        assert wait_any([ev, slot], 0) is None
        silent.close()
        assert wait_any([ev, slot], 0.1) is None  # a writer leaving signals nothing either


def test_read_message_names_the_local_sender() -> None:
    with Mailslot(r"\\.\mailslot\ms-who") as slot:
        write_mailslot(r"\\.\mailslot\ms-who", b"me")
        msg = slot.read_message(timeout=5)
        assert (msg.data, msg.sender_pid, msg.sender_uid, msg.transport) == (b"me", os.getpid(), os.getuid(), "local")
        assert msg.sender_host is None and msg.address is None
        write_mailslot(r"\\.\mailslot\ms-who", b"one")
        write_mailslot(r"\\.\mailslot\ms-who", b"two")
        slot.set_read_timeout(0)
        assert list(slot) == [b"one", b"two"]  # iteration ends at the read timeout


def _raw(slot: Mailslot) -> socket.socket:
    """A connection to the mailslot's socket that skips every check of open_mailslot."""
    return B.connect_unix(slot.socket_path, kind=socket.SOCK_SEQPACKET)


def test_server_enforces_security_and_the_protocol_against_raw_writers() -> None:
    """A peer that skips the client's checks is refused by the server itself."""
    me = os.getuid()
    deny_me = SecurityAttributes(deny=[(f"uid:{me}", "w")])
    with Mailslot(r"\\.\mailslot\ms-deny", security=deny_me, read_timeout=0) as slot:
        with pytest.raises(W.AccessDenied):
            open_mailslot(r"\\.\mailslot\ms-deny")  # the client-side check
        raw = _raw(slot)
        raw.send(L.HEADER.pack(L.MAGIC, L.VERSION, L.KIND_INLINE, 1, 0) + b"x")
        with pytest.raises(W.SemTimeout):
            slot.read()  # the server refused it: nothing arrives
        raw.settimeout(5)
        try:
            note = raw.recv(64)
        except ConnectionResetError:  # reported once, before the refusal's packet
            note = raw.recv(64)
        assert note == L.REFUSED
        raw.close()
    with Mailslot(r"\\.\mailslot\ms-proto", read_timeout=0) as slot:
        good = open_mailslot(r"\\.\mailslot\ms-proto")
        for junk in (
            b"short",
            L.HEADER.pack(b"XX", 1, 0, 0, 0),
            L.HEADER.pack(L.MAGIC, 9, 0, 0, 0),
            L.HEADER.pack(L.MAGIC, L.VERSION, 0, 5, 0) + b"abc",  # length mismatch
            L.HEADER.pack(L.MAGIC, L.VERSION, 1, 5, 0),  # memfd kind without a descriptor
            L.HEADER.pack(L.MAGIC, L.VERSION, 7, 0, 0),
            b"pipe",
        ):
            raw = _raw(slot)
            if junk == b"pipe":  # a descriptor that is not a memory file
                r, w = os.pipe()
                raw.sendmsg([L.HEADER.pack(L.MAGIC, L.VERSION, 1, 0, 0)],
                           [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r]).tobytes())])
                os.close(r)
                os.close(w)
            else:
                raw.send(junk)
            raw.send(L.HEADER.pack(L.MAGIC, L.VERSION, 0, 4, 0) + b"late")  # after a violation: dropped
            good.write(b"ok")
            assert slot.read() == b"ok"
            with pytest.raises(W.SemTimeout):
                slot.read()
            raw.close()
        good.close()


# ============================================================================ other users


def _run_as(user: pwd.struct_passwd, code: str, root: Path, src: Path) -> str:
    env = {"WINIPC_ROOT": str(root), "PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [_python_for(user), "-c", code], user=user.pw_uid, group=user.pw_gid, extra_groups=[],
        env=env, capture_output=True, text=True, cwd="/", timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


INTRUDER = r"""
import os, socket, sys
from winipc import errors as W
from winipc._backends import os_backend as B
from winipc.mailslots import Mailslot, open_mailslot
name = sys.argv[1] if len(sys.argv) > 1 else r"\\.\mailslot\xs-slot"
for how, fn in (("open", lambda: open_mailslot(r"\\.\mailslot\xs-slot")),
                ("create", lambda: Mailslot(r"\\.\mailslot\xs-slot"))):
    try:
        fn().close()
        print(how, "allowed")
    except W.WinIPCError as e:
        print(how, "refused", e.winerror)
"""


def test_second_user_can_neither_write_nor_take_an_owner_only_mailslot(shared_root: tuple[Path, Path]) -> None:
    user = _second_user()
    root, src = shared_root
    with Mailslot(r"\\.\mailslot\xs-slot", read_timeout=0) as slot:
        path = slot.socket_path
        out = _run_as(user, INTRUDER + f"""
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
try:
    s.connect({path!r})
    print("socket allowed")
except OSError as e:
    print("socket refused", type(e).__name__)
""", root, src).split("\n")
        assert "open refused 5" in out, out
        assert "create refused 5" in out or "create refused 183" in out, out
        assert "socket refused PermissionError" in out, out
        assert slot.info().message_count == 0


def test_second_user_allowed_to_write_is_identified(shared_root: tuple[Path, Path]) -> None:
    user = _second_user()
    root, src = shared_root
    sec = SecurityAttributes(allow=[(f"user:{USER}", "w")])
    with Mailslot(r"\\.\mailslot\xs-open", security=sec, read_timeout=10) as slot:
        _run_as(user, r"""
from winipc.mailslots import write_mailslot
write_mailslot(r"\\.\mailslot\xs-open", b"from the other user")
""", root, src)
        msg = slot.read_message()
        assert msg.data == b"from the other user"
        assert msg.sender_uid == user.pw_uid
