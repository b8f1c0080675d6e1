/* granary/grain.h - define grain classes, serve calls, keep state, call grains.
 *
 * Everything here runs on the loop thread of the runtime that owns the grain;
 * no function in this header is thread-safe, and none blocks.
 */
#ifndef GRANARY_GRAIN_H
#define GRANARY_GRAIN_H

#include <uv.h>

#include "granary/error.h"
#include "granary/storage.h"

typedef struct gr_runtime gr_runtime_t; /* the grain runtime of one silo */
typedef struct gr_grain gr_grain_t;     /* one activation (a handle owned by the runtime) */
typedef struct gr_msg gr_msg_t;         /* one call being served (a request owned by the runtime) */

/** A method handler. `arg` is borrowed for the duration of the call only.
 * The handler must eventually call gr_reply() or gr_reply_error() on `msg`,
 * now or later (for example from the callback of a call to another grain).
 * Until then the grain is busy: non-reentrant turns mean the next message
 * waits. */
typedef void (*gr_method_fn)(gr_grain_t *grain, gr_msg_t *msg, const uint8_t *arg, size_t arg_len);

/** One entry of a class's method table; the table ends with {NULL, NULL}. */
typedef struct gr_method {
    const char *name; /* stable string used by callers on the wire */
    gr_method_fn fn;
} gr_method_t;

/** Class flags, OR'ed into gr_class_t.flags. */
typedef enum gr_class_flags {
    /* Hold each reply until the state it changed has committed to storage:
     * after the handler replies, if the state is dirty the runtime writes it
     * and only then sends the reply (or GR_ESTORAGE/GR_ECONFLICT if the write
     * fails, in which case the activation is dropped and reloaded). */
    GR_CLASS_PERSIST_BEFORE_REPLY = 1u << 0,
    /* Reentrant: while a call waits for an asynchronous reply (for example
     * from another grain), the next queued calls may start. Handlers still
     * never run at the same time (one loop thread), but state may change
     * between a handler's return and its reply. Default: non-reentrant. */
    GR_CLASS_REENTRANT = 1u << 1,
    /* Stateless worker: no state (nothing is read or written; gr_state_set
     * and gr_state_clear return GR_ESTATE) and no single-activation rule.
     * Calls are served on the silo they enter, never routed: an idle
     * activation of the key takes the call, else a new one starts (up to
     * max_workers per key per silo), else it queues on the least busy one.
     * For fan-out work such as validation or aggregation. */
    GR_CLASS_STATELESS_WORKER = 1u << 2,
    /* Never live-migrated (docs/migration.md): a draining silo deactivates
     * the class's activations (saving dirty state) and the next silo loads
     * them from storage, and rebalancing leaves them where they are. For
     * state that cannot leave the process (open files, sockets). */
    GR_CLASS_NO_MIGRATE = 1u << 3,
} gr_class_flags_t;

/** Bytes an on_migrate_out hook may add to a migrating activation. */
#define GR_MIGRATE_EXTRA_MAX (64u * 1024u)

/** Where a cluster activates a grain that is not active anywhere (the
 * directory keeps it there afterwards; stateless workers ignore this). */
typedef enum gr_placement {
    /* The silo the call entered through (its client's silo, or the calling
     * grain's): no extra hop for a caller that sticks to one silo. */
    GR_PLACE_LOCAL = 0,
    /* The grain's owner on the hash ring: grains spread evenly over the
     * active silos whatever the callers do, and a key's placement is stable
     * while the membership is. */
    GR_PLACE_HASH = 1,
    /* A random active silo, chosen by the silo the call entered through. */
    GR_PLACE_RANDOM = 2,
} gr_placement_t;

/** A grain class. The struct and every string and table it points to are
 * borrowed by the runtime for as long as the runtime lives (static storage is
 * the usual choice). */
typedef struct gr_class {
    const char *name;           /* unique, 1..GR_CLASS_NAME_MAX printable ASCII, no '/' */
    const gr_method_t *methods; /* terminated by an entry with name == NULL */
    /* Optional. Runs once the state is loaded, before the first message. A
     * negative return fails the activation: queued calls get GR_EACTIVATE. */
    int (*on_activate)(gr_grain_t *grain);
    /* Optional. Runs when the activation is deactivated (idle, explicit, or
     * silo shutdown); it may still change state, which the runtime then writes. */
    void (*on_deactivate)(gr_grain_t *grain);
    unsigned flags;              /* gr_class_flags */
    uint32_t idle_deactivate_ms; /* 0: the runtime's default */
    /* Timeout of calls to this class that pass 0, from inside a silo
     * (gr_call, gr_grain_call; clients send their own). 0: the runtime's
     * default_call_timeout_ms. */
    uint32_t call_timeout_ms;
    /* Optional, NULL-terminated: names of methods that may run while other
     * calls of the grain are in progress (read-only methods such as "get");
     * they never wait behind a busy grain, and a call cycle that comes back
     * to this grain through one of them is allowed. Every name must be in
     * `methods` (else gr_runtime_register fails with GR_EINVAL). */
    const char *const *interleave;
    /* GR_CLASS_STATELESS_WORKER: activations per key per silo (0: 4, at most 255). */
    unsigned max_workers;
    /* Version of the state's byte format (0: never versioned). Every write
     * stores it with the state. A grain whose stored format is NEWER than
     * this is not activated here (GR_ESTATEVERSION, retryable: during a
     * rolling deploy a silo with the newer class can host it), so newer
     * state is never overwritten by older code. */
    uint32_t state_version;
    /* Optional. Called on activation when the stored format is OLDER than
     * state_version, with the stored bytes and their format, after they are
     * loaded and before on_activate: it must gr_state_set() the upgraded
     * state (written with the new format by the next write) and return 0;
     * non-zero fails the activation (GR_EACTIVATE) and nothing is written.
     * Without it, old bytes are given to the class as they are. */
    int (*upgrade_state)(gr_grain_t *grain, const uint8_t *old, size_t old_len, uint32_t old_version);
    /* Optional. A durable reminder of this grain is due (gr_reminder_register):
     * runs as a turn, activating the grain if needed, and must reply to `msg`
     * (gr_reply) when done: the reply is the acknowledgement, without it the
     * reminder fires again (at least once). */
    void (*on_reminder)(gr_grain_t *grain, gr_msg_t *msg, const char *name);
    /* Optional, NULL-terminated: names of methods that change nothing (no
     * state, no calls that do). The silo's dashboard offers exactly these
     * to operators and its call endpoint refuses every other method. Every
     * name must be in `methods` (else gr_runtime_register fails with
     * GR_EINVAL). */
    const char *const *read_only;
    /* Where a new activation goes in a cluster (default GR_PLACE_LOCAL).
     * Other values fail registration with GR_EINVAL. */
    gr_placement_t placement;
    /* Idempotency keys (docs/exactly-once.md): how many replies of keyed
     * calls each grain remembers (0: 1000) and for how long (0: 600000 ms).
     * With GR_CLASS_PERSIST_BEFORE_REPLY they are stored with the state and
     * survive any activation; otherwise they live in the activation only. */
    uint32_t idempotency_keys;
    uint32_t idempotency_retention_ms;
    /* Optional, live migration (docs/migration.md): an activation moves to
     * another silo with its state bytes, version and reply log, not through
     * storage. on_migrate_out runs on the silo it leaves, after its last
     * turn there, and may write up to `cap` (GR_MIGRATE_EXTRA_MAX) bytes
     * that are not the state (a cache, a cursor) to `out`, setting *len; it
     * must not change the state. Non-zero: this activation is not migrated
     * but deactivated (on_deactivate, dirty state written) or left where it
     * is (rebalancing). on_migrate_in runs on the silo it arrives at, with
     * those bytes, after the state is in place and before on_activate
     * (which runs as for any activation: timers are re-registered there);
     * non-zero fails the activation there (GR_EACTIVATE) and the grain is
     * loaded from storage by its next call. Without them, only the state
     * and the reply log move. */
    int (*on_migrate_out)(gr_grain_t *grain, uint8_t *out, size_t cap, size_t *len);
    int (*on_migrate_in)(gr_grain_t *grain, const uint8_t *data, size_t len);
    /* Optional, state lifecycle (docs/lifecycle.md): a grain of this class
     * whose stored state was not written for this many seconds is deleted
     * from storage with its reminders and stored replies, by the silo that
     * owns its ring range, unless it is active somewhere; its next call
     * starts from no state. 0: kept for ever. Ignored without PostgreSQL. */
    uint32_t state_ttl_s;
} gr_class_t;

/** Completion of a call. status is 0 with the reply bytes, GR_EAPP with the
 * application's error text, or another GR_E* code with a detail text (which
 * may be empty). `reply` is borrowed until the callback returns. Runs exactly
 * once per accepted call, on the loop thread, never inside gr_call(). */
typedef void (*gr_call_cb)(void *ud, int status, const uint8_t *reply, size_t reply_len);

/** Names a grain: class name plus key bytes (borrowed). */
/** Runs once when a drain has finished (gr_runtime_drain). */
typedef void (*gr_drain_cb)(gr_runtime_t *rt, void *ud);
/** Frees data attached to an activation (gr_grain_set_data). */
typedef void (*gr_free_fn)(void *data);

typedef struct gr_ref {
    const char *class_name;
    const void *key;
    size_t key_len;
} gr_ref_t;

/* ---- the runtime ------------------------------------------------------- */

/** Options of a runtime; set them with gr_runtime_options_init() first. */
typedef struct gr_runtime_options {
    const char *silo_id;              /* reported by gr_grain_silo(); copied */
    uint32_t idle_deactivate_ms;      /* default age before an idle grain is deactivated (default 600000) */
    uint32_t default_call_timeout_ms; /* used when a call passes 0 (default 30000) */
    uint32_t max_queue_per_grain;     /* queued messages per activation before GR_EOVERLOAD (default 10000) */
    /* Memory bounds (docs/operations.md, "Memory bounds"). Activations kept at
     * most (0: no limit, the default): from 90 % of it the least recently
     * used idle activations are deactivated (dirty state written first), and
     * at the limit a call that needs a new activation fails with the
     * retryable GR_EOVERLOAD. */
    uint32_t max_activations;
    /* The same by the process's resident memory, sampled every 100 ms, in
     * bytes (0: no limit, the default): eviction from 90 % of it, refusal of
     * new activations at it. */
    uint64_t memory_limit;
} gr_runtime_options_t;

/** Fill `opts` with the defaults documented in gr_runtime_options_t. */
GR_EXTERN void gr_runtime_options_init(gr_runtime_options_t *opts);

/** Create a runtime on `loop` that keeps grain state in `storage` (borrowed;
 * it must outlive the runtime). On success *out owns a runtime the caller
 * closes with gr_runtime_close(). Returns 0, GR_EINVAL (a NULL argument or
 * silo_id, a zero default_call_timeout_ms, idle_deactivate_ms or
 * max_queue_per_grain) or GR_ENOMEM. */
GR_EXTERN int gr_runtime_new(uv_loop_t *loop, gr_storage_t *storage, const gr_runtime_options_t *opts,
                             gr_runtime_t **out);

/** Register a grain class (borrowed, see gr_class_t). Returns 0, GR_ETOOBIG
 * (a class name over GR_CLASS_NAME_MAX or a method name over
 * GR_METHOD_NAME_MAX bytes), GR_EINVAL (an empty or invalid class name, an
 * empty method table, a method with no fn or an empty name, an interleave
 * or read_only name not in `methods`, an unknown placement, a state_version
 * with bit 30 or 31 set), GR_EEXIST for a duplicate name, or GR_ENOMEM. */
GR_EXTERN int gr_runtime_register(gr_runtime_t *rt, const gr_class_t *cls);

/** Look up a registered class by name; NULL if unknown. */
GR_EXTERN const gr_class_t *gr_runtime_find_class(gr_runtime_t *rt, const char *name);

/** Call a grain from outside any grain (a client gateway, a test, main()).
 * Copies everything it needs before returning. timeout_ms 0 uses the target
 * class's call_timeout_ms, else the runtime default. Returns 0 (cb will run
 * once, also with GR_ENOCLASS, GR_EOVERLOAD, ... for a call that could not be
 * queued) or, with cb never run: GR_EINVAL (a NULL or empty argument),
 * GR_ETOOBIG (class or method name, key or arg over its limit), GR_ESHUTDOWN
 * (closing, or draining outside a cluster) or GR_ENOMEM. */
GR_EXTERN int gr_call(gr_runtime_t *rt, const gr_ref_t *ref, const char *method, const void *arg,
                      size_t arg_len, uint32_t timeout_ms, gr_call_cb cb, void *ud);

/** Options of one call (gr_call_ex, gr_grain_call_ex, gr_client_call_ex);
 * gr_call_options_init() fills the defaults. */
typedef struct gr_call_options {
    uint32_t timeout_ms;         /* 0: the target class's call_timeout_ms, else the default */
    const void *idempotency_key; /* NULL: none. With a key, a call that repeats one the grain
                                  * already answered (within the class's retention) gets that
                                  * answer without running; one that repeats a running call waits
                                  * for it (docs/exactly-once.md) */
    size_t idempotency_key_len;  /* 1..GR_IDEM_KEY_MAX with a key */
    uint32_t retry_for_ms;       /* gr_client_call_ex only: retry retryable errors with jittered
                                  * backoff until this long after the call (0: no retries); without
                                  * a key, one is made for the call */
} gr_call_options_t;

/** Fill `opts` with the defaults (everything 0/NULL). */
GR_EXTERN void gr_call_options_init(gr_call_options_t *opts);

/** gr_call() with options. Returns 0 (cb will run once) or
 * GR_EINVAL (also NULL opts, or a key length with a NULL key)/GR_ETOOBIG (also
 * a key over GR_IDEM_KEY_MAX)/GR_ESHUTDOWN/GR_ENOMEM (cb will not run). */
GR_EXTERN int gr_call_ex(gr_runtime_t *rt, const gr_ref_t *ref, const char *method, const void *arg,
                         size_t arg_len, const gr_call_options_t *opts, gr_call_cb cb, void *ud);

/** Deactivate every grain (writing dirty state), refuse new calls with
 * GR_ESHUTDOWN, and run `cb` once nothing is active any more. Returns 0 or
 * GR_ESTATE if a drain is already under way or the runtime is closing. */
GR_EXTERN int gr_runtime_drain(gr_runtime_t *rt, gr_drain_cb cb, void *ud);

/** Number of live activations (including those loading or deactivating). */
GR_EXTERN size_t gr_runtime_activation_count(const gr_runtime_t *rt);

/** Close the runtime: pending calls complete with GR_ECANCELED and
 * activations are dropped without writing (drain first to save them).
 * Messages a handler has not replied to yet become invalid when this returns
 * (do not reply to them afterwards). `cb` runs on a later loop iteration,
 * after which the memory is gone. Closing twice is a programming error
 * (asserts). */
GR_EXTERN void gr_runtime_close(gr_runtime_t *rt, gr_close_cb cb, void *ud);

/* ---- inside a grain ---------------------------------------------------- */

/** The class of an activation (borrowed for the life of the runtime). */
GR_EXTERN const gr_class_t *gr_grain_class(const gr_grain_t *grain);

/** The key of an activation; *len receives its length. Borrowed until the
 * activation is gone (after on_deactivate). */
GR_EXTERN const uint8_t *gr_grain_key(const gr_grain_t *grain, size_t *len);

/** The id of the silo hosting this activation (borrowed, static for the run). */
GR_EXTERN const char *gr_grain_silo(const gr_grain_t *grain);

/** The runtime that hosts the activation. */
GR_EXTERN gr_runtime_t *gr_grain_runtime(const gr_grain_t *grain);

/** Attach application data to the activation. `free_fn`, if not NULL, is
 * called with it after on_deactivate (or when replaced). Returns 0,
 * GR_EINVAL (NULL grain), or GR_ENOMEM (the first call allocates the
 * activation's small extension record; nothing was attached and `data` is
 * still the caller's). */
GR_EXTERN int gr_grain_set_data(gr_grain_t *grain, void *data, gr_free_fn free_fn);

/** The application data set with gr_grain_set_data(), or NULL. */
GR_EXTERN void *gr_grain_data(const gr_grain_t *grain);

/** Ask the runtime to deactivate this grain as soon as it is idle (after the
 * current turn and any queued messages), as if its idle age had passed. */
GR_EXTERN void gr_grain_deactivate_on_idle(gr_grain_t *grain);

/** Read the state loaded from storage (or last set). *data is borrowed until
 * the next gr_state_set() or until the activation is gone; *len may be 0 for
 * a grain never written. */
GR_EXTERN void gr_state_get(const gr_grain_t *grain, const uint8_t **data, size_t *len);

/** Storage version of the state (0: no row stored yet). Increases by one on
 * each committed write. */
GR_EXTERN int64_t gr_state_version(const gr_grain_t *grain);

/** Replace the in-memory state with a copy of `data` and mark it dirty.
 * Returns 0, GR_ESTATE (a stateless worker), GR_ETOOBIG (over GR_STATE_MAX),
 * GR_EINVAL (NULL grain, or len > 0 with NULL data) or GR_ENOMEM. */
GR_EXTERN int gr_state_set(gr_grain_t *grain, const void *data, size_t len);

/** Empty the state and delete its stored row. The in-memory state becomes
 * empty at once; the row is deleted by the next write (gr_state_write(), the
 * persist-before-reply write after this turn, or the save on deactivation),
 * version-checked like any write: GR_ECONFLICT if another activation wrote
 * since this one loaded. After it gr_state_version() is 0, and a later
 * gr_state_set() + write stores a fresh row. A gr_state_set() before the
 * deletion has committed cancels it (the new state is written instead).
 * Returns 0, GR_EINVAL (NULL grain) or GR_ESTATE if the grain is not active
 * or is a stateless worker. */
GR_EXTERN int gr_state_clear(gr_grain_t *grain);

/** Whether the state has changes not yet committed. */
GR_EXTERN int gr_state_dirty(const gr_grain_t *grain);

/** Completion of gr_state_write(): status 0, GR_ECONFLICT (the activation is
 * stale and will deactivate without writing), GR_ESTORAGE, GR_ESHUTDOWN (the
 * storage was closed) or GR_ECANCELED (the runtime was closed). */
typedef void (*gr_write_cb)(gr_grain_t *grain, int status, void *ud);

/** Write the current state now, version-checked against what this activation
 * loaded or last wrote. `cb` may be NULL. Writes of one activation are
 * serialised; a write of clean state completes with 0 without storage I/O.
 * Returns 0 (cb runs once: later, or inside this call when the state is
 * clean and no write is in flight, or the provider refuses the write at
 * once), GR_EINVAL (NULL grain), GR_ESTATE if the grain is not active
 * (loading or deactivating), or GR_ENOMEM (cb never runs). */
GR_EXTERN int gr_state_write(gr_grain_t *grain, gr_write_cb cb, void *ud);

/** Send the reply to the caller of `msg` (a copy of `data` is taken). For a
 * persist-before-reply class with dirty state, the reply leaves after the
 * write commits. Returns 0 (`msg` is invalid afterwards; the caller gets
 * GR_ENOTHERE instead when this silo lost its lease, GR_ENOMEM when the held
 * reply could not be queued for the write), or GR_EINVAL (NULL msg),
 * GR_ETOOBIG (len over GR_ARG_MAX) or GR_ENOMEM; after an error nothing was
 * sent and `msg` still needs a reply. */
GR_EXTERN int gr_reply(gr_msg_t *msg, const void *data, size_t len);

/** Reply with an application error (GR_EAPP) and a NUL-terminated text for
 * the caller (NULL: empty). Returns as gr_reply(): 0 (`msg` is invalid
 * afterwards), GR_EINVAL (NULL msg), GR_ETOOBIG (text over GR_ARG_MAX) or
 * GR_ENOMEM (`msg` still needs a reply). */
GR_EXTERN int gr_reply_error(gr_msg_t *msg, const char *text);

/** Name of the method a message calls (borrowed from the class table). */
GR_EXTERN const char *gr_msg_method(const gr_msg_t *msg);

/** Absolute deadline of the caller, in the runtime loop's uv_now() ms;
 * a handler may give up early when it cannot make it. */
GR_EXTERN uint64_t gr_msg_deadline(const gr_msg_t *msg);

/** Milliseconds left before the caller's deadline (0 once it has passed).
 * A reply sent after it is dropped and counted (granary_late_replies_total);
 * a handler can skip work nobody will read, or pass the rest on as the
 * timeout of the calls it makes. */
GR_EXTERN uint32_t gr_msg_remaining_ms(const gr_msg_t *msg);

/** The idempotency key the call of `msg` carries (NULL, *len 0: none): a
 * grain that calls another grain or an external system on behalf of a keyed
 * call derives its own keys from it (docs/exactly-once.md). */
GR_EXTERN const uint8_t *gr_msg_idempotency_key(const gr_msg_t *msg, size_t *len);

/** gr_grain_call() with options (the same returns as gr_call_ex(), and
 * GR_ESTATE when the grain is not active). */
GR_EXTERN int gr_grain_call_ex(gr_grain_t *grain, const gr_ref_t *ref, const char *method, const void *arg,
                               size_t arg_len, const gr_call_options_t *opts, gr_call_cb cb, void *ud);

/** Call another grain from inside a grain. Like gr_call(), but the call
 * belongs to the activation: if the grain is deactivated first, cb runs with
 * GR_ECANCELED, and the activation is gone by then: cb must not use the
 * grain (a turn waiting for the answer keeps its activation, so this only
 * concerns calls whose turn has already replied). Returns what gr_call() returns (GR_EINVAL also for a NULL
 * grain), or GR_ESTATE when the grain is not active. */
GR_EXTERN int gr_grain_call(gr_grain_t *grain, const gr_ref_t *ref, const char *method, const void *arg,
                            size_t arg_len, uint32_t timeout_ms, gr_call_cb cb, void *ud);

/** Register (or replace) the durable reminder `name` of this grain: stored in
 * PostgreSQL, it fires first `due_ms` from now, then every `period_ms` (0:
 * once), by calling the class's on_reminder on whichever silo hosts the grain,
 * after any deploy, crash or scale-down. `period_ms` must be 0 or at least the
 * silo's --reminder-min-period-ms. `name`: 1..128 printable ASCII, no spaces.
 * `cb` (may be NULL) gets 0 once stored, or GR_ESTORAGE / GR_ECANCELED (the
 * service closed). Returns 0, GR_EINVAL (NULL grain, a bad name, a period
 * under the minimum, a due_ms or period_ms over 100 years), GR_ESTATE when
 * this runtime has no reminder service (a silo without PostgreSQL),
 * GR_ESHUTDOWN (the service is closing) or GR_ENOMEM; cb never runs then.
 * Timing and missed ticks: docs/reminders.md. */
GR_EXTERN int gr_reminder_register(gr_grain_t *grain, const char *name, uint64_t due_ms, uint64_t period_ms,
                                   gr_call_cb cb, void *ud);

/** Delete the reminder `name`; `cb` (may be NULL) gets 0, GR_ENOENT if there
 * was none, or GR_ESTORAGE / GR_ECANCELED. Returns 0, GR_EINVAL (NULL grain
 * or a bad name), GR_ESTATE (no reminder service), GR_ESHUTDOWN or
 * GR_ENOMEM, as gr_reminder_register(). */
GR_EXTERN int gr_reminder_unregister(gr_grain_t *grain, const char *name, gr_call_cb cb, void *ud);

/** List this grain's reminders: `cb` gets one line per reminder,
 * "NAME DUE_IN_MS PERIOD_MS" (DUE_IN_MS may be negative: overdue), or
 * GR_ESTORAGE (also a malformed row) / GR_ENOMEM / GR_ECANCELED. Returns 0,
 * GR_EINVAL (NULL grain or cb), GR_ESTATE (no reminder service),
 * GR_ESHUTDOWN or GR_ENOMEM, as gr_reminder_register(). */
GR_EXTERN int gr_reminder_list(gr_grain_t *grain, gr_call_cb cb, void *ud);

/** A timer tick; runs as a turn of its own (never inside another message). */
typedef void (*gr_timer_fn)(gr_grain_t *grain, void *ud);

/** Start a timer owned by the activation: first tick after `due_ms`, then
 * every `period_ms` (0: one-shot). Stopped automatically on deactivation.
 * *id (may be NULL) receives an id for gr_timer_stop(). Returns 0,
 * GR_EINVAL (NULL grain or fn), GR_ESTATE (the grain is not active) or
 * GR_ENOMEM. Timer ticks do not count as activity for idle deactivation. */
GR_EXTERN int gr_timer_start(gr_grain_t *grain, uint64_t due_ms, uint64_t period_ms, gr_timer_fn fn, void *ud,
                             uint64_t *id);

/** Stop a timer. Returns 0, GR_EINVAL (NULL grain), or GR_ENOENT if no such
 * timer is running (a one-shot timer is gone once it has ticked). */
GR_EXTERN int gr_timer_stop(gr_grain_t *grain, uint64_t id);

#endif
