/* src/gateway/gateway.c - TCP connections from clients: handshake, framed requests
 * turned into grain calls, responses batched per loop iteration into one
 * write per connection, and every resource bounded (connections, frame size,
 * calls in flight, bytes waiting to be written).
 */
#include <assert.h>
#include <stdio.h>

#include "base/base.h"
#include "runtime/runtime.h"
#include "gateway/gateway.h"
#include "wire/frame.h"
#include "wire/stream.h"
#include "wire/tls.h"

/* Stop reading from a connection whose peer does not read its replies once
 * this much is queued for writing; resume below a quarter of it. Memory per
 * connection stays bounded without dropping anything. */
#define GR__WRITE_HIGH_WATER (8u * 1024u * 1024u)
#define GR__READ_CHUNK (64u * 1024u)
/* Before HELLO a peer has proved nothing: it may send one HELLO (at most
 * 3 x 255 bytes of strings and 10 of header fields; anything announcing more
 * is refused from the length prefix alone), and it gets a small read buffer. */
#define GR__HELLO_MAX_BODY 1024u
#define GR__PREAUTH_READ_CHUNK 2048u
/* Under TLS the handshake comes before HELLO: a client's first flights with
 * a certificate chain are a few KiB; more than this before HELLO is refused. */
#define GR__PREAUTH_TLS_BYTES (32u * 1024u)

typedef struct gr__gconn {
    UT_hash_handle hh;
    uint64_t id;
    uv_tcp_t tcp;
    gr__gateway_t *gw;
    gr__buf_t in;
    gr__buf_t out;          /* frames waiting for the next flush (plaintext) */
    gr__tls_t *tls;         /* NULL: plaintext */
    gr__buf_t raw;          /* ciphertext just read, on its way into tls */
    uint32_t preauth_bytes; /* ciphertext read before HELLO */
    gr__flush_node_t flush; /* on the gateway's flusher while it has output */
    int hello_done;
    int peer_is_silo;  /* handshake said role silo (with its credential): may forward and use `$dir` */
    int paused;        /* reading stopped: the peer does not read its replies */
    int budget_paused; /* reading stopped: its requests in flight hold max_conn_bytes */
    int resume_due;    /* back under the budget: resume at the next flush */
    int goaway;        /* close once everything queued is written */
    int closing;
    int in_table;
    uint32_t inflight;
    uint64_t bytes_inflight; /* request bytes of its calls in flight (the memory budget) */
    uint64_t accepted_ms;
    uint64_t partial_since; /* loop time a frame began to arrive and is still incomplete (0: none) */
    char peer[64];
    char *silo_name; /* a silo peer's HELLO name (its silo id); NULL for clients */
} gr__gconn_t;

typedef struct gr__greq {
    gr__gateway_t *gw;
    uint64_t conn_id;
    uint64_t req_id;
    uint32_t bytes; /* of the request frame, held against the budgets until answered */
    int oneway;     /* nothing to answer: only the budgets are given back */
} gr__greq_t;

struct gr__gateway {
    uv_loop_t *loop;
    gr_runtime_t *rt;
    gr__gateway_opts_t opts;
    char *cluster, *secret, *silo_id;
    char *silo_secret;                        /* NULL: silos present `secret` */
    char *accept_secret, *accept_silo_secret; /* the other secret of a rotation, or NULL */
    gr__tls_ctx_t *tls;                       /* new connections speak TLS under it; NULL: plaintext */
    uv_tcp_t listener;
    int listening;
    int accepting;
    int port;
    gr__gconn_t *conns; /* by id */
    uint64_t next_conn_id;
    gr__flusher_t flusher; /* writes every connection's batch right before the loop blocks */
    uv_timer_t sweeper;    /* handshake timeouts */
    int closing;
    int shutting_down; /* waiting for calls in flight before GOAWAY */
    int open_handles;
    void (*shutdown_cb)(void *);
    void *shutdown_ud;
    void (*close_cb)(void *);
    void *close_ud;
    gr__gateway_stats_t stats;
    uint64_t log_window_ms; /* rate limit of the security log lines */
    unsigned log_in_window;
    uint64_t log_dropped;
};

const char *gr__refuse_name(gr__refuse_t r) {
    static const char *const names[] = {
#define GR__REFUSE_STR(n, s) s,
        GR__REFUSE_REASONS(GR__REFUSE_STR)
#undef GR__REFUSE_STR
    };
    return (unsigned)r < GR__REFUSE_COUNT ? names[r] : "unknown";
}

/* Refused handshakes are counted by reason (always) and logged at most
 * GR__SECURITY_LOG_BURST times per second; how many were left out is said
 * with the first refusal of a later second: one timing attack logged
 * 12,000 lines. */
#define GR__SECURITY_LOG_BURST 5u
static void gr__gw_refused(gr__gateway_t *gw, gr__refuse_t why, const char *peer, const char *detail) {
    gw->stats.handshakes_refused++;
    gw->stats.refused_by[why]++;
    uint64_t now = uv_now(gw->loop);
    if (now - gw->log_window_ms >= 1000) {
        if (gw->log_dropped)
            GR__LOG_WARN(
                "%llu more refused handshakes not logged (see granary_handshakes_refused_by_reason_total)",
                (unsigned long long)gw->log_dropped);
        gw->log_window_ms = now;
        gw->log_in_window = 0;
        gw->log_dropped = 0;
    }
    if (gw->log_in_window++ < GR__SECURITY_LOG_BURST)
        GR__LOG_WARN("refused %s (%s): %s", peer, gr__refuse_name(why), detail);
    else
        gw->log_dropped++;
}

static void gr__conn_close(gr__gconn_t *c);
static void gr__conn_frames(gr__gconn_t *c);
static void gr__conn_resume(gr__gconn_t *c);
static void gr__gw_maybe_shutdown_done(gr__gateway_t *gw);
static void gr__gw_shutdown_step(gr__gateway_t *gw);
static void gr__gw_handle_gone(gr__gateway_t *gw);

/* ---- writing ---- */

static void gr__conn_mark_dirty(gr__gconn_t *c) { gr__flusher_mark(&c->gw->flusher, &c->flush); }

static void gr__conn_written(void *ud, int status) {
    gr__gconn_t *c = ud;
    if (c->closing) return;
    if (status < 0) {
        gr__conn_close(c);
        return;
    }
    size_t queued = c->tcp.write_queue_size;
    if (c->goaway && queued == 0 && c->out.len == 0) {
        gr__conn_close(c);
        return;
    }
    if (c->paused && queued < GR__WRITE_HIGH_WATER / 4) {
        c->paused = 0;
        c->partial_since = c->in.len ? uv_now(c->gw->loop) : 0; /* the pause was ours, not the peer's */
        /* Whole frames read (or decrypted) before the pause run now: the
         * peer may be waiting for their replies and send nothing more. */
        if (c->in.len && !c->budget_paused && !c->gw->shutting_down) gr__conn_frames(c);
        gr__conn_resume(c);
    }
}

static void gr__conn_flush(gr__gconn_t *c) {
    if (c->closing) return;
    int rc = gr__stream_write((uv_stream_t *)&c->tcp, c->tls, &c->out, gr__conn_written, c);
    if (rc < 0) {
        gr__conn_close(c);
        return;
    }
    if (rc == 0) return;
    c->gw->stats.frames_out++;
    if (!c->paused && c->tcp.write_queue_size > GR__WRITE_HIGH_WATER) {
        c->paused = 1;
        uv_read_stop((uv_stream_t *)&c->tcp);
    }
}

static void gr__gw_flush(gr__flush_node_t *node, void *ud) {
    gr__gateway_t *gw = ud;
    gr__gconn_t *c = GR__CONTAINER_OF(node, gr__gconn_t, flush);
    if (c->resume_due && !c->closing) {
        /* Under its budget again: what was read before the pause, then
         * the socket (a stop or shutdown since leaves it unread). */
        c->resume_due = 0;
        c->partial_since = c->in.len ? uv_now(gw->loop) : 0;
        if (!gw->shutting_down && !c->paused) gr__conn_frames(c);
        gr__conn_resume(c);
    }
    gr__conn_flush(c);
}

static void gr__conn_send_response(gr__gconn_t *c, uint8_t type, uint64_t id, int status, const void *body,
                                   size_t len) {
    if (c->closing) return;
    if (gr__frame_encode_response(&c->out, type, id, status, body, len) != 0) {
        gr__conn_close(c);
        return;
    }
    gr__conn_mark_dirty(c);
}

/* Tell the peer why, then close once it is written. */
static void gr__conn_goaway(gr__gconn_t *c, int status, const char *why) {
    if (c->goaway || c->closing) return;
    if (c->tls && !gr__tls_established(c->tls)) {
        /* No channel to say it in yet. */
        gr__conn_close(c);
        return;
    }
    gr__conn_send_response(c, GR__FRAME_GOAWAY, 0, status, why, strlen(why));
    c->goaway = 1;
    uv_read_stop((uv_stream_t *)&c->tcp);
}

/* ---- requests ---- */

static void gr__req_done(void *ud, int status, const uint8_t *reply, size_t len) {
    gr__greq_t *r = ud;
    gr__gateway_t *gw = r->gw;
    gr__gconn_t *c = NULL;
    gw->stats.inflight--;
    gw->stats.bytes_buffered -= r->bytes;
    HASH_FIND(hh, gw->conns, &r->conn_id, sizeof r->conn_id, c);
    if (c) {
        if (!r->oneway) c->inflight--;
        c->bytes_inflight -= r->bytes;
        if (!r->oneway) gr__conn_send_response(c, GR__FRAME_RESPONSE, r->req_id, status, reply, len);
        if (c->budget_paused && c->bytes_inflight < gw->opts.max_conn_bytes / 2 && !c->closing) {
            /* Not from inside this completion (the runtime may be in the
             * middle of a queue): the flush callback resumes it. */
            c->budget_paused = 0;
            c->resume_due = 1;
            gr__conn_mark_dirty(c);
        }
    }
    gr__free(r);
    gr__gw_shutdown_step(gw);
}

/* Copy a length-delimited name into a C string; names with NUL are refused. */
static int gr__cstr(const char *p, size_t n, char *out, size_t out_size) {
    if (n >= out_size || memchr(p, '\0', n)) return GR_EPROTO;
    memcpy(out, p, n);
    out[n] = '\0';
    return 0;
}

static void gr__conn_request(gr__gconn_t *c, const gr__frame_t *f, size_t frame_bytes) {
    gr__gateway_t *gw = c->gw;
    char cls[GR_CLASS_NAME_MAX + 1], method[GR_METHOD_NAME_MAX + 1];
    int oneway = f->type == GR__FRAME_ONEWAY;
    if (gr__cstr(f->u.request.class_name, f->u.request.class_len, cls, sizeof cls) ||
        gr__cstr(f->u.request.method, f->u.request.method_len, method, sizeof method)) {
        if (!oneway)
            gr__conn_send_response(c, GR__FRAME_RESPONSE, f->id, GR_EPROTO,
                                   "class or method name contains a NUL byte", 40);
        return;
    }
    if (!oneway && c->inflight >= gw->opts.max_inflight_per_conn) {
        gw->stats.overloaded++;
        if (!oneway) {
            const char *msg = "too many calls in flight on this connection";
            gr__conn_send_response(c, GR__FRAME_RESPONSE, f->id, GR_EOVERLOAD, msg, strlen(msg));
        }
        return;
    }
    /* The silo-wide budget: a request that would take the silo past it is
     * refused at once, not queued (the caller may retry elsewhere). */
    if (gw->stats.bytes_buffered + frame_bytes > gw->opts.max_buffered_bytes) {
        gw->stats.overloaded++;
        if (!oneway) {
            static const char msg[] = "silo request memory budget exhausted (--max-buffered-bytes); retry";
            gr__conn_send_response(c, GR__FRAME_RESPONSE, f->id, GR_EOVERLOAD, msg, sizeof msg - 1);
        }
        return;
    }
    if (method[0] == '$' && !c->peer_is_silo) {
        /* '$' methods (a reminder firing) come only from silos. */
        if (!oneway) {
            const char *msg = "methods starting with '$' are reserved for silos";
            gr__conn_send_response(c, GR__FRAME_RESPONSE, f->id, GR_ENOMETHOD, msg, strlen(msg));
        }
        return;
    }
    gr_ref_t ref = {cls, f->u.request.key, f->u.request.key_len};
    int rc;
    /* Only silos forward (the hop count, "run here"); `$` classes go to the
     * silo's system_call, which lets clients use `$silo` and only silos `$dir`. */
    int hops = c->peer_is_silo ? (f->flags & GR__FRAME_F_HOPS) : 0;
    int here = c->peer_is_silo && (f->flags & GR__FRAME_F_HERE);
    if (cls[0] == '$' && !gw->opts.system_call) {
        if (!oneway)
            gr__conn_send_response(c, GR__FRAME_RESPONSE, f->id, GR_ENOCLASS, GR__LIT("reserved class"));
        return;
    }
    /* One-way requests hold the budgets too, until they have run (before:
     * they were not counted, so one-way floods were unbounded). */
    gr__greq_t *r = gr__malloc(sizeof *r);
    if (!r) {
        if (!oneway)
            gr__conn_send_response(c, GR__FRAME_RESPONSE, f->id, GR_ENOMEM, GR__LIT("out of memory"));
        return;
    }
    r->gw = gw;
    r->conn_id = c->id;
    r->req_id = f->id;
    r->bytes = (uint32_t)frame_bytes;
    r->oneway = oneway;
    if (cls[0] == '$') {
        c->inflight += !oneway;
        c->bytes_inflight += frame_bytes;
        gw->stats.bytes_buffered += frame_bytes;
        gw->stats.inflight++;
        gw->opts.system_call(gw->opts.system_ud, cls, method, c->peer_is_silo ? c->silo_name : NULL,
                             f->u.request.key,
                             f->u.request.key_len, f->u.request.arg, f->u.request.arg_len, gr__req_done, r);
        return;
    }
    rc = gr__call_hops(gw->rt, &ref, method, f->u.request.arg, f->u.request.arg_len, f->u.request.timeout_ms,
                       hops, here, f->u.request.chain, f->u.request.chain_len, f->u.request.idem,
                       f->u.request.idem_len, gr__req_done, r);
    if (rc != 0) {
        gr__free(r);
        if (oneway) return;
        const char *msg = gr_strerror(rc);
        gr__conn_send_response(c, GR__FRAME_RESPONSE, f->id, rc, msg, strlen(msg));
        return;
    }
    c->inflight += !oneway; /* the cap is for replies owed; one-way bytes are held by the budgets */
    c->bytes_inflight += frame_bytes;
    gw->stats.bytes_buffered += frame_bytes;
    gw->stats.inflight++;
}

static void gr__conn_hello(gr__gconn_t *c, const gr__frame_t *f) {
    gr__gateway_t *gw = c->gw;
    if (f->type != GR__FRAME_HELLO) {
        gw->stats.protocol_errors++;
        gr__gw_refused(gw, GR__REFUSE_NOT_HELLO, c->peer, "expected HELLO as the first frame");
        gr__conn_goaway(c, GR_EPROTO, "expected HELLO as the first frame");
        return;
    }
    if (f->u.hello.version != GR_PROTOCOL_VERSION) {
        char msg[96];
        snprintf(msg, sizeof msg, "protocol version %u not supported (this silo speaks %u)",
                 (unsigned)f->u.hello.version, (unsigned)GR_PROTOCOL_VERSION);
        gr__gw_refused(gw, GR__REFUSE_VERSION, c->peer, msg);
        gr__conn_goaway(c, GR_EVERSION, msg);
        return;
    }
    /* With --silo-secret, the silo role needs it: a client holding only the
     * client secret cannot register in the directory, forward calls or fire
     * reminders (docs/security.md). Without one, silos present the client
     * secret like everybody. */
    int as_silo = f->u.hello.role == GR__ROLE_SILO;
    int silo_cred = as_silo && gw->silo_secret;
    const char *want = silo_cred ? gw->silo_secret : gw->secret;
    const char *also = silo_cred ? gw->accept_silo_secret : gw->accept_secret;
    size_t cl = strlen(gw->cluster);
    int cluster_ok = f->u.hello.cluster_len == cl && memcmp(f->u.hello.cluster, gw->cluster, cl) == 0;
    /* Both comparisons always run: the time taken says nothing about which one matched. */
    int secret_ok = gr__secret_equal(f->u.hello.secret, f->u.hello.secret_len, want);
    int also_ok = also && gr__secret_equal(f->u.hello.secret, f->u.hello.secret_len, also);
    secret_ok |= also_ok;
    if (!cluster_ok || !secret_ok) {
        gr__gw_refused(gw,
                       !cluster_ok ? GR__REFUSE_CLUSTER
                       : as_silo   ? GR__REFUSE_SILO_SECRET
                                   : GR__REFUSE_CLIENT_SECRET,
                       c->peer, "wrong cluster name or secret");
        gr__conn_goaway(c, GR_EAUTH, "wrong cluster name or secret");
        return;
    }
    c->hello_done = 1;
    gw->stats.preauth_open--;
    c->peer_is_silo = as_silo;
    if (as_silo) {
        /* Kept so a silo's own claims (`$mig in`) can be checked against the
         * name it said it has; NUL bytes make it match no silo id. */
        c->silo_name = gr__malloc(f->u.hello.name_len + 1);
        if (!c->silo_name) {
            gr__conn_goaway(c, GR_ENOMEM, "out of memory");
            return;
        }
        c->silo_name[f->u.hello.name_len] = '\0';
        if (f->u.hello.name_len) {
            memcpy(c->silo_name, f->u.hello.name, f->u.hello.name_len);
            if (memchr(f->u.hello.name, 0, f->u.hello.name_len)) c->silo_name[0] = '\0';
        }
    }
    /* The connection limit counts authenticated connections only, so
     * sockets that never say HELLO cannot lock real clients out. */
    if (gw->stats.connections_open - gw->stats.preauth_open > gw->opts.max_connections) {
        gw->stats.connections_refused++;
        gr__conn_goaway(c, GR_EOVERLOAD, "connection limit reached");
        return;
    }
    if (gr__frame_encode_hello_ok(&c->out, GR_PROTOCOL_VERSION, gw->silo_id) != 0) {
        gr__conn_close(c);
        return;
    }
    gr__conn_mark_dirty(c);
}

/* Over its budget, a connection stops being read until its calls in flight
 * give bytes back (the peer's TCP window then pushes back on it). */
static int gr__conn_over_budget(const gr__gconn_t *c) {
    return c->bytes_inflight >= c->gw->opts.max_conn_bytes;
}

static void gr__conn_frames(gr__gconn_t *c) {
    gr__gateway_t *gw = c->gw;
    size_t off = 0;
    while (!c->closing && !c->goaway && !c->budget_paused) {
        gr__frame_t f;
        size_t used = 0;
        size_t max = c->hello_done ? gw->opts.max_frame_bytes : GR__HELLO_MAX_BODY;
        int rc = gr__frame_decode(c->in.data + off, c->in.len - off, max, &f, &used);
        if (rc == GR__EAGAIN) break;
        if (rc != 0) {
            gw->stats.protocol_errors++;
            char msg[128];
            snprintf(msg, sizeof msg, "%s",
                     rc != GR_ETOOBIG ? "malformed frame"
                     : c->hello_done  ? "frame over the size limit"
                                      : "HELLO over its size limit (1024 bytes)");
            if (!c->hello_done)
                gr__gw_refused(gw, rc == GR_ETOOBIG ? GR__REFUSE_HELLO_TOO_BIG : GR__REFUSE_NOT_HELLO,
                               c->peer, msg);
            else
                GR__LOG_WARN("closing %s: %s", c->peer, msg);
            gr__conn_goaway(c, rc, msg);
            break;
        }
        off += used;
        gw->stats.frames_in++;
        if (!c->hello_done) {
            gr__conn_hello(c, &f);
            continue;
        }
        switch (f.type) {
        case GR__FRAME_REQUEST:
        case GR__FRAME_ONEWAY:
            gr__conn_request(c, &f, used);
            if (gr__conn_over_budget(c) && !c->closing) {
                c->budget_paused = 1;
                uv_read_stop((uv_stream_t *)&c->tcp);
            }
            break;
        case GR__FRAME_PING:
            if (gr__frame_encode_empty(&c->out, GR__FRAME_PONG, f.id) == 0) gr__conn_mark_dirty(c);
            break;
        case GR__FRAME_GOAWAY:
            gr__conn_close(c);
            break;
        default:
            gw->stats.protocol_errors++;
            gr__conn_goaway(c, GR_EPROTO, "unexpected frame type");
            break;
        }
    }
    gr__buf_consume(&c->in, off);
    /* The deadline is for the frame now incomplete: it starts when that
     * frame began to arrive (frames completed meanwhile restart it). */
    if (c->in.len == 0)
        c->partial_since = 0;
    else if (!c->partial_since || off > 0)
        c->partial_since = uv_now(gw->loop);
}

static void gr__alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    gr__gconn_t *c = h->data;
    gr__stream_alloc(c->tls, &c->raw, &c->in, c->hello_done ? GR__READ_CHUNK : GR__PREAUTH_READ_CHUNK, buf);
}

/* A TLS failure: OpenSSL's alert (if it wrote one) goes out, then the
 * connection closes. */
static void gr__conn_tls_failed(gr__gconn_t *c, int rc) {
    gr__gateway_t *gw = c->gw;
    if (!c->hello_done)
        gr__gw_refused(gw, GR__REFUSE_TLS, c->peer, gr__tls_error(c->tls));
    else
        GR__LOG_WARN("closing %s: %s", c->peer, gr__tls_error(c->tls));
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->goaway = 1; /* closes once written (gr__conn_written) */
    c->out.len = 0;
    if (gr__stream_write((uv_stream_t *)&c->tcp, c->tls, &c->out, gr__conn_written, c) <= 0)
        gr__conn_close(c);
}

static void gr__read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
    gr__gconn_t *c = s->data;
    if (n < 0) {
        gr__conn_close(c);
        return;
    }
    if (n == 0) return;
    if (c->tls && !c->hello_done && (c->preauth_bytes += (uint32_t)n) > GR__PREAUTH_TLS_BYTES) {
        gr__gw_refused(c->gw, GR__REFUSE_HELLO_TOO_BIG, c->peer,
                       "more than 32 KiB before HELLO (TLS handshake included)");
        gr__conn_close(c);
        return;
    }
    int rc = gr__stream_received(c->tls, &c->raw, &c->in, (size_t)n);
    if (c->tls) {
        if (rc != 0) {
            /* Requests decrypted before the session ended run, as bytes
             * before a plaintext EOF do. */
            if (rc == GR_ECONN && c->in.len && c->hello_done) gr__conn_frames(c);
            if (!c->closing) gr__conn_tls_failed(c, rc);
            return;
        }
        if (gr__tls_pending(c->tls)) gr__conn_mark_dirty(c); /* handshake flights */
        if (c->in.len == 0) return;
    }
    gr__conn_frames(c);
}

static void gr__conn_resume(gr__gconn_t *c) {
    if (!c->closing && !c->goaway && !c->gw->shutting_down && !c->paused && !c->budget_paused)
        uv_read_start((uv_stream_t *)&c->tcp, gr__alloc_cb, gr__read_cb);
}

/* ---- connection life cycle ---- */

static void gr__conn_closed(uv_handle_t *h) {
    gr__gconn_t *c = h->data;
    gr__gateway_t *gw = c->gw;
    if (c->in_table) {
        HASH_DEL(gw->conns, c);
        gw->stats.connections_open--;
        if (!c->hello_done) gw->stats.preauth_open--;
    }
    gr__buf_free(&c->in);
    gr__buf_free(&c->out);
    gr__buf_free(&c->raw);
    gr__tls_free(c->tls);
    gr__free(c->silo_name);
    gr__free(c);
    gr__gw_maybe_shutdown_done(gw);
    gr__gw_handle_gone(gw);
}

static void gr__conn_close(gr__gconn_t *c) {
    if (c->closing) return;
    c->closing = 1;
    /* The struct goes with the handle: it must not stay on the flush list. */
    gr__flusher_unlink(&c->gw->flusher, &c->flush);
    uv_close((uv_handle_t *)&c->tcp, gr__conn_closed);
}

static void gr__on_connection(uv_stream_t *server, int status) {
    gr__gateway_t *gw = server->data;
    if (status < 0) {
        GR__LOG_WARN("accept failed: %s", uv_strerror(status));
        return;
    }
    gr__gconn_t *c = gr__calloc(1, sizeof *c);
    if (!c) return;
    c->gw = gw;
    c->id = ++gw->next_conn_id;
    uv_tcp_init(gw->loop, &c->tcp);
    c->tcp.data = c;
    gw->open_handles++;
    HASH_ADD(hh, gw->conns, id, sizeof c->id, c);
    c->in_table = !gr__hash_oom();
    if (c->in_table) gw->stats.connections_open++, gw->stats.preauth_open++;
    if (!c->in_table || uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        gr__conn_close(c);
        return;
    }
    gw->stats.connections_total++;
    /* Before anything is said on it: under TLS even a refusal is encrypted
     * (or, before the handshake, a plain close). */
    if (gw->tls && gr__tls_new(gw->tls, NULL, &c->tls) != 0) {
        gr__conn_close(c);
        return;
    }
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
        char ip[48] = "?";
        int port = 0;
        if (ss.ss_family == AF_INET) {
            uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        }
        snprintf(c->peer, sizeof c->peer, "%s:%d", ip, port);
    }
    c->accepted_ms = uv_now(gw->loop);
    if (gw->accepting && gw->stats.preauth_open > gw->opts.max_preauth_connections) {
        /* Full of connections that have not said HELLO: the oldest goes, not
         * the newest, so a flood of silent sockets cannot lock out a client
         * that says HELLO at once (it is never the oldest for long). */
        gr__gconn_t *old = NULL, *o, *tmp;
        HASH_ITER(hh, gw->conns, o, tmp)
        if (o != c && !o->hello_done && !o->closing && (!old || o->accepted_ms < old->accepted_ms)) old = o;
        gr__gw_refused(gw, GR__REFUSE_PREAUTH_LIMIT, old ? old->peer : c->peer,
                       "too many connections waiting for their HELLO: the oldest is closed");
        gr__conn_close(old ? old : c);
        if (!old) return;
    }
    if (!gw->accepting) {
        gw->stats.connections_refused++;
        gr__conn_goaway(c, GR_ESHUTDOWN, "silo is shutting down");
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_tcp_keepalive(&c->tcp, 1, 60);
    uv_read_start((uv_stream_t *)&c->tcp, gr__alloc_cb, gr__read_cb);
}

static void gr__sweep_cb(uv_timer_t *t) {
    gr__gateway_t *gw = t->data;
    uint64_t now = uv_now(gw->loop);
    gr__gconn_t *c, *tmp;
    HASH_ITER(hh, gw->conns, c, tmp) {
        if (c->closing) continue;
        if (!c->hello_done && now - c->accepted_ms >= gw->opts.handshake_timeout_ms) {
            gr__gw_refused(gw, GR__REFUSE_TIMEOUT, c->peer, "no handshake within the handshake timeout");
            gr__conn_close(c);
        } else if (c->partial_since && !c->paused && !c->budget_paused &&
                   now - c->partial_since >= gw->opts.frame_timeout_ms) {
            /* A peer dribbling a large frame cannot hold its buffer forever. */
            gw->stats.partial_frame_timeouts++;
            GR__LOG_WARN("closing %s: a frame stayed incomplete for %u ms", c->peer,
                         (unsigned)gw->opts.frame_timeout_ms);
            gr__conn_close(c);
        }
    }
}

/* ---- the gateway handle ---- */

int gr__gateway_new(uv_loop_t *loop, gr_runtime_t *rt, const gr__gateway_opts_t *o, gr__gateway_t **out) {
    gr__gateway_t *gw = gr__calloc(1, sizeof *gw);
    if (!gw) return GR_ENOMEM;
    gw->loop = loop;
    gw->rt = rt;
    gw->opts = *o;
    gw->cluster = gr__strdup(o->cluster);
    gw->secret = gr__strdup(o->secret ? o->secret : "");
    gw->silo_id = gr__strdup(o->silo_id);
    int want_silo_secret = o->silo_secret && o->silo_secret[0];
    if (want_silo_secret) gw->silo_secret = gr__strdup(o->silo_secret);
    int want_accept = o->accept_secret && o->accept_secret[0];
    int want_accept_silo = o->accept_silo_secret && o->accept_silo_secret[0];
    if (want_accept) gw->accept_secret = gr__strdup(o->accept_secret);
    if (want_accept_silo) gw->accept_silo_secret = gr__strdup(o->accept_silo_secret);
    /* Fail closed: a silo secret that could not be copied must not leave
     * the silo role open to clients. */
    if (!gw->cluster || !gw->secret || !gw->silo_id || (want_silo_secret && !gw->silo_secret) ||
        (want_accept && !gw->accept_secret) || (want_accept_silo && !gw->accept_silo_secret)) {
        gr__free(gw->accept_secret);
        gr__free(gw->accept_silo_secret);
        gr__free(gw->cluster);
        gr__free(gw->secret);
        gr__free(gw->silo_id);
        gr__free(gw->silo_secret);
        gr__free(gw);
        return GR_ENOMEM;
    }
    gw->opts.cluster = gw->opts.secret = gw->opts.silo_id = gw->opts.silo_secret = NULL;
    gw->opts.accept_secret = gw->opts.accept_silo_secret = NULL;
    gw->opts.tls = NULL;
    if (o->tls) gr__tls_ctx_ref(o->tls);
    gw->tls = o->tls;
    if (!gw->opts.max_preauth_connections) gw->opts.max_preauth_connections = 256;
    if (!gw->opts.frame_timeout_ms) gw->opts.frame_timeout_ms = 10000;
    if (!gw->opts.max_conn_bytes) gw->opts.max_conn_bytes = 64u << 20;
    if (!gw->opts.max_buffered_bytes) gw->opts.max_buffered_bytes = 256u << 20;
    uv_tcp_init(loop, &gw->listener);
    gw->listener.data = gw;
    gr__flusher_init(loop, &gw->flusher, gr__gw_flush, gw);
    uv_timer_init(loop, &gw->sweeper);
    gw->sweeper.data = gw;
    uint32_t shortest = gw->opts.frame_timeout_ms < o->handshake_timeout_ms ? gw->opts.frame_timeout_ms
                                                                            : o->handshake_timeout_ms;
    uint32_t every = shortest / 4 ? shortest / 4 : 1;
    uv_timer_start(&gw->sweeper, gr__sweep_cb, every, every);
    uv_unref((uv_handle_t *)&gw->sweeper);
    gw->open_handles = 3;
    *out = gw;
    return 0;
}

int gr__gateway_listen(gr__gateway_t *gw, const char *host, int port, char *err, size_t err_size) {
    struct sockaddr_storage ss;
    if (gr__make_addr(host, port, &ss) != 0) {
        snprintf(err, err_size, "listen address '%s' is not a numeric IPv4/IPv6 address", host);
        return GR_ECONFIG;
    }
    int rc = uv_tcp_bind(&gw->listener, (struct sockaddr *)&ss, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&gw->listener, 511, gr__on_connection);
    if (rc != 0) {
        snprintf(err, err_size, "cannot listen on %s:%d: %s", host, port, uv_strerror(rc));
        return GR_EIO;
    }
    struct sockaddr_storage bound;
    int bl = sizeof bound;
    uv_tcp_getsockname(&gw->listener, (struct sockaddr *)&bound, &bl);
    gw->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                 : ((struct sockaddr_in *)&bound)->sin_port);
    gw->listening = 1;
    gw->accepting = 1;
    return 0;
}

int gr__gateway_port(const gr__gateway_t *gw) { return gw->port; }

void gr__gateway_set_tls(gr__gateway_t *gw, gr__tls_ctx_t *ctx) {
    gr__tls_ctx_ref(ctx);
    gr__tls_ctx_unref(gw->tls);
    gw->tls = ctx;
}

void gr__gateway_stop_accepting(gr__gateway_t *gw) { gw->accepting = 0; }

void gr__gateway_get_stats(const gr__gateway_t *gw, gr__gateway_stats_t *out) { *out = gw->stats; }

static void gr__gw_maybe_shutdown_done(gr__gateway_t *gw) {
    if (!gw->shutdown_cb || gw->stats.connections_open != 0) return;
    void (*cb)(void *) = gw->shutdown_cb;
    gw->shutdown_cb = NULL;
    cb(gw->shutdown_ud);
}

void gr__gateway_shutdown(gr__gateway_t *gw, void (*cb)(void *), void *ud) {
    gw->accepting = 0;
    gw->shutdown_cb = cb;
    gw->shutdown_ud = ud;
    gw->shutting_down = 1;
    /* Take no new requests, or a steady stream of them would keep "calls in
     * flight" above zero forever (the chaos harness found this): unread
     * requests fail with a retryable GR_ECONN when the connection closes,
     * and clients retry them on another silo. */
    gr__gconn_t *c, *tmp;
    HASH_ITER(hh, gw->conns, c, tmp) if (!c->closing) uv_read_stop((uv_stream_t *)&c->tcp);
    gr__gw_shutdown_step(gw);
}

/* Replies still owed are delivered before the connections go. */
static void gr__gw_shutdown_step(gr__gateway_t *gw) {
    if (!gw->shutting_down || gw->stats.inflight > 0) {
        gr__gw_maybe_shutdown_done(gw);
        return;
    }
    gw->shutting_down = 0;
    gr__gconn_t *c, *tmp;
    HASH_ITER(hh, gw->conns, c, tmp) {
        gr__conn_goaway(c, GR_ESHUTDOWN, "silo is shutting down");
        /* Not yet reachable while the GOAWAY just queued waits for its flush
         * (gr__conn_written closes then); kept for a connection that could
         * not queue it (closing already). */
        if (c->out.len == 0 && c->tcp.write_queue_size == 0 && !c->flush.queued) gr__conn_close(c);
    }
    /* Internal contract: with no connection open, cb runs right here. */
    gr__gw_maybe_shutdown_done(gw);
}

static void gr__gw_handle_gone(gr__gateway_t *gw) {
    if (--gw->open_handles != 0 || !gw->closing) return;
    void (*cb)(void *) = gw->close_cb;
    void *ud = gw->close_ud;
    gr__free(gw->cluster);
    gr__free(gw->secret);
    gr__free(gw->silo_id);
    gr__free(gw->silo_secret);
    gr__free(gw->accept_secret);
    gr__free(gw->accept_silo_secret);
    gr__tls_ctx_unref(gw->tls);
    gr__free(gw);
    if (cb) cb(ud);
}

static void gr__handle_closed(uv_handle_t *h) { gr__gw_handle_gone(h->data); }
static void gr__flusher_closed(uv_handle_t *h) {
    gr__gw_handle_gone(GR__CONTAINER_OF(h, gr__gateway_t, flusher.prepare));
}

void gr__gateway_close(gr__gateway_t *gw, void (*cb)(void *), void *ud) {
    assert(!gw->closing);
    gw->closing = 1;
    gw->close_cb = cb;
    gw->close_ud = ud;
    gw->shutdown_cb = NULL;
    gr__gconn_t *c, *tmp;
    HASH_ITER(hh, gw->conns, c, tmp) gr__conn_close(c);
    uv_close((uv_handle_t *)&gw->listener, gr__handle_closed);
    gr__flusher_close(&gw->flusher, gr__flusher_closed);
    uv_close((uv_handle_t *)&gw->sweeper, gr__handle_closed);
}
