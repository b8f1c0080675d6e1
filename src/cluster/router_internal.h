/* src/cluster/router_internal.h - what router.c and registry.c share and no
 * other folder may include: the router's struct and the functions one file
 * offers the other. */
#ifndef GR_CLUSTER_ROUTER_INTERNAL_H
#define GR_CLUSTER_ROUTER_INTERNAL_H

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>

#include "client/client_internal.h"
#include "base/base.h"
#include "cluster/directory.h"
#include "cluster/ring.h"
#include "cluster/router.h"
#include "wire/frame.h"

#define GR__MAX_HOPS 3
#define GR__DIR_TIMEOUT_MS 2000u

typedef struct gr__peer {
    UT_hash_handle hh;
    char id[GR__SILO_ID_MAX + 1];
    gr_client_t *client;
    uint64_t forwards_failed; /* forwards whose link broke after they left: outcome unknown */
} gr__peer_t;

/* Rebalancing (migration.c): each active member's movable activations, as
 * it answered `$mig load` this round. */
typedef struct gr__load {
    char id[GR__SILO_ID_MAX + 1];
    uint64_t count;
    uint64_t cps; /* by calls: the peer's calls per second */
    int answered;
} gr__load_t;

typedef struct gr__migration {
    int on;             /* live migration: drains hand activations over, `$mig in` accepted */
    uint32_t rate;      /* rebalancing: activations moved per second at most (0: off) */
    uint32_t window_ms; /* an activation that arrived is not moved again within this */
    uv_timer_t timer;
    int timer_on;
    uint64_t round; /* answers of an older round are ignored */
    gr__load_t *loads;
    size_t n_loads, cap, waiting;
    uint64_t last_mean; /* activations per silo at the last comparison */
    uint64_t credit_m;  /* moves the rate allows now, in thousandths (at most one second's worth) */
    /* --rebalance-by calls: balance calls per second instead of counts.
     * cps is this silo's rate of calls run here (smoothed over ticks). */
    int by_calls;
    uint64_t calls_prev, calls_prev_ms;
    double cps;
    uint64_t last_mean_cps; /* calls per second per silo at the last comparison (by calls) */
    /* Targets whose last migration ended in an unknown outcome (a timeout,
     * a broken link): nothing more is sent to them until `until` (loop ms),
     * so a drain does not wait a timeout per activation on a dead peer. */
    struct {
        char id[GR__SILO_ID_MAX + 1];
        uint64_t until;
    } shunned[4];
} gr__migration_t;

typedef struct gr__pending {
    struct gr__pending *next;
    gr_msg_t *msg;
} gr__pending_t;

struct gr__router {
    uv_loop_t *loop;
    gr_runtime_t *rt;
    char self[GR__SILO_ID_MAX + 1];
    char *cluster, *secret;
    gr__member_t *members;
    size_t n_members;
    int have_view;
    gr__ring_t ring;
    const char **ring_ids; /* active members, indexes of the ring */
    size_t n_ring_ids;
    uint64_t rand_state; /* xorshift64 for GR_PLACE_RANDOM */
    gr__dir_map_t partition;
    gr__dir_map_t cache;
    gr__peer_t *peers;
    gr__pending_t *waiting;        /* calls that arrived before the first view */
    struct gr__rereg *rereg_retry; /* re-registrations to send again */
    uv_timer_t rereg_timer;
    int draining, fenced, closing;
    int peers_closing;
    void (*close_cb)(void *);
    void *close_ud;
    gr__router_stats_t stats;
    int (*lease_ok)(void *ud); /* the silo's membership lease (gr__router_set_lease) */
    void *lease_ud;
    gr__tls_ctx_t *tls; /* peer links speak TLS under it (gr__router_set_tls); NULL: plaintext */
    char *tls_name;     /* name peers' certificates carry; NULL: their advertised address (set once) */
    uint64_t refusal_logged_ms; /* the last "a peer refuses us" log line (at most one per 10 s) */
    size_t rereg_count;         /* activations re-registered by the view being installed */
    gr__migration_t migration;  /* migration.c */
};

/* A re-registration that failed (the new owner had no view yet, a link
 * broke) is sent again every GR__REREG_RETRY_MS, up to GR__REREG_ATTEMPTS
 * times: until then an activation the directory does not know about could
 * be duplicated by a call placed elsewhere. */
#define GR__REREG_RETRY_MS 100
#define GR__REREG_ATTEMPTS 30

typedef struct gr__rereg {
    struct gr__rereg *next; /* in r->rereg_retry */
    gr__router_t *r;
    int attempt;
    char cls[GR_CLASS_NAME_MAX + 1];
    size_t key_len;
    uint8_t key[];
} gr__rereg_t;

/* ---- router.c ---- */
const gr__member_t *gr__member(const gr__router_t *r, const char *id);
int gr__alive(void *ud, const char *id);
const char *gr__owner(const gr__router_t *r, const char *cls, const uint8_t *key, size_t key_len);
void gr__peer_drop(gr__router_t *r, gr__peer_t *p);
gr_client_t *gr__peer_get(gr__router_t *r, const char *id);
void gr__deliver(gr__router_t *r, gr_msg_t *m, const char *silo, int attempt);
void gr__route(gr__router_t *r, gr_msg_t *m, int attempt);
/* Set the runtime's cluster hooks from the router's lease and migration settings. */
void gr__router_install_hooks(gr__router_t *r);
void gr__peer_closed(void *ud);

/* ---- migration.c ---- */
int gr__router_migrate_cb(void *ud, const char *cls, const uint8_t *key, size_t key_len, const char *target,
                          const uint8_t *payload, size_t len, gr_call_cb cb, void *cb_ud);
/* Stop rebalancing and close its timer (closed() gets the handle). */
void gr__migration_close(gr__router_t *r, uv_close_cb closed);

/* ---- registry.c ---- */
void gr__router_gone_cb(void *ud, const char *cls, const uint8_t *key, size_t kl);
void gr__router_claimed_cb(void *ud, const char *cls, const uint8_t *key, size_t kl);
void gr__router_held_cb(void *ud, gr_msg_t *m, const char *holder);

#endif
