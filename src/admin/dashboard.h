/* src/admin/dashboard.h - the operator's dashboard on the silo's HTTP port: the
 * page itself (src/admin/web/, built into the binary), the JSON it reads (this
 * silo, or the whole cluster gathered from every member), grain lookup and
 * read-only calls. Layout and endpoints: docs/dashboard.md. */
#ifndef GR_SILO_DASHBOARD_H
#define GR_SILO_DASHBOARD_H

#include "runtime/runtime.h"
#include "gateway/gateway.h"
#include "admin/http.h"
#include "cluster/membership.h"
#include "reminders/reminders.h"
#include "cluster/router.h"

typedef struct gr__dashboard gr__dashboard_t;

/* What the dashboard reads; everything borrowed and outliving it. */
typedef struct gr__dashboard_env {
    gr_runtime_t *rt;
    gr__gateway_t *gw;
    gr__router_t *router;       /* NULL: a single silo on memory storage */
    gr__reminders_t *reminders; /* may be NULL */
    const char *silo_id;
    const char *cluster;
    const char *host;         /* listen host */
    uint32_t max_frame_bytes; /* a silo's part must fit in one reply frame */
    /* "starting", "joining", "active", "draining", "fenced" or "dead". */
    const char *(*state)(void *ud);
    /* The membership view (NULL before the silo joined or without one). */
    const gr__view_t *(*view)(void *ud);
    void *ud;
} gr__dashboard_env_t;

int gr__dashboard_new(uv_loop_t *loop, const gr__dashboard_env_t *env, gr__dashboard_t **out);

/* Record what changed between the last view and this one. */
void gr__dashboard_on_view(gr__dashboard_t *d, const gr__view_t *view);

/* Serve `path` if it is the dashboard's (the page, its files, /api/...):
 * returns 1 when the request is taken (answered now or later), 0 if the
 * path is not the dashboard's. */
int gr__dashboard_http(gr__dashboard_t *d, gr__http_req_t *req, const char *path, const char *query);

/* The "$silo dashboard" control call from a peer: this silo's JSON with the
 * samples after the unix second in `arg` (decimal text). */
void gr__dashboard_fragment_call(gr__dashboard_t *d, const uint8_t *arg, size_t arg_len, gr_call_cb done,
                                 void *ud);

void gr__dashboard_close(gr__dashboard_t *d, void (*cb)(void *), void *ud);

#endif
