/*
 * winipc._native._rpcfast: the call path of winipc.rpc for plain calls, in C.
 *
 * A plain call has only scalar arguments and result (bool, int, float, str, bytes, None,
 * no declared width), no out-of-band buffer and no PKT_INTEGRITY MAC, and runs on a local
 * pipe connection's shared-memory ring. For such a call this module builds the REQUEST
 * frame, sends it, reads the RESPONSE and gives back the result (client: FastMethod), and
 * reads a REQUEST, runs the method and sends its RESPONSE (server: ServeLoop), without any
 * Python frame of winipc's own. The bytes on the wire are those of the Python path
 * (docs/wire/rpc.md; tests/test_rpcfast.py holds the two to each other).
 *
 * Everything else is handed back to Python unchanged: a frame this module does not read
 * completely, an argument or result of another type or outside msgpack's integers, text
 * that is not valid UTF-8, a bytes value sent out of band, any error from the ring. So
 * errors, faults, callbacks and cancellation keep their one implementation in Python; this
 * module only accepts what it is sure of and never decides a call's failure itself.
 *
 * The peer is untrusted: every length read from a frame is checked against the frame's
 * size before it is used.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------------ wire constants */

#define VERSION 1
#define HEADER_SIZE 16
#define MAC_SIZE 32
#define T_REQUEST 0x10
#define T_RESPONSE 0x11
#define F_ONEWAY 0x01
#define F_CALLBACK 0x04

/* value kinds: the scalar types whose wire value is the Python value itself */
enum { K_BOOL, K_INT, K_FLOAT, K_STR, K_BYTES, K_NONE, K_COUNT };

#define MAX_PARAMS 32

static PyObject *s_rpc_fast; /* "_rpc_fast" */
static PyObject *s_fast;     /* "fast" */
static PyObject *s_call;     /* "call" */
static PyObject *s_generation; /* "_generation" */

/* The raised exception as one object (a new reference), the error indicator cleared. */
static PyObject *fetch_exc(void)
{
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    if (tb && v)
        PyException_SetTraceback(v, tb);
    Py_XDECREF(t);
    Py_XDECREF(tb);
    return v;
}

/* Raise `exc` again (steals the reference). */
static void restore_exc(PyObject *exc)
{
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
}

static int kind_of_type(PyObject *t)
{
    if (t == (PyObject *)&PyBool_Type) return K_BOOL;
    if (t == (PyObject *)&PyLong_Type) return K_INT;
    if (t == (PyObject *)&PyFloat_Type) return K_FLOAT;
    if (t == (PyObject *)&PyUnicode_Type) return K_STR;
    if (t == (PyObject *)&PyBytes_Type) return K_BYTES;
    if (t == (PyObject *)Py_TYPE(Py_None)) return K_NONE;
    return -1;
}

/* Kinds from a sequence of types; -1 with ValueError when one is not a scalar type. */
static int kinds_from(PyObject *types, unsigned char *kinds, Py_ssize_t *n)
{
    PyObject *seq = PySequence_Fast(types, "kinds must be a sequence of types");
    if (!seq)
        return -1;
    Py_ssize_t len = PySequence_Fast_GET_SIZE(seq);
    if (len > MAX_PARAMS) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "at most %d parameters take the C path", MAX_PARAMS);
        return -1;
    }
    for (Py_ssize_t i = 0; i < len; i++) {
        int k = kind_of_type(PySequence_Fast_GET_ITEM(seq, i));
        if (k < 0) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_ValueError, "kinds must be bool, int, float, str, bytes or NoneType");
            return -1;
        }
        kinds[i] = (unsigned char)k;
    }
    *n = len;
    Py_DECREF(seq);
    return 0;
}

/* The tp_dealloc of every type here: untrack, drop the references (tp_clear), free. */
static void gc_dealloc(PyObject *self)
{
    PyObject_GC_UnTrack(self);
    Py_TYPE(self)->tp_clear(self);
    Py_TYPE(self)->tp_free(self);
}

/* ------------------------------------------------------------------ msgpack encoding */

/* One scalar, checked and measured. `v` must be exactly of type `kind`. */
typedef struct {
    int kind;
    long long i;          /* K_INT (signed), K_BOOL */
    unsigned long long u; /* K_INT above LLONG_MAX */
    int big;              /* K_INT: u holds the value */
    double d;
    const char *p;        /* K_STR, K_BYTES */
    Py_ssize_t n;
} Scalar;

/* Fill `s` from `v`; 0 when `v` is exactly `kind` and fits the wire as the Python path
 * sends it inline, 1 when it does not (nothing raised), -1 on a real error. */
static int scalar_of(PyObject *v, int kind, Py_ssize_t oob_threshold, Scalar *s)
{
    s->kind = kind;
    switch (kind) {
    case K_NONE:
        return v == Py_None ? 0 : 1;
    case K_BOOL:
        if (v == Py_True) { s->i = 1; return 0; }
        if (v == Py_False) { s->i = 0; return 0; }
        return 1;
    case K_INT: {
        if (!PyLong_CheckExact(v))
            return 1;
        int overflow = 0;
        s->big = 0;
        s->i = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (s->i == -1 && PyErr_Occurred())
            return -1;
        if (overflow < 0)
            return 1; /* below -2**63: the Python path names the limit */
        if (overflow > 0) {
            s->u = PyLong_AsUnsignedLongLong(v);
            if (s->u == (unsigned long long)-1 && PyErr_Occurred()) {
                if (!PyErr_ExceptionMatches(PyExc_OverflowError))
                    return -1;
                PyErr_Clear();
                return 1; /* above 2**64 - 1 */
            }
            s->big = 1;
        }
        return 0;
    }
    case K_FLOAT:
        if (!PyFloat_CheckExact(v))
            return 1;
        s->d = PyFloat_AS_DOUBLE(v);
        return 0;
    case K_STR:
        if (!PyUnicode_CheckExact(v))
            return 1;
        s->p = PyUnicode_AsUTF8AndSize(v, &s->n);
        if (!s->p) {
            if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
                return -1;
            PyErr_Clear();
            return 1; /* lone surrogates: the Python path explains */
        }
        return s->n <= 0xFFFFFFFFLL ? 0 : 1;
    case K_BYTES:
        if (!PyBytes_CheckExact(v))
            return 1;
        s->p = PyBytes_AS_STRING(v);
        s->n = PyBytes_GET_SIZE(v);
        return (s->n < oob_threshold && s->n <= 0xFFFFFFFFLL) ? 0 : 1;
    }
    return 1;
}

static Py_ssize_t scalar_size(const Scalar *s)
{
    switch (s->kind) {
    case K_NONE:
    case K_BOOL:
        return 1;
    case K_INT:
        if (s->big) return 9;
        if (s->i >= 0) {
            if (s->i < 128) return 1;
            if (s->i <= 0xFF) return 2;
            if (s->i <= 0xFFFF) return 3;
            if (s->i <= 0xFFFFFFFFLL) return 5;
            return 9;
        }
        if (s->i >= -32) return 1;
        if (s->i >= -128) return 2;
        if (s->i >= -32768) return 3;
        if (s->i >= -2147483648LL) return 5;
        return 9;
    case K_FLOAT:
        return 9;
    case K_STR:
        if (s->n < 32) return 1 + s->n;
        if (s->n <= 0xFF) return 2 + s->n;
        if (s->n <= 0xFFFF) return 3 + s->n;
        return 5 + s->n;
    case K_BYTES:
        if (s->n <= 0xFF) return 2 + s->n;
        if (s->n <= 0xFFFF) return 3 + s->n;
        return 5 + s->n;
    }
    return 0;
}

static unsigned char *put_be(unsigned char *p, unsigned long long v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--) {
        p[i] = (unsigned char)(v & 0xFF);
        v >>= 8;
    }
    return p + bytes;
}

/* Write one scalar as msgpack-python's Packer(use_bin_type=True) writes it. */
static unsigned char *scalar_write(unsigned char *p, const Scalar *s)
{
    switch (s->kind) {
    case K_NONE:
        *p++ = 0xc0;
        return p;
    case K_BOOL:
        *p++ = s->i ? 0xc3 : 0xc2;
        return p;
    case K_INT: {
        if (s->big) {
            *p++ = 0xcf;
            return put_be(p, s->u, 8);
        }
        long long x = s->i;
        if (x >= 0) {
            if (x < 128) { *p++ = (unsigned char)x; return p; }
            if (x <= 0xFF) { *p++ = 0xcc; return put_be(p, (unsigned long long)x, 1); }
            if (x <= 0xFFFF) { *p++ = 0xcd; return put_be(p, (unsigned long long)x, 2); }
            if (x <= 0xFFFFFFFFLL) { *p++ = 0xce; return put_be(p, (unsigned long long)x, 4); }
            *p++ = 0xcf;
            return put_be(p, (unsigned long long)x, 8);
        }
        if (x >= -32) { *p++ = (unsigned char)(x & 0xFF); return p; }
        if (x >= -128) { *p++ = 0xd0; return put_be(p, (unsigned long long)x, 1); }
        if (x >= -32768) { *p++ = 0xd1; return put_be(p, (unsigned long long)x, 2); }
        if (x >= -2147483648LL) { *p++ = 0xd2; return put_be(p, (unsigned long long)x, 4); }
        *p++ = 0xd3;
        return put_be(p, (unsigned long long)x, 8);
    }
    case K_FLOAT: {
        uint64_t bits;
        memcpy(&bits, &s->d, 8);
        *p++ = 0xcb;
        return put_be(p, bits, 8);
    }
    case K_STR:
        if (s->n < 32) *p++ = (unsigned char)(0xa0 | s->n);
        else if (s->n <= 0xFF) { *p++ = 0xd9; p = put_be(p, (unsigned long long)s->n, 1); }
        else if (s->n <= 0xFFFF) { *p++ = 0xda; p = put_be(p, (unsigned long long)s->n, 2); }
        else { *p++ = 0xdb; p = put_be(p, (unsigned long long)s->n, 4); }
        memcpy(p, s->p, (size_t)s->n);
        return p + s->n;
    case K_BYTES:
        if (s->n <= 0xFF) { *p++ = 0xc4; p = put_be(p, (unsigned long long)s->n, 1); }
        else if (s->n <= 0xFFFF) { *p++ = 0xc5; p = put_be(p, (unsigned long long)s->n, 2); }
        else { *p++ = 0xc6; p = put_be(p, (unsigned long long)s->n, 4); }
        memcpy(p, s->p, (size_t)s->n);
        return p + s->n;
    }
    return p;
}

static Py_ssize_t array_header_size(Py_ssize_t n)
{
    return n < 16 ? 1 : (n <= 0xFFFF ? 3 : 5);
}

static unsigned char *array_header(unsigned char *p, Py_ssize_t n)
{
    if (n < 16) { *p++ = (unsigned char)(0x90 | n); return p; }
    if (n <= 0xFFFF) { *p++ = 0xdc; return put_be(p, (unsigned long long)n, 2); }
    *p++ = 0xdd;
    return put_be(p, (unsigned long long)n, 4);
}

static unsigned char *frame_header(unsigned char *p, int type, int flags, uint32_t call_id, uint32_t body_len)
{
    p[0] = VERSION;
    p[1] = (unsigned char)type;
    p[2] = (unsigned char)flags;
    p[3] = 0;
    uint32_t le[3] = {call_id, body_len, 0};
    for (int w = 0; w < 3; w++)
        for (int b = 0; b < 4; b++)
            p[4 + 4 * w + b] = (unsigned char)(le[w] >> (8 * b));
    return p + HEADER_SIZE;
}

static uint32_t get_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static unsigned long long get_be(const unsigned char *p, int bytes)
{
    unsigned long long v = 0;
    for (int i = 0; i < bytes; i++)
        v = v << 8 | p[i];
    return v;
}

/* A REQUEST frame: header, `prefix` (array header, uuid, major, minor, opnum), the
 * arguments as an array, an empty out-of-band list. 1 when an argument does not take this
 * path (nothing raised), -1 on error. */
static int build_request(PyObject *prefix, int flags, uint32_t call_id, PyObject *const *args, Py_ssize_t nargs,
                         const unsigned char *kinds, Py_ssize_t oob_threshold, PyObject **out)
{
    Scalar sc[MAX_PARAMS];
    Py_ssize_t body = PyBytes_GET_SIZE(prefix) + array_header_size(nargs) + 1;
    for (Py_ssize_t i = 0; i < nargs; i++) {
        int r = scalar_of(args[i], kinds[i], oob_threshold, &sc[i]);
        if (r)
            return r;
        body += scalar_size(&sc[i]);
    }
    if (body > 0xFFFFFFFFLL - HEADER_SIZE)
        return 1;
    PyObject *b = PyBytes_FromStringAndSize(NULL, HEADER_SIZE + body);
    if (!b)
        return -1;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(b);
    p = frame_header(p, T_REQUEST, flags, call_id, (uint32_t)body);
    memcpy(p, PyBytes_AS_STRING(prefix), (size_t)PyBytes_GET_SIZE(prefix));
    p += PyBytes_GET_SIZE(prefix);
    p = array_header(p, nargs);
    for (Py_ssize_t i = 0; i < nargs; i++)
        p = scalar_write(p, &sc[i]);
    *p = 0x90;
    *out = b;
    return 0;
}

/* A RESPONSE frame: [result, []]. 1 when the result does not take this path. */
static int build_response(int flags, uint32_t call_id, PyObject *result, int kind, Py_ssize_t oob_threshold,
                          PyObject **out)
{
    Scalar s;
    int r = scalar_of(result, kind, oob_threshold, &s);
    if (r)
        return r;
    Py_ssize_t body = 2 + scalar_size(&s);
    if (body > 0xFFFFFFFFLL - HEADER_SIZE)
        return 1;
    PyObject *b = PyBytes_FromStringAndSize(NULL, HEADER_SIZE + body);
    if (!b)
        return -1;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(b);
    p = frame_header(p, T_RESPONSE, flags, call_id, (uint32_t)body);
    *p++ = 0x92;
    p = scalar_write(p, &s);
    *p = 0x90;
    *out = b;
    return 0;
}

/* ------------------------------------------------------------------ msgpack decoding */

/* Read one scalar of `kind` at p[0..end). Returns a new reference and advances *pp; NULL
 * with nothing raised when the bytes hold anything else (another type, truncated,
 * invalid UTF-8); NULL with an exception on a real error (memory). */
static PyObject *scalar_read(const unsigned char **pp, const unsigned char *end, int kind)
{
    const unsigned char *p = *pp;
    if (p >= end)
        return NULL;
    unsigned char t = *p++;
    PyObject *v = NULL;
    switch (kind) {
    case K_NONE:
        if (t != 0xc0) return NULL;
        v = Py_NewRef(Py_None);
        break;
    case K_BOOL:
        if (t == 0xc2) v = Py_NewRef(Py_False);
        else if (t == 0xc3) v = Py_NewRef(Py_True);
        else return NULL;
        break;
    case K_INT: {
        if (t < 0x80) { v = PyLong_FromLong(t); break; }
        if (t >= 0xe0) { v = PyLong_FromLong((long)(signed char)t); break; }
        int n;
        int sign;
        switch (t) {
        case 0xcc: n = 1; sign = 0; break;
        case 0xcd: n = 2; sign = 0; break;
        case 0xce: n = 4; sign = 0; break;
        case 0xcf: n = 8; sign = 0; break;
        case 0xd0: n = 1; sign = 1; break;
        case 0xd1: n = 2; sign = 1; break;
        case 0xd2: n = 4; sign = 1; break;
        case 0xd3: n = 8; sign = 1; break;
        default: return NULL;
        }
        if (end - p < n) return NULL;
        unsigned long long u = get_be(p, n);
        p += n;
        if (!sign) {
            v = PyLong_FromUnsignedLongLong(u);
        } else {
            long long x;
            if (n == 1) x = (signed char)u;
            else if (n == 2) x = (int16_t)u;
            else if (n == 4) x = (int32_t)u;
            else x = (long long)u;
            v = PyLong_FromLongLong(x);
        }
        break;
    }
    case K_FLOAT:
        if (t == 0xcb) {
            if (end - p < 8) return NULL;
            uint64_t bits = get_be(p, 8);
            double d;
            memcpy(&d, &bits, 8);
            p += 8;
            v = PyFloat_FromDouble(d);
        } else if (t == 0xca) {
            if (end - p < 4) return NULL;
            uint32_t bits = (uint32_t)get_be(p, 4);
            float f;
            memcpy(&f, &bits, 4);
            p += 4;
            v = PyFloat_FromDouble((double)f);
        } else {
            return NULL;
        }
        break;
    case K_STR:
    case K_BYTES: {
        unsigned long long n;
        if (kind == K_STR && (t & 0xe0) == 0xa0) n = t & 0x1f;
        else {
            int w;
            if (kind == K_STR) w = t == 0xd9 ? 1 : t == 0xda ? 2 : t == 0xdb ? 4 : 0;
            else w = t == 0xc4 ? 1 : t == 0xc5 ? 2 : t == 0xc6 ? 4 : 0;
            if (!w || end - p < w) return NULL;
            n = get_be(p, w);
            p += w;
        }
        if ((unsigned long long)(end - p) < n) return NULL;
        if (kind == K_BYTES) {
            v = PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)n);
        } else {
            v = PyUnicode_DecodeUTF8((const char *)p, (Py_ssize_t)n, NULL);
            if (!v) {
                if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
                    return NULL;
                PyErr_Clear();
                return NULL;
            }
        }
        p += n;
        break;
    }
    default:
        return NULL;
    }
    if (v)
        *pp = p;
    return v;
}

/* An array header with exactly `n` items at p, advancing; 0 if so. */
static int expect_array(const unsigned char **pp, const unsigned char *end, Py_ssize_t n)
{
    const unsigned char *p = *pp;
    if (p >= end) return -1;
    unsigned char t = *p++;
    unsigned long long got;
    if ((t & 0xf0) == 0x90) got = t & 0x0f;
    else if (t == 0xdc) { if (end - p < 2) return -1; got = get_be(p, 2); p += 2; }
    else if (t == 0xdd) { if (end - p < 4) return -1; got = get_be(p, 4); p += 4; }
    else return -1;
    if (got != (unsigned long long)n) return -1;
    *pp = p;
    return 0;
}

/* A frame header of `type` without out-of-band bytes whose flags are within `flags_ok`
 * and whose body fills the rest of the frame; 0 and the fields, else -1. */
static int read_header(const unsigned char *raw, Py_ssize_t len, int type, int flags_ok, int *flags,
                       uint32_t *call_id)
{
    if (len < HEADER_SIZE || raw[0] != VERSION || raw[1] != type || raw[3] || (raw[2] & ~flags_ok))
        return -1;
    uint32_t body_len = get_le32(raw + 8);
    if (get_le32(raw + 12) || (unsigned long long)body_len + HEADER_SIZE != (unsigned long long)len)
        return -1;
    *flags = raw[2];
    *call_id = get_le32(raw + 4);
    return 0;
}

/* The result of a plain RESPONSE to (flags, call_id) as `kind`: a new reference; NULL with
 * nothing raised for anything else. */
static PyObject *read_response(PyObject *raw, int flags, uint32_t call_id, int kind)
{
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(raw);
    Py_ssize_t len = PyBytes_GET_SIZE(raw);
    int got_flags;
    uint32_t got_id;
    if (read_header(p, len, T_RESPONSE, F_CALLBACK, &got_flags, &got_id) || got_flags != flags ||
        got_id != call_id)
        return NULL;
    const unsigned char *end = p + len;
    p += HEADER_SIZE;
    if (expect_array(&p, end, 2))
        return NULL;
    PyObject *v = scalar_read(&p, end, kind);
    if (!v)
        return NULL;
    if (end - p != 1 || *p != 0x90) {
        Py_DECREF(v);
        return NULL;
    }
    return v;
}

/* The length of a plain REQUEST's prefix (array of 6, 16-byte uuid, major, minor, opnum as
 * unsigned 16-bit values), or -1. */
static Py_ssize_t request_prefix_len(const unsigned char *body, Py_ssize_t len)
{
    const unsigned char *p = body, *end = body + len;
    if (end - p < 19 || p[0] != 0x96 || p[1] != 0xc4 || p[2] != 16)
        return -1;
    p += 19;
    for (int i = 0; i < 3; i++) {
        if (p >= end) return -1;
        unsigned char t = *p++;
        if (t < 0x80) continue;
        int w = t == 0xcc ? 1 : t == 0xcd ? 2 : 0;
        if (!w || end - p < w) return -1;
        p += w;
    }
    return p - body;
}

/* ------------------------------------------------------------------ Link: one client connection */

typedef struct {
    PyObject_HEAD
    PyObject *send;  /* send(frame) of the ring */
    PyObject *recv;  /* recv(timeout) of the ring */
    Py_ssize_t limit; /* the peer's frame cap (bytes) */
} Link;

static int link_init(Link *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"send", "recv", "limit", NULL};
    PyObject *send, *recv;
    Py_ssize_t limit;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOn", kwlist, &send, &recv, &limit))
        return -1;
    Py_XSETREF(self->send, Py_NewRef(send));
    Py_XSETREF(self->recv, Py_NewRef(recv));
    self->limit = limit;
    return 0;
}

static int link_traverse(Link *self, visitproc visit, void *arg)
{
    Py_VISIT(self->send);
    Py_VISIT(self->recv);
    return 0;
}

static int link_clear(Link *self)
{
    Py_CLEAR(self->send);
    Py_CLEAR(self->recv);
    return 0;
}

static PyTypeObject LinkType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "winipc._native._rpcfast.Link",
    .tp_basicsize = sizeof(Link),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Link(send, recv, limit): how a client connection's plain calls reach its ring.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)link_init,
    .tp_traverse = (traverseproc)link_traverse,
    .tp_clear = (inquiry)link_clear,
    .tp_dealloc = gc_dealloc,
};

/* ------------------------------------------------------------------ Pool: a binding's idle connections */

typedef struct {
    PyObject_HEAD
    PyObject *idle; /* list; calls take from the end */
    int closed;
} Pool;

static PyObject *pool_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) || (kwds && PyDict_GET_SIZE(kwds))) {
        PyErr_SetString(PyExc_TypeError, "Pool() takes no arguments");
        return NULL;
    }
    Pool *self = (Pool *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    self->idle = PyList_New(0);
    if (!self->idle) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* A connection from the pool (new reference), or NULL with nothing raised. */
static PyObject *pool_pop(Pool *self)
{
    Py_ssize_t n = PyList_GET_SIZE(self->idle);
    if (self->closed || n == 0)
        return NULL;
    PyObject *c = Py_NewRef(PyList_GET_ITEM(self->idle, n - 1));
    if (PyList_SetSlice(self->idle, n - 1, n, NULL) < 0) {
        Py_DECREF(c);
        PyErr_Clear();
        return NULL;
    }
    return c;
}

/* 1 when pooled, 0 when the pool is closed (the caller closes it), -1 on error. */
static int pool_push(Pool *self, PyObject *c)
{
    if (self->closed)
        return 0;
    return PyList_Append(self->idle, c) < 0 ? -1 : 1;
}

static PyObject *pool_take(Pool *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *c = pool_pop(self);
    return c ? c : Py_NewRef(Py_None);
}

static PyObject *pool_put(Pool *self, PyObject *c)
{
    int r = pool_push(self, c);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

static PyObject *pool_put_cold(Pool *self, PyObject *conns)
{
    if (self->closed)
        Py_RETURN_FALSE;
    if (PyList_SetSlice(self->idle, 0, 0, conns) < 0)
        return NULL;
    Py_RETURN_TRUE;
}

static PyObject *pool_close(Pool *self, PyObject *Py_UNUSED(ignored))
{
    self->closed = 1;
    PyObject *was = self->idle;
    self->idle = PyList_New(0);
    if (!self->idle) {
        self->idle = was;
        return NULL;
    }
    return was;
}

static Py_ssize_t pool_len(Pool *self)
{
    return PyList_GET_SIZE(self->idle);
}

static PyObject *pool_get_closed(Pool *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->closed);
}

static int pool_traverse(Pool *self, visitproc visit, void *arg)
{
    Py_VISIT(self->idle);
    return 0;
}

static int pool_clear(Pool *self)
{
    Py_CLEAR(self->idle);
    return 0;
}

static PyMethodDef pool_methods[] = {
    {"take", (PyCFunction)pool_take, METH_NOARGS, "take() -> the most recently pooled connection, or None"},
    {"put", (PyCFunction)pool_put, METH_O, "put(conn) -> True when pooled, False when the pool is closed"},
    {"put_cold", (PyCFunction)pool_put_cold, METH_O,
     "put_cold(conns) -> put a list of connections behind the others; False when closed"},
    {"close", (PyCFunction)pool_close, METH_NOARGS, "close() -> the idle connections; later puts refuse"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef pool_getset[] = {
    {"closed", (getter)pool_get_closed, NULL, "True after close().", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods pool_as_sequence = {
    .sq_length = (lenfunc)pool_len,
};

static PyTypeObject PoolType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "winipc._native._rpcfast.Pool",
    .tp_basicsize = sizeof(Pool),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Pool(): a binding's idle connections (each operation atomic under the GIL).",
    .tp_new = pool_new,
    .tp_traverse = (traverseproc)pool_traverse,
    .tp_clear = (inquiry)pool_clear,
    .tp_dealloc = gc_dealloc,
    .tp_methods = pool_methods,
    .tp_getset = pool_getset,
    .tp_as_sequence = &pool_as_sequence,
};

/* ------------------------------------------------------------------ Client: what a proxy calls through */

typedef struct {
    PyObject_HEAD
    Pool *pool;
    PyObject *timeout; /* seconds (float) or None */
    PyObject *resume;  /* resume(conn, method, timeout, stage, flags, call_id, payload) */
    Py_ssize_t oob_threshold;
} Client;

enum { STAGE_SEND = 0, STAGE_RECV = 1, STAGE_FRAME = 2 };

static int client_init(Client *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"pool", "timeout", "resume", "oob_threshold", NULL};
    PyObject *pool, *timeout, *resume;
    Py_ssize_t th;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OOn", kwlist, &PoolType, &pool, &timeout, &resume, &th))
        return -1;
    Py_XSETREF(self->pool, (Pool *)Py_NewRef(pool));
    Py_XSETREF(self->timeout, Py_NewRef(timeout));
    Py_XSETREF(self->resume, Py_NewRef(resume));
    self->oob_threshold = th;
    return 0;
}

static int client_traverse(Client *self, visitproc visit, void *arg)
{
    Py_VISIT(self->pool);
    Py_VISIT(self->timeout);
    Py_VISIT(self->resume);
    return 0;
}

static int client_clear(Client *self)
{
    Py_CLEAR(self->pool);
    Py_CLEAR(self->timeout);
    Py_CLEAR(self->resume);
    return 0;
}

static PyTypeObject ClientType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "winipc._native._rpcfast.Client",
    .tp_basicsize = sizeof(Client),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Client(pool, timeout, resume, oob_threshold): a proxy's way to its binding's connections.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)client_init,
    .tp_traverse = (traverseproc)client_traverse,
    .tp_clear = (inquiry)client_clear,
    .tp_dealloc = gc_dealloc,
};

/* ------------------------------------------------------------------ FastMethod: a proxy's method */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *slow;    /* the Python method: everything this one hands on */
    PyObject *method;  /* the MethodSpec, for resume */
    PyObject *prefix;  /* bytes: the REQUEST body's fixed start */
    Py_ssize_t nparams;
    unsigned char kinds[MAX_PARAMS];
    int rkind;         /* the result's kind */
    int oneway;
} FastMethod;

static uint32_t next_call_id = 0x40000000u; /* apart from the Python path's ids; either is fine */

static PyObject *call_slow(FastMethod *fm, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    return PyObject_Vectorcall(fm->slow, args, nargsf, kwnames);
}

static PyObject *resume(Client *cl, PyObject *conn, FastMethod *fm, int stage, int flags, uint32_t call_id,
                        PyObject *payload)
{
    PyObject *stage_o = PyLong_FromLong(stage), *flags_o = PyLong_FromLong(flags),
             *id_o = PyLong_FromUnsignedLong(call_id);
    PyObject *res = NULL;
    if (stage_o && flags_o && id_o) {
        PyObject *argv[] = {conn, fm->method, cl->timeout, stage_o, flags_o, id_o, payload};
        res = PyObject_Vectorcall(cl->resume, argv, 7, NULL);
    }
    Py_XDECREF(stage_o);
    Py_XDECREF(flags_o);
    Py_XDECREF(id_o);
    return res;
}

/* Close a connection that cannot go back to the pool (as Binding._release does), keeping
 * any error being raised; a failure to close is reported as unraisable. */
static void drop(PyObject *conn)
{
    PyObject *exc = PyErr_Occurred() ? fetch_exc() : NULL;
    PyObject *ch = PyObject_GetAttrString(conn, "ch");
    PyObject *r = ch ? PyObject_CallMethod(ch, "close", NULL) : NULL;
    Py_XDECREF(r);
    Py_XDECREF(ch);
    if (!r)
        PyErr_WriteUnraisable(conn);
    if (exc)
        restore_exc(exc);
}

/* Put `conn` back in the pool, or close it when the binding was closed meanwhile. */
static int release(Client *cl, PyObject *conn)
{
    int r = pool_push(cl->pool, conn);
    if (r == 0)
        drop(conn);
    return r < 0 ? -1 : 0;
}

static PyObject *fm_vectorcall(FastMethod *fm, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames || nargs != fm->nparams + 1)
        return call_slow(fm, args, nargsf, kwnames);
    PyObject *cl_o = PyObject_GetAttr(args[0], s_rpc_fast);
    if (!cl_o) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return NULL;
        PyErr_Clear();
        return call_slow(fm, args, nargsf, kwnames);
    }
    if (!Py_IS_TYPE(cl_o, &ClientType)) {
        Py_DECREF(cl_o);
        return call_slow(fm, args, nargsf, kwnames);
    }
    Client *cl = (Client *)cl_o;
    PyObject *conn = pool_pop(cl->pool);
    if (!conn) {
        Py_DECREF(cl_o);
        return call_slow(fm, args, nargsf, kwnames); /* it opens a connection and pools it */
    }
    PyObject *link_o = PyObject_GetAttr(conn, s_fast);
    if (!link_o || !Py_IS_TYPE(link_o, &LinkType)) {
        if (!link_o)
            PyErr_Clear();
        Py_XDECREF(link_o);
        goto give_back_and_slow;
    }
    Link *link = (Link *)link_o;
    uint32_t call_id = next_call_id++;
    int flags = fm->oneway ? F_ONEWAY : 0;
    PyObject *frame = NULL;
    int r = build_request(fm->prefix, flags, call_id, args + 1, fm->nparams, fm->kinds, cl->oob_threshold, &frame);
    if (r < 0) {
        Py_DECREF(link_o);
        goto give_back_and_fail;
    }
    if (r > 0 || PyBytes_GET_SIZE(frame) + MAC_SIZE > link->limit) {
        Py_XDECREF(frame);
        Py_DECREF(link_o);
        goto give_back_and_slow; /* the Python path checks, names and sends it */
    }
    PyObject *res = PyObject_Vectorcall(link->send, &frame, 1, NULL);
    if (!res) {
        PyObject *exc = fetch_exc();
        if (!PyErr_GivenExceptionMatches(exc, PyExc_Exception)) {
            /* KeyboardInterrupt, SystemExit: raised at once, the connection dropped, as in Python */
            Py_DECREF(frame);
            Py_DECREF(link_o);
            drop(conn);
            restore_exc(exc);
            Py_DECREF(conn);
            Py_DECREF(cl_o);
            return NULL;
        }
        Py_DECREF(exc);
        res = resume(cl, conn, fm, STAGE_SEND, flags, call_id, frame);
        Py_DECREF(frame);
        Py_DECREF(link_o);
        Py_DECREF(conn);
        Py_DECREF(cl_o);
        return res;
    }
    Py_DECREF(res);
    Py_DECREF(frame);
    if (fm->oneway) {
        Py_DECREF(link_o);
        res = Py_NewRef(Py_None);
        goto done;
    }
    PyObject *raw = PyObject_Vectorcall(link->recv, &cl->timeout, 1, NULL);
    Py_DECREF(link_o);
    if (!raw) {
        PyObject *exc = fetch_exc();
        if (!PyErr_GivenExceptionMatches(exc, PyExc_Exception)) {
            drop(conn); /* the answer may still come: the connection cannot be used again */
            restore_exc(exc);
            Py_DECREF(conn);
            Py_DECREF(cl_o);
            return NULL;
        }
        res = resume(cl, conn, fm, STAGE_RECV, flags, call_id, exc);
        Py_DECREF(exc);
        Py_DECREF(conn);
        Py_DECREF(cl_o);
        return res;
    }
    res = PyBytes_CheckExact(raw) ? read_response(raw, flags, call_id, fm->rkind) : NULL;
    if (!res) {
        if (PyErr_Occurred()) {
            Py_DECREF(raw);
            goto give_back_and_fail;
        }
        res = resume(cl, conn, fm, STAGE_FRAME, flags, call_id, raw);
        Py_DECREF(raw);
        Py_DECREF(conn);
        Py_DECREF(cl_o);
        return res;
    }
    Py_DECREF(raw);
done:
    if (release(cl, conn) < 0)
        Py_CLEAR(res);
    Py_DECREF(conn);
    Py_DECREF(cl_o);
    return res;

give_back_and_slow:
    if (release(cl, conn) < 0) {
        Py_DECREF(conn);
        Py_DECREF(cl_o);
        return NULL;
    }
    Py_DECREF(conn);
    Py_DECREF(cl_o);
    return call_slow(fm, args, nargsf, kwnames);

give_back_and_fail: {
        PyObject *exc = fetch_exc();
        release(cl, conn);
        restore_exc(exc);
        Py_DECREF(conn);
        Py_DECREF(cl_o);
        return NULL;
    }
}

static PyObject *fm_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"slow", "method", "prefix", "kinds", "result", "oneway", NULL};
    PyObject *slow, *method, *prefix, *kinds, *result;
    int oneway;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO!OOp", kwlist, &slow, &method, &PyBytes_Type, &prefix,
                                     &kinds, &result, &oneway))
        return NULL;
    FastMethod *fm = (FastMethod *)type->tp_alloc(type, 0);
    if (!fm)
        return NULL;
    if (kinds_from(kinds, fm->kinds, &fm->nparams) < 0) {
        Py_DECREF(fm);
        return NULL;
    }
    fm->rkind = kind_of_type(result);
    if (fm->rkind < 0) {
        Py_DECREF(fm);
        PyErr_SetString(PyExc_ValueError, "result must be bool, int, float, str, bytes or NoneType");
        return NULL;
    }
    fm->slow = Py_NewRef(slow);
    fm->method = Py_NewRef(method);
    fm->prefix = Py_NewRef(prefix);
    fm->oneway = oneway;
    fm->vectorcall = (vectorcallfunc)fm_vectorcall;
    return (PyObject *)fm;
}

static PyObject *fm_descr_get(PyObject *self, PyObject *obj, PyObject *Py_UNUSED(type))
{
    if (obj == NULL || obj == Py_None)
        return Py_NewRef(self);
    return PyMethod_New(self, obj);
}

static int fm_traverse(FastMethod *fm, visitproc visit, void *arg)
{
    Py_VISIT(fm->slow);
    Py_VISIT(fm->method);
    Py_VISIT(fm->prefix);
    return 0;
}

static int fm_clear(FastMethod *fm)
{
    Py_CLEAR(fm->slow);
    Py_CLEAR(fm->method);
    Py_CLEAR(fm->prefix);
    return 0;
}

static PyObject *fm_get_name(FastMethod *fm, void *Py_UNUSED(closure))
{
    return PyObject_GetAttrString(fm->slow, "__name__");
}

static PyObject *fm_get_doc(FastMethod *fm, void *Py_UNUSED(closure))
{
    return PyObject_GetAttrString(fm->slow, "__doc__");
}

static PyObject *fm_get_slow(FastMethod *fm, void *Py_UNUSED(closure))
{
    return Py_NewRef(fm->slow);
}

static PyGetSetDef fm_getset[] = {
    {"__name__", (getter)fm_get_name, NULL, NULL, NULL},
    {"__doc__", (getter)fm_get_doc, NULL, NULL, NULL},
    {"slow", (getter)fm_get_slow, NULL, "The Python method this one hands calls on to.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject FastMethodType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "winipc._native._rpcfast.FastMethod",
    .tp_basicsize = sizeof(FastMethod),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_doc = "FastMethod(slow, method, prefix, kinds, result, oneway): a proxy method taking the C path.",
    .tp_new = fm_new,
    .tp_vectorcall_offset = offsetof(FastMethod, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_descr_get = fm_descr_get,
    .tp_traverse = (traverseproc)fm_traverse,
    .tp_clear = (inquiry)fm_clear,
    .tp_dealloc = gc_dealloc,
    .tp_getset = fm_getset,
};

/* ------------------------------------------------------------------ Op and ServeLoop: the server */

typedef struct {
    PyObject_HEAD
    PyObject *func;   /* the implementation's bound method */
    PyObject *method; /* the MethodSpec, for reply */
    Py_ssize_t nparams;
    unsigned char kinds[MAX_PARAMS];
    int rkind;        /* -1: the result goes through reply() */
    int oneway;
} Op;

static PyObject *op_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"func", "method", "kinds", "result", "oneway", NULL};
    PyObject *func, *method, *kinds, *result;
    int oneway;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOp", kwlist, &func, &method, &kinds, &result, &oneway))
        return NULL;
    Op *op = (Op *)type->tp_alloc(type, 0);
    if (!op)
        return NULL;
    if (kinds_from(kinds, op->kinds, &op->nparams) < 0) {
        Py_DECREF(op);
        return NULL;
    }
    op->rkind = result == Py_None ? -1 : kind_of_type(result);
    if (result != Py_None && op->rkind < 0) {
        Py_DECREF(op);
        PyErr_SetString(PyExc_ValueError, "result must be a scalar type or None (reply() encodes it)");
        return NULL;
    }
    op->func = Py_NewRef(func);
    op->method = Py_NewRef(method);
    op->oneway = oneway;
    return (PyObject *)op;
}

static int op_traverse(Op *op, visitproc visit, void *arg)
{
    Py_VISIT(op->func);
    Py_VISIT(op->method);
    return 0;
}

static int op_clear(Op *op)
{
    Py_CLEAR(op->func);
    Py_CLEAR(op->method);
    return 0;
}

static PyTypeObject OpType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "winipc._native._rpcfast.Op",
    .tp_basicsize = sizeof(Op),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Op(func, method, kinds, result, oneway): a server method the C path may run "
              "(result None: reply() encodes the result).",
    .tp_new = op_new,
    .tp_traverse = (traverseproc)op_traverse,
    .tp_clear = (inquiry)op_clear,
    .tp_dealloc = gc_dealloc,
};

typedef struct {
    PyObject_HEAD
    PyObject *send, *recv;  /* the ring's */
    PyObject *server;       /* its _generation invalidates `table` */
    PyObject *generation;   /* the server's _generation when `table` was filled */
    PyObject *table;        /* dict: REQUEST prefix bytes -> Op */
    PyObject *current;      /* threading.local whose `call` is (make_call, call_id) during a call */
    PyObject *make_call;
    PyObject *reply;        /* reply(method, flags, call_id, result) */
    PyObject *fault;        /* fault(call_id, flags, exc, executed) */
    Py_ssize_t limit;       /* the client's frame cap (bytes) */
    Py_ssize_t oob_threshold;
    unsigned long long calls; /* calls run here */
} ServeLoop;

static int sl_init(ServeLoop *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"send", "recv", "server", "current", "make_call", "reply", "fault", "limit",
                             "oob_threshold", NULL};
    PyObject *send, *recv, *server, *current, *make_call, *reply, *fault;
    Py_ssize_t limit, th;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOOOOnn", kwlist, &send, &recv, &server, &current, &make_call,
                                     &reply, &fault, &limit, &th))
        return -1;
    PyObject *table = PyDict_New();
    if (!table)
        return -1;
    Py_XSETREF(self->table, table);
    Py_XSETREF(self->send, Py_NewRef(send));
    Py_XSETREF(self->recv, Py_NewRef(recv));
    Py_XSETREF(self->server, Py_NewRef(server));
    Py_XSETREF(self->current, Py_NewRef(current));
    Py_XSETREF(self->make_call, Py_NewRef(make_call));
    Py_XSETREF(self->reply, Py_NewRef(reply));
    Py_XSETREF(self->fault, Py_NewRef(fault));
    Py_CLEAR(self->generation);
    self->limit = limit;
    self->oob_threshold = th;
    return 0;
}

/* learn(prefix, op, generation): calls starting with `prefix` run `op` while the server's
 * _generation is `generation`. */
static PyObject *sl_learn(ServeLoop *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyBytes_CheckExact(args[0]) || !Py_IS_TYPE(args[1], &OpType)) {
        PyErr_SetString(PyExc_TypeError, "learn(prefix: bytes, op: Op, generation)");
        return NULL;
    }
    int same = self->generation == NULL ? 0 : PyObject_RichCompareBool(self->generation, args[2], Py_EQ);
    if (same < 0)
        return NULL;
    if (!same) {
        PyDict_Clear(self->table);
        Py_XSETREF(self->generation, Py_NewRef(args[2]));
    }
    if (PyDict_SetItem(self->table, args[0], args[1]) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* The Op for a plain REQUEST body, borrowed, or NULL (nothing raised) when unknown. */
static PyObject *sl_find(ServeLoop *self, const unsigned char *body, Py_ssize_t body_len, Py_ssize_t *prefix_len)
{
    if (!self->generation)
        return NULL;
    Py_ssize_t n = request_prefix_len(body, body_len);
    if (n < 0)
        return NULL;
    PyObject *gen = PyObject_GetAttr(self->server, s_generation);
    if (!gen) {
        PyErr_Clear();
        return NULL;
    }
    int same = PyObject_RichCompareBool(gen, self->generation, Py_EQ);
    Py_DECREF(gen);
    if (same != 1) {
        PyErr_Clear();
        PyDict_Clear(self->table);
        Py_CLEAR(self->generation);
        return NULL;
    }
    PyObject *key = PyBytes_FromStringAndSize((const char *)body, n);
    if (!key) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *op = PyDict_GetItemWithError(self->table, key);
    Py_DECREF(key);
    if (!op)
        PyErr_Clear();
    *prefix_len = n;
    return op;
}

/* Run one frame if it is a plain call this loop knows: 1 done, 0 not taken (nothing done,
 * nothing raised), -1 error (an exception to propagate: not an Exception, or a failure of
 * reply/fault themselves). */
static int sl_run_one(ServeLoop *self, PyObject *raw)
{
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(raw);
    Py_ssize_t len = PyBytes_GET_SIZE(raw);
    int flags;
    uint32_t call_id;
    if (read_header(p, len, T_REQUEST, F_ONEWAY, &flags, &call_id))
        return 0;
    const unsigned char *body = p + HEADER_SIZE, *end = p + len;
    Py_ssize_t plen = 0;
    Op *op = (Op *)sl_find(self, body, len - HEADER_SIZE, &plen);
    if (!op || op->oneway != (flags & F_ONEWAY))
        return 0;
    Py_INCREF(op);
    const unsigned char *q = body + plen;
    PyObject *argv[MAX_PARAMS];
    Py_ssize_t got = 0;
    int taken = 0;
    if (expect_array(&q, end, op->nparams) == 0) {
        for (; got < op->nparams; got++) {
            argv[got] = scalar_read(&q, end, op->kinds[got]);
            if (!argv[got])
                break;
        }
        taken = got == op->nparams && end - q == 1 && *q == 0x90;
    }
    if (!taken) {
        for (Py_ssize_t i = 0; i < got; i++)
            Py_DECREF(argv[i]);
        Py_DECREF(op);
        if (PyErr_Occurred())
            return -1;
        return 0;
    }
    int rc = -1;
    PyObject *result = NULL, *marker = NULL, *id_o = PyLong_FromUnsignedLong(call_id);
    if (!id_o)
        goto out;
    marker = PyTuple_Pack(2, self->make_call, id_o);
    if (!marker || PyObject_SetAttr(self->current, s_call, marker) < 0)
        goto out;
    result = PyObject_Vectorcall(op->func, argv, (size_t)op->nparams, NULL);
    self->calls++;
    {
        PyObject *exc = result ? NULL : fetch_exc();
        if (PyObject_SetAttr(self->current, s_call, Py_None) < 0) {
            Py_XDECREF(exc);
            goto out;
        }
        if (exc) {
            if (!PyErr_GivenExceptionMatches(exc, PyExc_Exception)) {
                restore_exc(exc); /* KeyboardInterrupt, SystemExit: as the Python path */
                goto out;
            }
            if (op->oneway) {
                Py_DECREF(exc);
                rc = 1;
                goto out;
            }
            PyObject *fl = PyLong_FromLong(flags);
            PyObject *r = NULL;
            if (fl) {
                PyObject *fargv[] = {id_o, fl, exc, Py_True};
                r = PyObject_Vectorcall(self->fault, fargv, 4, NULL);
                Py_DECREF(fl);
            }
            Py_DECREF(exc);
            if (!r)
                goto out;
            Py_DECREF(r);
            rc = 1;
            goto out;
        }
    }
    if (op->oneway) {
        rc = 1;
        goto out;
    }
    PyObject *frame = NULL;
    int b = op->rkind < 0 ? 1 : build_response(0, call_id, result, op->rkind, self->oob_threshold, &frame);
    if (b < 0)
        goto out;
    if (b == 0 && PyBytes_GET_SIZE(frame) + MAC_SIZE <= self->limit) {
        PyObject *r = PyObject_Vectorcall(self->send, &frame, 1, NULL);
        if (r) {
            Py_DECREF(r);
            Py_DECREF(frame);
            rc = 1;
            goto out;
        }
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            Py_DECREF(frame); /* KeyboardInterrupt, SystemExit: raised at once, as in Python */
            goto out;
        }
        PyErr_Clear(); /* reply() sends it again through the pipe, which raises what is wrong */
    }
    Py_XDECREF(frame);
    {
        PyObject *fl = PyLong_FromLong(flags);
        if (!fl)
            goto out;
        PyObject *rargv[] = {op->method, fl, id_o, result};
        PyObject *r = PyObject_Vectorcall(self->reply, rargv, 4, NULL);
        Py_DECREF(fl);
        if (!r)
            goto out;
        Py_DECREF(r);
        rc = 1;
    }
out:
    for (Py_ssize_t i = 0; i < got; i++)
        Py_DECREF(argv[i]);
    Py_XDECREF(result);
    Py_XDECREF(marker);
    Py_XDECREF(id_o);
    Py_DECREF(op);
    return rc;
}

/* run() -> bytes | None: serve plain calls until a frame this loop does not take (returned
 * as received, for the Python path) or an error of the ring (None: the caller receives
 * again through the pipe, which raises what is wrong). */
static PyObject *sl_run(ServeLoop *self, PyObject *Py_UNUSED(ignored))
{
    for (;;) {
        PyObject *raw = PyObject_Vectorcall(self->recv, NULL, 0, NULL);
        if (!raw) {
            PyObject *exc = fetch_exc();
            if (!PyErr_GivenExceptionMatches(exc, PyExc_Exception)) {
                restore_exc(exc);
                return NULL;
            }
            Py_DECREF(exc);
            Py_RETURN_NONE;
        }
        if (!PyBytes_CheckExact(raw))
            return raw;
        int r = sl_run_one(self, raw);
        if (r == 0)
            return raw;
        Py_DECREF(raw);
        if (r < 0)
            return NULL;
    }
}

/* run_one(raw) -> bool: what run() does with one received frame (for tests). */
static PyObject *sl_run_one_py(ServeLoop *self, PyObject *raw)
{
    if (!PyBytes_CheckExact(raw)) {
        PyErr_SetString(PyExc_TypeError, "run_one(raw: bytes)");
        return NULL;
    }
    int r = sl_run_one(self, raw);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

static PyObject *sl_get_calls(ServeLoop *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->calls);
}

static int sl_traverse(ServeLoop *self, visitproc visit, void *arg)
{
    Py_VISIT(self->send);
    Py_VISIT(self->recv);
    Py_VISIT(self->server);
    Py_VISIT(self->generation);
    Py_VISIT(self->table);
    Py_VISIT(self->current);
    Py_VISIT(self->make_call);
    Py_VISIT(self->reply);
    Py_VISIT(self->fault);
    return 0;
}

static int sl_clear(ServeLoop *self)
{
    Py_CLEAR(self->send);
    Py_CLEAR(self->recv);
    Py_CLEAR(self->server);
    Py_CLEAR(self->generation);
    Py_CLEAR(self->table);
    Py_CLEAR(self->current);
    Py_CLEAR(self->make_call);
    Py_CLEAR(self->reply);
    Py_CLEAR(self->fault);
    return 0;
}

static PyMethodDef sl_methods[] = {
    {"run", (PyCFunction)sl_run, METH_NOARGS,
     "run() -> bytes | None: serve plain calls; return a frame the Python path must handle, or "
     "None when the ring raised (receive again through the pipe)"},
    {"run_one", (PyCFunction)sl_run_one_py, METH_O, "run_one(raw) -> True when the frame was served here"},
    {"learn", (PyCFunction)(void (*)(void))sl_learn, METH_FASTCALL,
     "learn(prefix, op, generation): run calls starting with prefix here while the server's "
     "_generation equals generation"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef sl_getset[] = {
    {"calls", (getter)sl_get_calls, NULL, "Calls run by this loop.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ServeLoopType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "winipc._native._rpcfast.ServeLoop",
    .tp_basicsize = sizeof(ServeLoop),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "ServeLoop(send, recv, server, current, make_call, reply, fault, limit, oob_threshold): "
              "one server connection's plain calls.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)sl_init,
    .tp_traverse = (traverseproc)sl_traverse,
    .tp_clear = (inquiry)sl_clear,
    .tp_dealloc = gc_dealloc,
    .tp_methods = sl_methods,
    .tp_getset = sl_getset,
};

/* ------------------------------------------------------------------ module functions (for tests) */

static PyObject *mod_request_frame(PyObject *Py_UNUSED(m), PyObject *args)
{
    PyObject *prefix, *values, *kinds;
    int flags;
    unsigned long call_id;
    Py_ssize_t th;
    if (!PyArg_ParseTuple(args, "O!ikOOn", &PyBytes_Type, &prefix, &flags, &call_id, &values, &kinds, &th))
        return NULL;
    unsigned char k[MAX_PARAMS];
    Py_ssize_t nk;
    if (kinds_from(kinds, k, &nk) < 0)
        return NULL;
    PyObject *seq = PySequence_Fast(values, "values must be a sequence");
    if (!seq)
        return NULL;
    if (PySequence_Fast_GET_SIZE(seq) != nk) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "one value per kind");
        return NULL;
    }
    PyObject *out = NULL;
    int r = build_request(prefix, flags & 0xFF, (uint32_t)call_id, PySequence_Fast_ITEMS(seq), nk, k, th, &out);
    Py_DECREF(seq);
    if (r < 0)
        return NULL;
    return r ? Py_NewRef(Py_None) : out;
}

static PyObject *mod_response_frame(PyObject *Py_UNUSED(m), PyObject *args)
{
    PyObject *result, *kind;
    int flags;
    unsigned long call_id;
    Py_ssize_t th;
    if (!PyArg_ParseTuple(args, "ikOOn", &flags, &call_id, &result, &kind, &th))
        return NULL;
    int k = kind_of_type(kind);
    if (k < 0) {
        PyErr_SetString(PyExc_ValueError, "kind must be a scalar type");
        return NULL;
    }
    PyObject *out = NULL;
    int r = build_response(flags & 0xFF, (uint32_t)call_id, result, k, th, &out);
    if (r < 0)
        return NULL;
    return r ? Py_NewRef(Py_None) : out;
}

static PyObject *mod_read_response(PyObject *Py_UNUSED(m), PyObject *args)
{
    PyObject *raw, *kind;
    int flags;
    unsigned long call_id;
    if (!PyArg_ParseTuple(args, "O!ikO", &PyBytes_Type, &raw, &flags, &call_id, &kind))
        return NULL;
    int k = kind_of_type(kind);
    if (k < 0) {
        PyErr_SetString(PyExc_ValueError, "kind must be a scalar type");
        return NULL;
    }
    PyObject *v = read_response(raw, flags, (uint32_t)call_id, k);
    if (!v && !PyErr_Occurred())
        return Py_NewRef(Py_None);
    if (!v)
        return NULL;
    PyObject *t = PyTuple_Pack(1, v);
    Py_DECREF(v);
    return t;
}

static PyMethodDef mod_methods[] = {
    {"request_frame", mod_request_frame, METH_VARARGS,
     "request_frame(prefix, flags, call_id, values, kinds, oob_threshold) -> bytes | None"},
    {"response_frame", mod_response_frame, METH_VARARGS,
     "response_frame(flags, call_id, result, kind, oob_threshold) -> bytes | None"},
    {"read_response", mod_read_response, METH_VARARGS,
     "read_response(raw, flags, call_id, kind) -> (result,) | None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT,
    .m_name = "winipc._native._rpcfast",
    .m_doc = "The C call path of winipc.rpc for plain calls on a local ring (see the source's header).",
    .m_size = -1,
    .m_methods = mod_methods,
};

PyMODINIT_FUNC PyInit__rpcfast(void)
{
    s_rpc_fast = PyUnicode_InternFromString("_rpc_fast");
    s_fast = PyUnicode_InternFromString("fast");
    s_call = PyUnicode_InternFromString("call");
    s_generation = PyUnicode_InternFromString("_generation");
    if (!s_rpc_fast || !s_fast || !s_call || !s_generation)
        return NULL;
    PyTypeObject *types[] = {&LinkType, &PoolType, &ClientType, &FastMethodType, &OpType, &ServeLoopType};
    const char *names[] = {"Link", "Pool", "Client", "FastMethod", "Op", "ServeLoop"};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        if (PyType_Ready(types[i]) < 0)
            return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (!m)
        return NULL;
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (PyModule_AddObjectRef(m, names[i], (PyObject *)types[i]) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    }
    return m;
}
