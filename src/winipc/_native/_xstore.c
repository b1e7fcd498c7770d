/*
 * winipc._native._xstore: the in-memory store of a local queue's express messages.
 *
 * MSMQ keeps express messages in memory only: they are lost when the machine (or the
 * queue manager) restarts, and cost no disk write. winipc has no queue manager process,
 * so a queue's express messages live in one file in /dev/shm that every process using
 * the queue maps. docs/wire/msmq-express.md specifies the layout; in short:
 *
 *   header page | blocks of BLOCK bytes
 *
 * A message is a chain of blocks: a head block (state HEAD, list links, stamp, expiry,
 * length, CRC, key lengths, priority) followed by CONT blocks. Its bytes (key 1, key 2,
 * data) run through the chain. Heads are kept in eight doubly linked FIFO lists, one per
 * priority, in stamp order (the stamp is the arrival time in ns, kept increasing).
 *
 * All state changes happen under a robust process-shared mutex in the header. A process
 * that dies holding it leaves the structure half-changed; the next locker gets EOWNERDEAD
 * and rebuilds everything from the blocks alone (rebuild()): a head counts only in state
 * HEAD with a complete chain of CONT blocks it alone claims, so a crashed put leaves
 * nothing and a crashed take removes the message or leaves it whole. Setting a head's
 * state is therefore the commit point of a put (last) and of a take (first).
 *
 * Every process mapping the file runs as the file's owner (0600, checked by the caller),
 * so the peers are the user's own processes; still, every index read from shared memory is
 * bounds-checked before use, so a damaged file makes calls raise, never crash.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define XS_MAGIC "WXSTORE1"
#define XS_VERSION 2u
#define XS_VERSION_OLDEST 1u /* v1 stores (msgpack records only) are still opened */
#define NPRI 8
#define NONE 0xFFFFFFFFu
#define BLOCK 512u
#define DATA_OFF 4096u
#define BLK_HDR 8u
#define HEAD_HDR 48u /* BLK_HDR + the head fields */
#define MAX_KEY 1024u

enum { ST_FREE = 0, ST_HEAD = 1, ST_CONT = 2, ST_WRITING = 3 };
enum { M_FIRST = 0, M_KEY1 = 1, M_KEY2 = 2, M_AFTER = 3, M_EXACT = 4 };
enum { OP_LOCATE = 0, OP_PEEK = 1, OP_TAKE = 2 };

typedef struct {
    char magic[8];
    uint32_t version;
    uint32_t block;
    uint64_t size;
    uint32_t nblocks;
    uint32_t data_off;
    uint32_t mutex_size;
    _Atomic uint32_t deleted; /* offset 36: set by MQDeleteQueue before it unlinks the file */
    pthread_mutex_t lock;
    /* under lock */
    uint32_t brk;       /* blocks [0, brk) have been handed out at least once */
    uint32_t free_head; /* freed blocks, linked through their next field */
    uint32_t nfree;
    uint32_t pad1;
    uint64_t last_stamp;
    uint64_t count;
    uint64_t bytes;     /* data bytes of the messages held (keys not counted) */
    uint32_t head[NPRI];
    uint32_t tail[NPRI];
    uint64_t rebuilds;
    /* atomics, outside the lock */
    _Atomic uint32_t waiters; /* receivers between wait_begin and wait_end */
    uint32_t pad2;
    _Atomic uint64_t gen;     /* bumped by whoever makes other stores' messages ready */
    _Atomic uint64_t changes; /* bumped by every put and take */
} Header;

typedef struct {
    uint32_t state;
    uint32_t next;
} Blk;

typedef struct {
    Blk b;
    uint32_t next_msg;
    uint32_t prev_msg;
    uint64_t stamp;
    double expires;
    uint32_t len;
    uint32_t crc;
    uint16_t k1len;
    uint16_t k2len;
    uint8_t pri;
    uint8_t pad[3];
} Head;

_Static_assert(sizeof(Head) == HEAD_HDR, "head layout");
_Static_assert(offsetof(Header, deleted) == 36, "the deleted flag sits at a fixed offset (Python sets it too)");
_Static_assert(sizeof(Header) <= DATA_OFF, "header fits its page");

typedef struct {
    PyObject_HEAD
    char *base;
    size_t size;
    Header *h;
    uint32_t nblocks;
    uint32_t my_waiters; /* this object's wait_begin calls not yet ended */
} XStore;

static PyObject *FullError;
/* tests only: die (exit code 77) holding the lock at this point of a put or take */
static int crash_point;
#define CRASH_AT(n)              \
    do {                         \
        if (crash_point == (n))  \
            _exit(77);           \
    } while (0)

/* ------------------------------------------------------------------ helpers */

static inline Blk *blk(XStore *s, uint32_t i) { return (Blk *)(s->base + DATA_OFF + (size_t)i * BLOCK); }
static inline Head *head_of(XStore *s, uint32_t i) { return (Head *)blk(s, i); }

static uint32_t chain_blocks(uint64_t stream)
{
    if (stream <= BLOCK - HEAD_HDR)
        return 1;
    return 1 + (uint32_t)((stream - (BLOCK - HEAD_HDR) + (BLOCK - BLK_HDR) - 1) / (BLOCK - BLK_HDR));
}

static uint64_t stream_len(const Head *hd) { return (uint64_t)hd->k1len + hd->k2len + hd->len; }

static int corrupt(const char *what)
{
    PyErr_Format(PyExc_ValueError, "express store damaged: %s", what);
    return -1;
}

enum { IO_READ = 0, IO_CMP = 1, IO_WRITE = 2 };

/* n bytes of the message's stream at offset off: copied into buf (IO_READ), compared with
 * buf (IO_CMP: returns 1 equal, 0 different) or written from buf (IO_WRITE); -1 with
 * ValueError on a bad chain */
static int chain_io(XStore *s, uint32_t hi, uint64_t off, char *buf, uint64_t n, int how)
{
    uint32_t i = hi;
    uint64_t pos = 0; /* stream offset of the current block's first byte */
    uint64_t cap = BLOCK - HEAD_HDR;
    char *p = (char *)blk(s, hi) + HEAD_HDR;
    uint32_t hops = 0;
    while (n > 0) {
        if (off < pos + cap) {
            uint64_t in = off - pos;
            uint64_t k = cap - in < n ? cap - in : n;
            if (how == IO_CMP) {
                if (memcmp(p + in, buf, k) != 0)
                    return 0;
            } else if (how == IO_WRITE) {
                memcpy(p + in, buf, k);
            } else {
                memcpy(buf, p + in, k);
            }
            buf += k;
            off += k;
            n -= k;
            if (n == 0)
                break;
        }
        pos += cap;
        uint32_t nx = blk(s, i)->next;
        if (nx >= s->nblocks || ++hops > s->nblocks)
            return corrupt("a message's chain leaves the store");
        i = nx;
        if (blk(s, i)->state != ST_CONT)
            return corrupt("a message's chain runs into a block that is not its own");
        cap = BLOCK - BLK_HDR;
        p = (char *)blk(s, i) + BLK_HDR;
    }
    return 1;
}

static void free_chain(XStore *s, uint32_t hi)
{
    Header *h = s->h;
    Head *hd = head_of(s, hi);
    uint32_t n = chain_blocks(stream_len(hd));
    uint32_t i = hi;
    hd->b.state = ST_FREE; /* the commit point of a take */
    for (uint32_t k = 0; k < n && i < s->nblocks; k++) {
        Blk *b = blk(s, i);
        uint32_t nx = b->next;
        b->state = ST_FREE;
        b->next = h->free_head;
        h->free_head = i;
        h->nfree++;
        i = nx;
    }
}

static void list_unlink(XStore *s, uint32_t hi)
{
    Header *h = s->h;
    Head *hd = head_of(s, hi);
    uint8_t p = hd->pri;
    if (hd->prev_msg == NONE)
        h->head[p] = hd->next_msg;
    else
        head_of(s, hd->prev_msg)->next_msg = hd->next_msg;
    if (hd->next_msg == NONE)
        h->tail[p] = hd->prev_msg;
    else
        head_of(s, hd->next_msg)->prev_msg = hd->prev_msg;
}

static void list_append(XStore *s, uint32_t hi)
{
    Header *h = s->h;
    Head *hd = head_of(s, hi);
    uint8_t p = hd->pri;
    hd->next_msg = NONE;
    hd->prev_msg = h->tail[p];
    if (h->tail[p] == NONE)
        h->head[p] = hi;
    else
        head_of(s, h->tail[p])->next_msg = hi;
    h->tail[p] = hi;
}

/* ------------------------------------------------------------------ recovery */

typedef struct {
    uint64_t stamp;
    uint32_t idx;
    uint8_t pri;
} Found;

static int found_cmp(const void *a, const void *b)
{
    const Found *x = a, *y = b;
    if (x->pri != y->pri)
        return x->pri < y->pri ? -1 : 1;
    if (x->stamp != y->stamp)
        return x->stamp < y->stamp ? -1 : 1;
    return 0;
}

/* Rebuild lists, free list and counters from the blocks alone (a process died holding
 * the lock). Heads whose chain is incomplete or shared are dropped. */
static int rebuild(XStore *s)
{
    Header *h = s->h;
    uint32_t brk = h->brk <= s->nblocks ? h->brk : s->nblocks;
    uint8_t *claimed = calloc(brk ? brk : 1, 1);
    Found *found = malloc(sizeof(Found) * (brk ? brk : 1));
    if (!claimed || !found) {
        free(claimed);
        free(found);
        PyErr_NoMemory();
        return -1;
    }
    uint32_t nf = 0;
    for (uint32_t i = 0; i < brk; i++) {
        Head *hd = head_of(s, i);
        if (hd->b.state != ST_HEAD || hd->pri >= NPRI || hd->k1len > MAX_KEY || hd->k2len > MAX_KEY)
            continue;
        uint32_t n = chain_blocks(stream_len(hd));
        uint32_t j = i;
        int ok = !claimed[i];
        for (uint32_t k = 1; ok && k < n; k++) {
            j = blk(s, j)->next;
            if (j >= brk || claimed[j] || blk(s, j)->state != ST_CONT)
                ok = 0;
            else
                claimed[j] = 2; /* tentatively: this walk's */
        }
        /* settle this walk's tentative claims (a walk never marks a block twice) */
        j = i;
        for (;;) {
            j = blk(s, j)->next;
            if (j >= brk || claimed[j] != 2)
                break;
            claimed[j] = ok ? 1 : 0;
        }
        if (!ok) {
            hd->b.state = ST_FREE;
            continue;
        }
        claimed[i] = 1;
        found[nf].stamp = hd->stamp;
        found[nf].idx = i;
        found[nf].pri = hd->pri;
        nf++;
    }
    h->free_head = NONE;
    h->nfree = 0;
    for (uint32_t i = brk; i-- > 0;) {
        if (!claimed[i]) {
            Blk *b = blk(s, i);
            b->state = ST_FREE;
            b->next = h->free_head;
            h->free_head = i;
            h->nfree++;
        }
    }
    qsort(found, nf, sizeof(Found), found_cmp);
    for (int p = 0; p < NPRI; p++)
        h->head[p] = h->tail[p] = NONE;
    h->count = 0;
    h->bytes = 0;
    for (uint32_t f = 0; f < nf; f++) {
        list_append(s, found[f].idx);
        Head *hd = head_of(s, found[f].idx);
        h->count++;
        h->bytes += hd->len;
        if (hd->stamp > h->last_stamp)
            h->last_stamp = hd->stamp;
    }
    h->brk = brk;
    h->rebuilds++;
    free(claimed);
    free(found);
    return 0;
}

/* The GIL stays held while waiting: critical sections are short and never block, and
 * another thread of this process must not unmap the store (close) under a waiting call. */
static int lock(XStore *s)
{
    int rc = pthread_mutex_lock(&s->h->lock);
    if (rc == EOWNERDEAD) {
        if (rebuild(s) < 0) {
            pthread_mutex_unlock(&s->h->lock); /* not consistent: the next locker rebuilds */
            return -1;
        }
        pthread_mutex_consistent(&s->h->lock);
        return 0;
    }
    if (rc != 0) {
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

static void unlock(XStore *s) { pthread_mutex_unlock(&s->h->lock); }

/* ------------------------------------------------------------------ the type */

static int check_open(XStore *s)
{
    if (s->base == NULL) {
        PyErr_SetString(PyExc_ValueError, "express store is closed");
        return -1;
    }
    return 0;
}

static int XStore_init(XStore *self, PyObject *args, PyObject *kwds)
{
    static char *kw[] = {"fd", "create", NULL};
    int fd, create = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i|p", kw, &fd, &create))
        return -1;
    if (self->base != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "already initialized");
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (!S_ISREG(st.st_mode) || st.st_size < (off_t)(DATA_OFF + BLOCK) || st.st_size % BLOCK != 0
        || (uint64_t)st.st_size > (1ull << 40)) {
        PyErr_Format(PyExc_ValueError, "express store: a regular file of 4 KiB + n x %u bytes expected, not %lld bytes",
                     BLOCK, (long long)st.st_size);
        return -1;
    }
    size_t size = (size_t)st.st_size;
    void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    Header *h = m;
    uint32_t nblocks = (uint32_t)((size - DATA_OFF) / BLOCK);
    if (create) {
        memset(h, 0, sizeof(Header));
        pthread_mutexattr_t a;
        pthread_mutexattr_init(&a);
        pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
        pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
        int rc = pthread_mutex_init(&h->lock, &a);
        pthread_mutexattr_destroy(&a);
        if (rc != 0) {
            munmap(m, size);
            errno = rc;
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        h->version = XS_VERSION;
        h->block = BLOCK;
        h->size = size;
        h->nblocks = nblocks;
        h->data_off = DATA_OFF;
        h->mutex_size = (uint32_t)sizeof(pthread_mutex_t);
        h->free_head = NONE;
        for (int p = 0; p < NPRI; p++)
            h->head[p] = h->tail[p] = NONE;
        atomic_thread_fence(memory_order_release);
        memcpy(h->magic, XS_MAGIC, 8);
    } else if (memcmp(h->magic, XS_MAGIC, 8) != 0 || h->version < XS_VERSION_OLDEST || h->version > XS_VERSION
               || h->block != BLOCK
               || h->size != size || h->nblocks != nblocks || h->data_off != DATA_OFF
               || h->mutex_size != sizeof(pthread_mutex_t)) {
        munmap(m, size);
        PyErr_SetString(PyExc_ValueError, "express store: not a store of this version (header does not match)");
        return -1;
    }
    if (h->version < XS_VERSION)
        h->version = XS_VERSION; /* a v1 store gets format-2 records from now on */
    self->base = m;
    self->size = size;
    self->h = h;
    self->nblocks = nblocks;
    return 0;
}

static void drop_my_waiters(XStore *self)
{
    for (; self->my_waiters > 0; self->my_waiters--) {
        uint32_t w = atomic_load(&self->h->waiters);
        while (w > 0 && !atomic_compare_exchange_weak(&self->h->waiters, &w, w - 1)) {
        }
    }
}

static void XStore_dealloc(XStore *self)
{
    if (self->base) {
        drop_my_waiters(self);
        munmap(self->base, self->size);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *XStore_close(XStore *self, PyObject *Py_UNUSED(ignored))
{
    if (self->base) {
        drop_my_waiters(self);
        munmap(self->base, self->size);
        self->base = NULL;
        self->h = NULL;
    }
    Py_RETURN_NONE;
}

typedef struct {
    const char *buf;
    uint64_t len;
} Seg;

/* Store one message whose data is the concatenation of segs[0..nseg); returns 0 and sets
 * *stamp_out and *waiters_out, or -1 with an exception set. */
static int do_put(XStore *self, int pri, const char *k1, uint64_t k1len, const char *k2, uint64_t k2len,
                  const Seg *segs, int nseg, double expires, uint32_t crc, uint64_t *stamp_out, uint32_t *waiters_out)
{
    uint64_t dlen = 0;
    for (int g = 0; g < nseg; g++)
        dlen += segs[g].len;
    if (pri < 0 || pri >= NPRI) {
        PyErr_Format(PyExc_ValueError, "priority=%d: 0..7", pri);
        return -1;
    }
    if (k1len > MAX_KEY || k2len > MAX_KEY) {
        PyErr_Format(PyExc_ValueError, "keys are at most %u bytes", MAX_KEY);
        return -1;
    }
    if (dlen > 0xFFFFFFFFull) {
        PyErr_SetString(PyExc_ValueError, "data over 4 GiB");
        return -1;
    }
    uint64_t total = k1len + k2len + dlen;
    uint32_t need = chain_blocks(total);
    if (lock(self) < 0)
        return -1;
    Header *h = self->h;
    if (h->brk > self->nblocks || (uint64_t)h->nfree + (self->nblocks - h->brk) < need) {
        uint64_t avail = h->brk > self->nblocks ? 0 : (uint64_t)h->nfree + (self->nblocks - h->brk);
        unlock(self);
        PyErr_Format(FullError, "express store full: %llu bytes need %u blocks of %u, %llu free (store of %llu bytes)",
                     (unsigned long long)dlen, need, BLOCK, (unsigned long long)avail,
                     (unsigned long long)self->size);
        return -1;
    }
    /* allocate the chain */
    uint32_t first = NONE, prev = NONE;
    for (uint32_t k = 0; k < need; k++) {
        uint32_t i;
        if (h->free_head != NONE && h->free_head < self->nblocks && h->nfree > 0) {
            i = h->free_head;
            h->free_head = blk(self, i)->next;
            h->nfree--;
        } else if (h->free_head == NONE && h->brk < self->nblocks) {
            i = h->brk++;
        } else {
            /* the free list disagrees with its count: rebuild from the blocks (the chain
             * allocated so far is not referenced by a head and is freed by it) */
            int rc = rebuild(self);
            unlock(self);
            if (rc == 0)
                corrupt("the free list disagreed with its count (rebuilt; send again)");
            return -1;
        }
        Blk *b = blk(self, i);
        b->state = k == 0 ? ST_WRITING : ST_CONT;
        b->next = NONE;
        if (prev != NONE)
            blk(self, prev)->next = i;
        else
            first = i;
        prev = i;
    }
    CRASH_AT(1);
    Head *hd = head_of(self, first);
    hd->k1len = (uint16_t)k1len;
    hd->k2len = (uint16_t)k2len;
    hd->len = (uint32_t)dlen;
    hd->crc = crc;
    hd->pri = (uint8_t)pri;
    hd->expires = expires;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t stamp = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    if (stamp <= h->last_stamp)
        stamp = h->last_stamp + 1;
    h->last_stamp = stamp;
    hd->stamp = stamp;
    int bad = chain_io(self, first, 0, (char *)k1, k1len, IO_WRITE) < 0
              || chain_io(self, first, k1len, (char *)k2, k2len, IO_WRITE) < 0;
    uint64_t off = k1len + k2len;
    for (int g = 0; !bad && g < nseg; g++) {
        bad = chain_io(self, first, off, (char *)segs[g].buf, segs[g].len, IO_WRITE) < 0;
        off += segs[g].len;
    }
    if (bad) {
        free_chain(self, first);
        unlock(self);
        return -1;
    }
    list_append(self, first);
    h->count++;
    h->bytes += dlen;
    CRASH_AT(2);
    atomic_thread_fence(memory_order_release);
    hd->b.state = ST_HEAD; /* the commit point of a put */
    CRASH_AT(3);
    unlock(self);
    atomic_fetch_add(&h->changes, 1);
    atomic_thread_fence(memory_order_seq_cst); /* Dekker with wait_begin: publish, then look */
    *waiters_out = atomic_load(&h->waiters);
    *stamp_out = stamp;
    return 0;
}

/* put(priority, key1, key2, expires, crc, data) -> (stamp, waiters) */
static PyObject *XStore_put(XStore *self, PyObject *args)
{
    int pri;
    Py_buffer k1, k2, data;
    double expires;
    unsigned int crc;
    if (check_open(self) < 0)
        return NULL;
    if (!PyArg_ParseTuple(args, "iy*y*dIy*", &pri, &k1, &k2, &expires, &crc, &data))
        return NULL;
    PyObject *res = NULL;
    Seg seg = {data.buf, (uint64_t)data.len};
    uint64_t stamp;
    uint32_t w;
    if (do_put(self, pri, k1.buf, (uint64_t)k1.len, k2.buf, (uint64_t)k2.len, &seg, 1, expires, crc, &stamp, &w) == 0)
        res = Py_BuildValue("(KI)", (unsigned long long)stamp, w);
    PyBuffer_Release(&k1);
    PyBuffer_Release(&k2);
    PyBuffer_Release(&data);
    return res;
}

static int key_match(XStore *s, uint32_t i, int mode, const char *key, Py_ssize_t klen)
{
    Head *hd = head_of(s, i);
    if (mode == M_KEY1)
        return hd->k1len == klen ? chain_io(s, i, 0, (char *)key, (uint64_t)klen, IO_CMP) : 0;
    return hd->k2len == klen ? chain_io(s, i, hd->k1len, (char *)key, (uint64_t)klen, IO_CMP) : 0;
}

/* the index of the message a find selects, NONE when there is none; -2 on error */
static int64_t select_msg(XStore *s, int mode, const char *key, Py_ssize_t klen, int apri, uint64_t astamp)
{
    Header *h = s->h;
    uint64_t guard = 0;
    for (int p = NPRI - 1; p >= 0; p--) {
        if (mode == M_AFTER && p > apri)
            continue;
        if (mode == M_EXACT && p != apri)
            continue;
        uint32_t i = h->head[p];
        while (i != NONE) {
            if (i >= s->nblocks || ++guard > s->nblocks) {
                corrupt("a priority list leaves the store");
                return -2;
            }
            Head *hd = head_of(s, i);
            if (hd->b.state != ST_HEAD || hd->pri != p) {
                corrupt("a priority list holds a block that is not a message of its priority");
                return -2;
            }
            int hit;
            switch (mode) {
            case M_FIRST:
                hit = 1;
                break;
            case M_KEY1:
            case M_KEY2:
                hit = key_match(s, i, mode, key, klen);
                if (hit < 0)
                    return -2;
                break;
            case M_AFTER:
                hit = p < apri || hd->stamp > astamp;
                break;
            default: /* M_EXACT */
                hit = hd->stamp == astamp;
                break;
            }
            if (hit)
                return i;
            i = hd->next_msg;
        }
    }
    return NONE;
}

/* find(mode, key, priority, stamp, op) ->
 *   None, or (stamp, priority) for OP_LOCATE, or
 *   (stamp, priority, expires, crc, key1, key2, data) for OP_PEEK / OP_TAKE */
static PyObject *XStore_find(XStore *self, PyObject *args)
{
    int mode, apri, op;
    Py_buffer key;
    unsigned long long astamp;
    if (check_open(self) < 0)
        return NULL;
    if (!PyArg_ParseTuple(args, "iy*iKi", &mode, &key, &apri, &astamp, &op))
        return NULL;
    PyObject *res = NULL;
    if (mode < M_FIRST || mode > M_EXACT || op < OP_LOCATE || op > OP_TAKE) {
        PyErr_SetString(PyExc_ValueError, "find: bad mode or op");
        goto out;
    }
    if (lock(self) < 0)
        goto out;
    int64_t i = select_msg(self, mode, key.buf, key.len, apri, astamp);
    if (i == -2) {
        unlock(self);
        goto out;
    }
    if (i == NONE) {
        unlock(self);
        res = Py_NewRef(Py_None);
        goto out;
    }
    Head *hd = head_of(self, (uint32_t)i);
    if (op == OP_LOCATE) {
        res = Py_BuildValue("(Ki)", (unsigned long long)hd->stamp, (int)hd->pri);
        unlock(self);
        goto out;
    }
    PyObject *k1 = PyBytes_FromStringAndSize(NULL, hd->k1len);
    PyObject *k2 = PyBytes_FromStringAndSize(NULL, hd->k2len);
    PyObject *d = PyBytes_FromStringAndSize(NULL, hd->len);
    if (!k1 || !k2 || !d
        || chain_io(self, (uint32_t)i, 0, PyBytes_AS_STRING(k1), hd->k1len, IO_READ) < 0
        || chain_io(self, (uint32_t)i, hd->k1len, PyBytes_AS_STRING(k2), hd->k2len, IO_READ) < 0
        || chain_io(self, (uint32_t)i, (uint64_t)hd->k1len + hd->k2len, PyBytes_AS_STRING(d), hd->len, IO_READ) < 0) {
        unlock(self);
        Py_XDECREF(k1);
        Py_XDECREF(k2);
        Py_XDECREF(d);
        goto out;
    }
    unsigned long long st = hd->stamp;
    int pri = hd->pri;
    double ex = hd->expires;
    unsigned int crc = hd->crc;
    if (op == OP_TAKE) {
        list_unlink(self, (uint32_t)i);
        self->h->count--;
        self->h->bytes -= hd->len;
        CRASH_AT(4);
        free_chain(self, (uint32_t)i);
        CRASH_AT(5);
    }
    unlock(self);
    if (op == OP_TAKE)
        atomic_fetch_add(&self->h->changes, 1);
    res = Py_BuildValue("(KidINNN)", st, pri, ex, crc, k1, k2, d);
out:
    PyBuffer_Release(&key);
    return res;
}

static PyObject *XStore_stat(XStore *self, PyObject *Py_UNUSED(ignored))
{
    if (check_open(self) < 0 || lock(self) < 0)
        return NULL;
    Header *h = self->h;
    unsigned long long c = h->count, b = h->bytes, r = h->rebuilds;
    uint64_t free_blocks = h->brk > self->nblocks ? 0 : (uint64_t)h->nfree + (self->nblocks - h->brk);
    unlock(self);
    return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K}", "count", c, "bytes", b, "free_bytes",
                         (unsigned long long)(free_blocks * (BLOCK - BLK_HDR)), "capacity",
                         (unsigned long long)((uint64_t)self->nblocks * (BLOCK - BLK_HDR)), "rebuilds", r);
}

static PyObject *XStore_purge(XStore *self, PyObject *Py_UNUSED(ignored))
{
    if (check_open(self) < 0 || lock(self) < 0)
        return NULL;
    Header *h = self->h;
    unsigned long long n = 0;
    for (int p = 0; p < NPRI; p++) {
        uint32_t i = h->head[p];
        uint64_t guard = 0;
        while (i != NONE && i < self->nblocks && ++guard <= self->nblocks && head_of(self, i)->b.state == ST_HEAD) {
            uint32_t nx = head_of(self, i)->next_msg;
            free_chain(self, i);
            n++;
            i = nx;
        }
    }
    /* whatever a damaged list hid is found again by a rebuild */
    if (rebuild(self) < 0) {
        unlock(self);
        return NULL;
    }
    h->rebuilds--; /* not a recovery */
    unlock(self);
    atomic_fetch_add(&h->changes, 1);
    return PyLong_FromUnsignedLongLong(n);
}

/* check() -> list of problems (empty when the structure is sound) */
static PyObject *XStore_check(XStore *self, PyObject *Py_UNUSED(ignored))
{
    if (check_open(self) < 0 || lock(self) < 0)
        return NULL;
    Header *h = self->h;
    PyObject *out = PyList_New(0);
    if (!out) {
        unlock(self);
        return NULL;
    }
#define PROBLEM(...)                                                   \
    do {                                                               \
        PyObject *m_ = PyUnicode_FromFormat(__VA_ARGS__);              \
        if (!m_ || PyList_Append(out, m_) < 0) {                       \
            Py_XDECREF(m_);                                            \
            Py_DECREF(out);                                            \
            unlock(self);                                              \
            return NULL;                                               \
        }                                                              \
        Py_DECREF(m_);                                                 \
    } while (0)
    if (h->brk > self->nblocks) {
        PROBLEM("brk %u beyond %u blocks", h->brk, self->nblocks);
        unlock(self);
        return out;
    }
    uint64_t n = 0, bytes = 0, used = 0;
    for (int p = 0; p < NPRI; p++) {
        uint32_t i = h->head[p], prev = NONE;
        uint64_t last = 0, guard = 0;
        while (i != NONE) {
            if (i >= h->brk || ++guard > self->nblocks) {
                PROBLEM("priority %d: list leaves the used blocks", p);
                break;
            }
            Head *hd = head_of(self, i);
            if (hd->b.state != ST_HEAD || hd->pri != p) {
                PROBLEM("priority %d: block %u is not a message of that priority", p, i);
                break;
            }
            if (hd->prev_msg != prev)
                PROBLEM("priority %d: block %u: back link %u, expected %u", p, i, hd->prev_msg, prev);
            if (hd->stamp <= last && guard > 1)
                PROBLEM("priority %d: block %u out of stamp order", p, i);
            if (hd->k1len > MAX_KEY || hd->k2len > MAX_KEY)
                PROBLEM("block %u: key lengths %u, %u over %u", i, hd->k1len, hd->k2len, MAX_KEY);
            uint32_t nb = chain_blocks(stream_len(hd)), j = i;
            for (uint32_t k = 1; k < nb; k++) {
                j = blk(self, j)->next;
                if (j >= h->brk || blk(self, j)->state != ST_CONT) {
                    PROBLEM("block %u: chain broken after %u of %u blocks", i, k, nb);
                    break;
                }
            }
            used += nb;
            last = hd->stamp;
            n++;
            bytes += hd->len;
            prev = i;
            i = hd->next_msg;
        }
        if (h->tail[p] != prev)
            PROBLEM("priority %d: tail %u, expected %u", p, h->tail[p], prev);
    }
    if (n != h->count)
        PROBLEM("count %llu, lists hold %llu", (unsigned long long)h->count, (unsigned long long)n);
    if (bytes != h->bytes)
        PROBLEM("bytes %llu, lists hold %llu", (unsigned long long)h->bytes, (unsigned long long)bytes);
    uint64_t nfree = 0, guard = 0;
    for (uint32_t i = h->free_head; i != NONE; i = blk(self, i)->next) {
        if (i >= h->brk || ++guard > self->nblocks) {
            PROBLEM("free list leaves the used blocks");
            break;
        }
        if (blk(self, i)->state != ST_FREE)
            PROBLEM("free block %u in state %u", i, blk(self, i)->state);
        nfree++;
    }
    if (nfree != h->nfree)
        PROBLEM("free count %u, free list holds %llu", h->nfree, (unsigned long long)nfree);
    if (used + nfree != h->brk)
        PROBLEM("%llu blocks in messages and %llu free, %u used", (unsigned long long)used,
                (unsigned long long)nfree, h->brk);
#undef PROBLEM
    unlock(self);
    return out;
}

static PyObject *XStore_wait_begin(XStore *self, PyObject *Py_UNUSED(ignored))
{
    if (check_open(self) < 0)
        return NULL;
    atomic_fetch_add(&self->h->waiters, 1);
    self->my_waiters++;
    atomic_thread_fence(memory_order_seq_cst);
    Py_RETURN_NONE;
}

static PyObject *XStore_wait_end(XStore *self, PyObject *Py_UNUSED(ignored))
{
    if (self->base == NULL || self->my_waiters == 0)
        Py_RETURN_NONE; /* closed meanwhile: close() already took this object's count back */
    uint32_t w = atomic_load(&self->h->waiters);
    while (w > 0 && !atomic_compare_exchange_weak(&self->h->waiters, &w, w - 1)) {
    }
    self->my_waiters--;
    Py_RETURN_NONE;
}

static PyObject *XStore_bump_gen(XStore *self, PyObject *Py_UNUSED(ignored))
{
    if (check_open(self) < 0)
        return NULL;
    uint64_t g = atomic_fetch_add(&self->h->gen, 1) + 1;
    atomic_thread_fence(memory_order_seq_cst);
    return Py_BuildValue("(KI)", (unsigned long long)g, atomic_load(&self->h->waiters));
}

static PyObject *XStore_get_gen(XStore *self, void *Py_UNUSED(closure))
{
    if (check_open(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(atomic_load(&self->h->gen));
}

static PyObject *XStore_get_changes(XStore *self, void *Py_UNUSED(closure))
{
    if (check_open(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(atomic_load(&self->h->changes));
}

static PyObject *XStore_get_waiters(XStore *self, void *Py_UNUSED(closure))
{
    if (check_open(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLong(atomic_load(&self->h->waiters));
}

static PyObject *XStore_get_closed(XStore *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->base == NULL);
}

/* ------------------------------------------------------------------ records (format 2)
 *
 * A message's data is u32 record length | record | body; the head's crc is the CRC-32
 * (zlib's) of the whole data. Format-2 records (docs/wire/msmq-express.md):
 *
 *   0 u8 format (2)   1 u8 flags   2 u8 priority   3 u8 delivery   4 u8 acknowledge   5 u8 0
 *   6 u16 message_class   8 u32 app_specific   12 u32 abort_count   16 i64 sender_pid
 *   24 i64 sender_uid   32 f64 sent_time   40 f64 arrived_time   48 f64 time_to_reach_queue
 *   56 f64 time_to_be_received   64 seven strings (u32 length, 0xFFFFFFFF for None; UTF-8):
 *   id, label, correlation_id, response_queue, admin_queue, source_machine, destination_queue
 */

#define REC_FORMAT 2
#define REC_FIXED 64
#define F_DEAD_LETTER 1
#define F_TRANSACTIONAL 2
#define F_TTRQ 4
#define F_TTBR 8
#define F_MSGPACK 16
#define F_ALL 31
#define NSTR 7
#define NO_STR 0xFFFFFFFFu
#define MAX_REC 65536u

static uint32_t crc_tab[8][256];

static void crc_init(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_tab[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++)
        for (int t = 1; t < 8; t++)
            crc_tab[t][n] = crc_tab[0][crc_tab[t - 1][n] & 0xFF] ^ (crc_tab[t - 1][n] >> 8);
}

/* zlib's crc32(): crc_update(0, ...) of the whole equals zlib.crc32(data) */
static uint32_t crc_update(uint32_t crc, const unsigned char *p, size_t n)
{
    uint32_t c = ~crc;
    while (n && ((uintptr_t)p & 7)) {
        c = crc_tab[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
        n--;
    }
    while (n >= 8) {
        uint32_t a, b;
        memcpy(&a, p, 4);
        memcpy(&b, p + 4, 4);
        a ^= c;
        c = crc_tab[7][a & 0xFF] ^ crc_tab[6][(a >> 8) & 0xFF] ^ crc_tab[5][(a >> 16) & 0xFF] ^ crc_tab[4][a >> 24]
            ^ crc_tab[3][b & 0xFF] ^ crc_tab[2][(b >> 8) & 0xFF] ^ crc_tab[1][(b >> 16) & 0xFF] ^ crc_tab[0][b >> 24];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = crc_tab[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
    return ~c;
}

/* interned field names, in Message's order of the strings above */
enum {
    K_ID, K_LABEL, K_CORR, K_RESPQ, K_ADMINQ, K_SOURCE, K_DEST,
    K_PRI, K_DELIVERY, K_ACK, K_CLASS, K_APP, K_ABORTS, K_PID, K_UID, K_SENT, K_ARRIVED, K_TTRQ, K_TTBR,
    K_DEADLETTER, K_TX, K_BODYTYPE, K_BODY, K_LOOKUP, K_NKEYS
};
static const char *key_names[K_NKEYS] = {
    "id", "label", "correlation_id", "response_queue", "admin_queue", "source_machine", "destination_queue",
    "priority", "delivery", "acknowledge", "message_class", "app_specific", "abort_count", "sender_pid",
    "sender_uid", "sent_time", "arrived_time", "time_to_reach_queue", "time_to_be_received", "use_dead_letter",
    "transactional", "body_type", "body", "lookup_id",
};
static PyObject *keys[K_NKEYS];
/* set by configure(): the Message class, its defaults, enum members by value, body types */
static PyObject *empty_tuple, *msg_cls, *msg_defaults, *deliveries, *acks, *classes, *bt_bytes, *bt_msgpack, *dict_name;

static int fail_field(const char *name, const char *what)
{
    PyErr_Format(PyExc_TypeError, "message property %s: %s", name, what);
    return -1;
}

static PyObject *field(PyObject *d, int k)
{
    PyObject *v = PyDict_GetItemWithError(d, keys[k]); /* borrowed */
    if (!v && !PyErr_Occurred())
        PyErr_Format(PyExc_KeyError, "message property %s missing", key_names[k]);
    return v;
}

static int get_int(PyObject *d, int k, long long lo, long long hi, long long *out)
{
    PyObject *v = field(d, k);
    if (!v)
        return -1;
    if (!PyLong_Check(v))
        return fail_field(key_names[k], "not an int");
    int over = 0;
    long long x = PyLong_AsLongLongAndOverflow(v, &over);
    if (x == -1 && PyErr_Occurred())
        return -1;
    if (over || x < lo || x > hi) {
        PyErr_Format(PyExc_ValueError, "message property %s out of range", key_names[k]);
        return -1;
    }
    *out = x;
    return 0;
}

/* a float field, or (optional) None: *present 0 */
static int get_float(PyObject *d, int k, int optional, double *out, int *present)
{
    PyObject *v = field(d, k);
    if (!v)
        return -1;
    *present = 1;
    *out = 0.0;
    if (v == Py_None && optional) {
        *present = 0;
        return 0;
    }
    if (PyFloat_Check(v) || PyLong_Check(v)) { /* stored as a double, read back as a float */
        *out = PyFloat_AsDouble(v);
        return *out == -1.0 && PyErr_Occurred() ? -1 : 0;
    }
    return fail_field(key_names[k], "not a number");
}

static inline void put_u16(unsigned char *p, uint16_t v) { memcpy(p, &v, 2); }
static inline void put_u32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void put_u64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }
static inline uint16_t get_u16(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t get_u32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t get_u64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* put_message(fields, body, key1, key2) -> (stamp, waiters): encode a Message's attribute
 * dict (checked: exact types, ranges) as a format-2 record and store it with ``body`` */
static PyObject *XStore_put_message(XStore *self, PyObject *args)
{
    PyObject *d;
    Py_buffer body, k1, k2;
    if (check_open(self) < 0)
        return NULL;
    if (!PyArg_ParseTuple(args, "O!y*y*y*", &PyDict_Type, &d, &body, &k1, &k2))
        return NULL;
    PyObject *res = NULL;
    const char *str[NSTR];
    Py_ssize_t slen[NSTR];
    unsigned char fixed[4 + REC_FIXED];
    unsigned char *rec = NULL;
    uint64_t total = REC_FIXED;
    for (int k = 0; k < NSTR; k++) {
        PyObject *v = field(d, k);
        if (!v)
            goto out;
        if (v == Py_None && (k == K_CORR || k == K_RESPQ || k == K_ADMINQ)) {
            str[k] = NULL;
            slen[k] = 0;
        } else if (PyUnicode_Check(v)) {
            str[k] = PyUnicode_AsUTF8AndSize(v, &slen[k]);
            if (!str[k])
                goto out;
        } else {
            fail_field(key_names[k], "not a str");
            goto out;
        }
        total += 4 + (uint64_t)slen[k];
    }
    if (total > MAX_REC) {
        PyErr_SetString(PyExc_ValueError, "message properties over 64 KiB");
        goto out;
    }
    long long pri, delivery, ack, cls, app, aborts, pid, uid;
    double sent, arrived, ttrq, ttbr;
    int has_sent, has_arr, has_ttrq, has_ttbr;
    if (get_int(d, K_PRI, 0, NPRI - 1, &pri) < 0 || get_int(d, K_DELIVERY, 0, 255, &delivery) < 0
        || get_int(d, K_ACK, 0, 255, &ack) < 0 || get_int(d, K_CLASS, 0, 0xFFFF, &cls) < 0
        || get_int(d, K_APP, 0, 0xFFFFFFFFll, &app) < 0 || get_int(d, K_ABORTS, 0, 0xFFFFFFFFll, &aborts) < 0
        || get_int(d, K_PID, INT64_MIN, INT64_MAX, &pid) < 0 || get_int(d, K_UID, INT64_MIN, INT64_MAX, &uid) < 0
        || get_float(d, K_SENT, 0, &sent, &has_sent) < 0 || get_float(d, K_ARRIVED, 0, &arrived, &has_arr) < 0
        || get_float(d, K_TTRQ, 1, &ttrq, &has_ttrq) < 0 || get_float(d, K_TTBR, 1, &ttbr, &has_ttbr) < 0)
        goto out;
    int flags = (has_ttrq ? F_TTRQ : 0) | (has_ttbr ? F_TTBR : 0);
    PyObject *v;
    if (!(v = field(d, K_DEADLETTER)))
        goto out;
    if (!PyBool_Check(v)) {
        fail_field("use_dead_letter", "not a bool");
        goto out;
    }
    flags |= v == Py_True ? F_DEAD_LETTER : 0;
    if (!(v = field(d, K_TX)))
        goto out;
    if (!PyBool_Check(v)) {
        fail_field("transactional", "not a bool");
        goto out;
    }
    flags |= v == Py_True ? F_TRANSACTIONAL : 0;
    if (!(v = field(d, K_BODYTYPE)))
        goto out;
    if (!PyUnicode_CheckExact(v)) {
        fail_field("body_type", "not a str");
        goto out;
    }
    if (PyUnicode_Compare(v, bt_msgpack) == 0)
        flags |= F_MSGPACK;
    else if (PyUnicode_Compare(v, bt_bytes) != 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "message property body_type: bytes or msgpack");
        goto out;
    }
    rec = malloc(total - REC_FIXED + 1);
    if (!rec) {
        PyErr_NoMemory();
        goto out;
    }
    unsigned char *f = fixed + 4;
    put_u32(fixed, (uint32_t)total);
    memset(f, 0, REC_FIXED);
    f[0] = REC_FORMAT;
    f[1] = (unsigned char)flags;
    f[2] = (unsigned char)pri;
    f[3] = (unsigned char)delivery;
    f[4] = (unsigned char)ack;
    put_u16(f + 6, (uint16_t)cls);
    put_u32(f + 8, (uint32_t)app);
    put_u32(f + 12, (uint32_t)aborts);
    put_u64(f + 16, (uint64_t)pid);
    put_u64(f + 24, (uint64_t)uid);
    memcpy(f + 32, &sent, 8);
    memcpy(f + 40, &arrived, 8);
    memcpy(f + 48, &ttrq, 8);
    memcpy(f + 56, &ttbr, 8);
    unsigned char *q = rec;
    for (int k = 0; k < NSTR; k++) {
        put_u32(q, str[k] ? (uint32_t)slen[k] : NO_STR);
        q += 4;
        if (str[k]) {
            memcpy(q, str[k], (size_t)slen[k]);
            q += slen[k];
        }
    }
    uint32_t crc = crc_update(0, fixed, sizeof fixed);
    crc = crc_update(crc, rec, (size_t)(q - rec));
    crc = crc_update(crc, body.buf, (size_t)body.len);
    Seg segs[3] = {{(const char *)fixed, sizeof fixed}, {(const char *)rec, (uint64_t)(q - rec)},
                   {body.buf, (uint64_t)body.len}};
    double expires = has_ttbr ? sent + ttbr : 0.0;
    uint64_t stamp;
    uint32_t w;
    if (do_put(self, (int)pri, k1.buf, (uint64_t)k1.len, k2.buf, (uint64_t)k2.len, segs, 3, expires, crc, &stamp, &w) == 0)
        res = Py_BuildValue("(KI)", (unsigned long long)stamp, w);
out:
    free(rec);
    PyBuffer_Release(&body);
    PyBuffer_Release(&k1);
    PyBuffer_Release(&k2);
    return res;
}

static int dset(PyObject *d, int k, PyObject *v) /* steals v */
{
    if (!v)
        return -1;
    int rc = PyDict_SetItem(d, keys[k], v);
    Py_DECREF(v);
    return rc;
}

static PyObject *bad_record(const char *what)
{
    PyErr_Format(PyExc_ValueError, "express record: %s", what);
    return NULL;
}

/* decode(data, crc, stamp, priority) -> Message, or None for a record of format 1 (msgpack:
 * decoded in Python). ValueError when the CRC, a length, a type or a value is wrong; the
 * body is the stored bytes (a msgpack body is decoded by the caller, body_type says so). */
static PyObject *xs_decode(PyObject *Py_UNUSED(mod), PyObject *args)
{
    Py_buffer data;
    unsigned int crc;
    unsigned long long stamp;
    int pri;
    if (!msg_cls)
        return PyErr_Format(PyExc_RuntimeError, "configure() first");
    if (!PyArg_ParseTuple(args, "y*IKi", &data, &crc, &stamp, &pri))
        return NULL;
    PyObject *res = NULL, *d = NULL, *m = NULL;
    const unsigned char *p = data.buf;
    uint64_t n = (uint64_t)data.len;
    if (crc_update(0, p, (size_t)n) != crc) {
        PyErr_Format(PyExc_ValueError, "express message %llu fails its checksum", stamp);
        goto out;
    }
    if (n < 4 || get_u32(p) > n - 4) {
        bad_record("bad record length");
        goto out;
    }
    uint32_t rlen = get_u32(p);
    if (rlen == 0 || p[4] != REC_FORMAT) {
        res = Py_NewRef(Py_None); /* format 1: msgpack */
        goto out;
    }
    const unsigned char *f = p + 4;
    if (rlen < REC_FIXED || (f[1] & ~F_ALL) || f[5] != 0) {
        bad_record("bad fixed part");
        goto out;
    }
    if (f[2] != pri) {
        bad_record("record and store disagree");
        goto out;
    }
    d = PyDict_Copy(msg_defaults);
    if (!d)
        goto out;
    const unsigned char *q = f + REC_FIXED, *end = f + rlen;
    for (int k = 0; k < NSTR; k++) {
        if (end - q < 4) {
            bad_record("strings run past the record");
            goto out;
        }
        uint32_t L = get_u32(q);
        q += 4;
        PyObject *v;
        if (L == NO_STR) {
            if (k != K_CORR && k != K_RESPQ && k != K_ADMINQ) {
                bad_record("a required string is missing");
                goto out;
            }
            v = Py_NewRef(Py_None);
        } else {
            if ((uint64_t)(end - q) < L) {
                bad_record("strings run past the record");
                goto out;
            }
            v = PyUnicode_DecodeUTF8((const char *)q, L, "strict");
            q += L;
            if (!v) {
                PyErr_Clear();
                bad_record("a string is not UTF-8");
                goto out;
            }
        }
        if (dset(d, k, v) < 0)
            goto out;
    }
    if (q != end) {
        bad_record("bytes after the strings");
        goto out;
    }
    PyObject *key, *member;
    if (!(key = PyLong_FromLong(f[3])))
        goto out;
    member = PyDict_GetItemWithError(deliveries, key);
    Py_DECREF(key);
    if (!member) {
        if (!PyErr_Occurred())
            bad_record("delivery out of range");
        goto out;
    }
    if (PyDict_SetItem(d, keys[K_DELIVERY], member) < 0 || !(key = PyLong_FromLong(f[4])))
        goto out;
    member = PyDict_GetItemWithError(acks, key);
    Py_DECREF(key);
    if (!member) {
        if (!PyErr_Occurred())
            bad_record("acknowledge out of range");
        goto out;
    }
    if (PyDict_SetItem(d, keys[K_ACK], member) < 0 || !(key = PyLong_FromLong(get_u16(f + 6))))
        goto out;
    member = PyDict_GetItemWithError(classes, key);
    Py_DECREF(key);
    if (!member) {
        if (!PyErr_Occurred())
            bad_record("message class out of range");
        goto out;
    }
    if (PyDict_SetItem(d, keys[K_CLASS], member) < 0)
        goto out;
    double sent, arrived, ttrq, ttbr;
    memcpy(&sent, f + 32, 8);
    memcpy(&arrived, f + 40, 8);
    memcpy(&ttrq, f + 48, 8);
    memcpy(&ttbr, f + 56, 8);
    int fl = f[1];
    if (dset(d, K_PRI, PyLong_FromLong(f[2])) < 0 || dset(d, K_APP, PyLong_FromUnsignedLong(get_u32(f + 8))) < 0
        || dset(d, K_ABORTS, PyLong_FromUnsignedLong(get_u32(f + 12))) < 0
        || dset(d, K_PID, PyLong_FromLongLong((long long)get_u64(f + 16))) < 0
        || dset(d, K_UID, PyLong_FromLongLong((long long)get_u64(f + 24))) < 0
        || dset(d, K_SENT, PyFloat_FromDouble(sent)) < 0 || dset(d, K_ARRIVED, PyFloat_FromDouble(arrived)) < 0
        || dset(d, K_TTRQ, fl & F_TTRQ ? PyFloat_FromDouble(ttrq) : Py_NewRef(Py_None)) < 0
        || dset(d, K_TTBR, fl & F_TTBR ? PyFloat_FromDouble(ttbr) : Py_NewRef(Py_None)) < 0
        || dset(d, K_DEADLETTER, PyBool_FromLong(fl & F_DEAD_LETTER)) < 0
        || dset(d, K_TX, PyBool_FromLong(fl & F_TRANSACTIONAL)) < 0
        || PyDict_SetItem(d, keys[K_BODYTYPE], fl & F_MSGPACK ? bt_msgpack : bt_bytes) < 0
        || dset(d, K_BODY, PyBytes_FromStringAndSize((const char *)end, (Py_ssize_t)(p + n - end))) < 0
        || dset(d, K_LOOKUP, PyLong_FromUnsignedLongLong(stamp)) < 0)
        goto out;
    m = PyBaseObject_Type.tp_new((PyTypeObject *)msg_cls, empty_tuple, NULL);
    if (!m)
        goto out;
    if (PyObject_SetAttr(m, dict_name, d) < 0)
        goto out;
    res = Py_NewRef(m);
out:
    Py_XDECREF(m);
    Py_XDECREF(d);
    PyBuffer_Release(&data);
    return res;
}

/* configure(Message, defaults, deliveries, acks, classes, "bytes", "msgpack") */
static PyObject *xs_configure(PyObject *Py_UNUSED(mod), PyObject *args)
{
    PyObject *c, *df, *dv, *ak, *cl, *bb, *bm;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!UU", &PyType_Type, &c, &PyDict_Type, &df, &PyDict_Type, &dv, &PyDict_Type,
                          &ak, &PyDict_Type, &cl, &bb, &bm))
        return NULL;
    Py_XSETREF(msg_cls, Py_NewRef(c));
    Py_XSETREF(msg_defaults, Py_NewRef(df));
    Py_XSETREF(deliveries, Py_NewRef(dv));
    Py_XSETREF(acks, Py_NewRef(ak));
    Py_XSETREF(classes, Py_NewRef(cl));
    Py_XSETREF(bt_bytes, Py_NewRef(bb));
    Py_XSETREF(bt_msgpack, Py_NewRef(bm));
    Py_RETURN_NONE;
}

static PyObject *XStore_mark_deleted(XStore *self, PyObject *Py_UNUSED(ignored))
{
    if (check_open(self) < 0)
        return NULL;
    atomic_store(&self->h->deleted, 1);
    Py_RETURN_NONE;
}

static PyObject *XStore_get_deleted(XStore *self, void *Py_UNUSED(closure))
{
    if (check_open(self) < 0)
        return NULL;
    return PyBool_FromLong(atomic_load_explicit(&self->h->deleted, memory_order_acquire) != 0);
}

static PyMethodDef XStore_methods[] = {
    {"put", (PyCFunction)XStore_put, METH_VARARGS,
     "put(priority, key1, key2, expires, crc, data) -> (stamp, waiters): store one message."},
    {"find", (PyCFunction)XStore_find, METH_VARARGS,
     "find(mode, key, priority, stamp, op) -> None | (stamp, priority) | "
     "(stamp, priority, expires, crc, key1, key2, data)."},
    {"stat", (PyCFunction)XStore_stat, METH_NOARGS, "stat() -> dict of count, bytes, free_bytes, capacity, rebuilds."},
    {"purge", (PyCFunction)XStore_purge, METH_NOARGS, "purge() -> number of messages removed."},
    {"check", (PyCFunction)XStore_check, METH_NOARGS, "check() -> list of problems found in the structure."},
    {"wait_begin", (PyCFunction)XStore_wait_begin, METH_NOARGS, "count this receiver as waiting."},
    {"wait_end", (PyCFunction)XStore_wait_end, METH_NOARGS,
     "stop counting this receiver as waiting (nothing once closed: close ends them all)."},
    {"bump_gen", (PyCFunction)XStore_bump_gen, METH_NOARGS, "bump_gen() -> (gen, waiters)."},
    {"close", (PyCFunction)XStore_close, METH_NOARGS, "unmap the store."},
    {"put_message", (PyCFunction)XStore_put_message, METH_VARARGS,
     "put_message(fields, body, key1, key2) -> (stamp, waiters): store a Message's attribute dict "
     "as a format-2 record with its body."},
    {"mark_deleted", (PyCFunction)XStore_mark_deleted, METH_NOARGS, "set the header's deleted flag (MQDeleteQueue)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef XStore_getset[] = {
    {"gen", (getter)XStore_get_gen, NULL, "the other store's generation counter", NULL},
    {"changes", (getter)XStore_get_changes, NULL, "puts and takes so far", NULL},
    {"waiters", (getter)XStore_get_waiters, NULL, "receivers waiting", NULL},
    {"closed", (getter)XStore_get_closed, NULL, "unmapped", NULL},
    {"deleted", (getter)XStore_get_deleted, NULL, "the queue was deleted (the header's flag)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject XStoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "winipc._native._xstore.XStore",
    .tp_basicsize = sizeof(XStore),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)XStore_init,
    .tp_dealloc = (destructor)XStore_dealloc,
    .tp_methods = XStore_methods,
    .tp_getset = XStore_getset,
    .tp_doc = "XStore(fd, create=False): a queue's express messages in a shared memory file.",
};

static PyObject *set_crash_point(PyObject *Py_UNUSED(mod), PyObject *arg)
{
    long v = PyLong_AsLong(arg);
    if (v == -1 && PyErr_Occurred())
        return NULL;
    crash_point = (int)v;
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"_set_crash_point", set_crash_point, METH_O,
     "tests only: exit (77) holding the lock at point n (1-3 in put, 4-5 in take); 0 = never."},
    {"decode", xs_decode, METH_VARARGS,
     "decode(data, crc, stamp, priority) -> Message | None (a format-1 record); ValueError when damaged."},
    {"configure", xs_configure, METH_VARARGS,
     "configure(Message, defaults, deliveries, acks, classes, 'bytes', 'msgpack'): what decode builds."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef xstore_module = {
    PyModuleDef_HEAD_INIT, "winipc._native._xstore",
    "The in-memory store of a local queue's express messages (docs/wire/msmq-express.md).", -1, module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__xstore(void)
{
    if (PyType_Ready(&XStoreType) < 0)
        return NULL;
    crc_init();
    for (int k = 0; k < K_NKEYS; k++)
        if (!keys[k] && !(keys[k] = PyUnicode_InternFromString(key_names[k])))
            return NULL;
    if (!dict_name && !(dict_name = PyUnicode_InternFromString("__dict__")))
        return NULL;
    if (!empty_tuple && !(empty_tuple = PyTuple_New(0)))
        return NULL;
    PyObject *m = PyModule_Create(&xstore_module);
    if (!m)
        return NULL;
    FullError = PyErr_NewException("winipc._native._xstore.Full", PyExc_MemoryError, NULL);
    if (!FullError || PyModule_AddObjectRef(m, "Full", FullError) < 0
        || PyModule_AddObjectRef(m, "XStore", (PyObject *)&XStoreType) < 0
        || PyModule_AddIntConstant(m, "BLOCK", BLOCK) < 0 || PyModule_AddIntConstant(m, "DATA_OFF", DATA_OFF) < 0
        || PyModule_AddIntConstant(m, "MAX_KEY", MAX_KEY) < 0 || PyModule_AddIntConstant(m, "VERSION", XS_VERSION) < 0
        || PyModule_AddIntConstant(m, "DELETED_OFFSET", offsetof(Header, deleted)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "FIRST", M_FIRST);
    PyModule_AddIntConstant(m, "KEY1", M_KEY1);
    PyModule_AddIntConstant(m, "KEY2", M_KEY2);
    PyModule_AddIntConstant(m, "AFTER", M_AFTER);
    PyModule_AddIntConstant(m, "EXACT", M_EXACT);
    PyModule_AddIntConstant(m, "LOCATE", OP_LOCATE);
    PyModule_AddIntConstant(m, "PEEK", OP_PEEK);
    PyModule_AddIntConstant(m, "TAKE", OP_TAKE);
    return m;
}
