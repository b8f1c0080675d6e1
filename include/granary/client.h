/* granary/client.h - call grains from outside the cluster over TCP.
 *
 * A client is a handle on the caller's libuv loop. It connects lazily on the
 * first call, pipelines calls over one connection, and on failure moves to the
 * next silo address in its list. Not thread-safe: use it from its loop.
 */
#ifndef GRANARY_CLIENT_H
#define GRANARY_CLIENT_H

#include <uv.h>

#include "granary/grain.h"

typedef struct gr_client gr_client_t;

/** Client settings; gr_client_options_init() fills the defaults. */
typedef struct gr_client_options {
    const char *silos;           /* "host:port[,host:port...]": IPs or names, resolved without
                                  * blocking at each connect (default "127.0.0.1:7700") */
    const char *cluster;         /* must match the silo's (default "default") */
    const char *secret;          /* shared secret, or NULL */
    const char *name;            /* shown in silo logs (default "client") */
    uint32_t connect_timeout_ms; /* per attempt (default 3000) */
    uint32_t call_timeout_ms;    /* used when a call passes 0 (default 30000) */
    uint32_t max_frame_bytes;    /* largest response accepted (default 1 MiB + 64 KiB) */
    int tls;                     /* 1: TLS to every silo; implied by tls_ca or tls_cert (default 0) */
    const char *tls_ca;          /* PEM CA bundle silo certificates must chain to (default: the system's
                                  * trust store) */
    const char *tls_cert; /* PEM client certificate, for silos that require mutual TLS (default none) */
    const char *tls_key;  /* its PEM private key */
    const char *tls_server_name; /* name the silos' certificates must carry (default: the host of each
                                  * address, an IP matched against IP SANs) */
} gr_client_options_t;

/** Fill `opts` with the documented defaults. */
GR_EXTERN void gr_client_options_init(gr_client_options_t *opts);

/** Create a client on `loop` (strings copied; TLS files are read now).
 * Returns 0, GR_EINVAL (an unparsable address list, a NULL argument, silos,
 * cluster or name, a zero timeout, max_frame_bytes under 1024), GR_ETOOBIG
 * (cluster, name or secret over 255 bytes), GR_ECONFIG for TLS files that
 * cannot be loaded (the reason is logged), or GR_ENOMEM. *out is
 * closed with gr_client_close(). Under TLS a silo whose certificate does not
 * verify fails calls with GR_EAUTH and a detail text saying why. */
GR_EXTERN int gr_client_new(uv_loop_t *loop, const gr_client_options_t *opts, gr_client_t **out);

/** Call a grain method. Arguments are copied. `cb` runs exactly once, later,
 * with the reply (status 0), GR_EAPP and the grain's error text, or another
 * GR_E* code (GR_ECONN, GR_ETIMEDOUT, GR_ENOCLASS, GR_ESTORAGE, ...) with a
 * detail text. Returns 0, or (cb never runs) GR_EINVAL (a NULL or empty
 * argument), GR_ETOOBIG (class or method name, key or arg over its limit),
 * GR_ESHUTDOWN (the client is closing) or GR_ENOMEM. */
GR_EXTERN int gr_client_call(gr_client_t *c, const gr_ref_t *ref, const char *method, const void *arg,
                             size_t arg_len, uint32_t timeout_ms, gr_call_cb cb, void *ud);

/** gr_client_call() with options (gr_call_options_t): an idempotency key
 * sent with the call (the grain answers a repeat of a call it already
 * answered with that answer), and retries: with retry_for_ms, retryable
 * errors (gr_err_retryable) are retried with jittered exponential backoff
 * (20 ms doubling to 1 s) across the client's silos, every attempt with
 * the same key (one is made when none is given); no attempt starts later
 * than retry_for_ms after this call, and each waits at most timeout_ms (0:
 * the client's call_timeout_ms). cb runs once, with the first
 * non-retryable result or the last retryable one. Returns 0, or
 * GR_EINVAL/GR_ETOOBIG/GR_ESHUTDOWN/GR_ENOMEM (cb never runs). */
GR_EXTERN int gr_client_call_ex(gr_client_t *c, const gr_ref_t *ref, const char *method, const void *arg,
                                size_t arg_len, const gr_call_options_t *opts, gr_call_cb cb, void *ud);

/** The id the connected silo announced in its handshake, or NULL while no
 * connection is up. */
GR_EXTERN const char *gr_client_silo(const gr_client_t *c);

/** Close the client: calls in flight complete with GR_ECANCELED, then `cb`
 * runs on a later loop iteration and the memory is gone. */
GR_EXTERN void gr_client_close(gr_client_t *c, gr_close_cb cb, void *ud);

#endif
