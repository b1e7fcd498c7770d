/*
 * winipc._native._ring: the shared-memory ring of a local named-pipe connection.
 *
 * One sealed memfd holds two single-producer/single-consumer rings (ring 0 written by side
 * 0, the server; ring 1 by side 1, the client). Payloads travel through the rings; control
 * and liveness stay on the pipe's AF_UNIX socket. docs/fastpath.md specifies the layout,
 * the record format, the wake protocol and the memory-ordering argument; the comments here
 * say why the code is shaped the way it is.
 *
 * The peer is untrusted: it may be another user and may write anything into the shared
 * memory at any time. Every value this side takes from shared memory is loaded once into a
 * local (an atomic load), validated, and only the local is used afterwards. All pointers
 * into a ring are computed from validated locals and stay inside the double mapping, so a
 * hostile peer can make this side raise ValueError, never read or write outside the map.
 *
 * Threads: each side (writer, reader) admits one thread at a time (a busy flag checked with
 * the GIL held; a second thread gets RuntimeError). Endpoint state is only changed with
 * the GIL held; without the GIL a call only waits or copies payload bytes. Every call holds
 * a reference to the mapping object, so close() from another thread never unmaps memory
 * that a running call still uses.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#if !defined(__linux__)
#error "winipc._native._ring needs Linux (sealed memfds and futexes)"
#endif

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <math.h>
#include <poll.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif
#ifndef MFD_CLOEXEC
#error "memfd_create is needed (glibc >= 2.27)"
#endif

/* ------------------------------------------------------------------ layout */

#define RING_MAGIC "WIPCRING"
#define RING_VERSION 1u
#define CTL_OFFSET 4096u   /* ring 0's control block; ring 1's is CTL_STRIDE further */
#define CTL_STRIDE 512u
#define MIN_META 8192u     /* header page + control page; rounded up to the page size */
#define MAX_META (1u << 20)
#define LINE 128           /* 128: Apple/ARM big cores and Intel's adjacent-line prefetch */
#define MIN_CAP (64ull * 1024)
#define MAX_CAP (1024ull * 1024 * 1024)
#define REC 16u            /* record header bytes */
#define KIND_DATA 1u
#define KIND_CONTROL 2u
#define F_FIRST 1u
#define F_LAST 2u
#define MIN_RECORD 4096ull
#define DEFAULT_MAX_MESSAGE (256ll * 1024 * 1024)
#define COPY_NOGIL (16u * 1024) /* copies larger than this release the GIL */
#define SLICE_NS 100000000ll    /* futex sleeps last at most 100 ms, then the socket is checked */
#define MAX_SPIN_NS 10000000000ll

static const char DOORBELL[5] = {0x01, 0x00, 0x00, (char)0x80, 0x03};

typedef struct {
    char magic[8];
    uint32_t version;
    uint32_t header_size; /* bytes before ring 0's data area == data_offset[0] */
    uint64_t capacity;
    uint64_t ctl_offset[2];
    uint64_t data_offset[2];
    uint64_t total_size;
} region_header;

/* One control block per ring, three cache lines: the writer's, the reader's, the shared. */
typedef struct {
    _Atomic uint64_t head;            /* bytes ever published by the writer */
    _Atomic uint32_t writer_sleeping; /* the writer is (about to be) asleep on space_futex */
    _Atomic uint32_t space_futex;     /* bumped by the reader after it frees space */
    _Atomic uint32_t writer_closed;   /* the writer will publish nothing more */
    unsigned char pad0[LINE - 20];
    _Atomic uint64_t tail;            /* bytes ever released by the reader */
    _Atomic uint32_t reader_sleeping; /* the reader is (about to be) asleep on data_futex */
    _Atomic uint32_t data_futex;      /* bumped by the writer after it publishes */
    _Atomic uint32_t reader_closed;   /* the reader will read nothing more */
    unsigned char pad1[LINE - 20];
    _Atomic uint32_t doorbell_wanted; /* set by the reader, taken by the writer */
    _Atomic uint32_t users;           /* endpoints attached as this ring's writer side */
    unsigned char pad2[LINE - 8];
} ring_ctl;

_Static_assert(sizeof(region_header) == 64, "header layout");
_Static_assert(offsetof(ring_ctl, tail) == LINE, "control block layout");
_Static_assert(offsetof(ring_ctl, doorbell_wanted) == 2 * LINE, "control block layout");
_Static_assert(offsetof(ring_ctl, users) == 2 * LINE + 4, "control block layout");
_Static_assert(sizeof(ring_ctl) == 3 * LINE && sizeof(ring_ctl) <= CTL_STRIDE, "control block");
_Static_assert(sizeof(_Atomic uint32_t) == 4 && sizeof(_Atomic uint64_t) == 8, "atomics");
/* Lock-free atomics are address-free, which is what makes them work across processes. */
_Static_assert(__atomic_always_lock_free(8, 0) && __atomic_always_lock_free(4, 0),
               "64-bit and 32-bit atomics must be lock-free");

static inline uint64_t pad16(uint64_t n) { return (n + 15u) & ~(uint64_t)15u; }
static inline uint64_t rec_size(uint64_t len) { return REC + pad16(len); }

static uint64_t meta_size(void)
{
    long page = sysconf(_SC_PAGESIZE);
    uint64_t p = page > 0 ? (uint64_t)page : 4096u;
    uint64_t m = MIN_META;
    return (m + p - 1) / p * p;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    atomic_signal_fence(memory_order_seq_cst);
#endif
}

/* The shared (not FUTEX_PRIVATE) variants: the word lives in a MAP_SHARED file mapping,
 * so the kernel keys it by (inode, offset) and both processes meet on the same queue. */
static long futex_wait(_Atomic uint32_t *word, uint32_t expect, int64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000ll), (long)(ns % 1000000000ll)};
    return syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT, expect, &ts, NULL, 0);
}

static void wake_word(_Atomic uint32_t *word)
{
    /* release: a sleeper that reads the new value (acquire) also sees what we published */
    atomic_fetch_add_explicit(word, 1, memory_order_release);
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* ------------------------------------------------------------------ module state */

static PyObject *SocketEvent;
static PyObject *ControlPending;
static PyTypeObject RingMapType;
static PyTypeObject EndpointType;
static PyTypeObject ViewType;
static PyTypeObject WriteViewType;

/* The address range: [meta | ring 0 data twice | ring 1 data twice]. Unmapped when the
 * last holder (the endpoint, a running call, a view) lets go. */
typedef struct {
    PyObject_HEAD
    unsigned char *base;
    size_t length;
} RingMap;

static void ringmap_dealloc(RingMap *m)
{
    if (m->base)
        munmap(m->base, m->length);
    Py_TYPE(m)->tp_free((PyObject *)m);
}

enum { ROLE_WRITE = 0, ROLE_READ = 1 };

typedef struct {
    uint64_t start;
    int released;
} view_entry;

typedef struct {
    PyObject_HEAD
    RingMap *map; /* NULL once closed */
    pid_t pid;    /* the process that mapped it: only it closes the connection */
    int side;
    int sockfd;
    uint64_t cap, mask;
    ring_ctl *wctl, *rctl;
    unsigned char *wdata, *rdata;
    uint64_t max_record;
    int64_t spin_ns;
    uint64_t max_message;
    _Atomic int closed;
    int broken;
    char broken_msg[200];
    _Atomic int cancel[2];
    int busy[2];
    /* writer */
    uint64_t whead, wtail;
    int reserved;
    int torn;
    /* reader */
    uint64_t rpos;   /* next record not fully consumed */
    uint64_t rtail;  /* last tail published */
    uint64_t rseen;  /* highest head validated */
    int in_msg;      /* a message has started and is not fully delivered */
    uint64_t msg_left;  /* bytes of it not yet delivered (carry + ring) */
    uint64_t frag_left; /* bytes of it not yet taken from the ring */
    int cur_valid;      /* the record at rpos has been parsed: */
    uint32_t cur_len;
    uint32_t roff;      /* ... and this much of its payload taken */
    PyObject *carry;    /* bytes taken from the ring but not delivered (after an interrupted call) */
    uint64_t carry_off, carry_len;
    /* zero-copy views in ring order */
    view_entry *fifo;
    size_t fifo_cap, fifo_head, fifo_count;
    uint64_t fifo_seq0;
} Endpoint;

typedef struct {
    PyObject_HEAD
    Endpoint *ep;     /* set while a ring view is unreleased */
    RingMap *map;
    PyObject *owner;  /* private copy, for assembled messages */
    const char *ptr;
    Py_ssize_t len;
    uint64_t seq;
    int released;
    int zero_copy;
    Py_ssize_t exports;
} View;

typedef struct {
    PyObject_HEAD
    Endpoint *ep;
    RingMap *map;
    unsigned char *ptr;
    Py_ssize_t n;
    uint64_t pos;
    int done;
    Py_ssize_t exports;
} WriteView;

/* ------------------------------------------------------------------ argument helpers */

static int parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs,
                      PyObject *kwnames, const char *const *names, int n, int nreq,
                      PyObject **out)
{
    for (int i = 0; i < n; i++)
        out[i] = NULL;
    if (nargs > n) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d arguments (%zd given)", fname, n,
                     nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        out[i] = args[i];
    if (kwnames) {
        Py_ssize_t nk = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t k = 0; k < nk; k++) {
            PyObject *key = PyTuple_GET_ITEM(kwnames, k);
            int found = -1;
            for (int i = 0; i < n; i++) {
                if (PyUnicode_CompareWithASCIIString(key, names[i]) == 0) {
                    found = i;
                    break;
                }
            }
            if (found < 0) {
                PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'",
                             fname, key);
                return -1;
            }
            if (out[found]) {
                PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'",
                             fname, names[found]);
                return -1;
            }
            out[found] = args[nargs + k];
        }
    }
    for (int i = 0; i < nreq; i++) {
        if (!out[i]) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fname,
                         names[i]);
            return -1;
        }
    }
    return 0;
}

/* timeout: None (or absent) -> -1.0 (forever); else a non-negative number of seconds. */
static int parse_timeout(PyObject *o, double *t)
{
    if (!o || o == Py_None) {
        *t = -1.0;
        return 0;
    }
    double v = PyFloat_AsDouble(o);
    if (v == -1.0 && PyErr_Occurred())
        return -1;
    if (isnan(v) || v < 0) {
        PyErr_Format(PyExc_ValueError,
                     "timeout must be None or a non-negative number of seconds, not %R", o);
        return -1;
    }
    *t = isinf(v) ? -1.0 : v;
    return 0;
}

static int64_t deadline_of(double t)
{
    if (t < 0 || t > 1e9)
        return -1;
    return now_ns() + (int64_t)(t * 1e9);
}

static int parse_size(PyObject *o, const char *name, uint64_t *out)
{
    Py_ssize_t v = PyNumber_AsSsize_t(o, PyExc_OverflowError);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < 0) {
        PyErr_Format(PyExc_ValueError, "%s must be >= 0, not %zd", name, v);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

/* ------------------------------------------------------------------ endpoint basics */

static void signal_closed(Endpoint *ep)
{
    /* Our ring gets no more data, the peer's ring no more reads; wake every sleeper on
     * both rings (the peer's and ours in other threads). Unconditional: close is rare.
     * A child that inherited the mapping by fork() and exits does not close the parent's
     * connection (as closing an inherited socket does not). */
    if (getpid() != ep->pid)
        return;
    atomic_store_explicit(&ep->wctl->writer_closed, 1, memory_order_release);
    atomic_store_explicit(&ep->rctl->reader_closed, 1, memory_order_release);
    atomic_thread_fence(memory_order_seq_cst);
    wake_word(&ep->wctl->data_futex);
    wake_word(&ep->wctl->space_futex);
    wake_word(&ep->rctl->data_futex);
    wake_word(&ep->rctl->space_futex);
}

static int corrupt(Endpoint *ep, const char *fmt, ...)
{
    char why[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    if (!ep->broken) {
        ep->broken = 1;
        snprintf(ep->broken_msg, sizeof ep->broken_msg, "shared-memory ring is corrupt: %s",
                 why);
        if (ep->map)
            signal_closed(ep);
    }
    PyErr_SetString(PyExc_ValueError, ep->broken_msg);
    return -1;
}

static int check_usable(Endpoint *ep)
{
    if (atomic_load_explicit(&ep->closed, memory_order_relaxed) || !ep->map) {
        PyErr_SetString(PyExc_ValueError, "I/O operation on a closed ring endpoint");
        return -1;
    }
    if (ep->broken) {
        PyErr_SetString(PyExc_ValueError, ep->broken_msg);
        return -1;
    }
    return 0;
}

/* Enter a side: returns a new reference to the mapping, held for the call. */
static RingMap *enter(Endpoint *ep, int role)
{
    if (check_usable(ep) < 0)
        return NULL;
    if (ep->busy[role]) {
        PyErr_SetString(PyExc_RuntimeError,
                        role == ROLE_READ
                            ? "another thread is already reading from this ring endpoint"
                            : "another thread is already writing to this ring endpoint");
        return NULL;
    }
    ep->busy[role] = 1;
    atomic_store_explicit(&ep->cancel[role], 0, memory_order_relaxed);
    Py_INCREF(ep->map);
    return ep->map;
}

static void leave(Endpoint *ep, int role, RingMap *m)
{
    ep->busy[role] = 0;
    /* a cancel meant for this call that it never waited for is dropped, not kept */
    atomic_store_explicit(&ep->cancel[role], 0, memory_order_relaxed);
    Py_DECREF(m);
}

/* ------------------------------------------------------------------ waiting */

enum {
    WR_READY = 1,
    WR_CANCEL,
    WR_CLOSED,
    WR_PEER_CLOSED,
    WR_HUP,
    WR_SOCKET,
    WR_TIMEOUT,
    WR_SIGNAL,
};

/* Without the GIL: only atomics and state that this call alone changes. */
static int check_ready(Endpoint *ep, int role, uint64_t need)
{
    if (atomic_load_explicit(&ep->cancel[role], memory_order_acquire))
        return WR_CANCEL;
    if (atomic_load_explicit(&ep->closed, memory_order_relaxed))
        return WR_CLOSED;
    if (role == ROLE_READ) {
        if (atomic_load_explicit(&ep->rctl->head, memory_order_acquire) != ep->rpos)
            return WR_READY;
        if (atomic_load_explicit(&ep->rctl->writer_closed, memory_order_acquire)) {
            /* the peer publishes before it closes: data it sent first is delivered first */
            if (atomic_load_explicit(&ep->rctl->head, memory_order_acquire) != ep->rpos)
                return WR_READY;
            return WR_PEER_CLOSED;
        }
        return 0;
    }
    if (atomic_load_explicit(&ep->wctl->reader_closed, memory_order_acquire))
        return WR_PEER_CLOSED;
    uint64_t t = atomic_load_explicit(&ep->wctl->tail, memory_order_acquire);
    /* unvalidated here; a nonsense tail also reads as "ready" and the caller rejects it */
    if (ep->cap - (ep->whead - t) >= need)
        return WR_READY;
    return 0;
}

/* The socket: a hang-up means the peer is gone; for a reader, bytes queued (a control
 * frame, an out-of-band mark) are the caller's to handle. */
static int poll_socket(Endpoint *ep, int role)
{
    if (ep->sockfd < 0)
        return 0;
    struct pollfd p = {ep->sockfd, (short)(role == ROLE_READ ? POLLIN | POLLPRI | POLLRDHUP
                                                             : POLLRDHUP), 0};
    int rc = poll(&p, 1, 0);
    if (rc <= 0)
        return 0;
    if (p.revents & POLLNVAL)
        return WR_HUP;
    if (role == ROLE_WRITE)
        /* only a full hang-up: a peer that shut down its writing side still reads */
        return (p.revents & (POLLHUP | POLLERR)) ? WR_HUP : 0;
    if (p.revents & POLLPRI)
        return WR_SOCKET;
    if (p.revents & (POLLHUP | POLLRDHUP | POLLERR)) {
        int queued = 0;
        if (ioctl(ep->sockfd, FIONREAD, &queued) == 0 && queued > 0)
            return WR_SOCKET;
        return WR_HUP;
    }
    if (p.revents & POLLIN)
        return WR_SOCKET;
    return 0;
}

/*
 * Wait until check_ready() says something, the socket does, or the deadline passes.
 * Spins up to spin_ns first, then sleeps on the futex word in slices of <= 100 ms.
 * The sleep is one half of a Dekker handshake (docs/fastpath.md): snapshot the word,
 * raise the sleeping flag, seq_cst fence, re-check, FUTEX_WAIT on the snapshot. The other
 * half (publish; seq_cst fence; flag set? bump the word and FUTEX_WAKE) is in
 * writer_publish() and release_space(). Called with the GIL held; releases it.
 */
static int wait_loop(Endpoint *ep, int role, uint64_t need, int64_t deadline)
{
    _Atomic uint32_t *word, *sleeping;
    if (role == ROLE_READ) {
        word = &ep->rctl->data_futex;
        sleeping = &ep->rctl->reader_sleeping;
    }
    else {
        word = &ep->wctl->space_futex;
        sleeping = &ep->wctl->writer_sleeping;
    }
    int64_t spin = ep->spin_ns;
    int r;
    PyThreadState *ts = PyEval_SaveThread();
    int64_t start = now_ns();
    if (spin > 0 && (deadline < 0 || deadline > start)) {
        int64_t limit = start + spin;
        if (deadline >= 0 && deadline < limit)
            limit = deadline;
        for (unsigned i = 1;; i++) {
            if ((r = check_ready(ep, role, need)) != 0)
                goto out;
            cpu_relax();
            if ((i & 63) == 0 && now_ns() >= limit)
                break;
        }
    }
    for (;;) {
        if ((r = check_ready(ep, role, need)) != 0)
            goto out;
        if ((r = poll_socket(ep, role)) != 0) {
            /* the kernel ordered the peer's last stores before the hang-up we saw */
            int r2 = check_ready(ep, role, need);
            if (r2 != 0 && r2 != WR_PEER_CLOSED)
                r = r2;
            goto out;
        }
        int64_t slice = SLICE_NS;
        if (deadline >= 0) {
            int64_t now = now_ns();
            if (now >= deadline) {
                r = WR_TIMEOUT;
                goto out;
            }
            if (deadline - now < slice)
                slice = deadline - now;
        }
        uint32_t seq = atomic_load_explicit(word, memory_order_acquire);
        atomic_store_explicit(sleeping, 1, memory_order_relaxed);
        atomic_thread_fence(memory_order_seq_cst);
        r = check_ready(ep, role, need);
        if (r != 0) {
            atomic_store_explicit(sleeping, 0, memory_order_relaxed);
            goto out;
        }
        long rc = futex_wait(word, seq, slice);
        int err = rc < 0 ? errno : 0;
        atomic_store_explicit(sleeping, 0, memory_order_relaxed);
        if (err == EINTR || err == ETIMEDOUT) {
            /* Ctrl-C and other Python signal handlers run within one slice */
            PyEval_RestoreThread(ts);
            int sig = PyErr_CheckSignals();
            ts = PyEval_SaveThread();
            if (sig < 0) {
                r = WR_SIGNAL;
                goto out;
            }
        }
    }
out:
    PyEval_RestoreThread(ts);
    return r;
}

static int wait_error(Endpoint *ep, int role, int r, double timeout)
{
    switch (r) {
    case WR_TIMEOUT:
        if (role == ROLE_READ)
            PyErr_Format(PyExc_TimeoutError, "ring: nothing to read within %g s", timeout);
        else
            PyErr_Format(PyExc_TimeoutError, "ring: no room to write within %g s", timeout);
        break;
    case WR_CANCEL:
        atomic_store_explicit(&ep->cancel[role], 0, memory_order_relaxed);
        PyErr_SetString(PyExc_InterruptedError, "ring: the call was cancelled");
        break;
    case WR_CLOSED:
        PyErr_SetString(PyExc_ValueError, "ring endpoint was closed while waiting");
        break;
    case WR_PEER_CLOSED:
        PyErr_SetString(PyExc_BrokenPipeError,
                        role == ROLE_READ
                            ? "ring: the other end has closed and everything it sent was read"
                            : "ring: the other end has closed");
        break;
    case WR_HUP:
        PyErr_SetString(PyExc_BrokenPipeError,
                        role == ROLE_READ
                            ? "ring: the other end hung up and everything it sent was read"
                            : "ring: the other end hung up");
        break;
    case WR_SOCKET:
        PyErr_SetString(SocketEvent, "the control socket has data to handle");
        break;
    case WR_SIGNAL:
        break; /* set by the signal handler */
    default:
        PyErr_SetString(PyExc_SystemError, "ring: unexpected wait result");
    }
    return -1;
}

/* ------------------------------------------------------------------ writer side */

static void writer_publish(Endpoint *ep)
{
    atomic_store_explicit(&ep->wctl->head, ep->whead, memory_order_release);
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&ep->wctl->reader_sleeping, memory_order_relaxed))
        wake_word(&ep->wctl->data_futex);
    if (ep->sockfd >= 0 &&
        atomic_load_explicit(&ep->wctl->doorbell_wanted, memory_order_relaxed) &&
        atomic_exchange_explicit(&ep->wctl->doorbell_wanted, 0, memory_order_acq_rel)) {
        /* 5 bytes on an AF_UNIX stream go in one skb: all or nothing. EAGAIN means the
         * socket is full, hence readable already: the reader wakes anyway. */
        (void)send(ep->sockfd, DOORBELL, sizeof DOORBELL, MSG_DONTWAIT | MSG_NOSIGNAL);
    }
}

static void copy_bytes(void *dst, const void *src, size_t n)
{
    if (n > COPY_NOGIL) {
        Py_BEGIN_ALLOW_THREADS
        memcpy(dst, src, n);
        Py_END_ALLOW_THREADS
    }
    else if (n) {
        memcpy(dst, src, n);
    }
}

/* One record at whead (the caller made room). Payload first or last does not matter:
 * nothing is visible until writer_publish() stores head with release. */
static void put_record(Endpoint *ep, unsigned kind, unsigned flags, uint64_t len,
                       uint64_t total, const void *src)
{
    unsigned char *p = ep->wdata + (ep->whead & ep->mask);
    uint32_t l32 = (uint32_t)len;
    uint16_t k16 = (uint16_t)kind, f16 = (uint16_t)flags;
    memcpy(p, &l32, 4);
    memcpy(p + 4, &k16, 2);
    memcpy(p + 6, &f16, 2);
    memcpy(p + 8, &total, 8);
    copy_bytes(p + REC, src, (size_t)len);
    uint64_t padded = pad16(len);
    if (padded > len)
        memset(p + REC + len, 0, (size_t)(padded - len));
    ep->whead += REC + padded;
}

static int ensure_space(Endpoint *ep, uint64_t need, int64_t deadline, double timeout)
{
    for (;;) {
        if (ep->cap - (ep->whead - ep->wtail) >= need)
            return 0;
        uint64_t t = atomic_load_explicit(&ep->wctl->tail, memory_order_acquire);
        if (t != ep->wtail) {
            /* the tail only moves forward and never past what we published */
            if (t - ep->wtail > ep->whead - ep->wtail)
                return corrupt(ep, "tail %llu is outside the published range %llu..%llu",
                               (unsigned long long)t, (unsigned long long)ep->wtail,
                               (unsigned long long)ep->whead);
            ep->wtail = t;
            continue;
        }
        if (atomic_load_explicit(&ep->wctl->reader_closed, memory_order_acquire))
            return wait_error(ep, ROLE_WRITE, WR_PEER_CLOSED, timeout);
        int r = wait_loop(ep, ROLE_WRITE, need, deadline);
        if (r != WR_READY)
            return wait_error(ep, ROLE_WRITE, r, timeout);
    }
}

static RingMap *enter_writer(Endpoint *ep)
{
    RingMap *m = enter(ep, ROLE_WRITE);
    if (!m)
        return NULL;
    const char *why = NULL;
    PyObject *exc = PyExc_RuntimeError;
    if (ep->reserved) {
        why = "a reservation (WriteView) is outstanding: commit or abort it first";
    }
    else if (ep->torn) {
        exc = PyExc_BrokenPipeError;
        why = "ring: this end stopped writing after a message was cut short";
    }
    else if (atomic_load_explicit(&ep->wctl->reader_closed, memory_order_acquire)) {
        exc = PyExc_BrokenPipeError;
        why = "ring: the other end has closed";
    }
    if (why) {
        leave(ep, ROLE_WRITE, m);
        PyErr_SetString(exc, why);
        return NULL;
    }
    return m;
}

/* Bytes of ring the records of a len-byte message take, or UINT64_MAX if > capacity. */
static uint64_t message_bytes(Endpoint *ep, uint64_t len)
{
    if (len > ep->cap)
        return UINT64_MAX;
    uint64_t mr = ep->max_record;
    if (len <= mr)
        return rec_size(len);
    uint64_t full = len / mr, last = len % mr;
    uint64_t total = full * rec_size(mr) + (last ? rec_size(last) : 0);
    return total <= ep->cap ? total : UINT64_MAX;
}

/* Writes the records of one message; publishes after each one if publish_each. */
static void put_message(Endpoint *ep, const unsigned char *data, uint64_t len, int publish_each)
{
    uint64_t mr = ep->max_record;
    if (len <= mr) {
        put_record(ep, KIND_DATA, F_FIRST | F_LAST, len, len, data);
        if (publish_each)
            writer_publish(ep);
        return;
    }
    for (uint64_t off = 0; off < len; off += mr) {
        uint64_t n = len - off < mr ? len - off : mr;
        unsigned flags = (off == 0 ? F_FIRST : 0) | (off + n == len ? F_LAST : 0);
        put_record(ep, KIND_DATA, flags, n, len, data + off);
        if (publish_each)
            writer_publish(ep);
    }
}

static void tear(Endpoint *ep, uint64_t sent, uint64_t len)
{
    /* A message larger than the ring was cut short. The record format has no abort
     * marker, so this end stops writing: the reader drains what is complete and then
     * gets BrokenPipeError, as a socket peer does at an end of stream inside a frame. */
    ep->torn = 1;
    atomic_store_explicit(&ep->wctl->writer_closed, 1, memory_order_release);
    atomic_thread_fence(memory_order_seq_cst);
    wake_word(&ep->wctl->data_futex);
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type && (PyErr_GivenExceptionMatches(type, PyExc_TimeoutError) ||
                 PyErr_GivenExceptionMatches(type, PyExc_InterruptedError))) {
        PyErr_Format(type,
                     "ring: %s after %llu of %llu bytes of a message larger than the ring; "
                     "the message is cut short and this end can no longer write",
                     PyErr_GivenExceptionMatches(type, PyExc_TimeoutError) ? "timed out"
                                                                            : "cancelled",
                     (unsigned long long)sent, (unsigned long long)len);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
    }
    else {
        PyErr_Restore(type, value, tb);
    }
}

static int send_message(Endpoint *ep, const unsigned char *data, uint64_t len, int64_t deadline,
                        double timeout)
{
    uint64_t need = message_bytes(ep, len);
    if (need != UINT64_MAX) {
        /* fits the ring: wait for all of it, so a timeout never leaves half a message */
        if (ensure_space(ep, need, deadline, timeout) < 0)
            return -1;
        put_message(ep, data, len, 1);
        return 0;
    }
    uint64_t mr = ep->max_record;
    for (uint64_t off = 0; off < len; off += mr) {
        uint64_t n = len - off < mr ? len - off : mr;
        if (ensure_space(ep, rec_size(n), deadline, timeout) < 0) {
            if (off > 0 && !ep->broken)
                tear(ep, off, len);
            return -1;
        }
        unsigned flags = (off == 0 ? F_FIRST : 0) | (off + n == len ? F_LAST : 0);
        put_record(ep, KIND_DATA, flags, n, len, data + off);
        writer_publish(ep);
    }
    return 0;
}

static PyObject *ep_send(Endpoint *ep, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames)
{
    static const char *const names[] = {"data", "timeout"};
    PyObject *a[2];
    double timeout;
    if (parse_args("send", args, nargs, kwnames, names, 2, 1, a) < 0 ||
        parse_timeout(a[1], &timeout) < 0)
        return NULL;
    Py_buffer buf;
    if (PyObject_GetBuffer(a[0], &buf, PyBUF_SIMPLE) < 0)
        return NULL;
    RingMap *m = enter_writer(ep);
    if (!m) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    int rc = send_message(ep, buf.buf, (uint64_t)buf.len, deadline_of(timeout), timeout);
    leave(ep, ROLE_WRITE, m);
    PyBuffer_Release(&buf);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *ep_send_many(Endpoint *ep, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    static const char *const names[] = {"items", "timeout"};
    PyObject *a[2];
    double timeout;
    if (parse_args("send_many", args, nargs, kwnames, names, 2, 1, a) < 0 ||
        parse_timeout(a[1], &timeout) < 0)
        return NULL;
    if (check_usable(ep) < 0)
        return NULL;
    /* a tuple snapshot: a __buffer__ hook cannot resize it under us */
    PyObject *seq = PySequence_Tuple(a[0]);
    if (!seq)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(seq);
    /* at most cap/16 messages can fit; buffers beyond that are never looked at */
    Py_ssize_t limit = (Py_ssize_t)(ep->cap / REC);
    if (n > limit)
        n = limit;
    Py_buffer *bufs = n ? PyMem_Calloc((size_t)n, sizeof(Py_buffer)) : NULL;
    if (n && !bufs) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    Py_ssize_t got = 0;
    for (; got < n; got++) {
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(seq, got), &bufs[got], PyBUF_SIMPLE) < 0)
            break;
    }
    Py_ssize_t written = -1;
    RingMap *m = NULL;
    if (got < n)
        goto done;
    if (n == 0) {
        written = 0;
        goto done;
    }
    m = enter_writer(ep);
    if (!m)
        goto done;
    int64_t deadline = deadline_of(timeout);
    uint64_t need = message_bytes(ep, (uint64_t)bufs[0].len);
    if (need == UINT64_MAX) {
        /* larger than the ring: it streams, published record by record */
        if (send_message(ep, bufs[0].buf, (uint64_t)bufs[0].len, deadline, timeout) == 0)
            written = 1;
        goto done;
    }
    if (ensure_space(ep, need, deadline, timeout) < 0)
        goto done;
    put_message(ep, bufs[0].buf, (uint64_t)bufs[0].len, 0);
    written = 1;
    int reloaded = 0;
    while (written < n) {
        uint64_t len = (uint64_t)bufs[written].len;
        need = message_bytes(ep, len);
        if (need == UINT64_MAX)
            break;
        if (ep->cap - (ep->whead - ep->wtail) < need) {
            if (reloaded)
                break;
            reloaded = 1;
            uint64_t t = atomic_load_explicit(&ep->wctl->tail, memory_order_acquire);
            if (t - ep->wtail > ep->whead - ep->wtail) {
                writer_publish(ep);
                corrupt(ep, "tail %llu is outside the published range %llu..%llu",
                        (unsigned long long)t, (unsigned long long)ep->wtail,
                        (unsigned long long)ep->whead);
                written = -1;
                goto done;
            }
            ep->wtail = t;
            continue;
        }
        put_message(ep, bufs[written].buf, len, 0);
        written++;
    }
    writer_publish(ep);
done:
    if (m)
        leave(ep, ROLE_WRITE, m);
    for (Py_ssize_t i = 0; i < got; i++)
        PyBuffer_Release(&bufs[i]);
    PyMem_Free(bufs);
    Py_DECREF(seq);
    if (written < 0)
        return NULL;
    return PyLong_FromSsize_t(written);
}

static PyObject *ep_send_control(Endpoint *ep, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames)
{
    static const char *const names[] = {"timeout"};
    PyObject *a[1];
    double timeout;
    if (parse_args("send_control", args, nargs, kwnames, names, 1, 0, a) < 0 ||
        parse_timeout(a[0], &timeout) < 0)
        return NULL;
    RingMap *m = enter_writer(ep);
    if (!m)
        return NULL;
    int rc = ensure_space(ep, REC, deadline_of(timeout), timeout);
    if (rc == 0) {
        put_record(ep, KIND_CONTROL, F_FIRST | F_LAST, 0, 0, NULL);
        writer_publish(ep);
    }
    leave(ep, ROLE_WRITE, m);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *ep_reserve(Endpoint *ep, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames)
{
    static const char *const names[] = {"n", "timeout"};
    PyObject *a[2];
    double timeout;
    uint64_t n;
    if (parse_args("reserve", args, nargs, kwnames, names, 2, 1, a) < 0 ||
        parse_size(a[0], "n", &n) < 0 || parse_timeout(a[1], &timeout) < 0)
        return NULL;
    if (check_usable(ep) < 0)
        return NULL;
    if (n > ep->max_record) {
        PyErr_Format(PyExc_ValueError, "n must be <= max_record (%llu), not %llu",
                     (unsigned long long)ep->max_record, (unsigned long long)n);
        return NULL;
    }
    WriteView *wv = PyObject_New(WriteView, &WriteViewType);
    if (!wv)
        return NULL;
    wv->ep = NULL;
    wv->map = NULL;
    wv->done = 1;
    wv->exports = 0;
    wv->ptr = NULL;
    wv->n = 0;
    wv->pos = 0;
    RingMap *m = enter_writer(ep);
    if (!m) {
        Py_DECREF(wv);
        return NULL;
    }
    int rc = ensure_space(ep, rec_size(n), deadline_of(timeout), timeout);
    if (rc == 0) {
        Py_INCREF(ep);
        wv->ep = ep;
        Py_INCREF(m);
        wv->map = m;
        wv->pos = ep->whead;
        wv->ptr = ep->wdata + ((ep->whead + REC) & ep->mask);
        wv->n = (Py_ssize_t)n;
        wv->done = 0;
        ep->reserved = 1;
    }
    leave(ep, ROLE_WRITE, m);
    if (rc < 0) {
        Py_DECREF(wv);
        return NULL;
    }
    return (PyObject *)wv;
}

/* ------------------------------------------------------------------ reader side */

static int fifo_push(Endpoint *ep, uint64_t start, uint64_t *seq)
{
    if (ep->fifo_count == ep->fifo_cap) {
        size_t ncap = ep->fifo_cap ? ep->fifo_cap * 2 : 16;
        view_entry *nf = PyMem_Malloc(ncap * sizeof(view_entry));
        if (!nf) {
            PyErr_NoMemory();
            return -1;
        }
        for (size_t i = 0; i < ep->fifo_count; i++)
            nf[i] = ep->fifo[(ep->fifo_head + i) & (ep->fifo_cap - 1)];
        PyMem_Free(ep->fifo);
        ep->fifo = nf;
        ep->fifo_cap = ncap;
        ep->fifo_head = 0;
    }
    size_t slot = (ep->fifo_head + ep->fifo_count) & (ep->fifo_cap - 1);
    ep->fifo[slot].start = start;
    ep->fifo[slot].released = 0;
    *seq = ep->fifo_seq0 + ep->fifo_count;
    ep->fifo_count++;
    return 0;
}

/* Publish the new tail: the oldest unreleased view's start, else rpos. With the GIL. */
static void release_space(Endpoint *ep)
{
    while (ep->fifo_count && ep->fifo[ep->fifo_head].released) {
        ep->fifo_head = (ep->fifo_head + 1) & (ep->fifo_cap - 1);
        ep->fifo_count--;
        ep->fifo_seq0++;
    }
    if (!ep->map)
        return;
    uint64_t t = ep->fifo_count ? ep->fifo[ep->fifo_head].start : ep->rpos;
    if (t == ep->rtail)
        return;
    ep->rtail = t;
    /* release: our reads of the freed records happen before the writer's next writes */
    atomic_store_explicit(&ep->rctl->tail, t, memory_order_release);
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&ep->rctl->writer_sleeping, memory_order_relaxed))
        wake_word(&ep->rctl->space_futex);
}

static int load_head(Endpoint *ep, uint64_t *out)
{
    uint64_t h = atomic_load_explicit(&ep->rctl->head, memory_order_acquire);
    if (h != ep->rseen) {
        /* head is 16-aligned, never behind what was seen, never more than capacity
         * ahead of the tail */
        if ((h & 15u) || h - ep->rtail > ep->cap || h - ep->rtail < ep->rseen - ep->rtail)
            return corrupt(ep, "head %llu is not a valid position (tail %llu, capacity %llu)",
                           (unsigned long long)h, (unsigned long long)ep->rtail,
                           (unsigned long long)ep->cap);
        ep->rseen = h;
    }
    *out = h;
    return 0;
}

typedef struct {
    uint32_t len;
    uint16_t kind, flags;
    uint64_t total;
} rec_hdr;

/* Reads the header at pos once (atomic loads: the peer may be writing it right now) and
 * checks it against the validated head h. */
static int parse_rec(Endpoint *ep, uint64_t pos, uint64_t h, rec_hdr *r)
{
    uint64_t avail = h - pos;
    if (avail < REC)
        return corrupt(ep, "a record at %llu runs past head %llu", (unsigned long long)pos,
                       (unsigned long long)h);
    const unsigned char *p = ep->rdata + (pos & ep->mask);
    r->len = __atomic_load_n((const uint32_t *)p, __ATOMIC_RELAXED);
    r->kind = __atomic_load_n((const uint16_t *)(p + 4), __ATOMIC_RELAXED);
    r->flags = __atomic_load_n((const uint16_t *)(p + 6), __ATOMIC_RELAXED);
    r->total = __atomic_load_n((const uint64_t *)(p + 8), __ATOMIC_RELAXED);
    if (rec_size(r->len) > avail)
        return corrupt(ep, "a %lu-byte record at %llu runs past head %llu",
                       (unsigned long)r->len, (unsigned long long)pos, (unsigned long long)h);
    if (r->flags & ~(F_FIRST | F_LAST))
        return corrupt(ep, "record flags 0x%x are unknown", (unsigned)r->flags);
    if (r->kind == KIND_CONTROL) {
        if (r->len != 0 || r->flags != (F_FIRST | F_LAST))
            return corrupt(ep, "a control record with a payload or fragment flags");
    }
    else if (r->kind != KIND_DATA) {
        return corrupt(ep, "record kind %u is unknown", (unsigned)r->kind);
    }
    return 0;
}

/* Validation shared by reads and peek: the first record of a message. */
static const char *check_first(const rec_hdr *r, uint64_t max_message)
{
    if (!(r->flags & F_FIRST))
        return "a message does not start with a FIRST record";
    if (r->total > max_message)
        return "a message is longer than max_message";
    if (r->flags & F_LAST) {
        if (r->len != r->total)
            return "a single-record message whose length is not its total";
    }
    else if (r->len == 0 || r->len >= r->total) {
        return "a FIRST fragment that is empty or holds the whole total";
    }
    return NULL;
}

/* ... and a following fragment, frag_left bytes of the message being still to come. */
static const char *check_next(const rec_hdr *r, uint64_t frag_left)
{
    if (r->kind != KIND_DATA || (r->flags & F_FIRST))
        return "a message's fragments are interrupted by another record";
    if (r->flags & F_LAST) {
        if (r->len != frag_left)
            return "a LAST fragment whose length does not complete the message";
    }
    else if (r->len == 0 || r->len >= frag_left) {
        return "a middle fragment that is empty or too long";
    }
    return NULL;
}

/* Start the message whose first record r sits at rpos. */
static int apply_first(Endpoint *ep, const rec_hdr *r)
{
    const char *why = check_first(r, ep->max_message);
    if (why)
        return corrupt(ep, "%s (at %llu, %lu bytes of %llu)", why, (unsigned long long)ep->rpos,
                       (unsigned long)r->len, (unsigned long long)r->total);
    ep->in_msg = 1;
    ep->msg_left = ep->frag_left = r->total;
    ep->cur_valid = 1;
    ep->cur_len = r->len;
    ep->roff = 0;
    if (r->len == 0) { /* a 0-length message: its record is consumed already */
        ep->rpos += REC;
        ep->cur_valid = 0;
    }
    return 0;
}

/* Copies up to n bytes of the current message from the ring (records below head h) to
 * dst; never waits. Returns the count or -1. */
static int64_t pull(Endpoint *ep, uint64_t h, unsigned char *dst, uint64_t n)
{
    uint64_t done = 0;
    while (done < n && ep->frag_left > 0) {
        if (!ep->cur_valid) {
            if (ep->rpos == h)
                break;
            rec_hdr r;
            if (parse_rec(ep, ep->rpos, h, &r) < 0)
                return -1;
            const char *why = check_next(&r, ep->frag_left);
            if (why)
                return corrupt(ep, "%s (at %llu)", why, (unsigned long long)ep->rpos);
            ep->cur_valid = 1;
            ep->cur_len = r.len;
            ep->roff = 0;
        }
        uint64_t k = ep->cur_len - ep->roff;
        if (k > n - done)
            k = n - done;
        /* offset < cap and k <= cap: inside the double mapping, contiguous */
        const unsigned char *src = ep->rdata + ((ep->rpos + REC + ep->roff) & ep->mask);
        copy_bytes(dst + done, src, (size_t)k);
        ep->roff += (uint32_t)k;
        ep->frag_left -= k;
        done += k;
        if (ep->roff == ep->cur_len) {
            ep->rpos += rec_size(ep->cur_len);
            ep->cur_valid = 0;
            ep->roff = 0;
        }
    }
    return (int64_t)done;
}

static RingMap *enter_reader(Endpoint *ep) { return enter(ep, ROLE_READ); }

static void clear_carry(Endpoint *ep)
{
    Py_CLEAR(ep->carry);
    ep->carry_off = ep->carry_len = 0;
}

/* Takes `got` bytes that were copied out (into a bytes object) back into the carry. */
static void stash(Endpoint *ep, PyObject *obj, uint64_t got)
{
    Py_XSETREF(ep->carry, obj);
    ep->carry_off = 0;
    ep->carry_len = got;
}

/* At a message boundary: wait for a record and start it. ControlPending for a control. */
static int begin(Endpoint *ep, int64_t deadline, double timeout)
{
    for (;;) {
        uint64_t h;
        if (load_head(ep, &h) < 0)
            return -1;
        if (ep->rpos != h) {
            rec_hdr r;
            if (parse_rec(ep, ep->rpos, h, &r) < 0)
                return -1;
            if (r.kind == KIND_CONTROL) {
                ep->rpos += REC;
                release_space(ep);
                PyErr_SetString(ControlPending, "the next control frame is on the socket");
                return -1;
            }
            return apply_first(ep, &r);
        }
        int w = wait_loop(ep, ROLE_READ, 0, deadline);
        if (w != WR_READY)
            return wait_error(ep, ROLE_READ, w, timeout);
    }
}

/*
 * Copies `want` bytes of the current message to dst: the carry first, then the ring,
 * waiting as needed (if `wait`). *got says how many were copied. The space is released
 * before each wait, and at the end if `release`.
 * Returns 0 (done), 1 (not done and !wait), -1 (error set).
 */
static int fill(Endpoint *ep, unsigned char *dst, uint64_t want, uint64_t *got, int64_t deadline,
                double timeout, int wait, int release)
{
    uint64_t g = *got;
    if (ep->carry && g < want) {
        uint64_t k = ep->carry_len - ep->carry_off;
        if (k > want - g)
            k = want - g;
        memcpy(dst + g, PyBytes_AS_STRING(ep->carry) + ep->carry_off, (size_t)k);
        ep->carry_off += k;
        g += k;
        if (ep->carry_off == ep->carry_len)
            clear_carry(ep);
    }
    for (;;) {
        if (g < want) {
            uint64_t h;
            int64_t k;
            if (load_head(ep, &h) < 0 || (k = pull(ep, h, dst + g, want - g)) < 0) {
                *got = g;
                return -1;
            }
            g += (uint64_t)k;
        }
        if (g == want)
            break;
        if (!wait) {
            *got = g;
            return 1;
        }
        /* free what was consumed before sleeping: a message larger than the ring needs it */
        release_space(ep);
        int w = wait_loop(ep, ROLE_READ, 0, deadline);
        if (w != WR_READY) {
            *got = g;
            return wait_error(ep, ROLE_READ, w, timeout);
        }
    }
    *got = g;
    if (release)
        release_space(ep);
    return 0;
}

static void delivered(Endpoint *ep, uint64_t n)
{
    ep->msg_left -= n;
    if (ep->msg_left == 0)
        ep->in_msg = 0;
}

/* The rest of the current message as bytes. NULL without an exception: incomplete
 * (only when !wait; what arrived waits in the carry). */
static PyObject *assemble(Endpoint *ep, int64_t deadline, double timeout, int wait, int release)
{
    uint64_t n = ep->msg_left;
    PyObject *out;
    uint64_t got = 0;
    if (ep->carry && ep->carry_off == 0 && (uint64_t)PyBytes_GET_SIZE(ep->carry) == n) {
        /* resume the buffer of an interrupted recv() in place */
        out = ep->carry;
        got = ep->carry_len;
        ep->carry = NULL;
        ep->carry_off = ep->carry_len = 0;
    }
    else {
        out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
        if (!out)
            return NULL;
    }
    int rc = fill(ep, (unsigned char *)PyBytes_AS_STRING(out), n, &got, deadline, timeout, wait,
                  release);
    if (rc != 0) {
        stash(ep, out, got);
        return NULL;
    }
    delivered(ep, n);
    return out;
}

static int read_args(const char *fname, PyObject *const *args, Py_ssize_t nargs,
                     PyObject *kwnames, double *timeout)
{
    static const char *const names[] = {"timeout"};
    PyObject *a[1];
    if (parse_args(fname, args, nargs, kwnames, names, 1, 0, a) < 0)
        return -1;
    return parse_timeout(a[0], timeout);
}

static PyObject *ep_recv(Endpoint *ep, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames)
{
    double timeout;
    if (read_args("recv", args, nargs, kwnames, &timeout) < 0)
        return NULL;
    RingMap *m = enter_reader(ep);
    if (!m)
        return NULL;
    int64_t deadline = deadline_of(timeout);
    PyObject *out = NULL;
    if (ep->in_msg || begin(ep, deadline, timeout) == 0)
        out = assemble(ep, deadline, timeout, 1, 1);
    leave(ep, ROLE_READ, m);
    return out;
}

static PyObject *ep_read(Endpoint *ep, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames)
{
    static const char *const names[] = {"size", "timeout"};
    PyObject *a[2];
    double timeout;
    uint64_t size;
    if (parse_args("read", args, nargs, kwnames, names, 2, 1, a) < 0 ||
        parse_size(a[0], "size", &size) < 0 || parse_timeout(a[1], &timeout) < 0)
        return NULL;
    RingMap *m = enter_reader(ep);
    if (!m)
        return NULL;
    int64_t deadline = deadline_of(timeout);
    PyObject *out = NULL;
    if (!ep->in_msg && begin(ep, deadline, timeout) < 0)
        goto done;
    uint64_t want = size < ep->msg_left ? size : ep->msg_left;
    if (want == ep->msg_left) {
        out = assemble(ep, deadline, timeout, 1, 1);
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)want);
    if (!out)
        goto done;
    uint64_t got = 0;
    if (fill(ep, (unsigned char *)PyBytes_AS_STRING(out), want, &got, deadline, timeout, 1, 1) <
        0) {
        stash(ep, out, got);
        out = NULL;
        goto done;
    }
    delivered(ep, want);
done:
    leave(ep, ROLE_READ, m);
    return out;
}

static PyObject *ep_recv_into(Endpoint *ep, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    static const char *const names[] = {"buffer", "timeout"};
    PyObject *a[2];
    double timeout;
    if (parse_args("recv_into", args, nargs, kwnames, names, 2, 1, a) < 0 ||
        parse_timeout(a[1], &timeout) < 0)
        return NULL;
    Py_buffer buf;
    if (PyObject_GetBuffer(a[0], &buf, PyBUF_WRITABLE) < 0)
        return NULL;
    RingMap *m = enter_reader(ep);
    if (!m) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    int64_t deadline = deadline_of(timeout);
    PyObject *out = NULL;
    if (!ep->in_msg && begin(ep, deadline, timeout) < 0)
        goto done;
    uint64_t want = (uint64_t)buf.len < ep->msg_left ? (uint64_t)buf.len : ep->msg_left;
    uint64_t got = 0;
    if (fill(ep, buf.buf, want, &got, deadline, timeout, 1, 1) < 0) {
        if (got) {
            /* keep what was taken off the ring for the next call */
            PyObject *keep = PyBytes_FromStringAndSize(buf.buf, (Py_ssize_t)got);
            if (keep)
                stash(ep, keep, got);
            else
                PyErr_Clear(); /* the original error matters more; the bytes are lost */
        }
        goto done;
    }
    delivered(ep, want);
    out = PyLong_FromUnsignedLongLong(want);
done:
    leave(ep, ROLE_READ, m);
    PyBuffer_Release(&buf);
    return out;
}

static View *new_view(void)
{
    View *v = PyObject_New(View, &ViewType);
    if (!v)
        return NULL;
    v->ep = NULL;
    v->map = NULL;
    v->owner = NULL;
    v->ptr = NULL;
    v->len = 0;
    v->seq = 0;
    v->released = 0;
    v->zero_copy = 0;
    v->exports = 0;
    return v;
}

static PyObject *ep_recv_view(Endpoint *ep, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    double timeout;
    if (read_args("recv_view", args, nargs, kwnames, &timeout) < 0)
        return NULL;
    View *v = new_view();
    if (!v)
        return NULL;
    RingMap *m = enter_reader(ep);
    if (!m) {
        Py_DECREF(v);
        return NULL;
    }
    int64_t deadline = deadline_of(timeout);
    int fresh = !ep->in_msg;
    if (fresh && begin(ep, deadline, timeout) < 0)
        goto fail;
    if (fresh && ep->cur_valid && ep->roff == 0 && ep->cur_len == ep->msg_left && !ep->carry) {
        /* a whole message in one record: a view straight into the ring */
        uint64_t seq;
        if (fifo_push(ep, ep->rpos, &seq) < 0)
            goto fail;
        v->ptr = (const char *)ep->rdata + ((ep->rpos + REC) & ep->mask);
        v->len = (Py_ssize_t)ep->cur_len;
        v->seq = seq;
        v->zero_copy = 1;
        Py_INCREF(ep);
        v->ep = ep;
        Py_INCREF(m);
        v->map = m;
        ep->rpos += rec_size(ep->cur_len);
        ep->cur_valid = 0;
        ep->frag_left = 0;
        delivered(ep, ep->msg_left);
    }
    else {
        PyObject *data = assemble(ep, deadline, timeout, 1, 1);
        if (!data)
            goto fail;
        v->owner = data;
        v->ptr = PyBytes_AS_STRING(data);
        v->len = PyBytes_GET_SIZE(data);
    }
    leave(ep, ROLE_READ, m);
    return (PyObject *)v;
fail:
    leave(ep, ROLE_READ, m);
    Py_DECREF(v);
    return NULL;
}

static PyObject *ep_recv_many(Endpoint *ep, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames)
{
    static const char *const names[] = {"max_count", "timeout"};
    PyObject *a[2];
    double timeout;
    uint64_t max_count;
    if (parse_args("recv_many", args, nargs, kwnames, names, 2, 1, a) < 0 ||
        parse_size(a[0], "max_count", &max_count) < 0 || parse_timeout(a[1], &timeout) < 0)
        return NULL;
    if (max_count < 1) {
        PyErr_SetString(PyExc_ValueError, "max_count must be >= 1");
        return NULL;
    }
    PyObject *list = PyList_New(0);
    if (!list)
        return NULL;
    RingMap *m = enter_reader(ep);
    if (!m) {
        Py_DECREF(list);
        return NULL;
    }
    int64_t deadline = deadline_of(timeout);
    if (!ep->in_msg && begin(ep, deadline, timeout) < 0)
        goto fail;
    PyObject *first = assemble(ep, deadline, timeout, 1, 0);
    if (!first)
        goto fail;
    int rc = PyList_Append(list, first);
    Py_DECREF(first);
    if (rc < 0)
        goto fail;
    /* then every complete message already there, without waiting */
    while ((uint64_t)PyList_GET_SIZE(list) < max_count) {
        uint64_t h;
        if (load_head(ep, &h) < 0)
            goto fail;
        if (ep->rpos == h)
            break;
        rec_hdr r;
        if (parse_rec(ep, ep->rpos, h, &r) < 0)
            goto fail;
        if (r.kind == KIND_CONTROL)
            break; /* the next call consumes it and raises ControlPending */
        if (apply_first(ep, &r) < 0)
            goto fail;
        PyObject *msg = assemble(ep, -1, 0, 0, 0);
        if (!msg) {
            if (PyErr_Occurred())
                goto fail;
            break; /* incomplete: what arrived of it waits in the carry */
        }
        rc = PyList_Append(list, msg);
        Py_DECREF(msg);
        if (rc < 0)
            goto fail;
    }
    release_space(ep);
    leave(ep, ROLE_READ, m);
    return list;
fail:
    /* messages already taken would be lost: only corruption or memory errors get here
     * after the first one, and both leave the endpoint unusable anyway */
    release_space(ep);
    leave(ep, ROLE_READ, m);
    Py_DECREF(list);
    return NULL;
}

static PyObject *ep_peek(Endpoint *ep, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames)
{
    static const char *const names[] = {"size"};
    PyObject *a[1];
    uint64_t size;
    if (parse_args("peek", args, nargs, kwnames, names, 1, 1, a) < 0 ||
        parse_size(a[0], "size", &size) < 0)
        return NULL;
    /* no busy flag: peek runs entirely with the GIL, and a reader in another thread only
     * changes its state with the GIL held */
    if (check_usable(ep) < 0)
        return NULL;
    RingMap *m = ep->map;
    Py_INCREF(m);
    PyObject *result = NULL;
    uint64_t h;
    if (load_head(ep, &h) < 0)
        goto done;
    /* simulate the reader over a copy of its state; every header is read once */
    int in_msg = ep->in_msg, cur_valid = ep->cur_valid;
    uint64_t frag_left = ep->frag_left, pos = ep->rpos, cur_len = ep->cur_len, roff = ep->roff;
    int have_first = in_msg, first_open = in_msg;
    uint64_t first_len = in_msg ? ep->msg_left : 0, waiting = 0;
    uint64_t carry = ep->carry ? ep->carry_len - ep->carry_off : 0;
    uint64_t cap_first = in_msg ? (size < first_len ? size : first_len) : 0;
    PyObject *data = NULL;
    unsigned char *dp = NULL;
    uint64_t dlen = 0;
    if (in_msg) {
        data = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)cap_first);
        if (!data)
            goto done;
        dp = (unsigned char *)PyBytes_AS_STRING(data);
        uint64_t k = carry < cap_first ? carry : cap_first;
        if (k)
            memcpy(dp, PyBytes_AS_STRING(ep->carry) + ep->carry_off, (size_t)k);
        dlen = k;
    }
    waiting += carry;
    for (;;) {
        if (in_msg && frag_left > 0) {
            if (!cur_valid) {
                if (pos == h)
                    break;
                rec_hdr r;
                if (parse_rec(ep, pos, h, &r) < 0)
                    goto fail;
                const char *why = check_next(&r, frag_left);
                if (why) {
                    corrupt(ep, "%s (at %llu)", why, (unsigned long long)pos);
                    goto fail;
                }
                cur_len = r.len;
                roff = 0;
            }
            uint64_t k = cur_len - roff;
            if (first_open && dlen < cap_first) {
                uint64_t c = cap_first - dlen < k ? cap_first - dlen : k;
                memcpy(dp + dlen, ep->rdata + ((pos + REC + roff) & ep->mask), (size_t)c);
                dlen += c;
            }
            waiting += k;
            frag_left -= k;
            pos += rec_size(cur_len);
            cur_valid = 0;
            roff = 0;
            continue;
        }
        if (in_msg) { /* frag_left == 0: that message is all in hand */
            in_msg = 0;
            first_open = 0;
        }
        if (pos == h)
            break;
        rec_hdr r;
        if (parse_rec(ep, pos, h, &r) < 0)
            goto fail;
        if (r.kind == KIND_CONTROL) {
            pos += REC;
            continue;
        }
        const char *why = check_first(&r, ep->max_message);
        if (why) {
            corrupt(ep, "%s (at %llu)", why, (unsigned long long)pos);
            goto fail;
        }
        in_msg = 1;
        frag_left = r.total;
        cur_len = r.len;
        cur_valid = 1;
        roff = 0;
        if (!have_first) {
            have_first = 1;
            first_open = 1;
            first_len = r.total;
            cap_first = size < first_len ? size : first_len;
            data = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)cap_first);
            if (!data)
                goto fail;
            dp = (unsigned char *)PyBytes_AS_STRING(data);
        }
        if (r.len == 0) {
            pos += REC;
            cur_valid = 0;
        }
    }
    /* an empty ring is (b"", 0, 0) even when the peer is gone: peek only observes; the
     * caller tells "gone" from peer_closed and its socket (and may owe a disconnect mark) */
    if (!data) {
        data = PyBytes_FromStringAndSize(NULL, 0);
        if (!data)
            goto done;
    }
    else if (dlen < cap_first && _PyBytes_Resize(&data, (Py_ssize_t)dlen) < 0) {
        goto done;
    }
    result = Py_BuildValue("(NKK)", data, (unsigned long long)waiting,
                           (unsigned long long)(have_first ? first_len - dlen : 0));
    goto done;
fail:
    Py_XDECREF(data);
done:
    Py_DECREF(m);
    return result;
}

static PyObject *ep_readable(Endpoint *ep, PyObject *Py_UNUSED(ignored))
{
    if (check_usable(ep) < 0)
        return NULL;
    int r = (ep->carry && ep->carry_len > ep->carry_off) ||
            atomic_load_explicit(&ep->rctl->head, memory_order_acquire) != ep->rpos;
    return PyBool_FromLong(r);
}

static PyObject *ep_arm_doorbell(Endpoint *ep, PyObject *Py_UNUSED(ignored))
{
    if (check_usable(ep) < 0)
        return NULL;
    /* the reader's half of the same Dekker handshake as the futex sleep */
    atomic_store_explicit(&ep->rctl->doorbell_wanted, 1, memory_order_seq_cst);
    atomic_thread_fence(memory_order_seq_cst);
    int ready = (ep->carry && ep->carry_len > ep->carry_off) ||
                atomic_load_explicit(&ep->rctl->head, memory_order_acquire) != ep->rpos ||
                atomic_load_explicit(&ep->rctl->writer_closed, memory_order_acquire);
    if (ready)
        atomic_exchange_explicit(&ep->rctl->doorbell_wanted, 0, memory_order_acq_rel);
    return PyBool_FromLong(ready);
}

static PyObject *ep_cancel(Endpoint *ep, PyObject *Py_UNUSED(ignored))
{
    if (atomic_load_explicit(&ep->closed, memory_order_relaxed) || !ep->map)
        Py_RETURN_FALSE;
    int any = 0;
    if (ep->busy[ROLE_READ]) {
        atomic_store_explicit(&ep->cancel[ROLE_READ], 1, memory_order_seq_cst);
        wake_word(&ep->rctl->data_futex);
        any = 1;
    }
    if (ep->busy[ROLE_WRITE]) {
        atomic_store_explicit(&ep->cancel[ROLE_WRITE], 1, memory_order_seq_cst);
        wake_word(&ep->wctl->space_futex);
        any = 1;
    }
    return PyBool_FromLong(any);
}

static void do_close(Endpoint *ep)
{
    if (atomic_load_explicit(&ep->closed, memory_order_relaxed))
        return;
    atomic_store_explicit(&ep->closed, 1, memory_order_seq_cst);
    if (ep->map) {
        /* The side closes when its last endpoint does (a handle handed over to another
         * process keeps the connection, as a dup()ed socket does); threads of ours blocked
         * in this endpoint wake either way and see `closed`. */
        if (getpid() == ep->pid &&
            atomic_fetch_sub_explicit(&ep->wctl->users, 1, memory_order_acq_rel) == 1) {
            signal_closed(ep);
        }
        else {
            wake_word(&ep->rctl->data_futex);
            wake_word(&ep->wctl->space_futex);
        }
        /* running calls and views hold their own references */
        Py_CLEAR(ep->map);
    }
    if (!ep->busy[ROLE_READ])
        clear_carry(ep);
}

static PyObject *ep_close(Endpoint *ep, PyObject *Py_UNUSED(ignored))
{
    do_close(ep);
    Py_RETURN_NONE;
}

static PyObject *ep_enter(Endpoint *ep, PyObject *Py_UNUSED(ignored))
{
    if (check_usable(ep) < 0)
        return NULL;
    return Py_NewRef((PyObject *)ep);
}

static PyObject *ep_exit(Endpoint *ep, PyObject *Py_UNUSED(args))
{
    do_close(ep);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ construction */

static int fail_value(const char *msg)
{
    PyErr_SetString(PyExc_ValueError, msg);
    return -1;
}

static int valid_capacity(uint64_t cap)
{
    return cap >= MIN_CAP && cap <= MAX_CAP && (cap & (cap - 1)) == 0;
}

static int map_region(Endpoint *ep, int fd, const region_header *hdr)
{
    uint64_t meta = hdr->header_size, cap = hdr->capacity;
    size_t length = (size_t)(meta + 4 * cap);
    unsigned char *base =
        mmap(NULL, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) {
        PyErr_Format(PyExc_ValueError, "cannot reserve %zu bytes of address space: %s", length,
                     strerror(errno));
        return -1;
    }
    int ok = mmap(base, (size_t)meta, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) !=
             MAP_FAILED;
    for (int r = 0; ok && r < 2; r++) {
        /* the peer's ring is mapped read-only: this side never writes there */
        int prot = r == ep->side ? PROT_READ | PROT_WRITE : PROT_READ;
        unsigned char *area = base + meta + (uint64_t)r * 2 * cap;
        off_t off = (off_t)(meta + (uint64_t)r * cap);
        ok = mmap(area, (size_t)cap, prot, MAP_SHARED | MAP_FIXED, fd, off) != MAP_FAILED &&
             mmap(area + cap, (size_t)cap, prot, MAP_SHARED | MAP_FIXED, fd, off) != MAP_FAILED;
    }
    if (!ok) {
        int err = errno;
        munmap(base, length);
        PyErr_Format(PyExc_ValueError, "cannot map the ring region: %s", strerror(err));
        return -1;
    }
    RingMap *m = PyObject_New(RingMap, &RingMapType);
    if (!m) {
        munmap(base, length);
        return -1;
    }
    m->base = base;
    m->length = length;
    ep->map = m;
    ep->cap = cap;
    ep->mask = cap - 1;
    ep->wctl = (ring_ctl *)(base + CTL_OFFSET + (uint64_t)ep->side * CTL_STRIDE);
    ep->rctl = (ring_ctl *)(base + CTL_OFFSET + (uint64_t)(1 - ep->side) * CTL_STRIDE);
    ep->wdata = base + meta + (uint64_t)ep->side * 2 * cap;
    ep->rdata = base + meta + (uint64_t)(1 - ep->side) * 2 * cap;
    return 0;
}

static int validate_fd(int fd, region_header *hdr)
{
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0)
        return fail_value("fd is not an open file descriptor");
    if (!S_ISREG(st.st_mode))
        return fail_value("fd is not a memfd ring region (not a regular file)");
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || (fl & O_ACCMODE) != O_RDWR)
        return fail_value("fd must be open for reading and writing");
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0)
        return fail_value("fd is not a memfd ring region (it cannot carry seals)");
    int need = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
    if ((seals & need) != need)
        return fail_value("fd is not a sealed ring region (it needs F_SEAL_SHRINK, "
                          "F_SEAL_GROW and F_SEAL_SEAL)");
    if (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE))
        return fail_value("fd is sealed against writing");
    if (st.st_size < (off_t)sizeof(region_header))
        return fail_value("fd is too small to be a ring region");
    if (pread(fd, hdr, sizeof *hdr, 0) != (ssize_t)sizeof *hdr)
        return fail_value("cannot read the ring region's header");
    if (memcmp(hdr->magic, RING_MAGIC, 8) != 0)
        return fail_value("fd is not a ring region (bad magic)");
    if (hdr->version != RING_VERSION)
        return fail_value("ring region version is not 1");
    if (!valid_capacity(hdr->capacity))
        return fail_value("ring region capacity is not a power of two in 64 KiB..1 GiB");
    uint64_t meta = hdr->header_size;
    long page = sysconf(_SC_PAGESIZE);
    if (meta < MIN_META || meta > MAX_META || page <= 0 || meta % (uint64_t)page)
        return fail_value("ring region header size is invalid");
    if (hdr->ctl_offset[0] != CTL_OFFSET || hdr->ctl_offset[1] != CTL_OFFSET + CTL_STRIDE ||
        hdr->data_offset[0] != meta || hdr->data_offset[1] != meta + hdr->capacity)
        return fail_value("ring region offsets are invalid");
    if (hdr->total_size != meta + 2 * hdr->capacity || (uint64_t)st.st_size != hdr->total_size)
        return fail_value("ring region size does not match its header");
    return 0;
}

static PyObject *ep_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"fd", "side", "sockfd", "max_message", NULL};
    int fd, side, sockfd = -1;
    long long max_message = DEFAULT_MAX_MESSAGE;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "ii|i$L:Endpoint", kwlist, &fd, &side, &sockfd,
                                     &max_message))
        return NULL;
    if (side != 0 && side != 1) {
        PyErr_Format(PyExc_ValueError, "side must be 0 (server) or 1 (client), not %d", side);
        return NULL;
    }
    if (max_message < 0 || max_message > PY_SSIZE_T_MAX) {
        PyErr_Format(PyExc_ValueError, "max_message must be within 0..%zd, not %lld",
                     PY_SSIZE_T_MAX, max_message);
        return NULL;
    }
    if (sockfd < -1) {
        PyErr_Format(PyExc_ValueError, "sockfd must be a socket descriptor or -1, not %d",
                     sockfd);
        return NULL;
    }
    if (sockfd >= 0) {
        struct stat st;
        if (fstat(sockfd, &st) < 0 || !S_ISSOCK(st.st_mode)) {
            PyErr_Format(PyExc_ValueError, "sockfd %d is not an open socket", sockfd);
            return NULL;
        }
    }
    region_header hdr;
    if (validate_fd(fd, &hdr) < 0)
        return NULL;
    Endpoint *ep = (Endpoint *)type->tp_alloc(type, 0);
    if (!ep)
        return NULL;
    /* tp_alloc zeroed everything: positions 0, no carry, no views */
    ep->side = side;
    ep->pid = getpid();
    ep->sockfd = sockfd;
    ep->max_message = (uint64_t)max_message;
    if (map_region(ep, fd, &hdr) < 0) {
        atomic_store_explicit(&ep->closed, 1, memory_order_relaxed);
        Py_DECREF(ep);
        return NULL;
    }
    ep->max_record = ep->cap / 4;
    /* Start where the region is: 0 in a new one; where the previous endpoint of this side
     * stopped when a connection is handed over. The peer may have planted these values:
     * they must be positions this side could have reached. */
    uint64_t t = atomic_load_explicit(&ep->rctl->tail, memory_order_acquire);
    uint64_t wh = atomic_load_explicit(&ep->wctl->head, memory_order_acquire);
    uint64_t wt = atomic_load_explicit(&ep->wctl->tail, memory_order_acquire);
    if ((t & 15u) || (wh & 15u) || wh - wt > ep->cap) {
        atomic_store_explicit(&ep->closed, 1, memory_order_relaxed);
        Py_DECREF(ep);
        PyErr_SetString(PyExc_ValueError,
                        "shared-memory ring is corrupt: its positions are not valid");
        return NULL;
    }
    ep->rpos = ep->rtail = ep->rseen = t;
    ep->whead = wh;
    ep->wtail = wt;
    atomic_fetch_add_explicit(&ep->wctl->users, 1, memory_order_acq_rel);
    return (PyObject *)ep;
}

static void ep_dealloc(Endpoint *ep)
{
    do_close(ep);
    Py_CLEAR(ep->map);
    clear_carry(ep);
    PyMem_Free(ep->fifo);
    ep->fifo = NULL;
    Py_TYPE(ep)->tp_free((PyObject *)ep);
}

/* ------------------------------------------------------------------ endpoint attributes */

static PyObject *ep_get_capacity(Endpoint *ep, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLongLong(ep->cap);
}

static PyObject *ep_get_side(Endpoint *ep, void *Py_UNUSED(c)) { return PyLong_FromLong(ep->side); }

static PyObject *ep_get_max_message(Endpoint *ep, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLongLong(ep->max_message);
}

static PyObject *ep_get_max_record(Endpoint *ep, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLongLong(ep->max_record);
}

static int ep_set_max_record(Endpoint *ep, PyObject *value, void *Py_UNUSED(c))
{
    if (!value) {
        PyErr_SetString(PyExc_AttributeError, "max_record cannot be deleted");
        return -1;
    }
    long long v = PyLong_AsLongLong(value);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < (long long)MIN_RECORD || (uint64_t)v > ep->cap - REC) {
        PyErr_Format(PyExc_ValueError, "max_record must be within %llu..%llu, not %lld",
                     (unsigned long long)MIN_RECORD, (unsigned long long)(ep->cap - REC), v);
        return -1;
    }
    ep->max_record = (uint64_t)v;
    return 0;
}

static PyObject *ep_get_spin_ns(Endpoint *ep, void *Py_UNUSED(c))
{
    return PyLong_FromLongLong(ep->spin_ns);
}

static int ep_set_spin_ns(Endpoint *ep, PyObject *value, void *Py_UNUSED(c))
{
    if (!value) {
        PyErr_SetString(PyExc_AttributeError, "spin_ns cannot be deleted");
        return -1;
    }
    long long v = PyLong_AsLongLong(value);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < 0 || v > MAX_SPIN_NS) {
        PyErr_Format(PyExc_ValueError, "spin_ns must be within 0..%lld, not %lld", MAX_SPIN_NS,
                     v);
        return -1;
    }
    ep->spin_ns = v;
    return 0;
}

static PyObject *ep_get_closed(Endpoint *ep, void *Py_UNUSED(c))
{
    return PyBool_FromLong(atomic_load_explicit(&ep->closed, memory_order_relaxed));
}

static PyObject *ep_get_broken(Endpoint *ep, void *Py_UNUSED(c))
{
    return PyBool_FromLong(ep->broken);
}

static PyObject *ep_get_peer_closed(Endpoint *ep, void *Py_UNUSED(c))
{
    if (!ep->map)
        Py_RETURN_FALSE;
    return PyBool_FromLong(
        atomic_load_explicit(&ep->rctl->writer_closed, memory_order_acquire) ||
        atomic_load_explicit(&ep->wctl->reader_closed, memory_order_acquire));
}

static PyObject *ep_get_unread(Endpoint *ep, void *Py_UNUSED(c))
{
    if (!ep->map)
        return PyLong_FromLong(0);
    uint64_t t = atomic_load_explicit(&ep->wctl->tail, memory_order_acquire);
    uint64_t n = ep->whead - t;
    /* the tail is the peer's to write: never report more than the ring can hold */
    return PyLong_FromUnsignedLongLong(n > ep->cap ? ep->cap : n);
}

static PyObject *ep_get_message_left(Endpoint *ep, void *Py_UNUSED(c))
{
    return PyLong_FromUnsignedLongLong(ep->in_msg ? ep->msg_left : 0);
}

static PyGetSetDef ep_getset[] = {
    {"capacity", (getter)ep_get_capacity, NULL, "Bytes in each ring.", NULL},
    {"side", (getter)ep_get_side, NULL, "0 (server) or 1 (client).", NULL},
    {"max_message", (getter)ep_get_max_message, NULL,
     "Longest message this reader accepts (bytes).", NULL},
    {"max_record", (getter)ep_get_max_record, (setter)ep_set_max_record,
     "Longest record payload this writer produces; longer messages go as fragments.", NULL},
    {"spin_ns", (getter)ep_get_spin_ns, (setter)ep_set_spin_ns,
     "Nanoseconds to spin before sleeping on the futex (0: never spin).", NULL},
    {"closed", (getter)ep_get_closed, NULL, "True after close().", NULL},
    {"broken", (getter)ep_get_broken, NULL, "True once the peer corrupted the region.", NULL},
    {"peer_closed", (getter)ep_get_peer_closed, NULL,
     "True once the other end closed its side (it may still have left data to read).", NULL},
    {"unread", (getter)ep_get_unread, NULL,
     "Bytes this end published that the other end has not consumed yet (FlushFileBuffers).",
     NULL},
    {"message_left", (getter)ep_get_message_left, NULL,
     "Bytes of the current message not yet read (0 at a message boundary).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

#define FASTKW(f) ((PyCFunction)(void (*)(void))(f))

static PyMethodDef ep_methods[] = {
    {"send", FASTKW(ep_send), METH_FASTCALL | METH_KEYWORDS, "send(data, timeout=None)"},
    {"send_many", FASTKW(ep_send_many), METH_FASTCALL | METH_KEYWORDS,
     "send_many(items, timeout=None) -> int"},
    {"send_control", FASTKW(ep_send_control), METH_FASTCALL | METH_KEYWORDS,
     "send_control(timeout=None)"},
    {"reserve", FASTKW(ep_reserve), METH_FASTCALL | METH_KEYWORDS,
     "reserve(n, timeout=None) -> WriteView"},
    {"recv", FASTKW(ep_recv), METH_FASTCALL | METH_KEYWORDS, "recv(timeout=None) -> bytes"},
    {"read", FASTKW(ep_read), METH_FASTCALL | METH_KEYWORDS,
     "read(size, timeout=None) -> bytes"},
    {"recv_into", FASTKW(ep_recv_into), METH_FASTCALL | METH_KEYWORDS,
     "recv_into(buffer, timeout=None) -> int"},
    {"recv_view", FASTKW(ep_recv_view), METH_FASTCALL | METH_KEYWORDS,
     "recv_view(timeout=None) -> View"},
    {"recv_many", FASTKW(ep_recv_many), METH_FASTCALL | METH_KEYWORDS,
     "recv_many(max_count, timeout=None) -> list[bytes]"},
    {"peek", FASTKW(ep_peek), METH_FASTCALL | METH_KEYWORDS,
     "peek(size) -> (data, waiting, message_left_after)"},
    {"readable", (PyCFunction)ep_readable, METH_NOARGS, "readable() -> bool"},
    {"arm_doorbell", (PyCFunction)ep_arm_doorbell, METH_NOARGS, "arm_doorbell() -> bool"},
    {"cancel", (PyCFunction)ep_cancel, METH_NOARGS, "cancel() -> bool"},
    {"close", (PyCFunction)ep_close, METH_NOARGS, "close()"},
    {"__enter__", (PyCFunction)ep_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)ep_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyObject *ep_repr(Endpoint *ep)
{
    return PyUnicode_FromFormat("<winipc ring Endpoint side=%d capacity=%llu%s>", ep->side,
                                (unsigned long long)ep->cap,
                                atomic_load_explicit(&ep->closed, memory_order_relaxed)
                                    ? " closed"
                                    : (ep->broken ? " broken" : ""));
}

/* ------------------------------------------------------------------ View */

static int view_release_impl(View *v)
{
    if (v->released)
        return 0;
    if (v->exports > 0) {
        PyErr_Format(PyExc_BufferError,
                     "cannot release the ring view: %zd exported buffer(s) still exist",
                     v->exports);
        return -1;
    }
    v->released = 1;
    Endpoint *ep = v->ep;
    if (ep) {
        if (ep->map) {
            uint64_t idx = v->seq - ep->fifo_seq0;
            if (idx < ep->fifo_count)
                ep->fifo[(ep->fifo_head + idx) & (ep->fifo_cap - 1)].released = 1;
            release_space(ep);
        }
        v->ep = NULL;
        Py_DECREF(ep);
    }
    Py_CLEAR(v->owner);
    Py_CLEAR(v->map);
    v->ptr = NULL;
    return 0;
}

static void view_dealloc(View *v)
{
    /* exports hold references, so there are none left here */
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (view_release_impl(v) < 0)
        PyErr_WriteUnraisable((PyObject *)v);
    PyErr_Restore(type, value, tb);
    Py_TYPE(v)->tp_free((PyObject *)v);
}

static int view_getbuffer(View *v, Py_buffer *b, int flags)
{
    if (v->released) {
        PyErr_SetString(PyExc_ValueError, "operation forbidden on a released ring view");
        b->obj = NULL;
        return -1;
    }
    if (PyBuffer_FillInfo(b, (PyObject *)v, (void *)v->ptr, v->len, 1, flags) < 0)
        return -1;
    v->exports++;
    return 0;
}

static void view_releasebuffer(View *v, Py_buffer *Py_UNUSED(b)) { v->exports--; }

static PyBufferProcs view_as_buffer = {
    (getbufferproc)view_getbuffer,
    (releasebufferproc)view_releasebuffer,
};

static Py_ssize_t view_len(View *v)
{
    if (v->released) {
        PyErr_SetString(PyExc_ValueError, "operation forbidden on a released ring view");
        return -1;
    }
    return v->len;
}

static PySequenceMethods view_as_sequence = {.sq_length = (lenfunc)view_len};

static PyObject *view_release(View *v, PyObject *Py_UNUSED(ignored))
{
    if (view_release_impl(v) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *view_enter(View *v, PyObject *Py_UNUSED(ignored))
{
    if (v->released) {
        PyErr_SetString(PyExc_ValueError, "operation forbidden on a released ring view");
        return NULL;
    }
    return Py_NewRef((PyObject *)v);
}

static PyObject *view_exit(View *v, PyObject *Py_UNUSED(args))
{
    if (view_release_impl(v) < 0)
        return NULL;
    Py_RETURN_FALSE;
}

static PyObject *view_get_released(View *v, void *Py_UNUSED(c))
{
    return PyBool_FromLong(v->released);
}

static PyObject *view_get_zero_copy(View *v, void *Py_UNUSED(c))
{
    return PyBool_FromLong(v->zero_copy);
}

static PyObject *view_repr(View *v)
{
    if (v->released)
        return PyUnicode_FromString("<winipc ring View released>");
    return PyUnicode_FromFormat("<winipc ring View %zd bytes%s>", v->len,
                                v->zero_copy ? " zero-copy" : "");
}

static PyMethodDef view_methods[] = {
    {"release", (PyCFunction)view_release, METH_NOARGS,
     "Give the bytes back to the ring (they may be overwritten afterwards)."},
    {"__enter__", (PyCFunction)view_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)view_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef view_getset[] = {
    {"released", (getter)view_get_released, NULL, "True after release().", NULL},
    {"zero_copy", (getter)view_get_zero_copy, NULL,
     "True when the bytes are read in place in the shared ring.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* ------------------------------------------------------------------ WriteView */

static int wv_finish(WriteView *wv, int commit, uint64_t length)
{
    if (wv->done) {
        PyErr_SetString(PyExc_ValueError, "the reservation was already committed or aborted");
        return -1;
    }
    if (wv->exports > 0) {
        PyErr_Format(PyExc_BufferError,
                     "cannot finish the reservation: %zd exported buffer(s) still exist",
                     wv->exports);
        return -1;
    }
    Endpoint *ep = wv->ep;
    wv->done = 1;
    ep->reserved = 0;
    int rc = 0;
    if (commit) {
        if (check_usable(ep) < 0) {
            rc = -1;
        }
        else if (atomic_load_explicit(&ep->wctl->reader_closed, memory_order_acquire)) {
            PyErr_SetString(PyExc_BrokenPipeError, "ring: the other end has closed");
            rc = -1;
        }
        else {
            /* only this reservation can have written since reserve(): whead == pos */
            unsigned char *p = ep->wdata + (wv->pos & ep->mask);
            uint32_t l32 = (uint32_t)length;
            uint16_t k16 = KIND_DATA, f16 = F_FIRST | F_LAST;
            memcpy(p, &l32, 4);
            memcpy(p + 4, &k16, 2);
            memcpy(p + 6, &f16, 2);
            memcpy(p + 8, &length, 8);
            uint64_t padded = pad16(length);
            if (padded > length)
                memset(p + REC + length, 0, (size_t)(padded - length));
            ep->whead = wv->pos + REC + padded;
            writer_publish(ep);
        }
    }
    wv->ptr = NULL;
    Py_CLEAR(wv->map);
    Py_CLEAR(wv->ep);
    return rc;
}

static PyObject *wv_commit(WriteView *wv, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    static const char *const names[] = {"length"};
    PyObject *a[1];
    if (parse_args("commit", args, nargs, kwnames, names, 1, 0, a) < 0)
        return NULL;
    uint64_t length = (uint64_t)wv->n;
    if (a[0] && a[0] != Py_None) {
        if (parse_size(a[0], "length", &length) < 0)
            return NULL;
        if (length > (uint64_t)wv->n) {
            PyErr_Format(PyExc_ValueError, "length must be within 0..%zd (the reservation), "
                         "not %llu", wv->n, (unsigned long long)length);
            return NULL;
        }
    }
    if (wv_finish(wv, 1, length) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *wv_abort(WriteView *wv, PyObject *Py_UNUSED(ignored))
{
    if (wv_finish(wv, 0, 0) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *wv_enter(WriteView *wv, PyObject *Py_UNUSED(ignored))
{
    if (wv->done) {
        PyErr_SetString(PyExc_ValueError, "the reservation was already committed or aborted");
        return NULL;
    }
    return Py_NewRef((PyObject *)wv);
}

static PyObject *wv_exit(WriteView *wv, PyObject *args)
{
    PyObject *et = PyTuple_GET_SIZE(args) > 0 ? PyTuple_GET_ITEM(args, 0) : Py_None;
    if (!wv->done && wv_finish(wv, et == Py_None, (uint64_t)wv->n) < 0)
        return NULL;
    Py_RETURN_FALSE;
}

static void wv_dealloc(WriteView *wv)
{
    if (!wv->done) { /* dropped without commit: nothing was published */
        wv->done = 1;
        if (wv->ep)
            wv->ep->reserved = 0;
    }
    Py_CLEAR(wv->map);
    Py_CLEAR(wv->ep);
    Py_TYPE(wv)->tp_free((PyObject *)wv);
}

static int wv_getbuffer(WriteView *wv, Py_buffer *b, int flags)
{
    if (wv->done) {
        PyErr_SetString(PyExc_ValueError, "operation forbidden on a finished reservation");
        b->obj = NULL;
        return -1;
    }
    if (PyBuffer_FillInfo(b, (PyObject *)wv, wv->ptr, wv->n, 0, flags) < 0)
        return -1;
    wv->exports++;
    return 0;
}

static void wv_releasebuffer(WriteView *wv, Py_buffer *Py_UNUSED(b)) { wv->exports--; }

static PyBufferProcs wv_as_buffer = {
    (getbufferproc)wv_getbuffer,
    (releasebufferproc)wv_releasebuffer,
};

static Py_ssize_t wv_len(WriteView *wv)
{
    if (wv->done) {
        PyErr_SetString(PyExc_ValueError, "operation forbidden on a finished reservation");
        return -1;
    }
    return wv->n;
}

static PySequenceMethods wv_as_sequence = {.sq_length = (lenfunc)wv_len};

static PyObject *wv_get_done(WriteView *wv, void *Py_UNUSED(c))
{
    return PyBool_FromLong(wv->done);
}

static PyMethodDef wv_methods[] = {
    {"commit", FASTKW(wv_commit), METH_FASTCALL | METH_KEYWORDS,
     "commit(length=None): publish the first length bytes (default all) as one message."},
    {"abort", (PyCFunction)wv_abort, METH_NOARGS, "abort(): publish nothing."},
    {"__enter__", (PyCFunction)wv_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)wv_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef wv_getset[] = {
    {"done", (getter)wv_get_done, NULL, "True after commit() or abort().", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* ------------------------------------------------------------------ module functions */

static int capacity_arg(PyObject *arg, uint64_t *cap)
{
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(arg, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (overflow || v < 0 || !valid_capacity((uint64_t)v)) {
        PyErr_Format(PyExc_ValueError,
                     "capacity must be a power of two from %llu (64 KiB) to %llu (1 GiB), not %R",
                     (unsigned long long)MIN_CAP, (unsigned long long)MAX_CAP, arg);
        return -1;
    }
    *cap = (uint64_t)v;
    return 0;
}

static PyObject *mod_region_size(PyObject *Py_UNUSED(mod), PyObject *arg)
{
    uint64_t cap;
    if (capacity_arg(arg, &cap) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(meta_size() + 2 * cap);
}

static PyObject *mod_create(PyObject *Py_UNUSED(mod), PyObject *arg)
{
    uint64_t cap;
    if (capacity_arg(arg, &cap) < 0)
        return NULL;
    uint64_t meta = meta_size();
    region_header hdr;
    memset(&hdr, 0, sizeof hdr);
    memcpy(hdr.magic, RING_MAGIC, 8);
    hdr.version = RING_VERSION;
    hdr.header_size = (uint32_t)meta;
    hdr.capacity = cap;
    hdr.ctl_offset[0] = CTL_OFFSET;
    hdr.ctl_offset[1] = CTL_OFFSET + CTL_STRIDE;
    hdr.data_offset[0] = meta;
    hdr.data_offset[1] = meta + cap;
    hdr.total_size = meta + 2 * cap;
    int fd = memfd_create("winipc-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    /* the control blocks start zeroed: positions 0, nobody asleep, nothing closed */
    if (ftruncate(fd, (off_t)hdr.total_size) < 0 ||
        pwrite(fd, &hdr, sizeof hdr, 0) != (ssize_t)sizeof hdr ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
        int err = errno;
        close(fd);
        errno = err ? err : EIO;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong(fd);
}

static PyMethodDef mod_methods[] = {
    {"create", (PyCFunction)mod_create, METH_O,
     "create(capacity) -> fd: a new sealed memfd holding two rings of capacity bytes each."},
    {"region_size", (PyCFunction)mod_region_size, METH_O,
     "region_size(capacity) -> int: bytes of the memfd create(capacity) makes."},
    {NULL, NULL, 0, NULL},
};

/* ------------------------------------------------------------------ types and module */

static PyTypeObject RingMapType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "winipc._native._ring._Mapping",
    .tp_basicsize = sizeof(RingMap),
    .tp_dealloc = (destructor)ringmap_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The address range of one endpoint's mapping (internal).",
};

static PyTypeObject EndpointType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "winipc._native._ring.Endpoint",
    .tp_basicsize = sizeof(Endpoint),
    .tp_dealloc = (destructor)ep_dealloc,
    .tp_repr = (reprfunc)ep_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Endpoint(fd, side, sockfd=-1, *, max_message=256 MiB): one side of a ring "
              "region; writes ring[side], reads ring[1 - side].",
    .tp_methods = ep_methods,
    .tp_getset = ep_getset,
    .tp_new = ep_new,
};

static PyTypeObject ViewType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "winipc._native._ring.View",
    .tp_basicsize = sizeof(View),
    .tp_dealloc = (destructor)view_dealloc,
    .tp_repr = (reprfunc)view_repr,
    .tp_as_sequence = &view_as_sequence,
    .tp_as_buffer = &view_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A received message as a read-only buffer; release() gives it back.",
    .tp_methods = view_methods,
    .tp_getset = view_getset,
};

static PyTypeObject WriteViewType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "winipc._native._ring.WriteView",
    .tp_basicsize = sizeof(WriteView),
    .tp_dealloc = (destructor)wv_dealloc,
    .tp_as_sequence = &wv_as_sequence,
    .tp_as_buffer = &wv_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Writable free space of the ring; commit() publishes it as one message.",
    .tp_methods = wv_methods,
    .tp_getset = wv_getset,
};

static struct PyModuleDef ring_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "winipc._native._ring",
    .m_doc = "Shared-memory rings for local pipe connections (docs/fastpath.md).",
    .m_size = -1,
    .m_methods = mod_methods,
};

static int add_int(PyObject *m, const char *name, long long v)
{
    PyObject *o = PyLong_FromLongLong(v);
    if (!o)
        return -1;
    int rc = PyModule_AddObjectRef(m, name, o);
    Py_DECREF(o);
    return rc;
}

PyMODINIT_FUNC PyInit__ring(void)
{
    if (PyType_Ready(&RingMapType) < 0 || PyType_Ready(&EndpointType) < 0 ||
        PyType_Ready(&ViewType) < 0 || PyType_Ready(&WriteViewType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&ring_module);
    if (!m)
        return NULL;
    SocketEvent = PyErr_NewExceptionWithDoc(
        "winipc._native._ring.SocketEvent",
        "A reader's wait found the control socket readable while the ring was empty: "
        "handle the socket, then call again.",
        NULL, NULL);
    ControlPending = PyErr_NewExceptionWithDoc(
        "winipc._native._ring.ControlPending",
        "A CONTROL record was consumed: the next control frame is on the socket.", NULL, NULL);
    PyObject *doorbell = PyBytes_FromStringAndSize(DOORBELL, sizeof DOORBELL);
    if (!SocketEvent || !ControlPending || !doorbell ||
        PyModule_AddObjectRef(m, "SocketEvent", SocketEvent) < 0 ||
        PyModule_AddObjectRef(m, "ControlPending", ControlPending) < 0 ||
        PyModule_AddObjectRef(m, "Endpoint", (PyObject *)&EndpointType) < 0 ||
        PyModule_AddObjectRef(m, "View", (PyObject *)&ViewType) < 0 ||
        PyModule_AddObjectRef(m, "WriteView", (PyObject *)&WriteViewType) < 0 ||
        PyModule_AddObjectRef(m, "DOORBELL", doorbell) < 0 ||
        add_int(m, "VERSION", RING_VERSION) < 0 || add_int(m, "MIN_CAPACITY", MIN_CAP) < 0 ||
        add_int(m, "MAX_CAPACITY", MAX_CAP) < 0 || add_int(m, "MIN_RECORD", MIN_RECORD) < 0 ||
        add_int(m, "RECORD_HEADER", REC) < 0 ||
        add_int(m, "DEFAULT_MAX_MESSAGE", DEFAULT_MAX_MESSAGE) < 0 ||
        add_int(m, "KIND_DATA", KIND_DATA) < 0 || add_int(m, "KIND_CONTROL", KIND_CONTROL) < 0 ||
        add_int(m, "FLAG_FIRST", F_FIRST) < 0 || add_int(m, "FLAG_LAST", F_LAST) < 0 ||
        add_int(m, "CONTROL_OFFSET", CTL_OFFSET) < 0 ||
        add_int(m, "CONTROL_STRIDE", CTL_STRIDE) < 0) {
        Py_XDECREF(doorbell);
        Py_DECREF(m);
        return NULL;
    }
    Py_DECREF(doorbell);
    return m;
}
