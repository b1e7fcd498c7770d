"""Mailslot datagram wire format v1 (docs/wire/mailslot.md): layout, caps, fuzz, addressing."""

from __future__ import annotations

import array
import re
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from winipc import errors as W
from winipc._core.names import fold
from winipc._wire import mailslot as M

# -- strategies ----------------------------------------------------------------------------

_chars = st.characters(exclude_categories=["Cs"], exclude_characters="\\/\0")
segments = st.text(_chars, min_size=1, max_size=12)
names = (
    st.lists(segments, min_size=1, max_size=4)
    .map("\\".join)
    .filter(lambda s: len(s.encode("utf-8")) <= M.MAX_NAME_BYTES)
)
hosts = st.text(_chars, max_size=20)
domains = hosts.filter(lambda s: s != "*")
pids = st.integers(0, M.MAX_PID)


@st.composite
def datagrams(draw: st.DrawFn, max_unicast: int = 2000) -> M.Datagram:
    broadcast = draw(st.booleans())
    return M.Datagram(
        name=draw(names),
        payload=draw(st.binary(max_size=M.MAX_BROADCAST_MESSAGE if broadcast else max_unicast)),
        broadcast=broadcast,
        domain=draw(domains) if broadcast else "",
        sender_host=draw(hosts),
        sender_pid=draw(pids),
    )


def raw(
    name: bytes = b"Foo",
    domain: bytes = b"",
    host: bytes = b"alpha",
    payload: bytes = b"hi",
    *,
    magic: bytes = b"MS",
    version: int = 1,
    flags: int = 0,
    pid: int = 1234,
    n: int | None = None,
    d: int | None = None,
    h: int | None = None,
    length: int | None = None,
) -> bytes:
    """A datagram built by hand, header fields overridable (to build invalid ones)."""
    header = M.HEADER.pack(
        magic,
        version,
        flags,
        len(name) if n is None else n,
        len(domain) if d is None else d,
        len(host) if h is None else h,
        pid,
        len(payload) if length is None else length,
    )
    return header + name + domain + host + payload


def fragment(text: str) -> str:
    return re.escape(text)


# -- layout --------------------------------------------------------------------------------

#: The worked example of docs/wire/mailslot.md.
EXAMPLE = M.Datagram(
    name="taxes\\Bobs",
    payload=b"hello",
    broadcast=True,
    domain="WORKGROUP",
    sender_host="alpha",
    sender_pid=4242,
)
EXAMPLE_HEX = (
    "4d53 01 01 0a00 09 05 92100000 05000000"
    " 74617865735c426f6273"
    " 574f524b47524f5550"
    " 616c706861"
    " 68656c6c6f"
)


def test_header_is_16_bytes_little_endian() -> None:
    assert M.HEADER.format == "<2sBBHBBII"
    assert M.HEADER_SIZE == 16
    assert M.MAX_UNICAST_MESSAGE == 65507 - 16 - 1 == 65490


def test_worked_example_bytes() -> None:
    wire = M.encode(EXAMPLE)
    assert wire == bytes.fromhex(EXAMPLE_HEX)
    assert len(wire) == 45
    assert M.decode(wire) == EXAMPLE


@settings(max_examples=300, deadline=None)
@given(d=datagrams())
def test_roundtrip(d: M.Datagram) -> None:
    wire = M.encode(d)
    assert len(wire) == 16 + sum(len(s.encode()) for s in (d.name, d.domain, d.sender_host)) + len(
        d.payload
    )
    assert M.decode(wire) == d
    assert M.decode(bytearray(wire)) == d
    assert M.decode(memoryview(wire)) == d
    assert M.encode(M.decode(wire)) == wire


@pytest.mark.parametrize(
    "name",
    ["x", "taxes\\bobs_comments", "Müller\\Köln", "日本語\\名前", "a.b*c>d e", "\U0001f4ec\\inbox"],
)
def test_roundtrip_examples(name: str) -> None:
    for d in (
        M.Datagram(name, b"payload", sender_host="hôte", sender_pid=7),
        M.Datagram(name, b"", broadcast=True),
        M.Datagram(name, b"\0" * 424, broadcast=True, domain="DOMÄIN"),
    ):
        assert M.decode(M.encode(d)) == d


def test_name_keeps_the_senders_spelling() -> None:
    d = M.decode(M.encode(M.Datagram("Taxes\\BobsComments", b"")))
    assert d.name == "Taxes\\BobsComments"


def test_decode_accepts_any_contiguous_buffer() -> None:
    wire = M.encode(EXAMPLE)
    assert M.decode(memoryview(array.array("B", wire))) == EXAMPLE
    assert M.decode(memoryview(wire).cast("B", shape=[5, 9])) == EXAMPLE  # 2-D, 45 bytes
    assert M.decode(memoryview(wire + b"\0")[:-1]) == EXAMPLE


def test_decode_refuses_non_buffers_as_invalid_parameter() -> None:
    with pytest.raises(W.InvalidParameter, match="bytes-like"):
        M.decode("MS")  # type: ignore[arg-type]
    with pytest.raises(W.InvalidParameter, match="contiguous"):
        M.decode(memoryview(M.encode(EXAMPLE))[::2])


def test_decode_leaves_a_bytearray_unlocked() -> None:
    """No memoryview export outlives decode, whether it succeeds or fails."""
    good = bytearray(M.encode(EXAMPLE))
    M.decode(good)
    good.append(0)
    bad = bytearray(raw(name=b"\xff"))
    with pytest.raises(W.InvalidData):
        M.decode(bad)
    bad.append(0)


# -- decoder rejections --------------------------------------------------------------------

DECODE_REJECTS = [
    ("empty", b"", "0 bytes is shorter than the 16-byte header"),
    ("short header", raw()[:15], "15 bytes is shorter than the 16-byte header"),
    ("too big", raw(payload=bytes(70_000)), "70024 bytes exceeds the limit of 65507 bytes"),
    ("magic", raw(magic=b"MZ"), "bad magic b'MZ'; expected b'MS'"),
    ("version 0", raw(version=0), "version 0 is not supported"),
    ("version 2", raw(version=2), "version 2 is not supported"),
    ("flag bit 1", raw(flags=0x02), "unknown flags 0x02"),
    ("flag bit 7 + broadcast", raw(flags=0x81), "unknown flags 0x81"),
    ("name length 0", raw(name=b""), "name length is 0"),
    ("name length 256", raw(name=b"n" * 256), "name length 256 exceeds the limit of 255 bytes"),
    ("name length 65535", raw(n=0xFFFF), "name length 65535 exceeds the limit of 255 bytes"),
    ("domain on unicast", raw(domain=b"WG"), "domain length 2 on a unicast"),
    (
        "broadcast 425",
        raw(name=b"x", host=b"", payload=bytes(425), flags=1),
        "payload length 425 exceeds the broadcast limit of 424 bytes",
    ),
    (
        "broadcast announces 500",
        raw(flags=1, length=500),
        "payload length 500 exceeds the broadcast limit of 424 bytes",
    ),
    (
        "unicast announces 4 GiB",
        raw(length=0xFFFF_FFFF),
        "payload length 4294967295 makes the datagram 4294967319 bytes; the limit is 65507 bytes",
    ),
    (
        "unicast one over",
        raw(name=b"x", host=b"", length=M.MAX_UNICAST_MESSAGE + 1),
        "payload length 65491 makes the datagram 65508 bytes; the limit is 65507 bytes",
    ),
    ("truncated body", raw()[:-1], "truncated: 25 bytes where the header announces 26"),
    ("truncated name", raw()[:17], "truncated: 17 bytes where the header announces 26"),
    ("trailing byte", raw() + b"\0", "trailing bytes: 27 bytes where the header announces 26"),
    ("name bad utf-8", raw(name=b"\xff"), "name is not valid UTF-8"),
    ("name surrogate", raw(name=b"\xed\xa0\x80"), "name is not valid UTF-8"),
    ("name overlong", raw(name=b"\xc0\xaf"), "name is not valid UTF-8"),
    ("domain bad utf-8", raw(domain=b"\x80", flags=1), "domain is not valid UTF-8"),
    ("host bad utf-8", raw(host=b"a\xe2\x82"), "sender host is not valid UTF-8"),
    ("name NUL", raw(name=b"a\0"), "contains a NUL character"),
    ("name slash", raw(name=b"a/b"), "contains '/'"),
    ("name leading backslash", raw(name=b"\\a"), "empty path segment"),
    ("name trailing backslash", raw(name=b"a\\"), "empty path segment"),
    ("name double backslash", raw(name=b"a\\\\b"), "empty path segment"),
    ("name is a backslash", raw(name=b"\\"), "empty path segment"),
    ("domain star", raw(domain=b"*", flags=1), "domain '*' is reserved"),
    ("domain backslash", raw(domain=b"a\\b", flags=1), "domain 'a\\\\b' contains"),
    ("domain NUL", raw(domain=b"\0", flags=1), "domain '\\x00' contains a NUL"),
    ("host slash", raw(host=b"a/b"), "sender host 'a/b' contains"),
]


@pytest.mark.parametrize(
    ("data", "message"), [c[1:] for c in DECODE_REJECTS], ids=[c[0] for c in DECODE_REJECTS]
)
def test_decode_rejects(data: bytes, message: str) -> None:
    with pytest.raises(W.InvalidData, match=fragment(message)) as info:
        M.decode(data)
    assert str(info.value.strerror).startswith("mailslot datagram: ")
    assert info.value.winerror == W.ERROR_INVALID_DATA


def test_decode_caps_before_reading_the_body() -> None:
    """A header announcing a huge payload is refused from the 16 header bytes alone."""
    header = raw(name=b"x", host=b"", length=0xFFFF_FFFF)[:16]
    with pytest.raises(W.InvalidData, match="limit is 65507"):
        M.decode(header)
    header = raw(name=b"x", host=b"", flags=1, length=425)[:16]
    with pytest.raises(W.InvalidData, match="broadcast limit of 424"):
        M.decode(header)


# -- encoder rejections --------------------------------------------------------------------

ENCODE_REJECTS: list[tuple[str, dict[str, object], str]] = [
    ("name empty", {"name": ""}, "mailslot name is empty"),
    (
        "name 256 bytes",
        {"name": "n" * 256},
        "mailslot name is 256 bytes in UTF-8; the limit is 255",
    ),
    ("name 256 utf-8 bytes", {"name": "é" * 128}, "mailslot name is 256 bytes in UTF-8"),
    ("name not str", {"name": b"x"}, "mailslot name must be a str, not bytes"),
    ("name surrogate", {"name": "a\udc80"}, "cannot be encoded as UTF-8"),
    ("name NUL", {"name": "a\0b"}, "contains a NUL character"),
    ("name slash", {"name": "a/b"}, "contains '/'"),
    ("name full UNC form", {"name": "\\\\*\\mailslot\\x"}, "empty path segment"),
    ("name trailing backslash", {"name": "a\\"}, "empty path segment"),
    ("domain on unicast", {"domain": "WG"}, "domain 'WG' given for a unicast"),
    ("domain star", {"broadcast": True, "domain": "*"}, "domain '*' is reserved"),
    ("domain backslash", {"broadcast": True, "domain": "a\\b"}, "contains '\\' or '/'"),
    ("domain 256", {"broadcast": True, "domain": "d" * 256}, "domain is 256 bytes in UTF-8"),
    ("domain not str", {"broadcast": True, "domain": None}, "domain must be a str"),
    ("host 256", {"sender_host": "h" * 256}, "sender_host is 256 bytes in UTF-8"),
    ("host slash", {"sender_host": "a/b"}, "sender_host 'a/b' contains"),
    ("broadcast not bool", {"broadcast": 1}, "broadcast must be a bool"),
    ("payload str", {"payload": "hi"}, "payload must be bytes, not str"),
    ("pid negative", {"sender_pid": -1}, "sender_pid -1 is outside 0..4294967295"),
    ("pid 2**32", {"sender_pid": 2**32}, "sender_pid 4294967296 is outside"),
    ("pid bool", {"sender_pid": True}, "sender_pid True is outside"),
    (
        "broadcast 425",
        {"broadcast": True, "payload": bytes(425)},
        "message is 425 bytes; a broadcast mailslot message is limited to 424 bytes",
    ),
    (
        "unicast over",
        {"payload": bytes(65_500)},
        "message is 65500 bytes; with this name and host a mailslot datagram holds at most 65483 bytes",
    ),
]


@pytest.mark.parametrize(
    ("fields", "message"), [c[1:] for c in ENCODE_REJECTS], ids=[c[0] for c in ENCODE_REJECTS]
)
def test_encode_rejects(fields: dict[str, object], message: str) -> None:
    kwargs: dict[str, object] = {"name": "Foo", "payload": b"", "sender_host": "alpha"}
    kwargs.update(fields)
    d = M.Datagram(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(W.InvalidParameter, match=fragment(message)) as info:
        M.encode(d)
    assert info.value.winerror == W.ERROR_INVALID_PARAMETER


def test_encode_refuses_a_non_datagram() -> None:
    with pytest.raises(W.InvalidParameter, match="takes a Datagram"):
        M.encode(b"MS")  # type: ignore[arg-type]


def test_encode_accepts_bytes_like_payloads() -> None:
    for payload in (bytearray(b"abc"), memoryview(b"abc")):
        d = M.Datagram("x", payload)  # type: ignore[arg-type]
        assert M.decode(M.encode(d)).payload == b"abc"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.one_of(names, st.text(max_size=300)),
    broadcast=st.booleans(),
    domain=st.one_of(st.just(""), st.text(max_size=300)),
    host=st.text(max_size=300),
    pid=st.integers(-5, 2**33),
    size=st.one_of(st.integers(0, 500), st.integers(64_000, 66_000)),
)
def test_encoder_never_produces_what_the_decoder_refuses(
    name: str, broadcast: bool, domain: str, host: str, pid: int, size: int
) -> None:
    d = M.Datagram(name, bytes(size), broadcast, domain, host, pid)
    try:
        wire = M.encode(d)
    except W.InvalidParameter:
        return
    assert len(wire) <= M.MAX_DATAGRAM
    assert M.decode(wire) == d


# -- caps ----------------------------------------------------------------------------------


def test_broadcast_boundary_424_425() -> None:
    ok = M.Datagram("x", bytes(424), broadcast=True)
    assert M.decode(M.encode(ok)) == ok
    with pytest.raises(W.InvalidParameter, match="limited to 424 bytes"):
        M.encode(M.Datagram("x", bytes(425), broadcast=True))
    with pytest.raises(W.InvalidParameter, match="limited to 424 bytes"):
        M.encode(M.Datagram("x", bytes(425), broadcast=True, domain="WORKGROUP"))


def test_broadcast_cap_holds_with_the_longest_fields() -> None:
    d = M.Datagram("n" * 255, bytes(424), True, "d" * 255, "h" * 255, M.MAX_PID)
    wire = M.encode(d)
    assert len(wire) == 16 + 3 * 255 + 424
    assert M.decode(wire) == d


def test_unicast_boundary() -> None:
    d = M.Datagram("x", bytes(M.MAX_UNICAST_MESSAGE))
    wire = M.encode(d)
    assert len(wire) == M.MAX_DATAGRAM == 65507
    assert M.decode(wire) == d
    with pytest.raises(W.InvalidParameter, match="holds at most 65490 bytes"):
        M.encode(M.Datagram("x", bytes(M.MAX_UNICAST_MESSAGE + 1)))
    with pytest.raises(W.InvalidData, match="65508 bytes"):
        M.decode(raw(b"x", b"", b"", bytes(M.MAX_UNICAST_MESSAGE + 1)))
    with pytest.raises(W.InvalidData, match="65508 bytes exceeds the limit of 65507"):
        M.decode(wire + b"\0")


def test_max_message() -> None:
    assert M.max_message("x", broadcast=False) == M.MAX_UNICAST_MESSAGE
    assert M.max_message("x", broadcast=True) == M.MAX_BROADCAST_MESSAGE == 424
    assert M.max_message("x", broadcast=True, domain="WG", sender_host="h") == 424
    assert M.max_message("ab", broadcast=False, sender_host="hôte") == 65507 - 16 - 2 - 5
    assert M.max_message("é", broadcast=False) == 65507 - 16 - 2
    with pytest.raises(W.InvalidParameter, match="given for a unicast"):
        M.max_message("x", broadcast=False, domain="WG")
    with pytest.raises(W.InvalidParameter, match="mailslot name is empty"):
        M.max_message("", broadcast=True)


@settings(max_examples=100, deadline=None)
@given(name=names, host=hosts, broadcast=st.booleans(), domain=domains)
def test_max_message_is_exact(name: str, host: str, broadcast: bool, domain: str) -> None:
    domain = domain if broadcast else ""
    cap = M.max_message(name, broadcast=broadcast, domain=domain, sender_host=host)
    wire = M.encode(M.Datagram(name, bytes(cap), broadcast, domain, host))
    if not broadcast:
        assert len(wire) == M.MAX_DATAGRAM
    with pytest.raises(W.InvalidParameter, match="message is"):
        M.encode(M.Datagram(name, bytes(cap + 1), broadcast, domain, host))


# -- fuzz ----------------------------------------------------------------------------------


def decode_or_invalid(data: bytes) -> None:
    """The fuzz contract: decode returns, or raises InvalidData; what decodes is canonical."""
    try:
        d = M.decode(data)
    except W.InvalidData:
        return
    assert M.encode(d) == data


@settings(max_examples=1000, deadline=None)
@given(data=st.binary(max_size=600))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    decode_or_invalid(data)


@settings(max_examples=1000, deadline=None)
@given(
    magic=st.sampled_from([b"MS", b"MZ", b"\0\0"]),
    version=st.sampled_from([0, 1, 1, 1, 2, 255]),
    flags=st.sampled_from([0, 1, 2, 3, 0x80, 0xFF]),
    n=st.one_of(st.integers(0, 8), st.integers(0, 0xFFFF)),
    d=st.one_of(st.just(0), st.integers(0, 8), st.integers(0, 255)),
    h=st.one_of(st.just(0), st.integers(0, 8), st.integers(0, 255)),
    pid=st.integers(0, M.MAX_PID),
    length=st.one_of(st.integers(0, 8), st.integers(0, 0xFFFF_FFFF)),
    tail=st.binary(max_size=40),
)
def test_fuzz_structured_headers(
    magic: bytes,
    version: int,
    flags: int,
    n: int,
    d: int,
    h: int,
    pid: int,
    length: int,
    tail: bytes,
) -> None:
    decode_or_invalid(M.HEADER.pack(magic, version, flags, n, d, h, pid, length) + tail)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    wire = bytearray(M.encode(draw(datagrams(max_unicast=300))))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "cut", "grow", "insert", "delete"]))
        if op == "cut":
            del wire[draw(st.integers(0, len(wire))) :]
        elif op == "grow":
            wire += draw(st.binary(min_size=1, max_size=8))
        elif not wire:
            continue
        elif op == "flip":
            i = draw(st.integers(0, len(wire) - 1))
            wire[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            i = draw(st.integers(0, min(len(wire), 16) - 1))  # mostly header fields
            wire[i] = draw(st.integers(0, 255))
        elif op == "insert":
            wire.insert(draw(st.integers(0, len(wire))), draw(st.integers(0, 255)))
        else:
            del wire[draw(st.integers(0, len(wire) - 1))]
    return bytes(wire)


@settings(max_examples=1000, deadline=None)
@given(data=mutated())
def test_fuzz_mutated_valid_datagrams(data: bytes) -> None:
    decode_or_invalid(data)


# -- corpus --------------------------------------------------------------------------------

CORPUS = Path(__file__).parent / "corpus" / "mailslot"
CORPUS_FILES = sorted(CORPUS.glob("*.bin"))


def test_corpus_is_present() -> None:
    kinds = {p.name.split("-", 1)[0] for p in CORPUS_FILES}
    assert kinds == {"ok", "bad"}, [p.name for p in CORPUS_FILES]
    assert len(CORPUS_FILES) >= 12


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
def test_corpus_replay(path: Path) -> None:
    """Hand-made seeds (and fuzz finds): ``ok-*`` decode and re-encode byte for byte,
    ``bad-*`` raise InvalidData."""
    data = path.read_bytes()
    if path.name.startswith("ok-"):
        d = M.decode(data)
        assert M.encode(d) == data
    else:
        assert path.name.startswith("bad-")
        with pytest.raises(W.InvalidData, match="mailslot datagram: "):
            M.decode(data)


# -- UDP port ------------------------------------------------------------------------------


@pytest.fixture
def default_base(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(M.PORT_BASE_ENV, raising=False)


@pytest.mark.usefixtures("default_base")
def test_udp_port_is_stable() -> None:
    # Golden values: changing them breaks every deployed receiver, so they are pinned.
    assert M.udp_port("Foo") == 18963
    assert M.udp_port("taxes\\Bobs") == 18212
    assert M.udp_port("taxes\\Bobs") == 17000 + zlib.crc32(b"TAXES\\BOBS") % 4096


@pytest.mark.usefixtures("default_base")
def test_udp_port_is_case_insensitive() -> None:
    assert M.udp_port("Foo") == M.udp_port("FOO") == M.udp_port("foo")
    assert M.udp_port("taxes\\bobs") == M.udp_port("TAXES\\BOBS")
    assert M.udp_port("é") == M.udp_port("É")


@pytest.mark.usefixtures("default_base")
@settings(max_examples=200)
@given(name=names)
def test_udp_port_range(name: str) -> None:
    port = M.udp_port(name)
    assert 17000 <= port < 17000 + 4096
    assert port == M.udp_port(fold(name))


def test_udp_port_base_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(M.PORT_BASE_ENV, raising=False)
    offset = M.udp_port("Foo") - 17000
    monkeypatch.setenv(M.PORT_BASE_ENV, "20000")
    assert M.udp_port("Foo") == 20000 + offset
    monkeypatch.setenv(M.PORT_BASE_ENV, "1024")
    assert M.udp_port("Foo") == 1024 + offset
    monkeypatch.setenv(M.PORT_BASE_ENV, "61439")
    assert M.udp_port("Foo") == 61439 + offset <= 65535


@pytest.mark.parametrize("value", ["abc", "", "17000.5", "1023", "61440", "-1", "70000"])
def test_udp_port_base_validation(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(M.PORT_BASE_ENV, value)
    with pytest.raises(W.InvalidParameter, match="WINIPC_MAILSLOT_PORT_BASE") as info:
        M.udp_port("Foo")
    assert "1024..61439" in str(info.value.strerror)


@pytest.mark.usefixtures("default_base")
@pytest.mark.parametrize("name", ["", "a/b", "a\0", "\\\\*\\mailslot\\x", "n" * 256])
def test_udp_port_rejects_bad_names(name: str) -> None:
    with pytest.raises(W.InvalidParameter, match="mailslot name"):
        M.udp_port(name)


# -- NATS subjects -------------------------------------------------------------------------


def test_nats_subject_forms() -> None:
    n = "54415845535c424f4253"  # hex of "TAXES\BOBS"
    assert M.nats_subject("taxes\\Bobs") == f"winipc.mailslot.v1.all.{n}"
    assert (
        M.nats_subject("taxes\\Bobs", domain="WorkGroup")
        == f"winipc.mailslot.v1.domain.574f524b47524f5550.{n}"
    )
    assert M.nats_subject("taxes\\Bobs", host="alpha") == f"winipc.mailslot.v1.host.414c504841.{n}"


def test_nats_subject_is_case_insensitive() -> None:
    assert M.nats_subject("Foo") == M.nats_subject("FOO") == M.nats_subject("foo")
    assert M.nats_subject("x", host="Alpha") == M.nats_subject("x", host="ALPHA")
    assert M.nats_subject("x", domain="wg") == M.nats_subject("x", domain="WG")
    assert M.nats_subject("é") == M.nats_subject("É") == "winipc.mailslot.v1.all.c389"


@settings(max_examples=200)
@given(name=names, other=st.text(_chars, min_size=1, max_size=20), kind=st.sampled_from("ahd"))
def test_nats_subject_tokens_are_safe(name: str, other: str, kind: str) -> None:
    if kind == "d" and other == "*":
        return
    if kind == "a":
        subject, count = M.nats_subject(name), 5
    elif kind == "h":
        subject, count = M.nats_subject(name, host=other), 6
    else:
        subject, count = M.nats_subject(name, domain=other), 6
    tokens = subject.split(".")
    assert len(tokens) == count
    assert all(re.fullmatch(r"[0-9a-z]+", t) for t in tokens)
    assert bytes.fromhex(tokens[-1]).decode("utf-8") == fold(name)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"host": "a", "domain": "b"}, "not both"),
        ({"host": ""}, "host is empty"),
        ({"domain": ""}, "domain is empty"),
        ({"domain": "*"}, "domain '*' is reserved"),
        ({"host": "a.b\\c"}, "contains '\\' or '/'"),
        ({"host": "h" * 256}, "host is 256 bytes"),
    ],
)
def test_nats_subject_rejects(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(W.InvalidParameter, match=fragment(message)):
        M.nats_subject("x", **kwargs)


def test_nats_subject_rejects_bad_names() -> None:
    with pytest.raises(W.InvalidParameter, match="empty path segment"):
        M.nats_subject("a\\\\b")
