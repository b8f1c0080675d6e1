/* src/silo/silo_internal.h - the silo handle, shared by its wiring (silo.c)
 * and its HTTP side (silo_http.c: probes, metrics, the guard of the
 * dashboard and of /v1). Nothing outside silo/ includes it. */
#ifndef GR_SILO_INTERNAL_H
#define GR_SILO_INTERNAL_H

#include "base/base.h"
#include "runtime/runtime.h"
#include "granary/silo.h"
#include "admin/dashboard.h"
#include "gateway/gateway.h"
#include "admin/http.h"
#include "cluster/membership.h"
#include "lifecycle/ttl.h"
#include "reminders/reminders.h"
#include "cluster/router.h"

struct gr_silo {
    uv_loop_t *loop;
    gr_silo_options_t cfg;
    char *id;
    char listen_host[64];
    int listen_port;
    gr_storage_t *storage;
    gr_runtime_t *rt;
    gr__gateway_t *gw;
    gr__router_t *router;         /* cluster mode only (PostgreSQL storage) */
    gr__membership_t *membership; /* created at start, when the port is known */
    gr__reminders_t *reminders;   /* cluster mode only */
    gr__ttl_t *ttl;               /* cluster mode only: state TTL sweep, migrate-state progress */
    gr__http_t *http;             /* probes and metrics, when configured */
    gr__dashboard_t *dashboard;   /* with HTTP, unless no_dashboard */
    char http_host[64];
    int http_port;
    int64_t generation;
    int joined, fenced, dead;
    int join_refused; /* our silo id is a live member's */
    void (*dead_cb)(gr_silo_t *, void *);
    void *dead_ud;
    int started;
    int start_failed; /* gr_silo_start failed: only gr_silo_close is left */
    int stopping;
    uv_timer_t stop_timer;
    void (*stop_cb)(gr_silo_t *, int, void *);
    void *stop_ud;
    int closing;
    int parts_open;
    void (*close_cb)(void *);
    void *close_ud;
    char *strings[16];                    /* copies of the config strings */
    gr__tls_ctx_t *tls_server, *tls_dial; /* NULL: plaintext */
    uint64_t tls_reloads, tls_reload_failures;
};

/* The HTTP port's handler (silo_http.c): probes, /metrics, then the
 * dashboard and the grain-call API behind the guard. */
void gr__silo_http(void *ud, gr__http_req_t *req, const char *path, const char *query);

#endif
