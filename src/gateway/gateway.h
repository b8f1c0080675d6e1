/* src/gateway/gateway.h - the silo's TCP front door: accepts connections, runs the
 * handshake, turns REQUEST frames into grain calls and writes the responses.
 * Limits (connections, frame size, calls in flight, write back-pressure) are
 * enforced here; see docs/wire-protocol.md. */
#ifndef GR_SILO_GATEWAY_H
#define GR_SILO_GATEWAY_H

#include "granary/grain.h"
#include "wire/tls.h"

typedef struct gr__gateway gr__gateway_t;

typedef struct gr__gateway_opts {
    const char *cluster;
    const char *secret;             /* clients' secret; NULL or "": none required */
    const char *silo_secret;        /* what a peer claiming the silo role must present (NULL: `secret`) */
    const char *accept_secret;      /* also accepted in place of `secret` (rotation), or NULL */
    const char *accept_silo_secret; /* also accepted in place of `silo_secret` (rotation), or NULL */
    const char *silo_id;
    gr__tls_ctx_t *tls; /* server configuration: every connection speaks TLS (referenced); NULL: plaintext */
    uint32_t max_connections;
    uint32_t max_inflight_per_conn;
    uint32_t max_frame_bytes;
    uint32_t handshake_timeout_ms;
    uint32_t max_preauth_connections; /* connections before their HELLO (0: 256) */
    uint32_t frame_timeout_ms; /* a frame incomplete this long while read closes the connection (0: 10000) */
    uint64_t max_conn_bytes;   /* request bytes in flight per connection, then it is not read (0: 64 MiB) */
    uint64_t max_buffered_bytes; /* request bytes in flight per silo, then GR_EOVERLOAD (0: 256 MiB) */
    /* Requests for classes starting with '$' (the directory protocol between
     * silos, control calls from clients) go here instead of to the runtime,
     * with the name a peer that authenticated as a silo gave in its HELLO
     * (its silo id; NULL: a client); NULL refuses them. */
    void (*system_call)(void *ud, const char *cls, const char *method, const char *from_silo, const uint8_t *key,
                        size_t key_len, const uint8_t *arg, size_t arg_len, gr_call_cb done, void *done_ud);
    void *system_ud;
} gr__gateway_opts_t;

/* Why a handshake was refused (the `reason` label of
 * granary_handshakes_refused_by_reason_total). */
#define GR__REFUSE_REASONS(X)                                                                                \
    X(VERSION, "version")                                                                                    \
    X(CLUSTER, "cluster")                                                                                    \
    X(CLIENT_SECRET, "client_secret")                                                                        \
    X(SILO_SECRET, "silo_secret")                                                                            \
    X(NOT_HELLO, "not_hello")                                                                                \
    X(HELLO_TOO_BIG, "hello_too_big")                                                                        \
    X(TIMEOUT, "timeout")                                                                                    \
    X(PREAUTH_LIMIT, "preauth_limit")                                                                        \
    X(TLS, "tls")
typedef enum {
#define GR__REFUSE_ENUM(n, s) GR__REFUSE_##n,
    GR__REFUSE_REASONS(GR__REFUSE_ENUM)
#undef GR__REFUSE_ENUM
        GR__REFUSE_COUNT
} gr__refuse_t;
/* The label of a reason ("silo_secret", ...; "unknown" out of range). Static storage. */
const char *gr__refuse_name(gr__refuse_t r);

typedef struct gr__gateway_stats {
    uint64_t connections_total, connections_open, connections_refused;
    uint64_t frames_in, frames_out, protocol_errors, handshakes_refused, overloaded;
    uint64_t inflight;
    uint64_t preauth_open;                 /* connections that have not said HELLO yet */
    uint64_t refused_by[GR__REFUSE_COUNT]; /* handshakes refused, by reason */
    uint64_t partial_frame_timeouts;       /* closed: a frame stayed incomplete too long */
    uint64_t bytes_buffered;               /* request bytes read and not yet answered */
} gr__gateway_stats_t;

int gr__gateway_new(uv_loop_t *loop, gr_runtime_t *rt, const gr__gateway_opts_t *opts, gr__gateway_t **out);
/* Bind and listen; err gets a message on failure. */
int gr__gateway_listen(gr__gateway_t *gw, const char *host, int port, char *err, size_t err_size);
int gr__gateway_port(const gr__gateway_t *gw);
/* Connections accepted from now on use ctx (referenced); open ones keep
 * theirs. ctx must be a server configuration when the gateway speaks TLS. */
void gr__gateway_set_tls(gr__gateway_t *gw, gr__tls_ctx_t *ctx);
/* Stop accepting new connections (drain begins). */
void gr__gateway_stop_accepting(gr__gateway_t *gw);
/* Wait until every call in flight has been answered, then say
 * GOAWAY(GR_ESHUTDOWN) on every connection, flush and close them; cb runs
 * once every connection is closed (at once if there is none). */
void gr__gateway_shutdown(gr__gateway_t *gw, void (*cb)(void *), void *ud);
void gr__gateway_get_stats(const gr__gateway_t *gw, gr__gateway_stats_t *out);
/* Close everything at once and free; cb runs later. */
void gr__gateway_close(gr__gateway_t *gw, void (*cb)(void *), void *ud);

#endif
