/* src/cluster/router.h - where a call runs in a cluster: the directory protocol
 * (ask the partition owner on the hash ring, cache the answer), forwarding
 * to other silos over pipelined silo-to-silo connections, re-registration
 * after view changes. docs/directory.md. */
#ifndef GR_SILO_ROUTER_H
#define GR_SILO_ROUTER_H

#include "runtime/runtime.h"
#include "cluster/membership.h"
#include "wire/tls.h"

typedef struct gr__router gr__router_t;

typedef struct gr__router_stats {
    uint64_t forwarded, forward_retries, dir_requests_sent, dir_requests_served, rerouted_on_view,
        lost_registrations;
    uint64_t migrations_sent, migrations_received, rebalance_moves; /* live migration (migration.c) */
    uint64_t partition_entries, cache_entries; /* directory entries this silo owns, and cached */
} gr__router_stats_t;

int gr__router_new(uv_loop_t *loop, gr_runtime_t *rt, const char *self_id, const char *cluster,
                   const char *secret, gr__router_t **out);

/* Turn activation claims on (docs/directory.md, "Single activation"):
 * activations claim their grains, answer only while lease_ok(ud) says the
 * silo's lease holds, and calls for a grain claimed elsewhere go to its
 * holder. lease_ok must outlive the runtime (it stays installed there after
 * the router closes). */
void gr__router_set_lease(gr__router_t *r, int (*lease_ok)(void *ud), void *ud);

/* Dial peers with TLS under ctx (a dialing configuration that presents the
 * silo's certificate, referenced; NULL: plaintext), expecting server_name in
 * their certificates (NULL: each peer's advertised address; the first call's
 * name stays for the router's life). Open links switch at their next
 * connection. Returns 0, or GR_ENOMEM (nothing changed). */
int gr__router_set_tls(gr__router_t *r, gr__tls_ctx_t *ctx, const char *server_name);

/* Install a new membership view (copied). The first one releases calls
 * that waited for it. */
void gr__router_set_view(gr__router_t *r, const gr__view_t *view);

/* Draining: place nothing new here. Fenced: refuse everything. */
void gr__router_set_draining(gr__router_t *r, int on);
void gr__router_set_fenced(gr__router_t *r, int on);

/* A directory request from a peer ("$dir" class). `done` gets the reply. */
void gr__router_system_call(gr__router_t *r, const char *method, const uint8_t *key, size_t key_len,
                            const uint8_t *arg, size_t arg_len, gr_call_cb done, void *ud);

/* Live migration and rebalancing (docs/migration.md): on, a drain hands
 * activations to the silos that host them next and `$mig in` requests
 * are accepted; rate > 0 moves up to rate activations per second toward
 * the members below the mean count, none twice within window_ms. Returns 0. */
int gr__router_set_migration(gr__router_t *r, int on, uint32_t rate, uint32_t window_ms);
/* Rebalance calls per second (1) instead of activation counts (0, the
 * default): docs/migration.md, "Rebalancing". */
void gr__router_set_rebalance_by_calls(gr__router_t *r, int on);
/* Calls per second per silo at the last comparison by calls (0 otherwise),
 * and this silo's own smoothed rate. */
uint64_t gr__router_mean_cps(const gr__router_t *r);
uint64_t gr__router_cps(const gr__router_t *r);
/* A `$mig` request from a peer silo (methods "in" and "load"); `peer` is
 * the name its handshake gave. */
void gr__router_migration_call(gr__router_t *r, const char *peer, const char *method, const uint8_t *key,
                               size_t key_len,
                               const uint8_t *arg, size_t arg_len, gr_call_cb done, void *ud);
/* Activations per silo at the last rebalancing comparison (0: none yet). */
uint64_t gr__router_mean_load(const gr__router_t *r);

void gr__router_get_stats(const gr__router_t *r, gr__router_stats_t *out);

/* A live member that refused this silo's handshake within the last
 * GR__REFUSED_WINDOW_MS (our cluster name, --silo-secret or certificate is
 * not what it expects), when more than half of the other active members
 * did, or NULL. Such a silo cannot forward or register grains: it reports
 * not ready and says why. A minority of refusals (one misconfigured pod
 * refusing everyone) leaves the healthy silos ready. */
#define GR__REFUSED_WINDOW_MS 5000u
const char *gr__router_refused_by(const gr__router_t *r);

/* The silo owning a grain's hash-ring range in the current view (NULL
 * before the first view); borrowed until the next view. */
const char *gr__router_owner(const gr__router_t *r, const char *cls, const uint8_t *key, size_t key_len);

/* A control call ("$silo" class) to another member of the view; cb runs
 * once unless an error is returned (unknown silo, shutting down). */
int gr__router_call_silo(gr__router_t *r, const char *silo, const char *method, const void *arg,
                         size_t arg_len, uint32_t timeout_ms, gr_call_cb cb, void *ud);

/* Where a grain is registered in the directory, asked of its partition
 * owner without registering it: cb gets the hosting silo's id, or an empty
 * reply if it is not active anywhere. cb runs exactly once (maybe now). */
void gr__router_locate(gr__router_t *r, const char *cls, const uint8_t *key, size_t key_len, gr_call_cb cb,
                       void *ud);

void gr__router_close(gr__router_t *r, void (*cb)(void *), void *ud);

#endif
