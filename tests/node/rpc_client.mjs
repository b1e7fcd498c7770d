// A winipc.rpc client in JavaScript, written from docs/wire/rpc.md alone (a test of the doc).
//
//   node rpc_client.mjs HOST PORT IDL.json [PRINCIPAL:HEXKEY]
//
// IDL.json: {"Types": <spec_of(Types).to_idl()>, "Files": <spec_of(Files).to_idl()>}.
// Opnums, interface UUIDs, versions and enum values come from it, never from this file.
// With PRINCIPAL:HEXKEY the client binds at PKT_INTEGRITY with the shared key (nonces,
// proofs, AUTH3, then an HMAC-SHA256 trailer on every frame); otherwise at level NONE.
// Prints one JSON object: call label -> {"ok": result} or {"fault": {...}}. Values msgpack
// has and JSON has not are tagged: bytes {"$bytes": hex}, 64-bit ints {"$int": "decimal"},
// context handles {"$ctx": hex}, arrays {"$ndarray": {dtype, shape, data}}.

import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import net from "node:net";
import { decode, encode, ExtData } from "@msgpack/msgpack";

// -- frame layer (docs/wire/rpc.md, "Frame header") ---------------------------------------

const VERSION = 1;
const HEADER_SIZE = 16;
const MAC_SIZE = 32;
const T = { BIND: 1, BIND_ACK: 2, BIND_NAK: 3, AUTH3: 5, REQUEST: 0x10, RESPONSE: 0x11, FAULT: 0x12, CANCEL: 0x13 };
const F = { ONEWAY: 1, SIGNED: 2, CALLBACK: 4, DID_NOT_EXECUTE: 8 };
const KNOWN_TYPES = new Set(Object.values(T));
const EXT_CONTEXT = 1;
const EXT_OOB = 2;
const EXT_NDARRAY = 3;
const MY_MAX_FRAME = 16 * 1024 * 1024;

const ENC = { useBigInt64: true };
const DEC = { useBigInt64: true };

class ProtocolError extends Error {}

function header(type, flags, callId, bodyLen, oobLen) {
  const h = Buffer.alloc(HEADER_SIZE);
  h.writeUInt8(VERSION, 0);
  h.writeUInt8(type, 1);
  h.writeUInt8(flags, 2);
  h.writeUInt8(0, 3);
  h.writeUInt32LE(callId, 4);
  h.writeUInt32LE(bodyLen, 8);
  h.writeUInt32LE(oobLen, 12);
  return h;
}

function parseHeader(buf, maxFrame) {
  const version = buf.readUInt8(0);
  const type = buf.readUInt8(1);
  const flags = buf.readUInt8(2);
  const reserved = buf.readUInt8(3);
  if (version !== VERSION) throw new ProtocolError(`version ${version}`);
  if (!KNOWN_TYPES.has(type)) throw new ProtocolError(`frame type ${type}`);
  if (flags & ~0x0f || reserved) throw new ProtocolError("reserved bits set");
  const h = { type, flags, callId: buf.readUInt32LE(4), bodyLen: buf.readUInt32LE(8), oobLen: buf.readUInt32LE(12) };
  h.total = HEADER_SIZE + h.bodyLen + h.oobLen + (flags & F.SIGNED ? MAC_SIZE : 0);
  if (h.total > maxFrame) throw new ProtocolError(`a ${h.total}-byte frame is over my limit`);
  return h;
}

function macPrefix(direction, seq) {
  const p = Buffer.alloc(9);
  p.writeUInt8(direction, 0);
  p.writeBigUInt64LE(BigInt(seq), 1);
  return p;
}

const hmac = (key, ...parts) => {
  const m = createHmac("sha256", key);
  for (const p of parts) m.update(p);
  return m.digest();
};

class Connection {
  constructor(socket) {
    this.socket = socket;
    this.buf = Buffer.alloc(0);
    this.waiters = [];
    this.closed = null;
    this.macKey = null;
    this.sendSeq = 0;
    this.recvSeq = 0;
    this.peerMax = MY_MAX_FRAME; // until BIND_ACK says otherwise
    this.nextCallId = 1;
    socket.on("data", (d) => { this.buf = Buffer.concat([this.buf, d]); this.wake(); });
    socket.on("close", () => { this.closed = this.closed || new Error("connection closed"); this.wake(); });
    socket.on("error", (e) => { this.closed = e; this.wake(); });
  }

  wake() {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  send(type, flags, callId, body, oob = []) {
    const oobLen = oob.reduce((n, b) => n + b.length, 0);
    if (this.macKey) flags |= F.SIGNED;
    const parts = [header(type, flags, callId, body.length, oobLen), Buffer.from(body), ...oob.map((b) => Buffer.from(b))];
    if (this.macKey) parts.push(hmac(this.macKey, macPrefix(0, this.sendSeq++), ...parts));
    const frame = Buffer.concat(parts);
    if (frame.length > this.peerMax) throw new ProtocolError("frame over the server's limit");
    this.socket.write(frame);
  }

  async recv() {
    for (;;) {
      if (this.buf.length >= HEADER_SIZE) {
        const h = parseHeader(this.buf, MY_MAX_FRAME);
        if (this.buf.length >= h.total) {
          const raw = this.buf.subarray(0, h.total);
          this.buf = this.buf.subarray(h.total);
          const end = HEADER_SIZE + h.bodyLen + h.oobLen;
          if (this.macKey) {
            if (!(h.flags & F.SIGNED)) throw new ProtocolError("unsigned frame at PKT_INTEGRITY");
            const want = hmac(this.macKey, macPrefix(1, this.recvSeq++), raw.subarray(0, end));
            if (!timingSafeEqual(want, raw.subarray(end, end + MAC_SIZE))) throw new ProtocolError("bad MAC");
          }
          return { ...h, body: raw.subarray(HEADER_SIZE, HEADER_SIZE + h.bodyLen), oob: raw.subarray(HEADER_SIZE + h.bodyLen, end) };
        }
      }
      if (this.closed) throw this.closed;
      await new Promise((resolve) => this.waiters.push(resolve));
    }
  }
}

// -- handshake (docs/wire/rpc.md, "Handshake") ---------------------------------------------

async function bind(conn, auth) {
  const nonce = auth ? randomBytes(16) : null;
  conn.send(T.BIND, 0, 0, encode({
    assoc: randomBytes(16),
    auth: auth ? 5 : 1,
    principal: auth ? auth.principal : null,
    nonce,
    max_frame: MY_MAX_FRAME,
    callbacks: [],
  }, ENC));
  const f = await conn.recv();
  if (f.type === T.BIND_NAK) {
    const [status, type, message] = decode(f.body, DEC);
    throw new Error(`BIND_NAK ${status} ${type}: ${message}`);
  }
  if (f.type !== T.BIND_ACK) throw new ProtocolError(`BIND answered with type ${f.type}`);
  const ack = decode(f.body, DEC);
  conn.peerMax = Number(ack.max_frame);
  if (auth) {
    const skey = hmac(auth.key, Buffer.from("winipc-rpc-1"), nonce, ack.nonce);
    if (!timingSafeEqual(hmac(skey, Buffer.from("proof:server")), Buffer.from(ack.proof))) {
      throw new Error("the server does not hold the key");
    }
    conn.send(T.AUTH3, 0, 0, encode(hmac(skey, Buffer.from("proof:client")), ENC));
    conn.macKey = skey; // every frame after AUTH3 is signed, both ways
  }
  return { max_frame: Number(ack.max_frame), pid: Number(ack.pid), signed: Boolean(auth) };
}

// -- calls (docs/wire/rpc.md, "Calls") -----------------------------------------------------

function uuidBytes(text) {
  return Buffer.from(text.replace(/-/g, ""), "hex"); // RFC 4122 byte order (uuid.bytes)
}

function resolveOob(value, oob) {
  // replace ExtType 2 references by the buffers they name; leave other values as they are
  if (value instanceof ExtData && value.type === EXT_OOB) {
    const index = Buffer.from(value.data).readUInt32BE(0);
    if (index >= oob.length) throw new ProtocolError(`no out-of-band buffer ${index}`);
    return oob[index];
  }
  if (Array.isArray(value)) return value.map((v) => resolveOob(v, oob));
  if (value && typeof value === "object" && !(value instanceof Uint8Array) && !(value instanceof ExtData)) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, resolveOob(v, oob)]));
  }
  return value;
}

function splitOob(oob, lens) {
  const out = [];
  let pos = 0;
  for (const n of lens) {
    out.push(oob.subarray(pos, pos + Number(n)));
    pos += Number(n);
  }
  if (pos !== oob.length) throw new ProtocolError("out-of-band lengths do not add up");
  return out;
}

async function call(conn, idl, name, args, { oob = [], opnum = null, ifUuid = null } = {}) {
  const m = idl.methods.find((x) => x.name === name);
  const op = opnum ?? m.opnum;
  const callId = conn.nextCallId++;
  const flags = m && m.oneway ? F.ONEWAY : 0;
  const body = encode([ifUuid ?? uuidBytes(idl.uuid), idl.version[0], idl.version[1], op, args, oob.map((b) => b.length)], ENC);
  conn.send(T.REQUEST, flags, callId, body, oob);
  if (flags & F.ONEWAY) return { ok: null, oneway: true };
  const f = await conn.recv();
  if (f.callId !== callId || f.flags & F.CALLBACK) throw new ProtocolError(`frame for call ${f.callId}, expected ${callId}`);
  if (f.type === T.RESPONSE) {
    const [result, lens] = decode(f.body, DEC);
    return { ok: resolveOob(result, splitOob(f.oob, lens)) };
  }
  if (f.type === T.FAULT) {
    const [status, type, message] = decode(f.body, DEC);
    return { fault: { status, type, message, did_not_execute: Boolean(f.flags & F.DID_NOT_EXECUTE) } };
  }
  throw new ProtocolError(`frame type ${f.type} during a call`);
}

// -- values -> JSON --------------------------------------------------------------------------

function ndarray(dtype, shape, bytes) {
  return new ExtData(EXT_NDARRAY, encode([dtype, shape, bytes], ENC));
}

function toJson(v) {
  if (typeof v === "bigint") return { $int: v.toString() };
  if (v instanceof Uint8Array) return { $bytes: Buffer.from(v).toString("hex") };
  if (v instanceof ExtData) {
    if (v.type === EXT_CONTEXT) return { $ctx: Buffer.from(v.data).toString("hex") };
    if (v.type === EXT_NDARRAY) {
      const [dtype, shape, data] = decode(v.data, DEC);
      return { $ndarray: { dtype, shape, data: toJson(data) } };
    }
    return { $ext: v.type, data: Buffer.from(v.data).toString("hex") };
  }
  if (Array.isArray(v)) return v.map(toJson);
  if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toJson(x)]));
  return v;
}

// -- the script -----------------------------------------------------------------------------

async function main() {
  const [host, port, idlPath, keyArg] = process.argv.slice(2);
  const idls = JSON.parse(readFileSync(idlPath, "utf8"));
  const auth = keyArg ? { principal: keyArg.split(":")[0], key: Buffer.from(keyArg.split(":")[1], "hex") } : null;
  const socket = net.createConnection({ host, port: Number(port) });
  socket.setNoDelay(true);
  await new Promise((resolve, reject) => { socket.once("connect", resolve); socket.once("error", reject); });
  const conn = new Connection(socket);
  const out = { bind: await bind(conn, auth) };
  const types = idls.Types;
  const files = idls.Files;
  const color = types.types.Color.members;
  const mode = types.types.Mode.members;
  const big = Buffer.alloc(100_000, 0x61);
  const mid = Buffer.from(Array.from({ length: 70_000 }, (_, i) => i % 251));

  const calls = [
    ["echo_bool", types, "echo_bool", [true]],
    ["echo_int", types, "echo_int", [-42]],
    ["echo_int_max", types, "echo_int", [2n ** 64n - 1n]],
    ["echo_int_min", types, "echo_int", [-(2n ** 63n)]],
    ["echo_i8", types, "echo_i8", [-128]],
    ["echo_float", types, "echo_float", [1.25]],
    ["echo_float_from_int", types, "echo_float", [3]],
    ["echo_str", types, "echo_str", ["héllo ☃"]],
    ["echo_bytes", types, "echo_bytes", [Buffer.from([0, 1, 2, 255])]],
    ["echo_none", types, "echo_none", [null]],
    ["echo_list", types, "echo_list", [[1, 2, 3]]],
    ["echo_dict", types, "echo_dict", [{ a: [1.5], b: [] }]],
    ["echo_tuple", types, "echo_tuple", [[7, "x", Buffer.from("y")]]],
    ["echo_enum", types, "echo_enum", [color.GREEN, mode.SAFE]],
    ["echo_struct", types, "echo_struct", [{
      name: "tri", points: [{ x: 0.5, y: 1.5, tag: "a" }, { x: 2.5, y: -1.5 }], color: color.RED, weights: { w: 0.5 },
    }]],
    ["echo_optional_none", types, "echo_optional", [null]],
    ["echo_optional_point", types, "echo_optional", [{ x: 1.5, y: 2.5 }]],
    ["echo_array", types, "echo_array", [ndarray("<i4", [2, 2], Buffer.from(new Int32Array([1, 2, 3, -4]).buffer))]],
    ["divmod", types, "divmod", [17, 5]],
    ["size_oob", types, "size", [new ExtData(EXT_OOB, Buffer.from([0, 0, 0, 0]))], { oob: [big] }],
    ["echo_bytes_oob", types, "echo_bytes", [new ExtData(EXT_OOB, Buffer.from([0, 0, 0, 0]))], { oob: [mid] }],
    ["fail_zero", types, "fail", ["zero"]],
    ["fail_denied", types, "fail", ["denied"]],
    ["bad_stub_data", types, "echo_int", ["1"]],
    ["wrong_arity", types, "divmod", [1]],
    ["unknown_opnum", types, "echo_bool", [true], { opnum: types.methods.length }],
    ["unknown_interface", types, "echo_bool", [true], { ifUuid: randomBytes(16) }],
    ["files_open", files, "open", ["doc"]],
  ];
  for (const [label, idl, name, args, opts] of calls) {
    out[label] = await call(conn, idl, name, args, opts);
  }
  // a context handle goes back as the ExtData the server sent
  const handle = out.files_open.ok;
  out.files_append = await call(conn, files, "append", [handle, "a"]);
  out.files_close = await call(conn, files, "close", [handle]);
  out.files_append_closed = await call(conn, files, "append", [handle, "b"]);
  out.files_note = await call(conn, files, "note", ["one"]);
  out.files_notes = await call(conn, files, "notes", []);
  out.echo_bytes_oob_ok = { ok: Buffer.compare(out.echo_bytes_oob.ok, mid) === 0 };
  delete out.echo_bytes_oob;
  socket.end();
  process.stdout.write(JSON.stringify(toJson(out)) + "\n");
}

main().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
