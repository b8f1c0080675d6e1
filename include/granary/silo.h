/* granary/silo.h - run a silo: the process that hosts grains, serves clients
 * over TCP and keeps state in PostgreSQL. Either call gr_silo_main()
 * (granary/silo_main.h) from your own main() with your classes, or build your classes as a shared object for
 * the stock `silo --grains FILE.so` (see GR_GRAINS_SYMBOL).
 */
#ifndef GRANARY_SILO_H
#define GRANARY_SILO_H

#include <uv.h>

#include "granary/grain.h"

typedef struct gr_silo gr_silo_t;

/** Runs once when a graceful stop has finished (gr_silo_stop): status 0 or
 * GR_ETIMEDOUT. */
typedef void (*gr_silo_stop_cb)(gr_silo_t *silo, int status, void *ud);
/** Runs when the cluster declared this silo dead (gr_silo_on_dead). */
typedef void (*gr_silo_dead_cb)(gr_silo_t *silo, void *ud);

/** Settings of a silo. gr_silo_options_init() fills the defaults shown;
 * strings are borrowed until gr_silo_new() returns (it copies them). */
typedef struct gr_silo_options {
    const char *database_url; /* libpq URL; NULL with memory_storage for dev mode */
    int memory_storage;       /* 1: keep state in memory (lost on exit), no database */
    const char *listen;       /* "HOST:PORT" for clients (default "127.0.0.1:7700") */
    const char *advertise;    /* address peers use to reach us (default: POD_IP or listen host) */
    const char *http;       /* "HOST:PORT" for /healthz /readyz /metrics and the dashboard (default: none) */
    int no_dashboard;       /* 1: serve no dashboard (/, /api/...) on the HTTP port (default 0) */
    const char *http_token; /* bearer token the dashboard and /api/ require (default none; probes and
                               /metrics never need it) */
    const char *http_allowed_hosts;   /* comma-separated Host header names the dashboard and /api/ answer
                                         (default: any) */
    const char *cluster;              /* cluster (service) name (default "default") */
    const char *secret;               /* client secret required in handshakes (default none) */
    const char *silo_secret;          /* credential that proves the silo role; clients never hold it
                                         (default: the client secret, so any client could act as a silo) */
    const char *accept_secret;        /* a second client secret accepted (never sent), for rotation
                                         without refused handshakes (default none) */
    const char *accept_silo_secret;   /* a second silo secret accepted (never sent), for rotation
                                         (default none; docs/security.md, "Rotating secrets") */
    const char *silo_id;              /* default: "<advertise>:<port>-<start ms>" */
    const char *tls_cert;             /* PEM certificate chain: TLS on the grain port and to other silos
                                         (default none: plaintext) */
    const char *tls_key;              /* PEM private key of tls_cert */
    const char *tls_ca;               /* PEM CA bundle peers' certificates must chain to (default: the
                                         system's trust store for dialing silos; required for tls_client_auth) */
    int tls_client_auth;              /* 1: every connection (clients and silos) must present a certificate
                                         signed by tls_ca: mutual TLS (default 0) */
    const char *tls_server_name;      /* name other silos' certificates carry (default: each silo's advertised
                                         address, matched against IP SANs) */
    unsigned pg_pool_size;            /* PostgreSQL connections (default 4) */
    uint32_t pg_op_timeout_ms;        /* storage op wait limit (default 5000) */
    uint32_t idle_deactivate_ms;      /* default grain idle age (default 600000) */
    uint32_t call_timeout_ms;         /* default call timeout (default 30000) */
    uint32_t max_queue_per_grain;     /* mailbox limit (default 10000) */
    uint32_t max_activations;         /* activations kept at most (0: no limit; gr_runtime_options_t) */
    uint64_t memory_limit;            /* resident bytes kept under (0: no limit; gr_runtime_options_t) */
    uint32_t max_connections;         /* client connections (default 4096) */
    uint32_t max_inflight_per_conn;   /* pipelined calls per connection (default 10000) */
    uint32_t max_frame_bytes;         /* frame body limit (default 1 MiB + 64 KiB) */
    uint32_t handshake_timeout_ms;    /* a connection must say hello within (default 5000) */
    uint32_t max_preauth_connections; /* connections that have not said hello yet (default 256) */
    uint32_t frame_timeout_ms;        /* a frame may stay incomplete this long while read (default 10000) */
    uint32_t max_conn_bytes;          /* request bytes in flight per connection before it is not read
                                         (default 64 MiB) */
    uint32_t max_buffered_bytes; /* request bytes in flight per silo before GR_EOVERLOAD (default 256 MiB) */
    uint32_t drain_timeout_ms;   /* graceful stop gives up after (default 25000) */
    uint32_t heartbeat_ms;       /* membership heartbeat and view refresh (default 200) */
    uint32_t lease_ms;           /* silent this long = dead; fence ourselves too (default 1200) */
    uint32_t reminder_poll_ms;   /* how often due reminders are looked for (default 1000) */
    uint32_t reminder_min_period_ms; /* shortest reminder period accepted (default 1000) */
    /* Live migration and rebalancing (docs/migration.md). */
    int no_migrate;               /* 1: a drain deactivates every grain (the next silo reads it from storage)
                                     and nothing is rebalanced (default 0: activations move live) */
    uint32_t rebalance_rate;      /* activations moved per second toward an even spread after a join
                                     (default 1000; 0: no rebalancing) */
    uint32_t rebalance_window_ms; /* an activation that arrived by migration is not moved again within
                                     (default 60000) */
    int rebalance_by_calls;       /* 1: even out calls per second (the busiest activations move first)
                                     instead of activation counts (default 0) */
    /* State lifecycle (docs/lifecycle.md): stored rows of classes with a
     * state_ttl_s that the TTL sweep looks at per second, 1..10000
     * (default 1000; 0: no sweep on this silo). */
    uint32_t state_ttl_page_rows;
} gr_silo_options_t;

/** Fill `cfg` with the defaults documented in gr_silo_options_t. */
GR_EXTERN void gr_silo_options_init(gr_silo_options_t *cfg);

/** Create a silo on `loop`. Nothing listens until gr_silo_start(). *out is
 * owned by the caller (gr_silo_close()). Returns 0, GR_EINVAL (a NULL
 * argument), GR_ECONFIG
 * (a setting is invalid or a TLS file cannot be loaded; with a message in
 * err, if err_size > 0) or GR_ENOMEM. */
GR_EXTERN int gr_silo_new(uv_loop_t *loop, const gr_silo_options_t *cfg, gr_silo_t **out, char *err,
                          size_t err_size);

/** Register a grain class (borrowed for the silo's life). Same errors as
 * gr_runtime_register(). */
GR_EXTERN int gr_silo_register(gr_silo_t *silo, const gr_class_t *cls);

/** Read the TLS files named in the configuration again (cert-manager
 * rotates them in place): connections accepted and links dialed from now on
 * use them, open ones keep their session. On failure the old ones stay in
 * use. The stock binary calls this on SIGHUP. Returns 0, GR_ESTATE if the
 * silo was not configured for TLS or is closing, GR_ECONFIG with the reason
 * in err, or GR_ENOMEM. */
GR_EXTERN int gr_silo_reload_tls(gr_silo_t *silo, char *err, size_t err_size);

/** Start listening (and, with PostgreSQL, join the cluster). Returns 0,
 * GR_ESTATE if already started, stopping, or after a failed start, or with
 * a message in err: GR_EIO (cannot bind or listen), GR_ECONFIG (a listen or
 * http host that is not a numeric address; a wildcard listen address in a
 * cluster without advertise), GR_EINVAL (membership refused its settings)
 * or GR_ENOMEM. After an error the silo may be partly started (its port
 * open): close it with gr_silo_close(). */
GR_EXTERN int gr_silo_start(gr_silo_t *silo, char *err, size_t err_size);

/** The silo's grain runtime (borrowed; lives as long as the silo). */
GR_EXTERN gr_runtime_t *gr_silo_runtime(gr_silo_t *silo);

/** The silo's id (borrowed). */
GR_EXTERN const char *gr_silo_id(const gr_silo_t *silo);

/** Whether the silo has joined its cluster as active (always 1 after start
 * in memory mode) and is not draining or fenced: what /readyz reports. */
GR_EXTERN int gr_silo_ready(const gr_silo_t *silo);

/** Ask to be told when the cluster declared this silo dead (it then serves
 * nothing more and should exit; the stock binary exits with status 3). */
GR_EXTERN void gr_silo_on_dead(gr_silo_t *silo, gr_silo_dead_cb cb, void *ud);

/** 1 if the cluster refused this silo's join because its silo id is a live
 * member's (another process): the dead callback runs then too, and the stock
 * binary exits 2 instead of 3. 0 otherwise. */
GR_EXTERN int gr_silo_join_refused(const gr_silo_t *silo);

/** The port actually bound (useful with port 0), or 0 before start. */
GR_EXTERN int gr_silo_port(const gr_silo_t *silo);

/** The HTTP port actually bound, or 0 when HTTP is off or before start. */
GR_EXTERN int gr_silo_http_port(const gr_silo_t *silo);

/** Graceful stop: mark this silo shutting-down in membership (the others
 * stop placing grains here), deactivate every grain (saving dirty state)
 * while calls that arrive meanwhile are forwarded to other silos, answer
 * every call in flight, close connections, leave the membership table, then
 * run cb(silo, status, ud) once:
 * status 0, or GR_ETIMEDOUT if drain_timeout_ms passed first. The silo must
 * still be closed afterwards. Returns 0, or GR_ESTATE if a stop is already
 * under way, the silo is closing or its start failed (cb never runs). */
GR_EXTERN int gr_silo_stop(gr_silo_t *silo, gr_silo_stop_cb cb, void *ud);

/** Close the silo and free it; `cb` runs on a later loop iteration. */
GR_EXTERN void gr_silo_close(gr_silo_t *silo, gr_close_cb cb, void *ud);

/** The symbol the stock silo looks up in a --grains shared object: a function
 * of type gr_grains_fn returning a NULL-terminated array of classes. */
#define GR_GRAINS_SYMBOL "granary_grains"
typedef const gr_class_t *const *(*gr_grains_fn)(void);

#endif
