/* src/client/client.c - the C client: one pipelined connection to a silo, calls
 * matched to responses by id, one timer for all call deadlines, and failover
 * to the next silo in the list when a connection fails or the silo leaves.
 */
#include <assert.h>
#include <stdio.h>

#include "base/base.h"
#include "granary/client.h"
#include "client/client_internal.h"
#include "wire/frame.h"
#include "wire/stream.h"
#include "wire/tls.h"

typedef struct gr__addr {
    char host[64];
    int port;
} gr__addr_t;

typedef struct gr__ccall {
    UT_hash_handle hh;
    uint64_t id;
    gr_call_cb cb;
    void *ud;
    gr__dlq_node_t dl;
} gr__ccall_t;

typedef enum { GR__C_IDLE, GR__C_CONNECTING, GR__C_HANDSHAKE, GR__C_READY } gr__cstate_t;

/* A call retried until its deadline (gr_call_options_t.retry_for_ms): every
 * attempt carries the same idempotency key, so it runs at most once. */
typedef struct gr__retry {
    struct gr__retry *prev, *next;
    struct gr_client *c;
    uv_timer_t timer;
    gr_call_cb cb;
    void *ud;
    char *cls, *method;
    uint8_t *key, *arg;
    size_t key_len, arg_len;
    uint8_t idem[GR_IDEM_KEY_MAX];
    size_t idem_len;
    uint32_t timeout_ms;
    uint64_t deadline; /* uv_now() */
    uint32_t backoff_ms;
    uint32_t attempts;
    int waiting; /* in its backoff (the timer runs), not in flight */
} gr__retry_t;

typedef struct gr__cconn {
    uv_tcp_t tcp;
    uv_connect_t connect;
    struct gr_client *client; /* NULL once the client gave up on this connection */
    gr__tls_t *tls;           /* NULL: plaintext */
} gr__cconn_t;

struct gr_client {
    uv_loop_t *loop;
    char *cluster, *secret, *name;
    gr_client_options_t opts;
    gr__addr_t *addrs;
    size_t n_addrs;
    size_t cur;
    size_t attempts; /* consecutive failed connects in this round */
    gr__cstate_t state;
    gr__cconn_t *conn;
    gr__buf_t in, out;
    gr__buf_t raw;        /* ciphertext just read (TLS) */
    gr__tls_ctx_t *tls;   /* NULL: plaintext */
    const char *tls_name; /* name expected in silo certificates; NULL: each address's host */
    char *tls_name_own;   /* tls_name when the client owns it (from its options) */
    gr__ccall_t *calls;
    gr__dlq_t deadlines;
    uint64_t next_id;
    uv_timer_t call_timer;
    uv_timer_t connect_timer;
    gr__flusher_t flusher; /* writes `out` right before the loop blocks */
    gr__flush_node_t flush_node;
    char silo[256];
    char last_error[256];
    uint8_t role;        /* GR__ROLE_CLIENT, or GR__ROLE_SILO for silo-to-silo links */
    uint64_t handshakes; /* connections that became ready */
    uint64_t refused_at; /* uv_now() of the last handshake refused (GR_EAUTH), 0: none since one succeeded */
    int fail_deferred;   /* connect_timer reports last_error (a failure found inside a call), not a timeout */
    gr__retry_t *retries; /* calls with retries, in flight or in their backoff */
    uint64_t rand_state;
    int closing;
    int open_handles;
    void (*close_cb)(void *);
    void *close_ud;
};

static void gr__client_connect(gr_client_t *c);
static void gr__client_drop_conn(gr_client_t *c);

void gr_client_options_init(gr_client_options_t *o) {
    memset(o, 0, sizeof *o);
    o->silos = "127.0.0.1:7700";
    o->cluster = "default";
    o->name = "client";
    o->connect_timeout_ms = 3000;
    o->call_timeout_ms = 30000;
    o->max_frame_bytes = GR_FRAME_MAX_DEFAULT;
}

/* ---- completing calls ---- */

static void gr__call_timer_arm(gr_client_t *c);

static void gr__ccall_done(gr_client_t *c, gr__ccall_t *k, int status, const uint8_t *body, size_t len) {
    HASH_DEL(c->calls, k);
    gr__dlq_remove(&c->deadlines, &k->dl);
    k->cb(k->ud, status, body, len);
    gr__free(k);
}

static void gr__fail_all(gr_client_t *c, int status, const char *detail) {
    gr__ccall_t *k, *tmp;
    HASH_ITER(hh, c->calls, k, tmp) gr__ccall_done(c, k, status, (const uint8_t *)detail, strlen(detail));
    gr__call_timer_arm(c);
}

static void gr__call_timer_cb(uv_timer_t *t) {
    gr_client_t *c = t->data;
    gr__dlq_node_t *n;
    static const char msg[] = "no response within the call's timeout";
    while ((n = gr__dlq_pop_expired(&c->deadlines, uv_now(c->loop))) != NULL) {
        gr__ccall_t *k = GR__CONTAINER_OF(n, gr__ccall_t, dl);
        gr__ccall_done(c, k, GR_ETIMEDOUT, (const uint8_t *)msg, sizeof msg - 1);
    }
    gr__call_timer_arm(c);
}

static void gr__call_timer_arm(gr_client_t *c) {
    if (c->closing) return;
    uint64_t d = gr__dlq_next_in(&c->deadlines, uv_now(c->loop));
    if (d == UINT64_MAX)
        uv_timer_stop(&c->call_timer);
    else
        uv_timer_start(&c->call_timer, gr__call_timer_cb, d, 0);
}

/* ---- the connection ---- */

static void gr__client_schedule_flush(gr_client_t *c) {
    if (c->state == GR__C_READY) gr__flusher_mark(&c->flusher, &c->flush_node);
}

/* Write the bytes of *buf, taking them (wire/stream.h). A failed write
 * shows up as a read error too; it is handled there. */
static int gr__client_write_buf(gr_client_t *c, gr__buf_t *buf) {
    if (!c->conn) return 0;
    int rc = gr__stream_write((uv_stream_t *)&c->conn->tcp, c->conn->tls, buf, NULL, NULL);
    return rc < 0 ? rc : 0;
}

static void gr__client_flush(gr__flush_node_t *node, void *ud) {
    gr_client_t *c = ud;
    if (c->state == GR__C_READY && gr__client_write_buf(c, &c->out) != 0) {
        snprintf(c->last_error, sizeof c->last_error, "write to silo failed");
        gr__client_drop_conn(c);
        gr__fail_all(c, GR_ECONN, c->last_error);
    }
}

static void gr__client_handle_gone(gr_client_t *c);

static void gr__conn_closed(uv_handle_t *h) {
    gr__cconn_t *cc = h->data;
    gr_client_t *c = cc->client;
    gr__tls_free(cc->tls);
    gr__free(cc);
    gr__client_handle_gone(c);
}

/* Forget the current connection (closing it); pending calls are the
 * caller's to fail. The next call connects again, to the next address.
 * Request frames are only written once the handshake is done, so before
 * that `out` holds unsent calls that may go to another silo. */
static void gr__client_drop_conn(gr_client_t *c) {
    if (!c->conn) return;
    gr__cconn_t *cc = c->conn;
    if (c->state == GR__C_READY) c->out.len = 0;
    c->conn = NULL;
    c->state = GR__C_IDLE;
    c->silo[0] = '\0';
    c->in.len = 0;
    uv_timer_stop(&c->connect_timer);
    c->cur = (c->cur + 1) % c->n_addrs;
    if (!uv_is_closing((uv_handle_t *)&cc->tcp)) uv_close((uv_handle_t *)&cc->tcp, gr__conn_closed);
}

static void gr__client_conn_failed(gr_client_t *c, int status, const char *why) {
    snprintf(c->last_error, sizeof c->last_error, "%s", why);
    if (status == GR_EAUTH) c->refused_at = uv_now(c->loop);
    int was_ready = c->state == GR__C_READY;
    gr__client_drop_conn(c);
    /* Before the handshake completed nothing was sent: try the next silo.
     * After it, calls in flight may have run: report and let callers retry. */
    if (!was_ready && status == GR_ECONN && ++c->attempts < c->n_addrs && c->calls) {
        gr__client_connect(c);
        return;
    }
    c->attempts = 0;
    c->out.len = 0;
    gr__fail_all(c, status, c->last_error);
}

static void gr__client_frames(gr_client_t *c) {
    size_t off = 0;
    while (c->conn) {
        gr__frame_t f;
        size_t used;
        int rc = gr__frame_decode(c->in.data + off, c->in.len - off, c->opts.max_frame_bytes, &f, &used);
        if (rc == GR__EAGAIN) break;
        if (rc != 0) {
            gr__client_conn_failed(c, GR_EPROTO, "malformed frame from silo");
            return;
        }
        off += used;
        if (f.type == GR__FRAME_GOAWAY) {
            char why[300];
            int n = (int)(f.u.response.body_len < 200 ? f.u.response.body_len : 200);
            snprintf(why, sizeof why, "silo closed the connection: %.*s", n, (const char *)f.u.response.body);
            int st = f.u.response.status;
            gr__client_conn_failed(c, st == GR_EAUTH || st == GR_EVERSION ? st : GR_ECONN, why);
            return;
        }
        if (c->state == GR__C_HANDSHAKE) {
            if (f.type != GR__FRAME_HELLO_OK) {
                gr__client_conn_failed(c, GR_EPROTO, "silo did not answer the handshake");
                return;
            }
            snprintf(c->silo, sizeof c->silo, "%.*s", (int)f.u.hello_ok.name_len, f.u.hello_ok.name);
            c->state = GR__C_READY;
            c->handshakes++;
            c->refused_at = 0;
            c->attempts = 0;
            gr__client_schedule_flush(c);
            continue;
        }
        if (f.type == GR__FRAME_RESPONSE) {
            gr__ccall_t *k = NULL;
            HASH_FIND(hh, c->calls, &f.id, sizeof f.id, k);
            if (k) gr__ccall_done(c, k, f.u.response.status, f.u.response.body, f.u.response.body_len);
        }
        /* PONG and unknown-but-valid frames need no action. */
    }
    if (c->conn) gr__buf_consume(&c->in, off);
    gr__call_timer_arm(c);
}

static void gr__alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    gr__cconn_t *cc = h->data;
    gr_client_t *c = cc->client;
    if (!c) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    gr__stream_alloc(cc->tls, &c->raw, &c->in, 64 * 1024, buf);
}

static void gr__read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
    gr__cconn_t *cc = s->data;
    gr_client_t *c = cc->client;
    if (!c || c->conn != cc) return;
    if (n < 0) {
        char why[128];
        snprintf(why, sizeof why, "connection to silo lost (%s); outcome of calls in flight unknown",
                 n == UV_EOF ? "closed by peer" : uv_strerror((int)n));
        gr__client_conn_failed(c, GR_ECONN, why);
        return;
    }
    int rc = gr__stream_received(cc->tls, &c->raw, &c->in, (size_t)n);
    if (cc->tls) {
        if (rc != 0) {
            char why[360];
            snprintf(why, sizeof why, "%s:%d: %s", c->addrs[c->cur].host, c->addrs[c->cur].port,
                     rc == GR_ENOMEM ? "out of memory" : gr__tls_error(cc->tls));
            /* What was decrypted before the session ended is still read (a
             * GOAWAY saying why, replies). */
            if (rc == GR_ECONN && c->in.len) gr__client_frames(c);
            if (c->conn != cc) return;
            /* Refused in the handshake, or by an alert before the silo said
             * HELLO_OK (TLS 1.3 sends the verdict on our certificate after
             * its Finished): our credentials or its certificate, not the
             * network, so no other silo is tried. */
            int refused = rc == GR_EAUTH || (rc == GR_ECONN && c->state != GR__C_READY &&
                                             strstr(gr__tls_error(cc->tls), "alert") != NULL);
            gr__client_conn_failed(c, refused ? GR_EAUTH : rc == GR_ENOMEM ? GR_ENOMEM : GR_ECONN, why);
            return;
        }
        if (gr__tls_pending(cc->tls)) {
            gr__buf_t none;
            gr__buf_init(&none);
            if (gr__client_write_buf(c, &none) != 0) {
                gr__client_conn_failed(c, GR_ECONN, "write to silo failed");
                return;
            }
        }
    }
    gr__client_frames(c);
}

static void gr__connect_cb(uv_connect_t *req, int status) {
    gr__cconn_t *cc = req->data;
    gr_client_t *c = cc->client;
    if (!c || c->conn != cc) return;
    uv_timer_stop(&c->connect_timer);
    if (status < 0) {
        char why[160];
        snprintf(why, sizeof why, "cannot connect to %s:%d: %s", c->addrs[c->cur].host, c->addrs[c->cur].port,
                 uv_strerror(status));
        gr__client_conn_failed(c, GR_ECONN, why);
        return;
    }
    uv_tcp_nodelay(&cc->tcp, 1);
    c->state = GR__C_HANDSHAKE;
    if (c->tls && gr__tls_new(c->tls, c->tls_name ? c->tls_name : c->addrs[c->cur].host, &cc->tls) != 0) {
        gr__client_conn_failed(c, GR_ENOMEM, "out of memory");
        return;
    }
    gr__buf_t hello;
    gr__buf_init(&hello);
    if (gr__frame_encode_hello(&hello, GR_PROTOCOL_VERSION, c->role, c->cluster, c->secret, strlen(c->secret),
                               c->name) != 0) {
        gr__buf_free(&hello);
        gr__client_conn_failed(c, GR_ENOMEM, "out of memory");
        return;
    }
    int wrc = gr__client_write_buf(c, &hello);
    gr__buf_free(&hello); /* under TLS the engine took a copy; in plaintext it is empty already */
    if (wrc != 0) {
        gr__client_conn_failed(c, GR_ECONN, "write to silo failed");
        return;
    }
    uv_read_start((uv_stream_t *)&cc->tcp, gr__alloc_cb, gr__read_cb);
}

static void gr__connect_timeout_cb(uv_timer_t *t) {
    gr_client_t *c = t->data;
    char why[sizeof c->last_error];
    if (c->fail_deferred) { /* a failure found while connecting, told now */
        c->fail_deferred = 0;
        snprintf(why, sizeof why, "%s", c->last_error);
    } else {
        snprintf(why, sizeof why, "connecting to %s:%d timed out", c->addrs[c->cur].host,
                 c->addrs[c->cur].port);
    }
    gr__client_conn_failed(c, GR_ECONN, why);
}

static void gr__client_dial(gr_client_t *c, gr__cconn_t *cc, const struct sockaddr *addr);
static void gr__client_resolve(gr_client_t *c, gr__cconn_t *cc);

static void gr__client_connect(gr_client_t *c) {
    gr__cconn_t *cc = gr__calloc(1, sizeof *cc);
    if (!cc) {
        gr__fail_all(c, GR_ENOMEM, "out of memory");
        return;
    }
    cc->client = c;
    uv_tcp_init(c->loop, &cc->tcp);
    cc->tcp.data = cc;
    cc->connect.data = cc;
    c->open_handles++;
    c->conn = cc;
    c->state = GR__C_CONNECTING;
    c->fail_deferred = 0;
    uv_timer_start(&c->connect_timer, gr__connect_timeout_cb, c->opts.connect_timeout_ms, 0);
    struct sockaddr_storage ss;
    if (gr__make_addr(c->addrs[c->cur].host, c->addrs[c->cur].port, &ss) != 0) {
        gr__client_resolve(c, cc); /* a name: look it up on the thread pool first */
        return;
    }
    gr__client_dial(c, cc, (struct sockaddr *)&ss);
}

/* Start the TCP connect of attempt cc to addr. */
static void gr__client_dial(gr_client_t *c, gr__cconn_t *cc, const struct sockaddr *addr) {
    int rc = uv_tcp_connect(&cc->connect, &cc->tcp, addr, gr__connect_cb);
    if (rc != 0) {
        char why[160];
        snprintf(why, sizeof why, "cannot connect to %s:%d: %s", c->addrs[c->cur].host, c->addrs[c->cur].port,
                 uv_strerror(rc));
        snprintf(c->last_error, sizeof c->last_error, "%s", why);
        gr__client_drop_conn(c);
        /* Report from the timer so no callback runs inside gr_client_call(),
         * with this cause (last_error), not a timeout's. */
        c->fail_deferred = 1;
        uv_timer_start(&c->connect_timer, gr__connect_timeout_cb, 0, 0);
    }
}

/* Name resolution (uv_getaddrinfo: never blocks the loop). The request
 * counts as an open handle so the client outlives it; a result for an
 * attempt that was abandoned meanwhile is ignored. IPv4 is preferred, as
 * silos usually listen on an IPv4 pod address. */
typedef struct gr__resolve {
    uv_getaddrinfo_t req;
    gr_client_t *c;
    gr__cconn_t *cc;
} gr__resolve_t;

static void gr__resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
    gr__resolve_t *r = req->data;
    gr_client_t *c = r->c;
    if (!c->closing && c->conn == r->cc && c->state == GR__C_CONNECTING) {
        const struct addrinfo *pick = NULL;
        for (const struct addrinfo *a = res; status == 0 && a; a = a->ai_next)
            if (!pick || (a->ai_family == AF_INET && pick->ai_family != AF_INET)) pick = a;
        if (pick) {
            gr__client_dial(c, r->cc, pick->ai_addr);
        } else {
            char why[200];
            snprintf(why, sizeof why, "cannot resolve %s: %s", c->addrs[c->cur].host,
                     status ? uv_strerror(status) : "no address");
            gr__client_conn_failed(c, GR_ECONN, why);
        }
    }
    if (res) uv_freeaddrinfo(res);
    gr__free(r);
    gr__client_handle_gone(c);
}

static void gr__client_resolve(gr_client_t *c, gr__cconn_t *cc) {
    gr__resolve_t *r = gr__calloc(1, sizeof *r);
    char port[8];
    snprintf(port, sizeof port, "%d", c->addrs[c->cur].port);
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    if (r) {
        r->c = c;
        r->cc = cc;
        r->req.data = r;
        c->open_handles++;
        if (uv_getaddrinfo(c->loop, &r->req, gr__resolved, c->addrs[c->cur].host, port, &hints) == 0) return;
        c->open_handles--;
        gr__free(r);
    }
    snprintf(c->last_error, sizeof c->last_error, "cannot resolve %s", c->addrs[c->cur].host);
    gr__client_drop_conn(c);
    c->fail_deferred = 1; /* told from the timer, with this cause */
    uv_timer_start(&c->connect_timer, gr__connect_timeout_cb, 0, 0);
}

/* ---- public API ---- */

int gr_client_new(uv_loop_t *loop, const gr_client_options_t *o, gr_client_t **out) {
    if (!loop || !o || !out || !o->silos || !o->cluster || !o->name || !o->connect_timeout_ms ||
        !o->call_timeout_ms || o->max_frame_bytes < 1024)
        return GR_EINVAL;
    if (strlen(o->cluster) > 255 || strlen(o->name) > 255 || (o->secret && strlen(o->secret) > 255))
        return GR_ETOOBIG;
    gr_client_t *c = gr__calloc(1, sizeof *c);
    if (!c) return GR_ENOMEM;
    /* Count and parse the comma-separated list. */
    size_t n = 1;
    for (const char *p = o->silos; *p; p++)
        n += *p == ',';
    c->addrs = gr__calloc(n, sizeof *c->addrs);
    c->cluster = gr__strdup(o->cluster);
    c->secret = gr__strdup(o->secret ? o->secret : "");
    c->name = gr__strdup(o->name);
    int rc = (!c->addrs || !c->cluster || !c->secret || !c->name) ? GR_ENOMEM : 0;
    if (rc == 0 && o->tls_server_name && !(c->tls_name = c->tls_name_own = gr__strdup(o->tls_server_name)))
        rc = GR_ENOMEM;
    if (rc == 0 && (o->tls || o->tls_ca || o->tls_cert)) {
        gr__tls_ctx_opts_t to = {.server = 0, .cert = o->tls_cert, .key = o->tls_key, .ca = o->tls_ca};
        char err[300];
        rc = gr__tls_ctx_new(&to, &c->tls, err, sizeof err);
        if (rc != 0) GR__LOG_ERROR("client TLS: %s", err);
    }
    const char *p = o->silos;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        /* Numeric addresses or names (resolved asynchronously at connect). */
        if (gr__parse_hostport(p, len, c->addrs[i].host, sizeof c->addrs[i].host, &c->addrs[i].port) != 0)
            rc = GR_EINVAL;
        p = e ? e + 1 : p + len;
    }
    if (rc != 0) {
        gr__tls_ctx_unref(c->tls);
        gr__free(c->tls_name_own);
        gr__free(c->addrs);
        gr__free(c->cluster);
        gr__free(c->secret);
        gr__free(c->name);
        gr__free(c);
        return rc;
    }
    c->n_addrs = n;
    c->loop = loop;
    c->opts = *o;
    c->opts.silos = c->opts.cluster = c->opts.secret = c->opts.name = NULL;
    c->opts.tls_ca = c->opts.tls_cert = c->opts.tls_key = c->opts.tls_server_name = NULL;
    uv_timer_init(loop, &c->call_timer);
    c->call_timer.data = c;
    uv_timer_init(loop, &c->connect_timer);
    c->connect_timer.data = c;
    gr__flusher_init(loop, &c->flusher, gr__client_flush, c);
    c->open_handles = 3;
    c->role = GR__ROLE_CLIENT;
    c->rand_state = (uv_hrtime() ^ (uintptr_t)c) | 1;
    *out = c;
    return 0;
}

void gr__client_set_role(gr_client_t *c, uint8_t role) { c->role = role; }

void gr__client_set_tls(gr_client_t *c, gr__tls_ctx_t *ctx, const char *server_name) {
    if (ctx) gr__tls_ctx_ref(ctx);
    gr__tls_ctx_unref(c->tls);
    c->tls = ctx;
    gr__free(c->tls_name_own);
    c->tls_name_own = NULL;
    c->tls_name = server_name;
}
uint64_t gr__client_handshakes(const gr_client_t *c) { return c->handshakes; }
uint64_t gr__client_refused_at(const gr_client_t *c) { return c->refused_at; }
int gr__client_ready(const gr_client_t *c) { return c->state == GR__C_READY; }

int gr__client_call_flags(gr_client_t *c, const gr_ref_t *ref, const char *method, const void *arg,
                          size_t arg_len, uint32_t timeout_ms, uint8_t type, uint8_t flags, gr_call_cb cb,
                          void *ud) {
    return gr__client_call_chain(c, ref, method, arg, arg_len, timeout_ms, type, flags, NULL, 0, NULL, 0, cb,
                                 ud);
}

int gr__client_call_chain(gr_client_t *c, const gr_ref_t *ref, const char *method, const void *arg,
                          size_t arg_len, uint32_t timeout_ms, uint8_t type, uint8_t flags, const void *chain,
                          size_t chain_len, const void *idem, size_t idem_len, gr_call_cb cb, void *ud) {
    if (!c || !ref || !ref->class_name || !method || (!cb && type != GR__FRAME_ONEWAY) ||
        (ref->key_len && !ref->key) || (arg_len && !arg))
        return GR_EINVAL;
    if (c->closing) return GR_ESHUTDOWN;
    if (!timeout_ms) timeout_ms = c->opts.call_timeout_ms;
    gr__ccall_t *k = gr__calloc(1, sizeof *k);
    if (!k) return GR_ENOMEM;
    k->id = ++c->next_id;
    size_t before = c->out.len;
    int rc =
        gr__frame_encode_request_full(&c->out, type, k->id, timeout_ms, ref->class_name, ref->key,
                                      ref->key_len, method, arg, arg_len, chain, chain_len, idem, idem_len);
    if (rc != 0) {
        c->out.len = before;
        gr__free(k);
        return rc;
    }
    c->out.data[before + 7] |= flags; /* the header's flags byte (the encoder may have set CHAIN) */
    if (type == GR__FRAME_ONEWAY) {
        /* Nothing will answer: its record goes now; the frame is written at the next flush. */
        gr__free(k);
        if (c->state == GR__C_IDLE) gr__client_connect(c);
        gr__client_schedule_flush(c);
        return 0;
    }
    k->cb = cb;
    k->ud = ud;
    HASH_ADD(hh, c->calls, id, sizeof k->id, k);
    if (gr__hash_oom()) {
        c->out.len = before;
        gr__free(k);
        return GR_ENOMEM;
    }
    if (gr__dlq_insert(&c->deadlines, &k->dl, uv_now(c->loop) + timeout_ms)) gr__call_timer_arm(c);
    if (c->state == GR__C_IDLE) gr__client_connect(c);
    gr__client_schedule_flush(c);
    return 0;
}

int gr_client_call(gr_client_t *c, const gr_ref_t *ref, const char *method, const void *arg, size_t arg_len,
                   uint32_t timeout_ms, gr_call_cb cb, void *ud) {
    return gr__client_call_flags(c, ref, method, arg, arg_len, timeout_ms, GR__FRAME_REQUEST, 0, cb, ud);
}

/* ---- retries ---- */

static void gr__retry_closed(uv_handle_t *h) {
    gr__retry_t *r = h->data;
    gr_client_t *c = r->c;
    gr__free(r->cls);
    gr__free(r->method);
    gr__free(r->key);
    gr__free(r->arg);
    gr__free(r);
    gr__client_handle_gone(c);
}

static void gr__retry_finish(gr__retry_t *r, int status, const uint8_t *reply, size_t len) {
    gr_client_t *c = r->c;
    if (r->prev)
        r->prev->next = r->next;
    else
        c->retries = r->next;
    if (r->next) r->next->prev = r->prev;
    r->cb(r->ud, status, reply, len);
    uv_close((uv_handle_t *)&r->timer, gr__retry_closed);
}

static void gr__retry_send(gr__retry_t *r);
static void gr__retry_timer_cb(uv_timer_t *t);

static void gr__retry_done(void *ud, int status, const uint8_t *reply, size_t len) {
    gr__retry_t *r = ud;
    gr_client_t *c = r->c;
    uint64_t now = uv_now(c->loop);
    if (status != 0 && gr_err_retryable(status) && !c->closing) {
        /* Equal jitter over an exponential step (half the step, plus a
         * random part of the other half), so clients retrying after one
         * failure do not come back in step. */
        c->rand_state ^= c->rand_state << 13, c->rand_state ^= c->rand_state >> 7,
            c->rand_state ^= c->rand_state << 17;
        uint32_t wait = r->backoff_ms / 2 + (uint32_t)(c->rand_state % (r->backoff_ms / 2 + 1));
        if (now + wait < r->deadline) {
            r->backoff_ms = r->backoff_ms < 500 ? r->backoff_ms * 2 : 1000;
            r->waiting = 1;
            uv_timer_start(&r->timer, gr__retry_timer_cb, wait, 0);
            return;
        }
    }
    gr__retry_finish(r, status, reply, len);
}

static void gr__retry_send(gr__retry_t *r) {
    r->waiting = 0;
    gr_client_t *c = r->c;
    gr_ref_t ref = {r->cls, r->key, r->key_len};
    r->attempts++;
    int rc = gr__client_call_chain(c, &ref, r->method, r->arg, r->arg_len, r->timeout_ms, GR__FRAME_REQUEST,
                                   0, NULL, 0, r->idem, r->idem_len, gr__retry_done, r);
    if (rc != 0) {
        /* Not sent (shutting down, out of memory): report from the loop, as
         * any completion. */
        static const char msg[] = "the retry could not be sent";
        gr__retry_finish(r, rc, (const uint8_t *)msg, sizeof msg - 1);
    }
}

static void gr__retry_timer_cb(uv_timer_t *t) { gr__retry_send(t->data); }

static void gr__client_make_idem(gr_client_t *c, uint8_t *out, size_t *len) {
    /* 16 random bytes as 32 hex digits: a logical call's key. */
    uint8_t raw[16];
    if (uv_random(NULL, NULL, raw, sizeof raw, 0, NULL) != 0) {
        for (size_t i = 0; i < sizeof raw; i++) {
            c->rand_state ^= c->rand_state << 13, c->rand_state ^= c->rand_state >> 7,
                c->rand_state ^= c->rand_state << 17;
            raw[i] = (uint8_t)(c->rand_state >> 24);
        }
    }
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof raw; i++) {
        out[2 * i] = (uint8_t)hex[raw[i] >> 4];
        out[2 * i + 1] = (uint8_t)hex[raw[i] & 15];
    }
    *len = 2 * sizeof raw;
}

int gr_client_call_ex(gr_client_t *c, const gr_ref_t *ref, const char *method, const void *arg,
                      size_t arg_len, const gr_call_options_t *o, gr_call_cb cb, void *ud) {
    if (!c || !o || !ref || !ref->class_name || !method || !cb || (ref->key_len && !ref->key) ||
        (arg_len && !arg) || (o->idempotency_key_len && !o->idempotency_key))
        return GR_EINVAL;
    if (o->idempotency_key_len > GR_IDEM_KEY_MAX || ref->key_len > GR_KEY_MAX || arg_len > GR_ARG_MAX)
        return GR_ETOOBIG;
    if (c->closing) return GR_ESHUTDOWN;
    uint32_t timeout = o->timeout_ms ? o->timeout_ms : c->opts.call_timeout_ms;
    if (!o->retry_for_ms)
        return gr__client_call_chain(c, ref, method, arg, arg_len, timeout, GR__FRAME_REQUEST, 0, NULL, 0,
                                     o->idempotency_key, o->idempotency_key_len, cb, ud);
    gr__retry_t *r = gr__calloc(1, sizeof *r);
    if (!r) return GR_ENOMEM;
    r->c = c;
    r->cb = cb;
    r->ud = ud;
    r->cls = gr__strdup(ref->class_name);
    r->method = gr__strdup(method);
    r->key = ref->key_len ? gr__memdup(ref->key, ref->key_len) : NULL;
    r->arg = arg_len ? gr__memdup(arg, arg_len) : NULL;
    if (!r->cls || !r->method || (ref->key_len && !r->key) || (arg_len && !r->arg)) {
        gr__free(r->cls);
        gr__free(r->method);
        gr__free(r->key);
        gr__free(r->arg);
        gr__free(r);
        return GR_ENOMEM;
    }
    r->key_len = ref->key_len;
    r->arg_len = arg_len;
    if (o->idempotency_key_len) {
        memcpy(r->idem, o->idempotency_key, o->idempotency_key_len);
        r->idem_len = o->idempotency_key_len;
    } else {
        gr__client_make_idem(c, r->idem, &r->idem_len);
    }
    r->timeout_ms = timeout;
    r->deadline = uv_now(c->loop) + o->retry_for_ms;
    r->backoff_ms = 20;
    uv_timer_init(c->loop, &r->timer);
    r->timer.data = r;
    c->open_handles++;
    r->next = c->retries;
    if (c->retries) c->retries->prev = r;
    c->retries = r;
    r->waiting = 1;
    /* The first attempt goes out from the loop like the others, so cb never
     * runs inside this call. */
    uv_timer_start(&r->timer, gr__retry_timer_cb, 0, 0);
    return 0;
}

const char *gr_client_silo(const gr_client_t *c) { return c->silo[0] ? c->silo : NULL; }

static void gr__client_handle_gone(gr_client_t *c) {
    if (--c->open_handles != 0 || !c->closing) return;
    void (*cb)(void *) = c->close_cb;
    void *ud = c->close_ud;
    gr__free(c->cluster);
    gr__free(c->secret);
    gr__free(c->name);
    gr__free(c->addrs);
    gr__buf_free(&c->in);
    gr__buf_free(&c->out);
    gr__buf_free(&c->raw);
    gr__tls_ctx_unref(c->tls);
    gr__free(c->tls_name_own);
    gr__free(c);
    if (cb) cb(ud);
}

static void gr__client_handle_closed(uv_handle_t *h) { gr__client_handle_gone(h->data); }
static void gr__client_flusher_closed(uv_handle_t *h) {
    gr__client_handle_gone(GR__CONTAINER_OF(h, gr_client_t, flusher.prepare));
}

void gr_client_close(gr_client_t *c, gr_close_cb cb, void *ud) {
    assert(!c->closing && "gr_client_close called twice");
    c->closing = 1;
    c->close_cb = cb;
    c->close_ud = ud;
    gr__client_drop_conn(c);
    gr__fail_all(c, GR_ECANCELED, "client closed"); /* retries in flight end here too (closing) */
    while (c->retries) {                            /* the ones waiting for their next attempt */
        gr__retry_t *r = c->retries;
        uv_timer_stop(&r->timer);
        static const char msg[] = "client closed";
        gr__retry_finish(r, GR_ECANCELED, (const uint8_t *)msg, sizeof msg - 1);
    }
    uv_close((uv_handle_t *)&c->call_timer, gr__client_handle_closed);
    uv_close((uv_handle_t *)&c->connect_timer, gr__client_handle_closed);
    gr__flusher_close(&c->flusher, gr__client_flusher_closed);
}
