/* src/cluster/membership.h - cluster membership in PostgreSQL: join, heartbeat,
 * read the view, declare silent silos dead, fence ourselves when we cannot
 * heartbeat. Protocol and timings: docs/membership.md. */
#ifndef GR_SILO_MEMBERSHIP_H
#define GR_SILO_MEMBERSHIP_H

#include <uv.h>

#include "storage/pgpool.h"

typedef enum {
    GR__MS_JOINING = 0,
    GR__MS_ACTIVE = 1,
    GR__MS_SHUTTING_DOWN = 2,
    GR__MS_DEAD = 3,
} gr__member_status_t;

typedef struct gr__member {
    char id[128];
    char address[64];
    int port;
    gr__member_status_t status;
    int64_t age_ms;   /* since its last heartbeat, by the database clock */
    int64_t lease_ms; /* its own lease: it is judged by that, not by ours */
} gr__member_t;

typedef struct gr__view {
    int64_t version;
    gr__member_t *members; /* not dead, sorted by id */
    size_t n;
} gr__view_t;

typedef struct gr__membership gr__membership_t;

typedef struct gr__membership_opts {
    const char *cluster;
    const char *silo_id;
    const char *address;
    int port;
    int64_t generation;
    uint32_t heartbeat_ms; /* default 200 */
    uint32_t lease_ms;     /* default 1200 */
} gr__membership_opts_t;

typedef struct gr__membership_cbs {
    /* The set or status of members changed (borrowed view, valid during the call). */
    void (*on_view)(void *ud, const gr__view_t *view);
    /* fenced=1: no successful heartbeat for lease_ms, stop serving grains.
     * fenced=0: heartbeats work again and we are still a member. */
    void (*on_fence)(void *ud, int fenced, const char *why);
    /* Another silo declared us dead: this incarnation must end. */
    void (*on_dead)(void *ud);
    void *ud;
} gr__membership_cbs_t;

const char *gr__member_status_name(gr__member_status_t s);

int gr__membership_new(uv_loop_t *loop, const char *conninfo, const gr__membership_opts_t *opts,
                       const gr__membership_cbs_t *cbs, gr__membership_t **out);

/* Insert ourselves as joining (retried every heartbeat until the database
 * answers) and start heartbeating; `cb(ud, 0)` runs once we are active. */
void gr__membership_join(gr__membership_t *m, void (*cb)(void *ud, int status), void *ud);

/* Change our status (shutting_down, dead = leave); cb may be NULL. */
void gr__membership_set_status(gr__membership_t *m, gr__member_status_t st, void (*cb)(void *ud, int status),
                               void *ud);

/* The current view (borrowed until the next on_view). */
const gr__view_t *gr__membership_view(const gr__membership_t *m);

int gr__membership_fenced(const gr__membership_t *m);

/* Whether this silo may answer calls from its activations right now: joined,
 * not fenced or dead, and less than lease - lease/GR__LEASE_MARGIN_DIV since
 * the last successful heartbeat was sent (by uv_hrtime(), so true even after
 * a pause). Others may take our activation claims once the database has seen
 * no heartbeat for a whole lease; the margin absorbs clock-rate drift between
 * us and the database (docs/directory.md, "Single activation"). */
#define GR__LEASE_MARGIN_DIV 10
int gr__membership_lease_ok(const gr__membership_t *m);

void gr__membership_close(gr__membership_t *m, void (*cb)(void *), void *ud);

#endif
