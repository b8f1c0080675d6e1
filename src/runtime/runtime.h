/* src/runtime/runtime.h - what the grain runtime offers the silo beyond the public
 * grain.h: counters for metrics and the hook through which a call reaches a
 * grain. */
#ifndef GR_GRAINS_RUNTIME_H
#define GR_GRAINS_RUNTIME_H

#include "base/base.h"
#include "granary/grain.h"

typedef struct gr__runtime_stats {
    uint64_t calls;          /* calls accepted */
    uint64_t calls_run;      /* calls a grain of this silo ran (not the ones routed elsewhere) */
    uint64_t calls_failed;   /* completed with an error status */
    uint64_t late_replies;   /* replies dropped because the caller had timed out */
    uint64_t deadlocks;      /* calls failed with GR_EDEADLOCK (a call cycle) */
    uint64_t state_upgrades; /* activations whose state an upgrade_state converted */
    uint64_t state_too_new;  /* activations refused: state written by a newer class */
    uint64_t activations;    /* activations created */
    uint64_t deactivations;  /* activations finished */
    uint64_t storage_reads, storage_writes, storage_conflicts, storage_errors;
    uint64_t claims_refused; /* storage reads whose claim another silo held: no state loaded */
    uint64_t idem_replays; /* keyed calls answered from the reply log without running */
    uint64_t idem_waits;   /* keyed calls that waited for the first call with their key */
    uint64_t evicted;      /* activations deactivated early by the memory bounds */
    uint64_t refused;      /* new activations refused at the memory bounds (GR_EOVERLOAD) */
    uint64_t rss;          /* resident memory at the last sample (with a memory limit), bytes */
    /* Live migration: activations handed to another silo, taken over from
     * one, refused by the target before anything moved (the activation
     * stayed or was deactivated), and failed with the outcome unknown
     * (dropped here without saving; its next call finds it). */
    uint64_t migrated_out, migrated_in, migrate_refused, migrate_failed;
} gr__runtime_stats_t;

void gr__runtime_get_stats(const gr_runtime_t *rt, gr__runtime_stats_t *out);

/* Append the runtime's metrics in Prometheus text format (docs/operations.md). */
int gr__runtime_write_metrics(const gr_runtime_t *rt, gr__buf_t *b);
/* Run `cls`'s upgrade_state over stored bytes old[0..len) of format
 * `format` for grain `key`, outside any activation (`silo migrate-state`,
 * docs/lifecycle.md): on a scratch activation of registered class `cls`
 * that no call, timer or storage operation sees. 0 with *out (the new
 * bytes, gr__free them; NULL when *out_len is 0); GR_EINVAL (no
 * upgrade_state, the class is not registered or a worker, a key over
 * GR_KEY_MAX), GR_EACTIVATE (upgrade_state returned non-zero), GR_ENOMEM,
 * or GR_EOVERLOAD (the runtime's memory bounds). */
int gr__runtime_upgrade(gr_runtime_t *rt, const gr_class_t *cls, const uint8_t *key, size_t key_len,
                        const uint8_t *old, size_t len, uint32_t format, uint8_t **out, size_t *out_len);

/* The i-th registered class (registration order), NULL past the last. */
const gr_class_t *gr__runtime_class_at(const gr_runtime_t *rt, size_t i);

/* Live activations per registered class. */
void gr__runtime_foreach_class(const gr_runtime_t *rt, void (*fn)(void *ud, const char *cls, uint64_t active),
                               void *ud);

/* Per class and method: the counters and latency histogram behind the
 * metrics, for the dashboard's per-second samples (borrowed during fn). */
typedef struct gr__method_stats {
    const char *cls, *method;
    int read_only, interleave;
    uint64_t calls, errors;
    const gr__hist_t *latency;
} gr__method_stats_t;
void gr__runtime_foreach_method(const gr_runtime_t *rt, void (*fn)(void *ud, const gr__method_stats_t *ms),
                                void *ud);
/* 1 if `method` of class `cls` is declared read-only (gr_class_t.read_only),
 * 0 if not, GR_ENOCLASS or GR_ENOMETHOD if there is no such thing here. */
int gr__runtime_read_only(gr_runtime_t *rt, const char *cls, const char *method);

/* ---- cluster mode ----
 * With a router set, a call for a grain that has no activation here is
 * handed to the router instead of being activated locally. The router owns
 * the message until it calls gr__runtime_run_here() (activate and run it on
 * this silo) or gr__runtime_msg_done() (it completed elsewhere). `gone` is
 * told about every activation that ends, so the directory can forget it. */
typedef void (*gr__router_fn)(void *ud, gr_msg_t *msg);
typedef void (*gr__deactivated_fn)(void *ud, const char *cls, const uint8_t *key, size_t key_len);
void gr__runtime_set_router(gr_runtime_t *rt, gr__router_fn route, gr__deactivated_fn gone, void *ud);

const char *gr__msg_class(const gr_msg_t *m);
unsigned gr__msg_placement(const gr_msg_t *m); /* the class's gr_placement */
const uint8_t *gr__msg_key(const gr_msg_t *m, size_t *len);
const uint8_t *gr__msg_id(const gr_msg_t *m, size_t *len); /* class '\0' key */
const uint8_t *gr__msg_arg(const gr_msg_t *m, size_t *len);
int gr__msg_hops(const gr_msg_t *m);
/* The call chain (grain ids waiting on this call) to send with a forward. */
const uint8_t *gr__msg_chain(const gr_msg_t *m, size_t *len);
/* Its idempotency key, to send with a forward (NULL: none). */
const uint8_t *gr__msg_idem(const gr_msg_t *m, size_t *len);
uint32_t gr__msg_remaining_ms(const gr_runtime_t *rt, const gr_msg_t *m);

void gr__runtime_run_here(gr_runtime_t *rt, gr_msg_t *m);
/* Complete a routed message with a reply from elsewhere (copied). */
void gr__runtime_msg_done(gr_runtime_t *rt, gr_msg_t *m, int status, const uint8_t *reply, size_t len);

/* A call that arrived from another silo after `hops` forwards, with the
 * call chain it carried (may be empty). `here`: the sender chose this silo
 * (by the directory, or as the holder of the grain's claim), so the call
 * runs here, activating the grain if need be, instead of being routed again;
 * a draining silo refuses such a call with GR_ESHUTDOWN. */
int gr__call_hops(gr_runtime_t *rt, const gr_ref_t *ref, const char *method, const void *arg, size_t arg_len,
                  uint32_t timeout_ms, int hops, int here, const uint8_t *chain, size_t chain_len,
                  const uint8_t *idem, size_t idem_len, gr_call_cb cb, void *ud);

/* ---- reminders ----
 * The silo's reminder service (src/reminders/) behind gr_reminder_*. Each
 * returns 0 (cb runs once, later; cb may be NULL) or an error (cb never runs). */
typedef struct gr__reminder_ops {
    int (*add)(void *ud, const char *cls, const uint8_t *key, size_t key_len, const char *name,
               uint64_t due_ms, uint64_t period_ms, gr_call_cb cb, void *cb_ud);
    int (*remove)(void *ud, const char *cls, const uint8_t *key, size_t key_len, const char *name,
                  gr_call_cb cb, void *cb_ud);
    int (*list)(void *ud, const char *cls, const uint8_t *key, size_t key_len, gr_call_cb cb, void *cb_ud);
} gr__reminder_ops_t;
void gr__runtime_set_reminders(gr_runtime_t *rt, const gr__reminder_ops_t *ops, void *ud);
/* The method name a reminder's firing call uses; dispatched to on_reminder. */
#define GR__REMINDER_METHOD "$reminder"

/* ---- activation claims (docs/directory.md, "Single activation") ----
 * With hooks set, every activation claims its grain in storage as this silo
 * (gr_runtime_options_t.silo_id) when it loads, gives the claim back when it
 * ends, and answers (and starts turns) only while lease_ok() says this
 * silo's membership lease holds; otherwise the call fails with the
 * retryable GR_ENOTHERE. A claim held elsewhere hands each queued message to
 * held_elsewhere (the router owns it from then on, as with gr__router_fn);
 * claimed() is told of every claim granted. */
typedef struct gr__cluster_hooks {
    int (*lease_ok)(void *ud);
    void (*held_elsewhere)(void *ud, gr_msg_t *msg, const char *holder);
    void (*claimed)(void *ud, const char *cls, const uint8_t *key, size_t key_len);
    /* Live migration (docs/migration.md; NULL: off): send an activation's
     * payload to silo `target` (NULL: the silo that would host it next) as
     * one `$mig in` call; 0 and cb runs once with the target's answer, or
     * an error and cb never runs (nothing was sent). On success the
     * caller's directory cache must point at the target before cb runs:
     * the calls queued meanwhile are routed there. */
    int (*migrate)(void *ud, const char *cls, const uint8_t *key, size_t key_len, const char *target,
                   const uint8_t *payload, size_t len, gr_call_cb cb, void *cb_ud);
    void *ud;
} gr__cluster_hooks_t;
void gr__runtime_set_cluster(gr_runtime_t *rt, const gr__cluster_hooks_t *hooks); /* NULL: off */

/* ---- live migration (docs/migration.md) ----
 * The receiving side of a `$mig in` call: take over the activation another
 * silo hands us (payload as gr__cluster_hooks_t.migrate sent it): claim
 * transfer, then the activation starts from the payload without a storage
 * read; `peer` is the HELLO name of the silo link it came on, and must be
 * the source the payload names. done runs once, possibly before this
 * returns: 0 ("ok": it is active here); a refusal before
 * anything moved (GR_ESHUTDOWN draining or without a lease, GR_ENOCLASS,
 * GR_EINVAL a class that does not migrate or storage without claims,
 * GR_EEXIST an activation here already, GR_EOVERLOAD at the memory bounds,
 * GR_ESTATEVERSION newer state than this class, GR_EPROTO a malformed
 * payload, GR_EAUTH a source other than the peer, GR_ENOMEM, GR_ETOOBIG,
 * GR_ESTORAGE a transfer never sent), its text starting GR__MIG_REFUSAL;
 * or, once the transfer was attempted, GR_ENOTHERE
 * (the source no longer held the claim), GR_ESTORAGE (outcome unknown) or
 * GR_EACTIVATE (on_migrate_in / on_activate / upgrade failed here). */
void gr__runtime_migrate_in(gr_runtime_t *rt, const char *peer, const char *cls, const uint8_t *key,
                            size_t key_len, const uint8_t *payload, size_t len, gr_call_cb done, void *ud);
/* A refusal's reply starts with this: nothing moved. Only the target says
 * it; every other failure (the link, a timeout, the target's gateway) is
 * an unknown outcome to the source. */
#define GR__MIG_REFUSAL "refused: "
/* 1 if (status, reply) is a refusal before anything moved: the source
 * still holds the claim and may go on serving. */
int gr__migrate_refused(int status, const uint8_t *reply, size_t len);
/* A drain stops starting live migrations this long after it began (0: no
 * limit); what is left deactivates with its state written, as without
 * migration. The silo sets half its drain timeout. */
void gr__runtime_set_migrate_budget(gr_runtime_t *rt, uint32_t ms);
/* Rebalancing: start moving up to n quiet activations to `target`, the
 * least recently used first (a move then seldom has calls to forward; with
 * busiest_first the most recently used first, to move calls: rebalancing
 * by calls),
 * skipping any that arrived by migration within window_ms, with at most
 * GR__MIG_IN_FLIGHT (1024) moves on their way at once. Returns how many
 * started. */
size_t gr__runtime_migrate_some(gr_runtime_t *rt, const char *target, size_t n, uint32_t window_ms,
                                int busiest_first);
/* Moves started here and not answered yet. */
unsigned gr__runtime_migrations_in_flight(const gr_runtime_t *rt);
/* Activations that may be moved (not stateless workers). */
size_t gr__runtime_movable_count(const gr_runtime_t *rt);

/* Every live activation (for re-registration after a view change). */
void gr__runtime_foreach(gr_runtime_t *rt,
                         void (*fn)(void *ud, const char *cls, const uint8_t *key, size_t len), void *ud);
/* Deactivate without saving: lost a directory conflict, or we are fenced. */
void gr__runtime_drop(gr_runtime_t *rt, const char *cls, const uint8_t *key, size_t key_len);
void gr__runtime_drop_all(gr_runtime_t *rt);
/* 1 if (cls, key) has a live (loading or active) activation here. */
int gr__runtime_hosts(gr_runtime_t *rt, const char *cls, const uint8_t *key, size_t key_len);

#endif
