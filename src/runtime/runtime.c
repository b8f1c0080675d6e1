/* src/runtime/runtime.c - the grain runtime: activation table, mailboxes, turns,
 * persist-before-reply, timers, idle deactivation and pending calls.
 *
 * Everything runs on one libuv loop. Work that would run user code (a turn,
 * a call's completion) is never done inside the API call that caused it: it
 * goes on a run list drained by an idle handle (the "pump"), so handlers
 * never nest and nothing is freed under a caller's feet.
 */
#include <assert.h>
#include <stdio.h>

#include "base/base.h"
#include "runtime/idem.h"
#include "runtime/runtime.h"
#include "storage/claim.h"
#include "storage/replies.h"
#include "wire/frame.h" /* GR__CHAIN_MAX */

typedef enum { GR__G_LOADING, GR__G_ACTIVE, GR__G_DEACTIVATING, GR__G_DEAD } gr__gstatus_t;

/* Arguments and replies up to this size travel inside the message and the
 * call record instead of in a separate allocation (most grain calls carry a
 * few bytes: a counter value, a key, an empty ack). */
#define GR__INLINE_BYTES 32
/* Spare messages and call records kept per runtime for reuse: a local call
 * otherwise pays for two malloc/free pairs (BENCHMARKS.md, profile). */
#define GR__FREE_LIST_MAX 4096
/* Call ids are sequential: a multiplicative hash spreads them over uthash's
 * buckets for a fraction of the cost of its general byte hash. */
#define GR__CALL_HASH(id) ((unsigned)(((uint64_t)(id)*0x9E3779B97F4A7C15ull) >> 32))
/* Stateless workers: activations per key per silo when the class says 0. */
#define GR__WORKERS_DEFAULT 4u
/* A worker activation's table id is this byte, its index, then class '\0'
 * key: distinct from every grain id (class names never start with 0x01),
 * and the key still ends the id. */
#define GR__WORKER_TAG 0x01
/* Slots of the per-runtime cache from a class-name pointer to its entry. */
#define GR__CLASS_CACHE 8

typedef struct gr__call gr__call_t;
typedef struct gr__timer gr__timer_t;
typedef struct gr__write_waiter gr__write_waiter_t;

struct gr_msg {
    gr_msg_t *next;
    gr_grain_t *grain;
    uint64_t call_id; /* 0: nobody waits for a reply */
    uint64_t deadline;
    const gr_method_t *method; /* resolved at submission when the class is local */
    char *method_name;         /* the class table's name, or a copy (name_owned) */
    uint8_t *arg;              /* arg_inline, or a heap copy */
    size_t arg_len;
    uint64_t t0_ns; /* accepted at (uv_hrtime), for the latency histogram */
    /* Set only while the message travels through the router (cluster mode). */
    const gr_class_t *cls;
    uint8_t *id; /* class '\0' key */
    size_t id_len, class_len;
    int hops;
    /* A reply held back until the state write commits. */
    int reply_status;
    uint8_t *reply;
    size_t reply_len;
    /* Ids of the grains whose turns wait on this call, oldest first, each
     * as u16 length + class '\0' key: how a cycle is recognised. */
    uint8_t *chain; /* chain_inline, or a heap copy */
    uint16_t chain_len;
    uint8_t name_owned;
    uint8_t ran;         /* its handler ran here: metrics count it for the grain's class */
    uint8_t interleaved; /* running beside other turns (reentrant class or interleave method) */
    uint8_t idem_len;    /* its idempotency key (0: none), a heap copy in idem */
    uint8_t *idem;
    gr__idem_entry_t *idem_entry; /* the reply-log entry this message runs as, until it settles */
    uint8_t arg_inline[GR__INLINE_BYTES];
    uint8_t chain_inline[GR__INLINE_BYTES];
};

/* A call waiting for its completion, on the caller's side. */
struct gr__call {
    UT_hash_handle hh;
    uint64_t id;
    gr_call_cb cb;
    void *ud;
    gr__dlq_node_t dl; /* in the runtime's deadline queue */
    gr_grain_t *owner; /* calling activation, or NULL */
    gr__call_t *own_prev, *own_next;
    gr__call_t *done_next; /* completion list */
    int status;
    uint8_t *reply; /* reply_inline, or a heap block owned by the record */
    size_t reply_len;
    uint8_t reply_inline[GR__INLINE_BYTES];
};

struct gr__timer {
    gr__timer_t *next;
    gr_grain_t *grain;
    uint64_t id;
    uv_timer_t handle;
    gr_timer_fn fn;
    void *ud;
    int queued; /* a tick is due but not run yet: ticks do not pile up */
    int one_shot;
};

struct gr__write_waiter {
    gr__write_waiter_t *next;
    gr_write_cb cb;
    void *ud;
    gr_msg_t *msg; /* internal: a held reply to release */
};

typedef struct gr__class_entry {
    UT_hash_handle hh;
    const gr_class_t *cls;
    gr_runtime_t *rt;
    uint8_t *interleave; /* per method: may run while another turn of the grain waits */
    uint8_t *read_only;  /* per method: declared in cls->read_only */
    /* Metrics: activations alive, and per method (index in cls->methods)
     * calls, errors and latency from acceptance to reply. */
    uint64_t active;
    size_t n_methods;
    uint64_t *calls, *errors;
    gr__hist_t *latency;
} gr__class_entry_t;

/* What few activations use: allocated on first use, freed with the activation. */
typedef struct gr__grain_ext {
    gr__timer_t *timers;
    void *data;
    void (*data_free)(void *);
    gr_msg_t *interleaved; /* turns in progress beside `current`, linked by next */
    uint32_t n_interleaved;
    gr__idem_log_t idem; /* replies of keyed calls (grains/idem.h) */
} gr__grain_ext_t;

/* Field order and widths keep an idle activation small (bench_memory,
 * target <= 256 bytes): the id is stored inline and the key is found in it;
 * the runtime and class are reached through the class entry; times are
 * 32-bit and wrap (differences stay right for 49 days in ms, 71 minutes in
 * us); timers and app data live in an extension most grains never need. */
struct gr_grain {
    UT_hash_handle hh;
    gr__class_entry_t *ce; /* class, runtime, metrics */
    uint8_t *state;
    int64_t version;
    gr__write_waiter_t *waiters_now;  /* complete when the write in flight does */
    gr__write_waiter_t *waiters_next; /* need another write after it */
    gr_msg_t *mb_head, *mb_tail;      /* mailbox */
    gr_msg_t *current;                /* turn in progress: until replied (and persisted) */
    gr_grain_t *run_next;
    gr_grain_t *lru_prev, *lru_next;
    gr__call_t *owned; /* calls this activation made that are still pending */
    gr__grain_ext_t *ext;
    uint32_t last_active; /* (uint32_t)uv_now() */
    uint32_t io_t0;       /* gr__us32(): start of the storage operation in flight */
    uint32_t state_len;   /* <= GR_STATE_MAX */
    uint32_t mb_len;
    uint32_t refs;          /* storage operations and timers in flight: the struct outlives them */
    uint16_t ticks_pending; /* timers with queued ticks */
    uint16_t id_len;        /* <= GR_CLASS_NAME_MAX + 1 + GR_KEY_MAX */
    uint16_t key_len;
    uint8_t status; /* gr__gstatus_t */
    uint8_t dirty, writing, scheduled, deactivate_requested;
    uint8_t clearing; /* the next write deletes the row (gr_state_clear) */
    uint8_t claimed;  /* cluster mode: the activation claim is ours (docs/directory.md) */
    uint32_t token;   /* this activation's number on this silo: its claim's token */
    uint8_t id[];     /* class '\0' key: the table key */
};

struct gr_runtime {
    uv_loop_t *loop;
    gr_storage_t *storage;
    gr_runtime_options_t opts;
    char *silo_id;
    gr__class_entry_t *classes;
    gr_grain_t *grains;
    size_t n_grains;
    gr_grain_t *run_head, *run_tail;
    gr_grain_t *lru_head, *lru_tail;
    gr__call_t *calls;
    gr__dlq_t deadlines;
    gr__call_t *done_head, *done_tail;
    uint64_t next_call_id;
    uint64_t next_timer_id;
    uv_idle_t pump;
    uv_timer_t deadline_timer;
    uv_timer_t idle_timer;
    int pump_on;
    int draining;
    void (*drain_cb)(gr_runtime_t *, void *);
    void *drain_ud;
    int closing;
    int open_handles;
    size_t held_grains;   /* finished grains still referenced by I/O or timers */
    uint32_t min_idle_ms; /* shortest idle age of any class: bounds the sweep */
    void (*close_cb)(void *);
    void *close_ud;
    gr__runtime_stats_t stats;
    gr__hist_t read_latency, write_latency;
    gr__router_fn router;
    gr__deactivated_fn on_gone;
    void *router_ud;
    gr__cluster_hooks_t cluster; /* activation claims and the lease; lease_ok NULL: single silo */
    uint32_t next_token;
    /* Callers name a class with the same string (usually a literal) call
     * after call: remember the entry by pointer, confirmed by strcmp,
     * instead of hashing the name every time. */
    struct {
        const char *name;
        gr__class_entry_t *ce;
    } class_cache[GR__CLASS_CACHE];
    const gr__reminder_ops_t *reminders; /* the silo's reminder service, or NULL */
    void *reminders_ud;
    gr_msg_t *spare_msgs; /* free lists, linked through next / done_next */
    gr__call_t *spare_calls;
    unsigned n_spare_msgs, n_spare_calls;
};

#define GR__G_RT(g) ((g)->ce->rt)
#define GR__G_CLS(g) ((g)->ce->cls)
#define GR__G_KEY(g) ((g)->id + (g)->id_len - (g)->key_len)
#define GR__G_TIMERS(g) ((g)->ext ? (g)->ext->timers : NULL)
#define GR__G_WORKER(g) ((g)->ce->cls->flags & GR_CLASS_STATELESS_WORKER)

static uint32_t gr__idem_keys(const gr_class_t *cls) {
    return cls->idempotency_keys ? cls->idempotency_keys : GR__IDEM_KEYS_DEFAULT;
}
static uint32_t gr__idem_retention(const gr_class_t *cls) {
    return cls->idempotency_retention_ms ? cls->idempotency_retention_ms : GR__IDEM_RETENTION_DEFAULT_MS;
}

/* A microsecond clock in 32 bits, for the duration of one storage operation. */
static uint32_t gr__us32(void) { return (uint32_t)(uv_hrtime() / 1000); }
static uint64_t gr__since_us32_ns(uint32_t t0) { return (uint64_t)(uint32_t)(gr__us32() - t0) * 1000; }

static gr__grain_ext_t *gr__grain_ext(gr_grain_t *g) {
    if (!g->ext) g->ext = gr__calloc(1, sizeof *g->ext);
    return g->ext;
}

/* A turn is in progress: the current one, or interleaved ones. */
static int gr__grain_busy(const gr_grain_t *g) {
    return g->current != NULL || (g->ext && g->ext->n_interleaved);
}

/* Whether message m may start while other turns of g are in progress. */
static int gr__can_interleave(const gr_grain_t *g, const gr_msg_t *m) {
    return m->method && g->ce->interleave[m->method - g->ce->cls->methods];
}

/* End the turn of m (replied, or its held reply released). */
static void gr__turn_end(gr_grain_t *g, gr_msg_t *m) {
    if (g->current == m) {
        g->current = NULL;
        return;
    }
    if (!m->interleaved || !g->ext) return;
    for (gr_msg_t **pp = &g->ext->interleaved; *pp; pp = &(*pp)->next) {
        if (*pp == m) {
            *pp = m->next;
            m->next = NULL;
            g->ext->n_interleaved--;
            return;
        }
    }
}

/* Undo gr__turn_end (the reply could not be sent after all). */
static void gr__turn_restore(gr_grain_t *g, gr_msg_t *m) {
    if (!m->interleaved) {
        g->current = m;
        return;
    }
    m->next = g->ext->interleaved;
    g->ext->interleaved = m;
    g->ext->n_interleaved++;
}

/* ---- call chains ---- */

static int gr__chain_has(const uint8_t *chain, size_t len, const uint8_t *id, size_t id_len) {
    for (size_t o = 0; o + 2 <= len;) {
        size_t n = (size_t)chain[o] << 8 | chain[o + 1];
        if (o + 2 + n > len) return 0; /* malformed (from the wire): no match */
        if (n == id_len && memcmp(chain + o + 2, id, n) == 0) return 1;
        o += 2 + n;
    }
    return 0;
}

/* out = parent chain + this id, dropping the oldest entries when it would
 * exceed GR__CHAIN_MAX (a cycle longer than that goes undetected and ends
 * in the call's timeout). Returns the new length. */
static size_t gr__chain_extend(uint8_t *out, const uint8_t *parent, size_t plen, const uint8_t *id,
                               size_t id_len) {
    if (id_len + 2 > GR__CHAIN_MAX) return 0;
    size_t skip = 0;
    while (skip < plen && plen - skip + 2 + id_len > GR__CHAIN_MAX)
        skip += 2 + ((size_t)parent[skip] << 8 | (skip + 1 < plen ? parent[skip + 1] : 0));
    if (skip > plen) skip = plen;
    if (plen > skip) memcpy(out, parent + skip, plen - skip);
    size_t o = plen - skip;
    out[o] = (uint8_t)(id_len >> 8);
    out[o + 1] = (uint8_t)id_len;
    memcpy(out + o + 2, id, id_len);
    return o + 2 + id_len;
}

/* "Class/key -> Class/key -> ..." for an error text (each id shown up to
 * 168 bytes; bytes other than printable ASCII as '?'). */
static void gr__chain_describe(char *out, size_t size, const uint8_t *chain, size_t len, const uint8_t *id,
                               size_t id_len) {
    size_t w = 0;
    out[0] = '\0';
    for (size_t o = 0; o <= len && w + 8 < size;) {
        const uint8_t *e;
        size_t n;
        if (o + 2 <= len) {
            n = (size_t)chain[o] << 8 | chain[o + 1];
            if (o + 2 + n > len) break;
            e = chain + o + 2;
            o += 2 + n;
        } else {
            e = id; /* the target closes the cycle */
            n = id_len;
            o = len + 1;
        }
        if (w) w += (size_t)snprintf(out + w, size - w, " -> ");
        if (n >= 2 && e[0] == GR__WORKER_TAG) { /* a stateless worker: show its grain id */
            e += 2;
            n -= 2;
        }
        for (size_t i = 0; i < n && i < GR_CLASS_NAME_MAX + 40 && w + 4 < size; i++)
            out[w++] = e[i] == 0 ? '/' : (e[i] >= 32 && e[i] < 127 ? (char)e[i] : '?');
        out[w] = '\0';
    }
}

static void gr__pump_start(gr_runtime_t *rt);
static void gr__grain_schedule(gr_grain_t *g);
static void gr__worker_enqueue(gr_runtime_t *rt, gr__class_entry_t *ce, const uint8_t *key, size_t key_len,
                               gr_msg_t *m);
static void gr__grain_deactivate(gr_grain_t *g, int save);
static void gr__grain_release(gr_grain_t *g);
static void gr__maybe_drained(gr_runtime_t *rt);
static void gr__maybe_closed(gr_runtime_t *rt);

/* ---- pending calls and their completion ---- */

static void gr__deadline_rearm(gr_runtime_t *rt);

static void gr__call_unlink(gr_runtime_t *rt, gr__call_t *c) {
    HASH_DEL(rt->calls, c);
    gr__dlq_remove(&rt->deadlines, &c->dl);
    if (c->owner) {
        if (c->own_prev)
            c->own_prev->own_next = c->own_next;
        else
            c->owner->owned = c->own_next;
        if (c->own_next) c->own_next->own_prev = c->own_prev;
        c->owner = NULL;
    }
}

/* Queue a call's completion for the pump. `reply` ownership moves in. */
static void gr__call_finish(gr_runtime_t *rt, gr__call_t *c, int status, uint8_t *reply, size_t len) {
    c->status = status;
    c->reply = reply;
    c->reply_len = len;
    c->done_next = NULL;
    if (rt->done_tail)
        rt->done_tail->done_next = c;
    else
        rt->done_head = c;
    rt->done_tail = c;
    gr__pump_start(rt);
}

/* A completion that never entered the table (refused at submission). */
static void gr__call_fail_soon(gr_runtime_t *rt, gr__call_t *c, int status, const char *detail) {
    size_t n = detail ? strlen(detail) : 0;
    uint8_t *d = n ? gr__memdup(detail, n) : NULL;
    gr__call_finish(rt, c, status, d, d ? n : 0);
}

static void gr__deadline_cb(uv_timer_t *t) {
    gr_runtime_t *rt = t->data;
    gr__dlq_node_t *n;
    while ((n = gr__dlq_pop_expired(&rt->deadlines, uv_now(rt->loop))) != NULL) {
        gr__call_t *c = GR__CONTAINER_OF(n, gr__call_t, dl);
        gr__call_unlink(rt, c);
        gr__call_fail_soon(rt, c, GR_ETIMEDOUT, "no reply within the call's timeout");
    }
    gr__deadline_rearm(rt);
}

static void gr__deadline_rearm(gr_runtime_t *rt) {
    uint64_t d = gr__dlq_next_in(&rt->deadlines, uv_now(rt->loop));
    if (d == UINT64_MAX)
        uv_timer_stop(&rt->deadline_timer);
    else
        uv_timer_start(&rt->deadline_timer, gr__deadline_cb, d, 0);
}

/* Return a call record (and its reply) to the runtime's spares. */
static void gr__call_release(gr_runtime_t *rt, gr__call_t *c) {
    if (c->reply != c->reply_inline) gr__free(c->reply);
    if (rt->n_spare_calls >= GR__FREE_LIST_MAX || rt->closing) {
        gr__free(c);
        return;
    }
    c->done_next = rt->spare_calls;
    rt->spare_calls = c;
    rt->n_spare_calls++;
}

static gr__call_t *gr__call_new(gr_runtime_t *rt, gr_call_cb cb, void *ud, uint32_t timeout_ms,
                                gr_grain_t *owner) {
    gr__call_t *c = rt->spare_calls;
    if (c) {
        rt->spare_calls = c->done_next;
        rt->n_spare_calls--;
        memset(c, 0, offsetof(gr__call_t, reply_inline));
    } else {
        c = gr__calloc(1, sizeof *c);
        if (!c) return NULL;
    }
    c->id = ++rt->next_call_id;
    c->cb = cb;
    c->ud = ud;
    HASH_ADD_BYHASHVALUE(hh, rt->calls, id, sizeof c->id, GR__CALL_HASH(c->id), c);
    if (gr__hash_oom()) {
        gr__call_release(rt, c);
        return NULL;
    }
    uint64_t deadline = uv_now(rt->loop) + (timeout_ms ? timeout_ms : rt->opts.default_call_timeout_ms);
    if (gr__dlq_insert(&rt->deadlines, &c->dl, deadline)) gr__deadline_rearm(rt);
    if (owner) {
        c->owner = owner;
        c->own_next = owner->owned;
        if (owner->owned) owner->owned->own_prev = c;
        owner->owned = c;
    }
    return c;
}

/* Route a reply to its waiting call, if the caller is still waiting. */
static void gr__deliver_reply(gr_runtime_t *rt, uint64_t call_id, int status, uint8_t *reply, size_t len) {
    gr__call_t *c = NULL;
    if (call_id) HASH_FIND_BYHASHVALUE(hh, rt->calls, &call_id, sizeof call_id, GR__CALL_HASH(call_id), c);
    if (!c) {
        if (call_id) rt->stats.late_replies++;
        gr__free(reply);
        return;
    }
    gr__call_unlink(rt, c);
    gr__call_finish(rt, c, status, reply, len);
}

/* The same for a reply still in the replier's buffer: copied into the
 * call record (inline when small) only if somebody still waits. */
static int gr__deliver_reply_copy(gr_runtime_t *rt, uint64_t call_id, int status, const void *data,
                                  size_t len) {
    gr__call_t *c = NULL;
    if (call_id) HASH_FIND_BYHASHVALUE(hh, rt->calls, &call_id, sizeof call_id, GR__CALL_HASH(call_id), c);
    if (!c) {
        if (call_id) rt->stats.late_replies++;
        return 0;
    }
    uint8_t *copy = c->reply_inline;
    if (len > sizeof c->reply_inline) {
        copy = gr__memdup(data, len);
        if (!copy) return GR_ENOMEM;
    } else if (len) {
        memcpy(copy, data, len);
    }
    gr__call_unlink(rt, c);
    gr__call_finish(rt, c, status, copy, len);
    return 0;
}

/* ---- activations ---- */

static void gr__lru_unlink(gr_runtime_t *rt, gr_grain_t *g) {
    if (g->lru_prev)
        g->lru_prev->lru_next = g->lru_next;
    else if (rt->lru_head == g)
        rt->lru_head = g->lru_next;
    if (g->lru_next)
        g->lru_next->lru_prev = g->lru_prev;
    else if (rt->lru_tail == g)
        rt->lru_tail = g->lru_prev;
    g->lru_prev = g->lru_next = NULL;
}

/* Mark activity: the grain moves to the young end of the idle list. */
static void gr__grain_touch(gr_grain_t *g) {
    gr_runtime_t *rt = GR__G_RT(g);
    g->last_active = (uint32_t)uv_now(rt->loop);
    if (rt->lru_tail == g) return;
    gr__lru_unlink(rt, g);
    g->lru_prev = rt->lru_tail;
    if (rt->lru_tail)
        rt->lru_tail->lru_next = g;
    else
        rt->lru_head = g;
    rt->lru_tail = g;
}

static gr_msg_t *gr__msg_new(gr_runtime_t *rt) {
    gr_msg_t *m = rt->spare_msgs;
    if (!m) return gr__calloc(1, sizeof *m);
    rt->spare_msgs = m->next;
    rt->n_spare_msgs--;
    memset(m, 0, offsetof(gr_msg_t, arg_inline));
    return m;
}

/* The message's chain: `chain` (from the wire or a caller's turn), plus
 * the calling grain's id when a grain makes the call. */
static int gr__msg_set_chain(gr_msg_t *m, const uint8_t *chain, size_t len, const gr_grain_t *caller) {
    if (len > GR__CHAIN_MAX) return GR_ETOOBIG;
    m->chain = NULL;
    m->chain_len = 0;
    size_t need = len + (caller ? 2u + caller->id_len : 0u);
    if (!need) return 0;
    m->chain = need <= sizeof m->chain_inline ? m->chain_inline : gr__malloc(GR__CHAIN_MAX);
    if (!m->chain) return GR_ENOMEM;
    if (caller)
        m->chain_len = (uint16_t)gr__chain_extend(m->chain, chain, len, caller->id, caller->id_len);
    else
        memcpy(m->chain, chain, m->chain_len = (uint16_t)len);
    return 0;
}

static int gr__msg_complete_copy(gr_runtime_t *rt, gr_msg_t *m, int status, const void *data, size_t len);
static void gr__msg_fail(gr_runtime_t *rt, gr_msg_t *m, int status, const char *detail);

/* Cluster mode: activations claim their grain and answer only within the
 * silo's lease (docs/directory.md, "Single activation"). */
static int gr__claims_on(const gr_grain_t *g) { return GR__G_RT(g)->cluster.lease_ok && !GR__G_WORKER(g); }

/* May this activation answer now? A silo whose lease may have run out must
 * not: another silo may have taken the claim and be serving newer state. */
static int gr__may_answer(const gr_grain_t *g) {
    const gr_runtime_t *rt = GR__G_RT(g);
    return !gr__claims_on(g) || rt->cluster.lease_ok(rt->cluster.ud);
}

static const char gr__no_lease[] = "this silo cannot confirm its membership lease (fenced or paused): the "
                                   "grain may be served elsewhere; retry";

/* ---- idempotency keys (grains/idem.h, docs/exactly-once.md) ---- */

/* Complete the duplicates parked on an entry with one answer. */
static void gr__idem_answer(gr_runtime_t *rt, gr_msg_t *w, int status, const void *data, size_t len) {
    while (w) {
        gr_msg_t *n = w->next;
        w->next = NULL;
        if (gr__msg_complete_copy(rt, w, status, data, len) != 0)
            gr__msg_fail(rt, w, GR_ENOMEM, "out of memory");
        w = n;
    }
}

/* A keyed message completes. With its entry DONE the duplicates parked on
 * it get the same reply; completing any other way (its reply did not
 * commit, the lease failed, ...) the entry is forgotten and the duplicates
 * fail the same way, to be retried. */
static void gr__idem_settle(gr_runtime_t *rt, gr_msg_t *m, int status, const void *data, size_t len) {
    gr__idem_entry_t *e = m->idem_entry;
    m->idem_entry = NULL;
    e->owner = NULL;
    gr_msg_t *w = e->waiting;
    e->waiting = NULL;
    if (e->state == GR__IDEM_DONE) {
        /* The answer is final (and stored, for a persisting class) even if
         * this message could not deliver it (the lease was in doubt): the
         * entry stays, and the duplicates get it only under the lease. */
        if (gr__may_answer(m->grain))
            gr__idem_answer(rt, w, e->status, e->reply, e->reply_len);
        else
            gr__idem_answer(rt, w, GR_ENOTHERE, gr__no_lease, strlen(gr__no_lease));
        return;
    }
    gr__idem_remove(&m->grain->ext->idem, e);
    gr__idem_answer(rt, w, status, data, len);
}

/* The activation ends: nothing may point into its log afterwards. */
static void gr__idem_drop(gr_runtime_t *rt, gr_grain_t *g) {
    static const char why[] = "the activation ended before the first call with this idempotency key settled";
    gr__idem_log_t *log = &g->ext->idem;
    for (gr__idem_entry_t *e = log->oldest; e; e = e->newer) {
        if (e->owner) ((gr_msg_t *)e->owner)->idem_entry = NULL;
        gr_msg_t *w = e->waiting;
        e->waiting = NULL;
        gr__idem_answer(rt, w, GR_ENOTHERE, why, sizeof why - 1);
    }
    gr__idem_clear(log);
}

static void gr__msg_free(gr_runtime_t *rt, gr_msg_t *m) {
    if (m->idem_entry) { /* freed unanswered (the runtime closes): its entry must not point here */
        m->idem_entry->owner = NULL;
        m->idem_entry = NULL;
    }
    if (m->chain != m->chain_inline) gr__free(m->chain);
    gr__free(m->idem);
    gr__free(m->id);
    if (m->name_owned) gr__free(m->method_name);
    if (m->arg != m->arg_inline) gr__free(m->arg);
    gr__free(m->reply);
    if (rt->n_spare_msgs >= GR__FREE_LIST_MAX || rt->closing) {
        gr__free(m);
        return;
    }
    m->next = rt->spare_msgs;
    rt->spare_msgs = m;
    rt->n_spare_msgs++;
}

/* Complete a message: send its reply (status 0, GR_EAPP or an error) to the
 * caller. `reply` ownership moves in. */
static void gr__msg_complete(gr_runtime_t *rt, gr_msg_t *m, int status, uint8_t *reply, size_t len) {
    if (m->idem_entry) gr__idem_settle(rt, m, status, reply, len);
    if (status != 0) rt->stats.calls_failed++;
    if (m->ran) { /* count it for its class and method */
        gr__class_entry_t *ce = m->grain->ce;
        size_t i = (size_t)(m->method - ce->cls->methods);
        ce->calls[i]++;
        if (status != 0) ce->errors[i]++;
        gr__hist_observe(&ce->latency[i], uv_hrtime() - m->t0_ns);
    }
    /* A reply held for persist-before-reply is either the one delivered or
     * superseded by an error: free it in the second case. */
    if (m->reply != reply) gr__free(m->reply);
    m->reply = NULL;
    gr__deliver_reply(rt, m->call_id, status, reply, len);
    gr__msg_free(rt, m);
}

/* gr__msg_complete for a reply the caller still owns: the common case of a
 * handler replying at once, without a held copy in between. */
static int gr__msg_complete_copy(gr_runtime_t *rt, gr_msg_t *m, int status, const void *data, size_t len) {
    if (m->idem_entry) gr__idem_settle(rt, m, status, data, len);
    if (status != 0) rt->stats.calls_failed++;
    if (m->ran) {
        gr__class_entry_t *ce = m->grain->ce;
        size_t i = (size_t)(m->method - ce->cls->methods);
        ce->calls[i]++;
        if (status != 0) ce->errors[i]++;
        gr__hist_observe(&ce->latency[i], uv_hrtime() - m->t0_ns);
    }
    int rc = gr__deliver_reply_copy(rt, m->call_id, status, data, len);
    if (rc == 0) gr__msg_free(rt, m);
    return rc;
}

static void gr__msg_fail(gr_runtime_t *rt, gr_msg_t *m, int status, const char *detail) {
    size_t n = detail ? strlen(detail) : 0;
    uint8_t *d = n ? gr__memdup(detail, n) : NULL;
    gr__msg_complete(rt, m, status, d, d ? n : 0);
}

static int gr__msg_set_route(gr_msg_t *m, const gr_class_t *cls, const uint8_t *id, size_t id_len,
                             size_t class_len) {
    gr__free(m->id);
    m->id = gr__memdup(id, id_len);
    if (!m->id) return GR_ENOMEM;
    m->id_len = id_len;
    m->class_len = class_len;
    m->cls = cls;
    return 0;
}

static void gr__mailbox_push(gr_grain_t *g, gr_msg_t *m) {
    m->next = NULL;
    m->grain = g;
    if (g->mb_tail)
        g->mb_tail->next = m;
    else
        g->mb_head = m;
    g->mb_tail = m;
    g->mb_len++;
}

static gr_msg_t *gr__mailbox_pop(gr_grain_t *g) {
    gr_msg_t *m = g->mb_head;
    if (!m) return NULL;
    g->mb_head = m->next;
    if (!g->mb_head) g->mb_tail = NULL;
    g->mb_len--;
    m->next = NULL;
    return m;
}

static void gr__grain_storage_read_cb(void *ud, int status, const uint8_t *data, size_t len, int64_t version,
                                      uint32_t format, const char *detail);
static void gr__grain_held_elsewhere(gr_grain_t *g, const char *holder);

/* Create an activation in LOADING state and start reading its state. */
static int gr__grain_new(gr_runtime_t *rt, const gr_class_t *cls, const uint8_t *id, size_t id_len,
                         size_t class_len, gr_grain_t **out) {
    gr_grain_t *g = gr__calloc(1, sizeof *g + id_len);
    if (!g) return GR_ENOMEM;
    memcpy(g->id, id, id_len);
    HASH_FIND_STR(rt->classes, cls->name, g->ce);
    g->id_len = (uint16_t)id_len;
    g->key_len = (uint16_t)(id_len - class_len - 1);
    g->status = GR__G_LOADING;
    HASH_ADD_KEYPTR(hh, rt->grains, g->id, g->id_len, g);
    if (gr__hash_oom()) {
        gr__free(g);
        return GR_ENOMEM;
    }
    if (GR__G_WORKER(g)) {
        /* No state to load: the pump completes the "load" (user code such
         * as on_activate never runs inside the call that caused it). */
        gr__grain_schedule(g);
    } else {
        int rc;
        if (gr__claims_on(g)) {
            g->token = ++rt->next_token;
            rc = gr__storage_claim(rt->storage, cls->name, GR__G_KEY(g), g->key_len, rt->silo_id, g->token,
                                   gr__grain_storage_read_cb, g);
        } else {
            rc = gr_storage_read(rt->storage, cls->name, GR__G_KEY(g), g->key_len, gr__grain_storage_read_cb,
                                 g);
        }
        if (rc != 0) {
            HASH_DEL(rt->grains, g);
            gr__free(g);
            return rc == GR_ENOMEM ? GR_ENOMEM : GR_ESTORAGE;
        }
        rt->stats.storage_reads++;
    }
    g->refs++;
    g->io_t0 = gr__us32();
    g->ce->active++;
    rt->n_grains++;
    rt->stats.activations++;
    gr__grain_touch(g);
    *out = g;
    return 0;
}

/* Remove the activation from the table; its struct lives on while storage
 * operations still hold it (refs). Queued messages go to a fresh activation,
 * which reloads state: this is how a stale or failed activation forwards its
 * queue. */
static void gr__grain_finish(gr_grain_t *g) {
    gr_runtime_t *rt = GR__G_RT(g);
    assert(g->status != GR__G_DEAD);
    g->status = GR__G_DEAD;
    HASH_DEL(rt->grains, g);
    rt->n_grains--;
    g->ce->active--;
    rt->stats.deactivations++;
    gr__lru_unlink(rt, g);
    int worker = GR__G_WORKER(g) != 0;
    /* Give the claim back so another silo can activate the grain at once.
     * Not while our lease is in doubt: the database is likely out of reach,
     * and the claim stays ours (we may activate the grain again; others are
     * sent here) until we are declared dead. */
    if (g->claimed && gr__may_answer(g))
        gr__storage_release(rt->storage, GR__G_CLS(g)->name, GR__G_KEY(g), g->key_len, rt->silo_id, g->token);
    g->claimed = 0;
    if (rt->on_gone && !rt->closing && !worker)
        rt->on_gone(rt->router_ud, GR__G_CLS(g)->name, GR__G_KEY(g), g->key_len);
    if (g->ext && g->ext->data_free) g->ext->data_free(g->ext->data);
    if (g->ext) g->ext->data = NULL, g->ext->data_free = NULL;
    if (g->ext) gr__idem_drop(rt, g);
    gr_msg_t *queued = g->mb_head;
    g->mb_head = g->mb_tail = NULL;
    g->mb_len = 0;
    if (queued && worker && !rt->closing && !rt->draining) {
        /* Another worker of the same key on this silo takes them. */
        while (queued) {
            gr_msg_t *n = queued->next;
            queued->next = NULL;
            queued->grain = NULL;
            gr__worker_enqueue(rt, g->ce, GR__G_KEY(g), g->key_len, queued);
            queued = n;
        }
    } else if (queued) {
        if (rt->router && !rt->closing && !worker) {
            /* Cluster mode: the directory decides where they run now. */
            while (queued) {
                gr_msg_t *n = queued->next;
                queued->next = NULL;
                queued->grain = NULL; /* this activation is about to go */
                if (gr__msg_set_route(queued, GR__G_CLS(g), g->id, g->id_len, strlen(GR__G_CLS(g)->name)) ==
                    0)
                    rt->router(rt->router_ud, queued);
                else
                    gr__msg_fail(rt, queued, GR_ENOMEM, "out of memory rerouting a call");
                queued = n;
            }
        } else if (rt->closing || rt->draining) {
            while (queued) {
                gr_msg_t *n = queued->next;
                gr__msg_fail(rt, queued, GR_ESHUTDOWN, "silo is shutting down");
                queued = n;
            }
        } else {
            gr_grain_t *ng = NULL;
            int rc = gr__grain_new(rt, GR__G_CLS(g), g->id, g->id_len, strlen(GR__G_CLS(g)->name), &ng);
            while (queued) {
                gr_msg_t *n = queued->next;
                if (rc != 0)
                    gr__msg_fail(rt, queued, rc, "reactivating the grain failed");
                else
                    gr__mailbox_push(ng, queued);
                queued = n;
            }
        }
    }
    rt->held_grains++;
    gr__grain_release(g);
    gr__maybe_drained(rt);
}

static void gr__grain_release(gr_grain_t *g) {
    if (g->refs > 0 || g->status != GR__G_DEAD || g->scheduled) return;
    gr_runtime_t *rt = GR__G_RT(g);
    gr__free(g->state);
    gr__free(g->ext);
    gr__free(g);
    rt->held_grains--;
    gr__maybe_closed(rt);
}

/* Fail every queued message and drop the activation (load or activate failed). */
static void gr__grain_fail_all(gr_grain_t *g, int status, const char *detail) {
    gr_runtime_t *rt = GR__G_RT(g);
    gr_msg_t *m;
    while ((m = gr__mailbox_pop(g)) != NULL)
        gr__msg_fail(rt, m, status, detail);
    g->status = GR__G_DEACTIVATING;
    gr__grain_finish(g);
}

/* Another silo holds the grain's claim: this activation never starts. Its
 * queued calls go to the router, which sends them to the holder (after the
 * activation is gone, so the directory has forgotten us first). */
static void gr__grain_held_elsewhere(gr_grain_t *g, const char *holder) {
    gr_runtime_t *rt = GR__G_RT(g);
    gr_msg_t *queued = g->mb_head;
    g->mb_head = g->mb_tail = NULL;
    g->mb_len = 0;
    gr__log(GR__LOG_DEBUG, GR__G_CLS(g)->name, GR__G_KEY(g), g->key_len,
            "claimed by %s: sending its calls there", holder[0] ? holder : "(unknown)");
    char who[128];
    snprintf(who, sizeof who, "%s", holder);
    const gr_class_t *cls = GR__G_CLS(g);
    uint8_t idbuf[GR_CLASS_NAME_MAX + 1 + GR_KEY_MAX];
    size_t id_len = g->id_len;
    memcpy(idbuf, g->id, id_len);
    g->status = GR__G_DEACTIVATING;
    gr__grain_finish(g); /* may free g */
    while (queued) {
        gr_msg_t *n = queued->next;
        queued->next = NULL;
        queued->grain = NULL;
        if (!rt->cluster.held_elsewhere || rt->closing)
            gr__msg_fail(rt, queued, GR_ENOTHERE, "the grain is active on another silo");
        else if (gr__msg_set_route(queued, cls, idbuf, id_len, strlen(cls->name)) != 0)
            gr__msg_fail(rt, queued, GR_ENOMEM, "out of memory rerouting a call");
        else
            rt->cluster.held_elsewhere(rt->cluster.ud, queued, who);
        queued = n;
    }
}

static void gr__grain_storage_read_cb(void *ud, int status, const uint8_t *data, size_t len, int64_t version,
                                      uint32_t format, const char *detail) {
    gr_grain_t *g = ud;
    g->refs--;
    gr_runtime_t *rt = GR__G_RT(g);
    if (!GR__G_WORKER(g)) gr__hist_observe(&rt->read_latency, gr__since_us32_ns(g->io_t0));
    if (g->status == GR__G_DEAD) { /* the runtime closed meanwhile */
        gr__grain_release(g);
        return;
    }
    if (status == GR_ENOTHERE && gr__claims_on(g)) {
        gr__grain_held_elsewhere(g, detail ? detail : "");
        return;
    }
    if (status != 0) {
        rt->stats.storage_errors++;
        char msg[512];
        snprintf(msg, sizeof msg, "loading state failed: %s", detail ? detail : gr_strerror(status));
        gr__log(GR__LOG_WARN, GR__G_CLS(g)->name, GR__G_KEY(g), g->key_len, "%s", msg);
        gr__grain_fail_all(g, status == GR_ECANCELED ? GR_ESHUTDOWN : GR_ESTORAGE, msg);
        return;
    }
    /* Granted: from here every way out of this activation gives it back. */
    if (gr__claims_on(g)) g->claimed = 1;
    if (!gr__may_answer(g)) {
        /* Granted, but the lease ran out meanwhile (fenced, paused): this
         * activation must not start. The claim stays ours (it is released
         * only with a lease), and so we can activate the grain again later. */
        gr__grain_fail_all(g, GR_ENOTHERE, gr__no_lease);
        return;
    }
    const gr_class_t *cls = GR__G_CLS(g);
    if (format & GR__IDEM_FORMAT_FLAG) {
        /* The grain's reply log follows its state bytes (persistence/replies.h). */
        size_t state_len = len;
        int rc = gr__grain_ext(g) ? gr__idem_decode(&g->ext->idem, data, len, &state_len, gr__idem_now_ms(),
                                                    gr__idem_retention(cls))
                                  : GR_ENOMEM;
        if (rc != 0) {
            char msg[160];
            snprintf(msg, sizeof msg, "loading state failed: %s",
                     rc == GR_ENOMEM ? "out of memory" : "the stored reply log does not add up");
            gr__log(GR__LOG_WARN, cls->name, GR__G_KEY(g), g->key_len, "%s", msg);
            gr__grain_fail_all(g, rc == GR_ENOMEM ? GR_ENOMEM : GR_ESTORAGE, msg);
            return;
        }
        len = state_len;
        format &= ~GR__IDEM_FORMAT_FLAG;
    }
    if (version > 0 && format > cls->state_version) {
        /* Written by a newer version of the class (a rolling deploy in
         * progress): this silo cannot read it and must never overwrite it.
         * Retryable: a silo running the newer class can host the grain. */
        char msg[256];
        snprintf(msg, sizeof msg,
                 "stored state has format %u, newer than this silo's %s (state_version %u): not activating "
                 "here; a silo with the newer class can host it",
                 (unsigned)format, cls->name, (unsigned)cls->state_version);
        gr__log(GR__LOG_WARN, cls->name, GR__G_KEY(g), g->key_len, "%s", msg);
        rt->stats.state_too_new++;
        gr__grain_fail_all(g, GR_ESTATEVERSION, msg);
        return;
    }
    if (len) {
        g->state = gr__memdup(data, len);
        if (!g->state) {
            gr__grain_fail_all(g, GR_ENOMEM, "out of memory loading state");
            return;
        }
    }
    g->state_len = (uint32_t)len;
    g->version = version;
    g->status = GR__G_ACTIVE;
    if (g->claimed && rt->cluster.claimed)
        rt->cluster.claimed(rt->cluster.ud, cls->name, GR__G_KEY(g), g->key_len);
    if (version > 0 && format < cls->state_version && cls->upgrade_state) {
        /* The upgrade sees the old bytes and sets the new ones (dirty: the
         * next write stores them with the new format). */
        int rc = cls->upgrade_state(g, data, len, format);
        if (rc != 0) {
            char msg[200];
            snprintf(msg, sizeof msg, "upgrading the state from format %u to %u failed: %s", (unsigned)format,
                     (unsigned)cls->state_version, gr_strerror(rc));
            gr__log(GR__LOG_WARN, cls->name, GR__G_KEY(g), g->key_len, "%s", msg);
            g->dirty = 0; /* nothing of it may be written */
            gr__grain_fail_all(g, GR_EACTIVATE, msg);
            return;
        }
        rt->stats.state_upgrades++;
    }
    if (GR__G_CLS(g)->on_activate) {
        int rc = GR__G_CLS(g)->on_activate(g);
        if (rc != 0) {
            char msg[160];
            snprintf(msg, sizeof msg, "on_activate failed: %s", gr_strerror(rc));
            gr__log(GR__LOG_WARN, GR__G_CLS(g)->name, GR__G_KEY(g), g->key_len, "%s", msg);
            gr__grain_fail_all(g, GR_EACTIVATE, msg);
            return;
        }
    }
    gr__grain_schedule(g);
}

/* ---- state writes ---- */

static void gr__write_start(gr_grain_t *g);

static void gr__waiters_complete(gr_grain_t *g, gr__write_waiter_t *w, int status, const char *detail) {
    gr_runtime_t *rt = GR__G_RT(g);
    while (w) {
        gr__write_waiter_t *n = w->next;
        if (w->msg) {
            gr_msg_t *m = w->msg;
            gr__turn_end(g, m); /* before completing: that frees m */
            /* Committed: its reply is stored, so it is final whatever happens
             * to this delivery (a retry must get it, never run again). */
            if (status == 0 && m->idem_entry) m->idem_entry->state = GR__IDEM_DONE;
            if (status == 0 && !gr__may_answer(g)) /* committed, but we cannot vouch it is still current */
                gr__msg_fail(rt, m, GR_ENOTHERE, gr__no_lease);
            else if (status == 0)
                gr__msg_complete(rt, m, m->reply_status, m->reply, m->reply_len);
            else
                gr__msg_fail(rt, m, status, detail);
        } else if (w->cb) {
            w->cb(g, status, w->ud);
        }
        gr__free(w);
        w = n;
    }
}

static void gr__grain_unref(gr_grain_t *g) {
    g->refs--;
    gr__grain_release(g);
}

static void gr__write_cb(void *ud, int status, int64_t new_version, const char *detail) {
    gr_grain_t *g = ud;
    gr_runtime_t *rt = GR__G_RT(g);
    /* The write's reference is held until the end: completing waiters can
     * finish the grain, and the struct must survive until we return. */
    g->writing = 0;
    gr__hist_observe(&rt->write_latency, gr__since_us32_ns(g->io_t0));
    gr__write_waiter_t *now = g->waiters_now;
    g->waiters_now = NULL;
    if (g->status == GR__G_DEAD) { /* runtime closed: nobody is listening */
        gr__waiters_complete(g, now, GR_ECANCELED, "runtime closed");
        gr__grain_unref(g);
        return;
    }
    if (status == 0) {
        g->version = new_version;
        gr__waiters_complete(g, now, 0, NULL);
        if (g->status != GR__G_DEAD) {
            if (g->waiters_next) gr__write_start(g);
            gr__grain_schedule(g);
        }
        gr__grain_unref(g);
        return;
    }
    /* A conflict means another activation owns this grain now; any other
     * failure leaves the stored state unknown. Either way the in-memory state
     * may differ from storage, so drop this activation without writing and
     * let a fresh one reload: no reply may claim a write that did not commit. */
    char msg[512];
    if (status == GR_ECONFLICT) {
        rt->stats.storage_conflicts++;
        snprintf(msg, sizeof msg, "state write conflict: another activation wrote version %lld first",
                 (long long)(g->version + 1));
    } else {
        rt->stats.storage_errors++;
        snprintf(msg, sizeof msg, "state write failed: %s", detail ? detail : gr_strerror(status));
        status = status == GR_ECANCELED ? GR_ESHUTDOWN : GR_ESTORAGE;
    }
    gr__log(GR__LOG_WARN, GR__G_CLS(g)->name, GR__G_KEY(g), g->key_len, "%s; deactivating", msg);
    gr__write_waiter_t *next = g->waiters_next;
    g->waiters_next = NULL;
    gr__waiters_complete(g, now, status, msg);
    gr__waiters_complete(g, next, status, msg);
    if (g->status != GR__G_DEAD) {
        g->dirty = 0;
        if (g->status == GR__G_DEACTIVATING) {
            gr__grain_finish(g);
        } else if (!gr__grain_busy(g)) {
            gr__grain_deactivate(g, 0);
        } else {
            /* A turn is still in progress (an explicit write from a handler):
             * deactivate without saving once it ends. */
            g->deactivate_requested = 2;
        }
    }
    gr__grain_unref(g);
}

static void gr__write_start(gr_grain_t *g) {
    gr_runtime_t *rt = GR__G_RT(g);
    g->waiters_now = g->waiters_next;
    g->waiters_next = NULL;
    if (!g->dirty) { /* nothing changed since the last commit */
        gr__write_waiter_t *w = g->waiters_now;
        g->waiters_now = NULL;
        gr__waiters_complete(g, w, 0, NULL);
        return;
    }
    g->writing = 1;
    g->dirty = 0; /* a change made while the write is in flight sets it again */
    g->refs++;
    g->io_t0 = gr__us32();
    rt->stats.storage_writes++;
    int rc;
    gr__idem_log_t *ilog = g->ext && (g->ext->idem.n || g->ext->idem.dels.len) ? &g->ext->idem : NULL;
    if (ilog)
        gr__idem_prune(ilog, gr__idem_now_ms(), gr__idem_keys(GR__G_CLS(g)),
                       gr__idem_retention(GR__G_CLS(g)));
    /* A keyed call cleared the state: its reply must be stored with that
     * change, so the row is written empty instead of deleted. */
    if (g->clearing && ilog && gr__idem_pending(ilog)) g->clearing = 0;
    if (g->clearing) {
        /* Delete the row, version-checked like a write; the version after
         * it is 0, so a later write inserts a fresh row. */
        g->clearing = 0;
        rc = gr_storage_clear(rt->storage, GR__G_CLS(g)->name, GR__G_KEY(g), g->key_len, g->version,
                              gr__write_cb, g);
    } else {
        const gr_class_t *cls = GR__G_CLS(g);
        if (ilog && gr__idem_pending(ilog)) {
            /* The replies this write answers for, and the keys it evicts, go
             * in the same statement as the state: a reply is stored if and
             * only if its state is. Both buffers are ours before the call:
             * a provider may complete it at once, and the completion may end
             * the activation (and free its log). */
            gr__buf_t adds, dels = ilog->dels;
            gr__buf_init(&adds);
            gr__buf_init(&ilog->dels);
            rc = gr__idem_encode_new(ilog, &adds);
            if (rc == 0)
                rc = gr__storage_write_replies(rt->storage, cls->name, GR__G_KEY(g), g->key_len, g->state,
                                               g->state_len, cls->state_version, g->version, adds.data,
                                               adds.len, dels.data, dels.len, gr__idem_retention(cls),
                                               gr__write_cb, g);
            gr__buf_free(&adds);
            gr__buf_free(&dels);
        } else {
            rc = gr_storage_write(rt->storage, cls->name, GR__G_KEY(g), g->key_len, g->state, g->state_len,
                                  cls->state_version, g->version, gr__write_cb, g);
        }
    }
    if (rc != 0) {
        g->dirty = 1;
        gr__write_cb(g, rc == GR_ESHUTDOWN ? GR_ECANCELED : GR_ESTORAGE, 0, gr_strerror(rc));
    }
}

/* Queue a write; the waiter completes when a write that includes the
 * current state has committed. */
static int gr__write_request(gr_grain_t *g, gr_write_cb cb, void *ud, gr_msg_t *msg) {
    gr__write_waiter_t *w = gr__calloc(1, sizeof *w);
    if (!w) return GR_ENOMEM;
    w->cb = cb;
    w->ud = ud;
    w->msg = msg;
    w->next = g->waiters_next;
    g->waiters_next = w;
    if (!g->writing) gr__write_start(g);
    return 0;
}

/* ---- turns ---- */

static void gr__pump_start(gr_runtime_t *rt);

static void gr__grain_schedule(gr_grain_t *g) {
    if (g->scheduled || g->status == GR__G_DEAD) return;
    g->scheduled = 1;
    g->run_next = NULL;
    gr_runtime_t *rt = GR__G_RT(g);
    if (rt->run_tail)
        rt->run_tail->run_next = g;
    else
        rt->run_head = g;
    rt->run_tail = g;
    gr__pump_start(rt);
}

static const gr_method_t *gr__find_method(const gr_class_t *cls, const char *name) {
    for (const gr_method_t *m = cls->methods; m->name; m++)
        if (strcmp(m->name, name) == 0) return m;
    return NULL;
}

static gr__timer_t *gr__timer_find(gr_grain_t *g, uint64_t id) {
    for (gr__timer_t *t = GR__G_TIMERS(g); t; t = t->next)
        if (t->id == id) return t;
    return NULL;
}

static void gr__timer_remove(gr_grain_t *g, gr__timer_t *t);

/* Run one due timer tick. Ticks are turns of their own: they never run
 * inside a handler, but they do interleave with a call that is waiting for
 * an asynchronous reply (as Orleans timers do); otherwise a handler that
 * replies from a timer could never finish. */
static void gr__grain_tick(gr_grain_t *g) {
    gr__timer_t *t = GR__G_TIMERS(g);
    while (t && !t->queued)
        t = t->next;
    if (!t) {
        g->ticks_pending = 0;
        return;
    }
    t->queued = 0;
    g->ticks_pending--;
    uint64_t id = t->id;
    /* A timer is a turn too: without the lease, this activation may have a
     * successor elsewhere, and the tick's effects (calls, writes) must not
     * happen here. A periodic timer tries again at its next period. */
    if (!gr__may_answer(g)) {
        t = gr__timer_find(g, id);
        if (t && t->one_shot) gr__timer_remove(g, t);
        return;
    }
    t->fn(g, t->ud);
    t = gr__timer_find(g, id); /* the tick may have stopped it */
    if (t && t->one_shot) gr__timer_remove(g, t);
}

/* Whether the call at the head of the mailbox may interleave. Its method
 * is resolved here if submission could not (the class was not local). */
/* A keyed message reaches its grain: 1 if it was dealt with here (the
 * stored reply, or parked behind the running call with the same key), 0 if
 * it runs (as a new entry of the log). */
static int gr__idem_intercept(gr_grain_t *g, gr_msg_t *m) {
    gr_runtime_t *rt = GR__G_RT(g);
    if (!gr__grain_ext(g)) {
        gr__msg_fail(rt, m, GR_ENOMEM, "out of memory");
        return 1;
    }
    gr__idem_log_t *log = &g->ext->idem;
    gr__idem_entry_t *e = gr__idem_find(log, m->idem, m->idem_len);
    if (e && e->state == GR__IDEM_DONE && !e->waiting) {
        /* Past the class's retention a key is forgotten, whether or not a
         * write has pruned it yet: the retention is what is promised. */
        uint64_t now = gr__idem_now_ms();
        if (now > e->at_ms && now - e->at_ms > gr__idem_retention(GR__G_CLS(g))) {
            gr__idem_remove(log, e);
            e = NULL;
        }
    }
    if (!e) {
        if (gr__idem_begin(log, m->idem, m->idem_len, &e) != 0) {
            gr__msg_fail(rt, m, GR_ENOMEM, "out of memory");
            return 1;
        }
        e->owner = m;
        m->idem_entry = e;
        return 0;
    }
    if (e->state == GR__IDEM_DONE) {
        rt->stats.idem_replays++;
        if (gr__msg_complete_copy(rt, m, e->status, e->reply, e->reply_len) != 0)
            gr__msg_fail(rt, m, GR_ENOMEM, "out of memory");
        return 1;
    }
    rt->stats.idem_waits++;
    m->next = e->waiting;
    e->waiting = m;
    return 1;
}

static int gr__head_interleaves(gr_grain_t *g) {
    gr_msg_t *head = g->mb_head;
    if (!head) return 0;
    if (!head->method) head->method = gr__find_method(GR__G_CLS(g), head->method_name);
    return gr__can_interleave(g, head);
}

/* Run at most one turn of a grain. */
static void gr__grain_run(gr_grain_t *g) {
    gr_runtime_t *rt = GR__G_RT(g);
    if (g->status == GR__G_LOADING && GR__G_WORKER(g)) {
        gr__grain_storage_read_cb(g, 0, NULL, 0, 0, 0, NULL); /* stateless: loaded at once */
        return;
    }
    if (g->status != GR__G_ACTIVE) return;
    if (g->ticks_pending) {
        gr__grain_tick(g);
        gr__grain_schedule(g);
        return;
    }
    /* Draining in a cluster: stop after the current turn even if calls keep
     * queueing (a hot grain would otherwise never let the drain end); the
     * queue is routed to the grain's next silo when the activation ends. */
    if (rt->draining && rt->router) {
        if (!gr__grain_busy(g)) gr__grain_deactivate(g, g->deactivate_requested != 2);
        return;
    }
    gr_msg_t *head = g->mb_head;
    if (!head) {
        if (!gr__grain_busy(g) && (g->deactivate_requested || rt->draining))
            gr__grain_deactivate(g, g->deactivate_requested != 2);
        return;
    }
    int inter = gr__head_interleaves(g);
    /* An ordinary call waits for every turn in progress; an interleaving
     * one only runs beside others (it never waits behind them). */
    if (!inter && gr__grain_busy(g)) return;
    if (inter && !gr__grain_ext(g)) {
        gr_msg_t *m = gr__mailbox_pop(g);
        gr__msg_fail(rt, m, GR_ENOMEM, "out of memory");
        gr__grain_schedule(g);
        return;
    }
    gr_msg_t *m = gr__mailbox_pop(g);
    gr__grain_touch(g);
    if (!gr__may_answer(g)) {
        gr__msg_fail(rt, m, GR_ENOTHERE, gr__no_lease);
    } else if (m->deadline <= uv_now(rt->loop)) {
        /* The caller gave up already: running the handler would only
         * produce a reply nobody reads. */
        gr__msg_fail(rt, m, GR_ETIMEDOUT, "deadline passed while queued");
    } else if (m->idem_len && gr__idem_intercept(g, m)) {
        /* Answered from the reply log, or parked behind the call that runs with its key. */
    } else {
        if (!m->method) m->method = gr__find_method(GR__G_CLS(g), m->method_name);
        if (!m->method && !strcmp(m->method_name, GR__REMINDER_METHOD) && GR__G_CLS(g)->on_reminder) {
            /* A reminder fires: a turn like any call; its reply is the ack. */
            char name[GR_METHOD_NAME_MAX + 1];
            size_t n = m->arg_len < sizeof name - 1 ? m->arg_len : sizeof name - 1;
            memcpy(name, m->arg, n);
            name[n] = '\0';
            g->current = m;
            GR__G_CLS(g)->on_reminder(g, m, name);
        } else if (!m->method) {
            char detail[GR_METHOD_NAME_MAX + GR_CLASS_NAME_MAX + 64];
            snprintf(detail, sizeof detail, "class %s has no method '%s'", GR__G_CLS(g)->name,
                     m->method_name);
            gr__msg_fail(rt, m, GR_ENOMETHOD, detail);
        } else {
            if (inter) {
                m->interleaved = 1;
                m->next = g->ext->interleaved;
                g->ext->interleaved = m;
                g->ext->n_interleaved++;
            } else {
                g->current = m;
            }
            m->ran = 1;
            m->method->fn(g, m, m->arg, m->arg_len);
        }
    }
    /* Run again if the next call can start now (or, idle, to deactivate). */
    if (g->status == GR__G_ACTIVE && (!gr__grain_busy(g) || gr__head_interleaves(g))) gr__grain_schedule(g);
}

static void gr__pump_cb(uv_idle_t *h) {
    gr_runtime_t *rt = h->data;
    /* A bounded batch per loop iteration keeps sockets and timers served
     * under a flood of local calls. */
    for (int budget = 4096; budget > 0; budget--) {
        if (rt->done_head) {
            gr__call_t *c = rt->done_head;
            rt->done_head = c->done_next;
            if (!rt->done_head) rt->done_tail = NULL;
            c->cb(c->ud, c->status, c->reply, c->reply_len);
            gr__call_release(rt, c);
            continue;
        }
        gr_grain_t *g = rt->run_head;
        if (!g) break;
        rt->run_head = g->run_next;
        if (!rt->run_head) rt->run_tail = NULL;
        g->scheduled = 0;
        if (g->status == GR__G_DEAD)
            gr__grain_release(g);
        else
            gr__grain_run(g);
    }
    if (!rt->done_head && !rt->run_head) {
        uv_idle_stop(&rt->pump);
        rt->pump_on = 0;
        gr__maybe_drained(rt);
    }
}

static void gr__pump_start(gr_runtime_t *rt) {
    if (rt->pump_on || rt->closing) return;
    rt->pump_on = 1;
    uv_idle_start(&rt->pump, gr__pump_cb);
}

/* ---- deactivation ---- */

static void gr__timers_stop_all(gr_grain_t *g);

static void gr__deactivate_write_cb(gr_grain_t *g, int status, void *ud) {
    (void)status;
    (void)ud;
    /* On failure the write path already logged it and finishes the grain. */
    if (g->status == GR__G_DEACTIVATING && status == 0) gr__grain_finish(g);
}

static void gr__grain_deactivate(gr_grain_t *g, int save) {
    gr_runtime_t *rt = GR__G_RT(g);
    if (g->status != GR__G_ACTIVE) return;
    g->status = GR__G_DEACTIVATING;
    gr__timers_stop_all(g);
    while (g->owned) {
        gr__call_t *c = g->owned;
        gr__call_unlink(rt, c);
        gr__call_fail_soon(rt, c, GR_ECANCELED, "calling grain was deactivated");
    }
    if (save && GR__G_CLS(g)->on_deactivate) GR__G_CLS(g)->on_deactivate(g);
    if (save && (g->dirty || g->writing)) {
        if (gr__write_request(g, gr__deactivate_write_cb, NULL, NULL) == 0) return;
        gr__log(GR__LOG_ERROR, GR__G_CLS(g)->name, GR__G_KEY(g), g->key_len,
                "out of memory saving state at deactivation; unsaved changes are lost");
    }
    gr__grain_finish(g);
}

static void gr__idle_sweep_cb(uv_timer_t *t) {
    gr_runtime_t *rt = t->data;
    uint64_t now = uv_now(rt->loop);
    gr_grain_t *g = rt->lru_head;
    while (g) {
        gr_grain_t *next = g->lru_next;
        uint32_t age =
            GR__G_CLS(g)->idle_deactivate_ms ? GR__G_CLS(g)->idle_deactivate_ms : rt->opts.idle_deactivate_ms;
        /* The list is ordered by last activity; past the shortest age in use
         * nothing younger can be due, but classes differ, so only stop on the
         * global minimum (1 s granularity at most). */
        uint32_t idle = (uint32_t)now - g->last_active;
        if (idle < rt->min_idle_ms) break;
        if (idle >= age && g->status == GR__G_ACTIVE && !gr__grain_busy(g) && !g->mb_head && !g->writing &&
            !g->scheduled) {
            gr__grain_deactivate(g, 1);
        }
        g = next;
    }
}

/* ---- timers ---- */

static void gr__timer_closed(uv_handle_t *h) {
    gr__timer_t *t = h->data;
    gr_runtime_t *rt = GR__G_RT(t->grain);
    gr_grain_t *g = t->grain;
    gr__free(t);
    g->refs--;
    gr__grain_release(g);
    (void)rt;
}

static void gr__timer_remove(gr_grain_t *g, gr__timer_t *t) {
    gr__timer_t **pp = &g->ext->timers; /* a timer exists: so does ext */
    while (*pp != t)
        pp = &(*pp)->next;
    *pp = t->next;
    if (t->queued) g->ticks_pending--;
    uv_timer_stop(&t->handle);
    uv_close((uv_handle_t *)&t->handle, gr__timer_closed);
}

static void gr__timers_stop_all(gr_grain_t *g) {
    while (GR__G_TIMERS(g))
        gr__timer_remove(g, g->ext->timers);
}

static void gr__timer_fire(uv_timer_t *h) {
    gr__timer_t *t = h->data;
    gr_grain_t *g = t->grain;
    if (t->queued || g->status != GR__G_ACTIVE) return;
    t->queued = 1;
    g->ticks_pending++;
    gr__grain_schedule(g);
}

int gr_timer_start(gr_grain_t *g, uint64_t due_ms, uint64_t period_ms, gr_timer_fn fn, void *ud,
                   uint64_t *id) {
    if (!g || !fn) return GR_EINVAL;
    if (g->status != GR__G_ACTIVE) return GR_ESTATE;
    gr__timer_t *t = gr__grain_ext(g) ? gr__calloc(1, sizeof *t) : NULL;
    if (!t) return GR_ENOMEM;
    t->grain = g;
    t->id = ++GR__G_RT(g)->next_timer_id;
    t->fn = fn;
    t->ud = ud;
    t->one_shot = period_ms == 0;
    uv_timer_init(GR__G_RT(g)->loop, &t->handle);
    t->handle.data = t;
    uv_timer_start(&t->handle, gr__timer_fire, due_ms, period_ms);
    g->refs++; /* released in the handle's close callback */
    t->next = g->ext->timers;
    g->ext->timers = t;
    if (id) *id = t->id;
    return 0;
}

int gr_timer_stop(gr_grain_t *g, uint64_t id) {
    gr__timer_t *t = gr__timer_find(g, id);
    if (!t) return GR_ENOENT;
    gr__timer_remove(g, t);
    return 0;
}

/* ---- submitting calls ---- */

/* Stateless workers: hand the message to an idle worker activation of
 * (class, key) on this silo, else start another one (up to the class's
 * max_workers), else queue it on the worker with the shortest mailbox.
 * Never routed: any silo may serve a worker's calls. */
static void gr__worker_enqueue(gr_runtime_t *rt, gr__class_entry_t *ce, const uint8_t *key, size_t key_len,
                               gr_msg_t *m) {
    const gr_class_t *cls = ce->cls;
    size_t cl = strlen(cls->name);
    uint8_t idbuf[2 + GR_CLASS_NAME_MAX + 1 + GR_KEY_MAX];
    idbuf[0] = GR__WORKER_TAG;
    memcpy(idbuf + 2, cls->name, cl + 1);
    if (key_len) memcpy(idbuf + 2 + cl + 1, key, key_len);
    size_t id_len = 2 + cl + 1 + key_len;
    unsigned max = cls->max_workers ? cls->max_workers : GR__WORKERS_DEFAULT;
    if (max > 255) max = 255;
    gr_grain_t *pick = NULL, *shortest = NULL;
    int free_slot = -1;
    for (unsigned i = 0; i < max && !pick; i++) {
        gr_grain_t *g = NULL;
        idbuf[1] = (uint8_t)i;
        HASH_FIND(hh, rt->grains, idbuf, id_len, g);
        if (!g) {
            if (free_slot < 0) free_slot = (int)i;
            continue;
        }
        if (g->status != GR__G_ACTIVE && g->status != GR__G_LOADING) continue;
        if (!gr__grain_busy(g) && !g->mb_head)
            pick = g;
        else if (!shortest || g->mb_len < shortest->mb_len)
            shortest = g;
    }
    if (!pick && free_slot >= 0) {
        idbuf[1] = (uint8_t)free_slot;
        int rc = gr__grain_new(rt, cls, idbuf, id_len, 2 + cl, &pick);
        if (rc != 0) {
            gr__msg_fail(rt, m, rc, "could not start a stateless worker");
            return;
        }
    }
    if (!pick) pick = shortest;
    if (!pick) {
        gr__msg_fail(rt, m, GR_EOVERLOAD, "no stateless worker can take the call");
        return;
    }
    if (pick->mb_len >= rt->opts.max_queue_per_grain) {
        gr__msg_fail(rt, m, GR_EOVERLOAD, "grain mailbox is full");
        return;
    }
    gr__mailbox_push(pick, m);
    gr__grain_schedule(pick);
}

/* A call whose chain already holds its target comes back to a grain that is
 * waiting for this very chain: unless the method may interleave, it could
 * only wait for its own caller, so fail it now with a clear error instead
 * of after the timeout. Returns 1 when it failed the message. */
static int gr__deadlock_check(gr_runtime_t *rt, gr_grain_t *g, gr_msg_t *m) {
    if (!m->chain_len || !gr__chain_has(m->chain, m->chain_len, g->id, g->id_len)) return 0;
    if (!m->method) m->method = gr__find_method(GR__G_CLS(g), m->method_name);
    if (gr__can_interleave(g, m)) return 0;
    char path[512], who[200], detail[900];
    gr__chain_describe(path, sizeof path, m->chain, m->chain_len, g->id, g->id_len);
    gr__chain_describe(who, sizeof who, NULL, 0, g->id, g->id_len);
    snprintf(detail, sizeof detail,
             "call cycle %s: %s is waiting for this call chain, and its method %s does not interleave "
             "(mark the class GR_CLASS_REENTRANT or the method interleaving, or break the cycle)",
             path, who, m->method_name);
    rt->stats.deadlocks++;
    gr__msg_fail(rt, m, GR_EDEADLOCK, detail);
    return 1;
}

static int gr__submit(gr_runtime_t *rt, gr_grain_t *owner, const gr_ref_t *ref, const char *method,
                      const void *arg, size_t arg_len, uint32_t timeout_ms, int hops, int here,
                      const uint8_t *chain, size_t chain_len, const uint8_t *idem, size_t idem_len,
                      gr_call_cb cb, void *ud) {
    if (!rt || !ref || !method || !cb || !ref->class_name || (ref->key_len && !ref->key) ||
        (arg_len && !arg) || (idem_len && !idem))
        return GR_EINVAL;
    if (idem_len > GR_IDEM_KEY_MAX) return GR_ETOOBIG;
    size_t cl = strlen(ref->class_name), ml = strlen(method);
    if (cl == 0 || ml == 0) return GR_EINVAL;
    if (cl > GR_CLASS_NAME_MAX || ml > GR_METHOD_NAME_MAX || ref->key_len > GR_KEY_MAX ||
        arg_len > GR_ARG_MAX)
        return GR_ETOOBIG;
    /* A draining silo in a cluster still routes calls elsewhere. */
    if (rt->closing || (rt->draining && !rt->router)) return GR_ESHUTDOWN;

    gr__class_entry_t *ce = NULL;
    size_t slot = ((uintptr_t)ref->class_name >> 3) % GR__CLASS_CACHE;
    if (rt->class_cache[slot].name == ref->class_name &&
        strcmp(rt->class_cache[slot].ce->cls->name, ref->class_name) == 0) {
        ce = rt->class_cache[slot].ce;
    } else {
        HASH_FIND_STR(rt->classes, ref->class_name, ce);
        if (ce) {
            rt->class_cache[slot].name = ref->class_name;
            rt->class_cache[slot].ce = ce;
        }
    }
    /* No timeout given: the target class's default, then the runtime's. */
    if (!timeout_ms && ce) timeout_ms = ce->cls->call_timeout_ms;
    gr__call_t *c = gr__call_new(rt, cb, ud, timeout_ms, owner);
    if (!c) return GR_ENOMEM;
    rt->stats.calls++;
    if (!ce) {
        char detail[GR_CLASS_NAME_MAX + 64];
        snprintf(detail, sizeof detail, "no grain class '%s' on this silo", ref->class_name);
        gr__call_unlink(rt, c);
        rt->stats.calls_failed++;
        gr__call_fail_soon(rt, c, GR_ENOCLASS, detail);
        return 0;
    }

    gr_msg_t *m = gr__msg_new(rt);
    if (m) {
        /* A method of a class registered here is resolved once, now, and
         * its name borrowed from the class table; an unknown one keeps a
         * copy of its name for the error (or for a silo whose version of
         * the class has it). */
        m->method = gr__find_method(ce->cls, method);
        if (m->method) {
            m->method_name = (char *)m->method->name;
        } else {
            m->method_name = gr__strdup(method);
            m->name_owned = 1;
        }
        if (arg_len <= sizeof m->arg_inline) {
            m->arg = m->arg_inline;
            if (arg_len) memcpy(m->arg, arg, arg_len);
        } else {
            m->arg = gr__memdup(arg, arg_len);
        }
    }
    if (m && idem_len) {
        m->idem = gr__memdup(idem, idem_len);
        m->idem_len = m->idem ? (uint8_t)idem_len : 0;
    }
    if (!m || !m->method_name || !m->arg || (idem_len && !m->idem) ||
        gr__msg_set_chain(m, chain, chain_len, owner) != 0) {
        if (m) gr__msg_free(rt, m);
        gr__call_unlink(rt, c);
        gr__call_release(rt, c);
        return GR_ENOMEM;
    }
    m->call_id = c->id;
    m->arg_len = arg_len;
    m->t0_ns = uv_hrtime();
    m->deadline = c->dl.deadline;

    /* The table key is class '\0' key: unambiguous because class names have
     * no NUL. A stack buffer avoids an allocation per call. */
    uint8_t idbuf[GR_CLASS_NAME_MAX + 1 + GR_KEY_MAX];
    memcpy(idbuf, ref->class_name, cl + 1);
    if (ref->key_len) memcpy(idbuf + cl + 1, ref->key, ref->key_len);
    size_t id_len = cl + 1 + ref->key_len;

    if (ce->cls->flags & GR_CLASS_STATELESS_WORKER) {
        gr__worker_enqueue(rt, ce, idbuf + cl + 1, ref->key_len, m);
        return 0;
    }
    gr_grain_t *g = NULL;
    HASH_FIND(hh, rt->grains, idbuf, id_len, g);
    if (rt->router && (!g || g->status == GR__G_DEAD) && !here) {
        m->hops = hops;
        if (gr__msg_set_route(m, ce->cls, idbuf, id_len, cl) != 0) {
            gr__call_unlink(rt, c);
            gr__msg_free(rt, m);
            gr__call_release(rt, c);
            return GR_ENOMEM;
        }
        rt->router(rt->router_ud, m);
        return 0;
    }
    if (g && g->mb_len >= rt->opts.max_queue_per_grain) {
        gr__call_unlink(rt, c);
        gr__msg_free(rt, m);
        rt->stats.calls_failed++;
        gr__call_fail_soon(rt, c, GR_EOVERLOAD, "grain mailbox is full");
        return 0;
    }
    if (!g && here && rt->cluster.lease_ok && !rt->cluster.lease_ok(rt->cluster.ud)) {
        /* Sent here to activate, but we cannot vouch for our lease: do not
         * claim a grain we could not serve (it would wait for our death). */
        gr__call_unlink(rt, c);
        gr__msg_free(rt, m);
        rt->stats.calls_failed++;
        gr__call_fail_soon(rt, c, GR_ENOTHERE, gr__no_lease);
        return 0;
    }
    if (!g && rt->draining) { /* sent here to activate: a draining silo starts nothing new */
        gr__call_unlink(rt, c);
        gr__msg_free(rt, m);
        rt->stats.calls_failed++;
        gr__call_fail_soon(rt, c, GR_ESHUTDOWN, "silo is shutting down");
        return 0;
    }
    if (!g) {
        m->hops = hops;
        int rc = gr__grain_new(rt, ce->cls, idbuf, id_len, cl, &g);
        if (rc != 0) {
            gr__call_unlink(rt, c);
            gr__msg_free(rt, m);
            rt->stats.calls_failed++;
            gr__call_fail_soon(rt, c, rc, "could not start loading the grain's state");
            return 0;
        }
    } else if (gr__deadlock_check(rt, g, m)) {
        return 0;
    }
    gr__mailbox_push(g, m);
    gr__grain_schedule(g);
    return 0;
}

int gr_call(gr_runtime_t *rt, const gr_ref_t *ref, const char *method, const void *arg, size_t arg_len,
            uint32_t timeout_ms, gr_call_cb cb, void *ud) {
    return gr__submit(rt, NULL, ref, method, arg, arg_len, timeout_ms, 0, 0, NULL, 0, NULL, 0, cb, ud);
}

void gr_call_options_init(gr_call_options_t *o) { memset(o, 0, sizeof *o); }

int gr_call_ex(gr_runtime_t *rt, const gr_ref_t *ref, const char *method, const void *arg, size_t arg_len,
               const gr_call_options_t *o, gr_call_cb cb, void *ud) {
    if (!o) return GR_EINVAL;
    return gr__submit(rt, NULL, ref, method, arg, arg_len, o->timeout_ms, 0, 0, NULL, 0, o->idempotency_key,
                      o->idempotency_key_len, cb, ud);
}

int gr__call_hops(gr_runtime_t *rt, const gr_ref_t *ref, const char *method, const void *arg, size_t arg_len,
                  uint32_t timeout_ms, int hops, int here, const uint8_t *chain, size_t chain_len,
                  const uint8_t *idem, size_t idem_len, gr_call_cb cb, void *ud) {
    return gr__submit(rt, NULL, ref, method, arg, arg_len, timeout_ms, hops, here, chain, chain_len, idem,
                      idem_len, cb, ud);
}

int gr_grain_call(gr_grain_t *g, const gr_ref_t *ref, const char *method, const void *arg, size_t arg_len,
                  uint32_t timeout_ms, gr_call_cb cb, void *ud) {
    if (!g) return GR_EINVAL;
    if (g->status != GR__G_ACTIVE) return GR_ESTATE;
    /* The new call's chain: the chain of the turn this grain is in (the
     * non-interleaved one: an interleaved turn cannot block anyone), plus
     * this grain (added by gr__submit, for the owner). */
    const gr_msg_t *cur = g->current;
    return gr__submit(GR__G_RT(g), g, ref, method, arg, arg_len, timeout_ms, 0, 0, cur ? cur->chain : NULL,
                      cur ? cur->chain_len : 0, NULL, 0, cb, ud);
}

int gr_grain_call_ex(gr_grain_t *g, const gr_ref_t *ref, const char *method, const void *arg, size_t arg_len,
                     const gr_call_options_t *o, gr_call_cb cb, void *ud) {
    if (!g || !o) return GR_EINVAL;
    if (g->status != GR__G_ACTIVE) return GR_ESTATE;
    const gr_msg_t *cur = g->current;
    return gr__submit(GR__G_RT(g), g, ref, method, arg, arg_len, o->timeout_ms, 0, 0, cur ? cur->chain : NULL,
                      cur ? cur->chain_len : 0, o->idempotency_key, o->idempotency_key_len, cb, ud);
}

const uint8_t *gr_msg_idempotency_key(const gr_msg_t *m, size_t *len) {
    if (len) *len = m && m->idem_len ? m->idem_len : 0;
    return m && m->idem_len ? m->idem : NULL;
}

const uint8_t *gr__msg_idem(const gr_msg_t *m, size_t *len) { return gr_msg_idempotency_key(m, len); }

/* ---- replies ---- */

static int gr__reply(gr_msg_t *m, int status, const void *data, size_t len) {
    if (!m) return GR_EINVAL;
    if (len > GR_ARG_MAX) return GR_ETOOBIG;
    gr_grain_t *g = m->grain;
    gr_runtime_t *rt = GR__G_RT(g);
    assert((g->current == m || m->interleaved) && "gr_reply on a message that is not a turn in progress");
    int persist = (GR__G_CLS(g)->flags & GR_CLASS_PERSIST_BEFORE_REPLY) && g->status == GR__G_ACTIVE;
    gr__idem_entry_t *e = m->idem_entry && m->idem_entry->state == GR__IDEM_RUNNING ? m->idem_entry : NULL;
    /* A keyed call's reply is remembered; a persisting class stores it with
     * the state (a write even if the state did not change: dirty), and
     * until that commits duplicates wait. The entry is recorded last, when
     * nothing else can fail, so an error return leaves it running. */
    if (e && persist) g->dirty = 1;
    if (!(persist && (g->dirty || g->writing))) {
        if (e) {
            if (gr__idem_record(&g->ext->idem, e, status, data, len, gr__idem_now_ms()) != 0)
                return GR_ENOMEM;
            e->state = GR__IDEM_DONE;
        }
        gr__turn_end(g, m); /* before completing: that frees m */
        if (!gr__may_answer(g)) {
            gr__msg_fail(rt, m, GR_ENOTHERE, gr__no_lease);
            gr__grain_schedule(g);
            return 0;
        }
        if (gr__msg_complete_copy(rt, m, status, data, len) != 0) {
            gr__turn_restore(g, m);
            return GR_ENOMEM;
        }
        gr__grain_schedule(g);
        return 0;
    }
    /* Held until the state write commits: the reply needs its own copy. */
    uint8_t *copy = NULL;
    if (len) {
        copy = gr__memdup(data, len);
        if (!copy) return GR_ENOMEM;
    }
    if (e && gr__idem_record(&g->ext->idem, e, status, data, len, gr__idem_now_ms()) != 0) {
        gr__free(copy);
        return GR_ENOMEM;
    }
    m->reply_status = status;
    m->reply = copy;
    m->reply_len = len;
    if (gr__write_request(g, NULL, NULL, m) == 0) return 0; /* turn ends at commit */
    m->reply = NULL;
    gr__free(copy);
    gr__turn_end(g, m);
    gr__msg_fail(rt, m, GR_ENOMEM, "out of memory persisting state");
    gr__grain_schedule(g);
    return 0;
}

int gr_reply(gr_msg_t *m, const void *data, size_t len) { return gr__reply(m, 0, data, len); }

int gr_reply_error(gr_msg_t *m, const char *text) {
    return gr__reply(m, GR_EAPP, text ? text : "", text ? strlen(text) : 0);
}

const char *gr_msg_method(const gr_msg_t *m) { return m->method_name; }
uint64_t gr_msg_deadline(const gr_msg_t *m) { return m->deadline; }
uint32_t gr_msg_remaining_ms(const gr_msg_t *m) {
    gr_runtime_t *rt = m->grain ? GR__G_RT(m->grain) : NULL;
    if (!rt) return 0;
    uint64_t now = uv_now(rt->loop);
    return m->deadline > now ? (uint32_t)(m->deadline - now) : 0;
}

/* ---- grain accessors ---- */

const gr_class_t *gr_grain_class(const gr_grain_t *g) { return GR__G_CLS(g); }
const uint8_t *gr_grain_key(const gr_grain_t *g, size_t *len) {
    if (len) *len = g->key_len;
    return GR__G_KEY(g);
}
const char *gr_grain_silo(const gr_grain_t *g) { return GR__G_RT(g)->silo_id; }
gr_runtime_t *gr_grain_runtime(const gr_grain_t *g) { return GR__G_RT(g); }
void *gr_grain_data(const gr_grain_t *g) { return g->ext ? g->ext->data : NULL; }

int gr_grain_set_data(gr_grain_t *g, void *data, void (*free_fn)(void *)) {
    if (!g) return GR_EINVAL;
    if (!g->ext && !data && !free_fn) return 0;
    gr__grain_ext_t *x = gr__grain_ext(g);
    if (!x) return GR_ENOMEM;
    if (x->data_free && x->data != data) x->data_free(x->data);
    x->data = data;
    x->data_free = free_fn;
    return 0;
}

void gr_grain_deactivate_on_idle(gr_grain_t *g) {
    if (!g->deactivate_requested) g->deactivate_requested = 1;
    gr__grain_schedule(g);
}

void gr_state_get(const gr_grain_t *g, const uint8_t **data, size_t *len) {
    *data = g->state;
    *len = g->state_len;
}

int64_t gr_state_version(const gr_grain_t *g) { return g->version; }
int gr_state_dirty(const gr_grain_t *g) { return g->dirty; }

int gr_state_set(gr_grain_t *g, const void *data, size_t len) {
    if (GR__G_WORKER(g)) return GR_ESTATE; /* stateless */
    if (len > GR_STATE_MAX) return GR_ETOOBIG;
    if (len && !data) return GR_EINVAL;
    uint8_t *copy = NULL;
    if (len) {
        copy = gr__memdup(data, len);
        if (!copy) return GR_ENOMEM;
    }
    gr__free(g->state);
    g->state = copy;
    g->state_len = (uint32_t)len;
    g->dirty = 1;
    g->clearing = 0; /* writing the new state replaces the row instead */
    return 0;
}

int gr_state_clear(gr_grain_t *g) {
    if (!g) return GR_EINVAL;
    if (GR__G_WORKER(g)) return GR_ESTATE;
    if (g->status != GR__G_ACTIVE) return GR_ESTATE;
    gr__free(g->state);
    g->state = NULL;
    g->state_len = 0;
    /* Nothing stored and nothing pending: there is no row to delete. */
    if (g->version == 0 && !g->writing) {
        g->dirty = 0;
        return 0;
    }
    g->clearing = 1;
    g->dirty = 1;
    return 0;
}

int gr_state_write(gr_grain_t *g, gr_write_cb cb, void *ud) {
    if (g->status != GR__G_ACTIVE) return GR_ESTATE;
    return gr__write_request(g, cb, ud, NULL);
}

/* ---- the runtime handle ---- */

void gr_runtime_options_init(gr_runtime_options_t *o) {
    memset(o, 0, sizeof *o);
    o->silo_id = "local";
    o->idle_deactivate_ms = 600000;
    o->default_call_timeout_ms = 30000;
    o->max_queue_per_grain = 10000;
}

int gr_runtime_new(uv_loop_t *loop, gr_storage_t *storage, const gr_runtime_options_t *opts,
                   gr_runtime_t **out) {
    if (!loop || !storage || !opts || !out || !opts->silo_id || opts->default_call_timeout_ms == 0 ||
        opts->idle_deactivate_ms == 0 || opts->max_queue_per_grain == 0)
        return GR_EINVAL;
    gr_runtime_t *rt = gr__calloc(1, sizeof *rt);
    if (!rt) return GR_ENOMEM;
    rt->silo_id = gr__strdup(opts->silo_id);
    if (!rt->silo_id) {
        gr__free(rt);
        return GR_ENOMEM;
    }
    rt->loop = loop;
    rt->storage = storage;
    rt->opts = *opts;
    rt->opts.silo_id = rt->silo_id;
    rt->min_idle_ms = opts->idle_deactivate_ms;
    uv_idle_init(loop, &rt->pump);
    rt->pump.data = rt;
    uv_timer_init(loop, &rt->deadline_timer);
    rt->deadline_timer.data = rt;
    uv_timer_init(loop, &rt->idle_timer);
    rt->idle_timer.data = rt;
    /* Sweep four times per shortest age, at most once per second. */
    uint64_t every = opts->idle_deactivate_ms / 4;
    if (every > 1000) every = 1000;
    if (every < 10) every = 10;
    uv_timer_start(&rt->idle_timer, gr__idle_sweep_cb, every, every);
    uv_unref((uv_handle_t *)&rt->idle_timer);
    uv_unref((uv_handle_t *)&rt->deadline_timer);
    *out = rt;
    return 0;
}

static void gr__class_entry_free(gr__class_entry_t *e) {
    gr__free(e->calls);
    gr__free(e->errors);
    gr__free(e->interleave);
    gr__free(e->read_only);
    gr__free(e->latency);
    gr__free(e);
}

int gr_runtime_register(gr_runtime_t *rt, const gr_class_t *cls) {
    /* Bit 30 of a stored format says a reply log follows the state. */
    if (!rt || !cls || !gr__valid_class_name(cls->name) || !cls->methods || !cls->methods[0].name ||
        cls->placement > GR_PLACE_RANDOM || (cls->state_version & GR__IDEM_FORMAT_FLAG))
        return GR_EINVAL;
    for (const gr_method_t *m = cls->methods; m->name; m++) {
        size_t n = strlen(m->name);
        if (!m->fn || n == 0 || n > GR_METHOD_NAME_MAX) return GR_EINVAL;
    }
    gr__class_entry_t *e = NULL;
    HASH_FIND_STR(rt->classes, cls->name, e);
    if (e) return GR_EEXIST;
    e = gr__calloc(1, sizeof *e);
    if (!e) return GR_ENOMEM;
    e->cls = cls;
    e->rt = rt;
    for (const gr_method_t *m = cls->methods; m->name; m++)
        e->n_methods++;
    e->calls = gr__calloc(e->n_methods, sizeof *e->calls);
    e->errors = gr__calloc(e->n_methods, sizeof *e->errors);
    e->interleave = gr__calloc(e->n_methods, 1);
    e->read_only = gr__calloc(e->n_methods, 1);
    e->latency = gr__calloc(e->n_methods, sizeof *e->latency);
    int rc = !e->calls || !e->errors || !e->interleave || !e->read_only || !e->latency ? GR_ENOMEM : 0;
    for (size_t i = 0; rc == 0 && i < e->n_methods; i++)
        e->interleave[i] = (cls->flags & GR_CLASS_REENTRANT) != 0;
    for (const char *const *name = cls->interleave; rc == 0 && name && *name; name++) {
        const gr_method_t *m = gr__find_method(cls, *name);
        if (m)
            e->interleave[m - cls->methods] = 1;
        else
            rc = GR_EINVAL; /* a typo here would silently serialise the method */
    }
    for (const char *const *name = cls->read_only; rc == 0 && name && *name; name++) {
        const gr_method_t *m = gr__find_method(cls, *name);
        if (m)
            e->read_only[m - cls->methods] = 1;
        else
            rc = GR_EINVAL;
    }
    if (rc == 0) {
        HASH_ADD_KEYPTR(hh, rt->classes, cls->name, strlen(cls->name), e);
        if (gr__hash_oom()) rc = GR_ENOMEM;
    }
    if (rc != 0) {
        gr__class_entry_free(e);
        return rc;
    }
    /* The sweep must run often enough for the shortest class age. */
    if (cls->idle_deactivate_ms && cls->idle_deactivate_ms < rt->min_idle_ms)
        rt->min_idle_ms = cls->idle_deactivate_ms;
    if (cls->idle_deactivate_ms && cls->idle_deactivate_ms / 4 < uv_timer_get_repeat(&rt->idle_timer)) {
        uint64_t every = cls->idle_deactivate_ms / 4 < 10 ? 10 : cls->idle_deactivate_ms / 4;
        uv_timer_start(&rt->idle_timer, gr__idle_sweep_cb, every, every);
    }
    return 0;
}

const gr_class_t *gr_runtime_find_class(gr_runtime_t *rt, const char *name) {
    gr__class_entry_t *e = NULL;
    if (!rt || !name) return NULL;
    HASH_FIND_STR(rt->classes, name, e);
    return e ? e->cls : NULL;
}

size_t gr_runtime_activation_count(const gr_runtime_t *rt) { return rt->n_grains; }

void gr__runtime_get_stats(const gr_runtime_t *rt, gr__runtime_stats_t *out) { *out = rt->stats; }

static void gr__maybe_drained(gr_runtime_t *rt) {
    if (!rt->draining || rt->n_grains != 0 || !rt->drain_cb) return;
    void (*cb)(gr_runtime_t *, void *) = rt->drain_cb;
    rt->drain_cb = NULL;
    cb(rt, rt->drain_ud);
}

int gr_runtime_drain(gr_runtime_t *rt, void (*cb)(gr_runtime_t *, void *), void *ud) {
    if (rt->draining || rt->closing) return GR_ESTATE;
    rt->draining = 1;
    rt->drain_cb = cb;
    rt->drain_ud = ud;
    /* Idle grains deactivate on their next run; busy ones after their turn
     * and mailbox; loading ones after serving what they queued. The pump
     * reports completion, so cb never runs inside this call. */
    gr_grain_t *g, *tmp;
    HASH_ITER(hh, rt->grains, g, tmp) gr__grain_schedule(g);
    gr__pump_start(rt);
    return 0;
}

static void gr__handle_closed(uv_handle_t *h) {
    gr_runtime_t *rt = h->data;
    rt->open_handles--;
    gr__maybe_closed(rt);
}

static void gr__maybe_closed(gr_runtime_t *rt) {
    if (!rt->closing || rt->open_handles != 0 || rt->n_grains != 0 || rt->run_head) return;
    /* Grains still held by storage operations or timer handles keep the
     * runtime alive: they point back at it. */
    if (rt->held_grains != 0) return;
    gr__class_entry_t *e, *tmp;
    HASH_ITER(hh, rt->classes, e, tmp) {
        HASH_DEL(rt->classes, e);
        gr__class_entry_free(e);
    }
    void (*cb)(void *) = rt->close_cb;
    void *ud = rt->close_ud;
    gr__free(rt->silo_id);
    gr__free(rt);
    if (cb) cb(ud);
}

static int gr__write_holds(gr_grain_t *g, gr_msg_t *m) {
    for (gr__write_waiter_t *w = g->waiters_now; w; w = w->next)
        if (w->msg == m) return 1;
    for (gr__write_waiter_t *w = g->waiters_next; w; w = w->next)
        if (w->msg == m) return 1;
    return 0;
}

void gr_runtime_close(gr_runtime_t *rt, void (*cb)(void *), void *ud) {
    assert(!rt->closing && "gr_runtime_close called twice");
    rt->closing = 1;
    rt->close_cb = cb;
    rt->close_ud = ud;
    /* Counted before anything is released: the runtime must not be freed
     * while this function is still walking it. */
    rt->open_handles = 3;
    /* Drop every activation without saving: drain first to save. */
    gr_grain_t *g, *tmp;
    HASH_ITER(hh, rt->grains, g, tmp) {
        gr_msg_t *m;
        /* Calls this grain made are cancelled first, with their callbacks,
         * while the grain is intact: a callback may still reply. */
        while (g->owned) {
            gr__call_t *c = g->owned;
            gr__call_unlink(rt, c);
            c->cb(c->ud, GR_ECANCELED, NULL, 0);
            gr__call_release(rt, c);
        }
        /* A message still unanswered is void from here on (replying to it
         * after close is a programming error), unless a state write holds
         * it: the write's completion releases it. */
        if (g->current && !gr__write_holds(g, g->current)) gr__msg_free(rt, g->current);
        g->current = NULL;
        while (g->ext && g->ext->interleaved) {
            gr_msg_t *im = g->ext->interleaved;
            g->ext->interleaved = im->next;
            g->ext->n_interleaved--;
            im->next = NULL;
            if (!gr__write_holds(g, im)) gr__msg_free(rt, im);
        }
        while ((m = gr__mailbox_pop(g)) != NULL)
            gr__msg_free(rt, m);
        gr__timers_stop_all(g);
        if (g->status == GR__G_ACTIVE || g->status == GR__G_LOADING) g->status = GR__G_DEACTIVATING;
        gr__grain_finish(g);
    }
    /* Every call still waiting completes now with GR_ECANCELED. */
    gr__call_t *c, *ctmp;
    HASH_ITER(hh, rt->calls, c, ctmp) {
        gr__call_unlink(rt, c);
        c->cb(c->ud, GR_ECANCELED, NULL, 0);
        gr__call_release(rt, c);
    }
    while (rt->done_head) {
        c = rt->done_head;
        rt->done_head = c->done_next;
        c->cb(c->ud, c->status, c->reply, c->reply_len);
        gr__call_release(rt, c);
    }
    while (rt->spare_calls) {
        c = rt->spare_calls;
        rt->spare_calls = c->done_next;
        gr__free(c);
    }
    while (rt->spare_msgs) {
        gr_msg_t *m = rt->spare_msgs;
        rt->spare_msgs = m->next;
        gr__free(m);
    }
    rt->n_spare_calls = rt->n_spare_msgs = 0;
    rt->done_tail = NULL;
    /* Grains on the run list are released here rather than by the pump. */
    while (rt->run_head) {
        g = rt->run_head;
        rt->run_head = g->run_next;
        g->scheduled = 0;
        gr__grain_release(g);
    }
    rt->run_tail = NULL;
    uv_close((uv_handle_t *)&rt->pump, gr__handle_closed);
    uv_close((uv_handle_t *)&rt->deadline_timer, gr__handle_closed);
    uv_close((uv_handle_t *)&rt->idle_timer, gr__handle_closed);
}

/* ---- cluster hooks (grains/runtime.h) ---- */

void gr__runtime_set_reminders(gr_runtime_t *rt, const gr__reminder_ops_t *ops, void *ud) {
    rt->reminders = ops;
    rt->reminders_ud = ud;
}

int gr_reminder_register(gr_grain_t *g, const char *name, uint64_t due_ms, uint64_t period_ms, gr_call_cb cb,
                         void *ud) {
    if (!g || !gr__valid_reminder_name(name)) return GR_EINVAL;
    gr_runtime_t *rt = GR__G_RT(g);
    if (!rt->reminders) return GR_ESTATE;
    return rt->reminders->add(rt->reminders_ud, GR__G_CLS(g)->name, GR__G_KEY(g), g->key_len, name, due_ms,
                              period_ms, cb, ud);
}

int gr_reminder_unregister(gr_grain_t *g, const char *name, gr_call_cb cb, void *ud) {
    if (!g || !gr__valid_reminder_name(name)) return GR_EINVAL;
    gr_runtime_t *rt = GR__G_RT(g);
    if (!rt->reminders) return GR_ESTATE;
    return rt->reminders->remove(rt->reminders_ud, GR__G_CLS(g)->name, GR__G_KEY(g), g->key_len, name, cb,
                                 ud);
}

int gr_reminder_list(gr_grain_t *g, gr_call_cb cb, void *ud) {
    if (!g || !cb) return GR_EINVAL;
    gr_runtime_t *rt = GR__G_RT(g);
    if (!rt->reminders) return GR_ESTATE;
    return rt->reminders->list(rt->reminders_ud, GR__G_CLS(g)->name, GR__G_KEY(g), g->key_len, cb, ud);
}

void gr__runtime_set_cluster(gr_runtime_t *rt, const gr__cluster_hooks_t *hooks) {
    if (hooks)
        rt->cluster = *hooks;
    else
        memset(&rt->cluster, 0, sizeof rt->cluster);
}

void gr__runtime_set_router(gr_runtime_t *rt, gr__router_fn route, gr__deactivated_fn gone, void *ud) {
    rt->router = route;
    rt->on_gone = gone;
    rt->router_ud = ud;
}

const char *gr__msg_class(const gr_msg_t *m) { return m->cls->name; }
unsigned gr__msg_placement(const gr_msg_t *m) { return m->cls->placement; }
const uint8_t *gr__msg_key(const gr_msg_t *m, size_t *len) {
    *len = m->id_len - m->class_len - 1;
    return m->id + m->class_len + 1;
}
const uint8_t *gr__msg_id(const gr_msg_t *m, size_t *len) {
    *len = m->id_len;
    return m->id;
}
const uint8_t *gr__msg_arg(const gr_msg_t *m, size_t *len) {
    *len = m->arg_len;
    return m->arg;
}
int gr__msg_hops(const gr_msg_t *m) { return m->hops; }
const uint8_t *gr__msg_chain(const gr_msg_t *m, size_t *len) {
    *len = m->chain_len;
    return m->chain;
}

uint32_t gr__msg_remaining_ms(const gr_runtime_t *rt, const gr_msg_t *m) {
    uint64_t now = uv_now(rt->loop);
    return m->deadline > now ? (uint32_t)(m->deadline - now) : 0;
}

void gr__runtime_run_here(gr_runtime_t *rt, gr_msg_t *m) {
    if (rt->closing) {
        gr__msg_fail(rt, m, GR_ESHUTDOWN, "silo is shutting down");
        return;
    }
    gr_grain_t *g = NULL;
    HASH_FIND(hh, rt->grains, m->id, m->id_len, g);
    if (!g) {
        if (rt->draining) {
            gr__msg_fail(rt, m, GR_ESHUTDOWN, "silo is shutting down");
            return;
        }
        int rc = gr__grain_new(rt, m->cls, m->id, m->id_len, m->class_len, &g);
        if (rc != 0) {
            gr__msg_fail(rt, m, rc, "could not start loading the grain's state");
            return;
        }
    } else if (g->mb_len >= rt->opts.max_queue_per_grain) {
        gr__msg_fail(rt, m, GR_EOVERLOAD, "grain mailbox is full");
        return;
    } else if (gr__deadlock_check(rt, g, m)) {
        return;
    }
    gr__mailbox_push(g, m);
    gr__grain_schedule(g);
}

void gr__runtime_msg_done(gr_runtime_t *rt, gr_msg_t *m, int status, const uint8_t *reply, size_t len) {
    uint8_t *copy = len ? gr__memdup(reply, len) : NULL;
    if (len && !copy) {
        gr__msg_fail(rt, m, GR_ENOMEM, "out of memory");
        return;
    }
    if (status != 0) rt->stats.calls_failed++;
    gr__msg_complete(rt, m, status, copy, copy ? len : 0);
}

void gr__runtime_foreach(gr_runtime_t *rt,
                         void (*fn)(void *ud, const char *cls, const uint8_t *key, size_t len), void *ud) {
    gr_grain_t *g, *tmp;
    HASH_ITER(hh, rt->grains, g, tmp) {
        /* Workers are not in the directory: nothing to re-register. */
        if ((g->status == GR__G_ACTIVE || g->status == GR__G_LOADING) && !GR__G_WORKER(g))
            fn(ud, GR__G_CLS(g)->name, GR__G_KEY(g), g->key_len);
    }
}

static void gr__grain_drop(gr_grain_t *g) {
    if (g->status == GR__G_ACTIVE && !gr__grain_busy(g) && !g->writing)
        gr__grain_deactivate(g, 0);
    else if (g->status == GR__G_ACTIVE || g->status == GR__G_LOADING) {
        g->deactivate_requested = 2; /* after the turn in progress, without saving */
        gr__grain_schedule(g);
    }
}

int gr__runtime_hosts(gr_runtime_t *rt, const char *cls, const uint8_t *key, size_t key_len) {
    uint8_t idbuf[GR_CLASS_NAME_MAX + 1 + GR_KEY_MAX];
    size_t cl = strlen(cls);
    if (cl > GR_CLASS_NAME_MAX || key_len > GR_KEY_MAX) return 0;
    memcpy(idbuf, cls, cl + 1);
    if (key_len) memcpy(idbuf + cl + 1, key, key_len);
    gr_grain_t *g = NULL;
    HASH_FIND(hh, rt->grains, idbuf, cl + 1 + key_len, g);
    return g && (g->status == GR__G_ACTIVE || g->status == GR__G_LOADING);
}

void gr__runtime_drop(gr_runtime_t *rt, const char *cls, const uint8_t *key, size_t key_len) {
    uint8_t idbuf[GR_CLASS_NAME_MAX + 1 + GR_KEY_MAX];
    size_t cl = strlen(cls);
    if (cl > GR_CLASS_NAME_MAX || key_len > GR_KEY_MAX) return;
    memcpy(idbuf, cls, cl + 1);
    if (key_len) memcpy(idbuf + cl + 1, key, key_len);
    gr_grain_t *g = NULL;
    HASH_FIND(hh, rt->grains, idbuf, cl + 1 + key_len, g);
    if (g) gr__grain_drop(g);
}

void gr__runtime_drop_all(gr_runtime_t *rt) {
    gr_grain_t *g, *tmp;
    HASH_ITER(hh, rt->grains, g, tmp) gr__grain_drop(g);
}

/* ---- metrics (Prometheus text) ---- */

/* One counter family with a sample per class and method: calls, or errors. */
static int gr__write_method_counter(const gr_runtime_t *rt, gr__buf_t *b, const char *name, const char *help,
                                    int errors) {
    int rc = gr__buf_printf(b, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    for (const gr__class_entry_t *e = rt->classes; e; e = e->hh.next)
        for (size_t i = 0; i < e->n_methods; i++)
            rc |= gr__buf_printf(b, "%s{class=\"%s\",method=\"%s\"} %llu\n", name, e->cls->name,
                                 e->cls->methods[i].name,
                                 (unsigned long long)(errors ? e->errors[i] : e->calls[i]));
    return rc;
}

int gr__runtime_write_metrics(const gr_runtime_t *rt, gr__buf_t *b) {
    int rc = 0;
    const gr__class_entry_t *e;
    rc |= gr__buf_printf(b, "# HELP granary_activations Live activations by class.\n"
                            "# TYPE granary_activations gauge\n");
    for (e = rt->classes; e; e = e->hh.next)
        rc |= gr__buf_printf(b, "granary_activations{class=\"%s\"} %llu\n", e->cls->name,
                             (unsigned long long)e->active);
    rc |=
        gr__write_method_counter(rt, b, "granary_calls_total", "Calls served here, by class and method.", 0);
    rc |= gr__write_method_counter(rt, b, "granary_call_errors_total",
                                   "Calls served here that returned an error.", 1);
    rc |= gr__buf_printf(b, "# HELP granary_call_duration_seconds From acceptance to reply (after commit for "
                            "persist-before-reply).\n"
                            "# TYPE granary_call_duration_seconds histogram\n");
    for (e = rt->classes; e; e = e->hh.next) {
        char labels[GR_CLASS_NAME_MAX + 16];
        snprintf(labels, sizeof labels, "class=\"%s\"", e->cls->name);
        gr__hist_t sum;
        memset(&sum, 0, sizeof sum);
        for (size_t i = 0; i < e->n_methods; i++)
            gr__hist_add(&sum, &e->latency[i]);
        rc |= gr__hist_write(&sum, b, "granary_call_duration_seconds", labels);
    }
    const gr__runtime_stats_t *s = &rt->stats;
    size_t queued = 0;
    for (const gr_grain_t *g = rt->grains; g; g = g->hh.next)
        queued += g->mb_len;
    rc |= gr__buf_printf(
        b,
        "# HELP granary_calls_accepted_total Calls accepted by the runtime.\n# TYPE "
        "granary_calls_accepted_total counter\ngranary_calls_accepted_total %llu\n"
        "# HELP granary_calls_failed_total Calls completed with an error status.\n# TYPE "
        "granary_calls_failed_total counter\ngranary_calls_failed_total %llu\n"
        "# HELP granary_late_replies_total Replies dropped because the caller had timed out.\n# TYPE "
        "granary_late_replies_total counter\ngranary_late_replies_total %llu\n"
        "# HELP granary_call_cycles_total Calls failed with GR_EDEADLOCK: a call cycle back to a busy, "
        "non-reentrant grain.\n"
        "# TYPE granary_call_cycles_total counter\ngranary_call_cycles_total %llu\n"
        "# HELP granary_activations_total Activations created.\n# TYPE granary_activations_total "
        "counter\ngranary_activations_total %llu\n"
        "# HELP granary_deactivations_total Activations finished.\n# TYPE granary_deactivations_total "
        "counter\ngranary_deactivations_total %llu\n"
        "# HELP granary_storage_reads_total State loads (activations).\n# TYPE granary_storage_reads_total "
        "counter\ngranary_storage_reads_total %llu\n"
        "# HELP granary_storage_writes_total State writes.\n# TYPE granary_storage_writes_total "
        "counter\ngranary_storage_writes_total %llu\n"
        "# HELP granary_storage_conflicts_total State writes refused by the version check.\n# TYPE "
        "granary_storage_conflicts_total counter\ngranary_storage_conflicts_total %llu\n"
        "# HELP granary_storage_errors_total Storage operations that failed.\n# TYPE "
        "granary_storage_errors_total counter\ngranary_storage_errors_total %llu\n"
        "# HELP granary_queued_messages Calls waiting in grain mailboxes.\n"
        "# TYPE granary_queued_messages gauge\ngranary_queued_messages %zu\n"
        "# HELP granary_drain_remaining Activations left to deactivate (0 unless draining).\n"
        "# TYPE granary_drain_remaining gauge\ngranary_drain_remaining %zu\n",
        (unsigned long long)s->calls, (unsigned long long)s->calls_failed,
        (unsigned long long)s->late_replies, (unsigned long long)s->deadlocks,
        (unsigned long long)s->activations, (unsigned long long)s->deactivations,
        (unsigned long long)s->storage_reads, (unsigned long long)s->storage_writes,
        (unsigned long long)s->storage_conflicts, (unsigned long long)s->storage_errors, queued,
        rt->draining ? rt->n_grains : (size_t)0);
    rc |= gr__buf_printf(
        b,
        "# HELP granary_idempotent_replays_total Keyed calls answered from the reply log "
        "without running (a retry of a call that had run).\n"
        "# TYPE granary_idempotent_replays_total counter\ngranary_idempotent_replays_total %llu\n"
        "# HELP granary_idempotent_waits_total Keyed calls that waited for the running call "
        "with their key.\n"
        "# TYPE granary_idempotent_waits_total counter\ngranary_idempotent_waits_total %llu\n",
        (unsigned long long)s->idem_replays, (unsigned long long)s->idem_waits);
    rc |= gr__buf_printf(b, "# HELP granary_storage_read_duration_seconds Latency of state loads (claim and "
                            "read).\n# TYPE granary_storage_read_duration_seconds histogram\n");
    rc |= gr__hist_write(&rt->read_latency, b, "granary_storage_read_duration_seconds", "");
    rc |= gr__buf_printf(b, "# HELP granary_storage_write_duration_seconds Latency of state writes.\n# TYPE "
                            "granary_storage_write_duration_seconds histogram\n");
    rc |= gr__hist_write(&rt->write_latency, b, "granary_storage_write_duration_seconds", "");
    return rc ? GR_ENOMEM : 0;
}

void gr__runtime_foreach_class(const gr_runtime_t *rt, void (*fn)(void *ud, const char *cls, uint64_t active),
                               void *ud) {
    for (const gr__class_entry_t *e = rt->classes; e; e = e->hh.next)
        fn(ud, e->cls->name, e->active);
}

void gr__runtime_foreach_method(const gr_runtime_t *rt, void (*fn)(void *ud, const gr__method_stats_t *ms),
                                void *ud) {
    for (const gr__class_entry_t *e = rt->classes; e; e = e->hh.next)
        for (size_t i = 0; i < e->n_methods; i++) {
            gr__method_stats_t ms = {
                e->cls->name, e->cls->methods[i].name, e->read_only[i], e->interleave[i], e->calls[i],
                e->errors[i], &e->latency[i]};
            fn(ud, &ms);
        }
}

int gr__runtime_read_only(gr_runtime_t *rt, const char *cls, const char *method) {
    gr__class_entry_t *e = NULL;
    HASH_FIND_STR(rt->classes, cls, e);
    if (!e) return GR_ENOCLASS;
    const gr_method_t *m = gr__find_method(e->cls, method);
    if (!m) return GR_ENOMETHOD;
    return e->read_only[m - e->cls->methods];
}
