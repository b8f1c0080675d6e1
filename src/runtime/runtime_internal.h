/* src/runtime/runtime_internal.h - what the files of src/runtime/ share and
 * no other folder may include: the message, call, activation and runtime
 * structs and the functions one file offers the others. */
#ifndef GR_RUNTIME_INTERNAL_H
#define GR_RUNTIME_INTERNAL_H

#include <assert.h>
#include <stdio.h>

#include "base/base.h"
#include "runtime/idem.h"
#include "runtime/runtime.h"
#include "storage/claim.h"
#include "storage/replies.h"

/* MIGRATING: frozen (no turn starts, calls queue) while the activation is
 * handed to another silo (migrate.c); it ends, or becomes ACTIVE again if
 * the target refused before anything moved. */
typedef enum { GR__G_LOADING, GR__G_ACTIVE, GR__G_DEACTIVATING, GR__G_DEAD, GR__G_MIGRATING } gr__gstatus_t;

/* gr_grain.mig: where an activation stands in a live migration. */
enum {
    GR__MIG_NONE,
    GR__MIG_QUEUED,  /* draining: in the runtime's migration queue, still serving */
    GR__MIG_PENDING, /* its turn to move came while it was busy: moves after the turn */
    GR__MIG_SENDING  /* frozen (MIGRATING): its state is being written or is on its way */
};
/* Migrations in flight per silo; the rest of a drain's queue waits. */
#define GR__MIG_IN_FLIGHT 1024u

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
    gr_grain_t *held;  /* that activation once the call completed: kept (a ref) until cb has run */
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
    gr__idem_log_t idem; /* replies of keyed calls (runtime/idem.h) */
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
    uint8_t in_turn;  /* user code of this activation is running (a handler, a tick, on_reminder) */
    uint8_t evicted;  /* deactivating for the memory bounds: counted in rt->n_evicting until it ends */
    uint8_t clearing; /* the next write deletes the row (gr_state_clear) */
    uint8_t claimed;  /* cluster mode: the activation claim is ours (docs/directory.md) */
    uint8_t mig;      /* GR__MIG_*: live migration (migrate.c) */
    uint32_t token;   /* this activation's number on this silo: its claim's token */
    uint32_t moved_at; /* loop time in s when it arrived by migration (0: never): no move back within the window */
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
    uv_timer_t memory_timer; /* samples the resident memory (with a memory_limit) */
    uint64_t evict_ms;       /* loop time of the last eviction batch (at most one per 100 ms) */
    uint64_t trim_ms;        /* loop time the allocator was last trimmed (at most once a second) */
    int evicting;            /* a deactivation loop is walking the LRU list: no nested eviction */
    size_t n_evicting;       /* evicted activations still saving their state (they leave at commit) */
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
    /* A drain's live migrations (migrate.c): activations in the order they
     * go (each holds a ref), the next to start, and how many are on their way. */
    gr_grain_t **mq;
    size_t mq_len, mq_pos;
    unsigned mig_in_flight;
    int mig_pumping;        /* inside gr__migrate_pump: a nested call returns */
    uint32_t mig_budget_ms; /* gr__runtime_set_migrate_budget */
    uint64_t mig_deadline;  /* loop time after which the drain's queue deactivates (0: none) */
    struct gr__mig_in *mig_ins; /* take-overs waiting for their claim transfer */
    gr_msg_t *spare_msgs; /* free lists, linked through next / done_next */
    gr__call_t *spare_calls;
    unsigned n_spare_msgs, n_spare_calls;
};

#define GR__G_RT(g) ((g)->ce->rt)
#define GR__G_CLS(g) ((g)->ce->cls)
#define GR__G_KEY(g) ((g)->id + (g)->id_len - (g)->key_len)
#define GR__G_TIMERS(g) ((g)->ext ? (g)->ext->timers : NULL)
#define GR__G_WORKER(g) ((g)->ce->cls->flags & GR_CLASS_STATELESS_WORKER)

static inline uint32_t gr__idem_keys(const gr_class_t *cls) {
    return cls->idempotency_keys ? cls->idempotency_keys : GR__IDEM_KEYS_DEFAULT;
}
static inline uint32_t gr__idem_retention(const gr_class_t *cls) {
    return cls->idempotency_retention_ms ? cls->idempotency_retention_ms : GR__IDEM_RETENTION_DEFAULT_MS;
}

/* A microsecond clock in 32 bits, for the duration of one storage operation. */
static inline uint32_t gr__us32(void) { return (uint32_t)(uv_hrtime() / 1000); }
static inline uint64_t gr__since_us32_ns(uint32_t t0) { return (uint64_t)(uint32_t)(gr__us32() - t0) * 1000; }

static inline gr__grain_ext_t *gr__grain_ext(gr_grain_t *g) {
    if (!g->ext) g->ext = gr__calloc(1, sizeof *g->ext);
    return g->ext;
}

/* A turn is in progress: the current one, or interleaved ones. */
static inline int gr__grain_busy(const gr_grain_t *g) {
    return g->current != NULL || (g->ext && g->ext->n_interleaved);
}

/* Whether message m may start while other turns of g are in progress. */
static inline int gr__can_interleave(const gr_grain_t *g, const gr_msg_t *m) {
    return m->method && g->ce->interleave[m->method - g->ce->cls->methods];
}

/* Cluster mode: activations claim their grain and answer only within the
 * silo's lease (docs/directory.md, "Single activation"). */
static inline int gr__claims_on(const gr_grain_t *g) {
    return GR__G_RT(g)->cluster.lease_ok && !GR__G_WORKER(g);
}

/* May this activation answer now? A silo whose lease may have run out must
 * not: another silo may have taken the claim and be serving newer state. */
static inline int gr__may_answer(const gr_grain_t *g) {
    const gr_runtime_t *rt = GR__G_RT(g);
    return !gr__claims_on(g) || rt->cluster.lease_ok(rt->cluster.ud);
}

#define GR__NO_LEASE                                                                                         \
    "this silo cannot confirm its membership lease (fenced or paused): the grain may be served elsewhere; "  \
    "retry"

/* ---- calls.c ---- */
void gr__call_unlink(gr_runtime_t *rt, gr__call_t *c);
void gr__call_fail_soon(gr_runtime_t *rt, gr__call_t *c, int status, const char *detail);
void gr__call_release(gr_runtime_t *rt, gr__call_t *c);
void gr__idem_drop(gr_runtime_t *rt, gr_grain_t *g);
void gr__msg_free(gr_runtime_t *rt, gr_msg_t *m);
void gr__msg_complete(gr_runtime_t *rt, gr_msg_t *m, int status, uint8_t *reply, size_t len);
int gr__msg_complete_copy(gr_runtime_t *rt, gr_msg_t *m, int status, const void *data, size_t len);
void gr__msg_fail(gr_runtime_t *rt, gr_msg_t *m, int status, const char *detail);
int gr__msg_set_route(gr_msg_t *m, const gr_class_t *cls, const uint8_t *id, size_t id_len, size_t class_len);
void gr__worker_enqueue(gr_runtime_t *rt, gr__class_entry_t *ce, const uint8_t *key, size_t key_len,
                        gr_msg_t *m);
int gr__deadlock_check(gr_runtime_t *rt, gr_grain_t *g, gr_msg_t *m);

/* ---- activations.c ---- */
/* A new activation may start (0), or not: GR_EOVERLOAD at the memory
 * bounds, after evicting what it can. */
int gr__admit(gr_runtime_t *rt);
void gr__memory_sample_cb(uv_timer_t *t);
void gr__grain_touch(gr_grain_t *g);
int gr__grain_new(gr_runtime_t *rt, const gr_class_t *cls, const uint8_t *id, size_t id_len, size_t class_len,
                  gr_grain_t **out);
void gr__grain_finish(gr_grain_t *g);
void gr__grain_release(gr_grain_t *g);
void gr__grain_storage_read_cb(void *ud, int status, const uint8_t *data, size_t len, int64_t version,
                               uint32_t format, const char *detail);
/* An activation in LOADING state with no storage operation started (the
 * memory bounds and the table as for gr__grain_new); migrate.c fills it. */
int gr__grain_alloc(gr_runtime_t *rt, const gr_class_t *cls, const uint8_t *id, size_t id_len, size_t class_len,
                    gr_grain_t **out);
/* Its state is here (read, or migrated in with `extra` from on_migrate_out,
 * migrated 1): start it. 0 if it is ACTIVE, else the status its queued
 * calls failed with (it is gone). */
int gr__grain_loaded(gr_grain_t *g, const uint8_t *data, size_t len, int64_t version, uint32_t format,
                     int migrated, const uint8_t *extra, size_t extra_len);
/* Undo gr__grain_alloc of an activation nothing else has seen yet. */
void gr__grain_unalloc(gr_grain_t *g);
void gr__grain_deactivate(gr_grain_t *g, int save);
void gr__idle_sweep_cb(uv_timer_t *t);

/* ---- turns.c ---- */
void gr__turn_end(gr_grain_t *g, gr_msg_t *m);
void gr__turn_restore(gr_grain_t *g, gr_msg_t *m);
void gr__mailbox_push(gr_grain_t *g, gr_msg_t *m);
gr_msg_t *gr__mailbox_pop(gr_grain_t *g);
void gr__grain_schedule(gr_grain_t *g);
const gr_method_t *gr__find_method(const gr_class_t *cls, const char *name);
gr__timer_t *gr__timer_find(gr_grain_t *g, uint64_t id);
void gr__pump_start(gr_runtime_t *rt);

/* ---- state.c ---- */
int gr__write_request(gr_grain_t *g, gr_write_cb cb, void *ud, gr_msg_t *msg);

/* ---- timers.c ---- */
void gr__timer_remove(gr_grain_t *g, gr__timer_t *t);
void gr__timers_stop_all(gr_grain_t *g);

/* ---- migrate.c ---- */
/* Draining with live migration on: queue every activation that may move
 * and start the first ones. */
void gr__migrate_drain(gr_runtime_t *rt);
/* g, not busy, is to move now (its turn came, or the turn it waited for ended). */
void gr__migrate_start(gr_grain_t *g);
/* Drop the queue's references (the runtime closes). */
void gr__migrate_queue_free(gr_runtime_t *rt);
/* From the pump: start what the drain's queue allows now. */
void gr__migrate_pump_due(gr_runtime_t *rt);
/* The runtime closes: answer every take-over still waiting (GR_ECANCELED). */
typedef struct gr__mig_in gr__mig_in_t;
void gr__migrate_in_cancel_all(gr_runtime_t *rt);

/* ---- runtime.c ---- */
void gr__maybe_drained(gr_runtime_t *rt);
void gr__maybe_closed(gr_runtime_t *rt);

#endif
