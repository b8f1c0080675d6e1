/* silo/http.c - see http.h. Requests larger than 8 KiB, methods other than
 * GET/HEAD and connections idle for 5 s are refused; at most 64 connections,
 * and a new connection beyond that evicts the oldest one still waiting for
 * its request, so idle sockets can never lock the probes out.
 * A connection whose request is being answered later (pending) outlives its
 * socket until the answer comes, so handlers never see a freed request. */
#include <stdio.h>
#include <strings.h>

#include "silo/http.h"

#define GR__HTTP_MAX_REQUEST 8192
#define GR__HTTP_MAX_CONNS 64
#define GR__HTTP_IDLE_MS 5000

typedef struct gr__hconn {
    uv_tcp_t tcp;
    struct gr__http *h;
    struct gr__hconn *next, *prev;
    char req[GR__HTTP_MAX_REQUEST];
    size_t len;
    uint64_t opened;
    int responded;
    int pending;    /* handed to the handler, not answered yet */
    int tcp_closed; /* socket closed: an answer is only freed */
    int head;
    int request_seen; /* a whole request arrived (not idle) */
    char extra[320];  /* one more header line for the answer (Set-Cookie), or "" */
    uv_write_t w;
    gr__buf_t out;
} gr__hconn_t;

struct gr__http {
    uv_loop_t *loop;
    uv_tcp_t listener;
    uv_timer_t sweep;
    gr__http_handler handler;
    void *ud;
    int port;
    gr__hconn_t *conns;
    int n_conns;
    uint64_t evicted; /* idle connections closed to make room */
    int open_handles;
    int closing;
    void (*close_cb)(void *);
    void *close_ud;
};

static void gr__http_handle_gone(gr__http_t *h) {
    if (--h->open_handles != 0 || !h->closing) return;
    void (*cb)(void *) = h->close_cb;
    void *ud = h->close_ud;
    gr__free(h);
    if (cb) cb(ud);
}

static void gr__hconn_free(gr__hconn_t *c) {
    gr__http_t *h = c->h;
    gr__buf_free(&c->out);
    gr__free(c);
    gr__http_handle_gone(h);
}

static void gr__hconn_closed(uv_handle_t *hd) {
    gr__hconn_t *c = hd->data;
    gr__http_t *h = c->h;
    if (c->prev)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    h->n_conns--;
    c->tcp_closed = 1;
    if (!c->pending) gr__hconn_free(c);
}

static void gr__hconn_close(gr__hconn_t *c) {
    if (!uv_is_closing((uv_handle_t *)&c->tcp)) uv_close((uv_handle_t *)&c->tcp, gr__hconn_closed);
}

static void gr__hconn_written(uv_write_t *w, int status) { gr__hconn_close(w->data); }

static const char *gr__reason(int status) {
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 413:
        return "Request Too Large";
    case 503:
        return "Service Unavailable";
    default:
        return "Error";
    }
}

static void gr__hconn_respond(gr__hconn_t *c, int status, const void *body, size_t blen, const char *ctype,
                              int head) {
    c->responded = 1;
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (gr__buf_printf(
            &c->out,
            "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nCache-Control: no-store\r\n"
            "X-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\n%s%s"
            "Connection: close\r\n\r\n",
            status, gr__reason(status), ctype, blen, c->extra, c->extra[0] ? "\r\n" : "") != 0 ||
        (!head && blen && gr__buf_append(&c->out, body, blen) != 0)) {
        gr__hconn_close(c);
        return;
    }
    uv_buf_t b = uv_buf_init((char *)c->out.data, (unsigned)c->out.len);
    c->w.data = c;
    if (uv_write(&c->w, (uv_stream_t *)&c->tcp, &b, 1, gr__hconn_written) != 0) gr__hconn_close(c);
}

static void gr__hconn_request(gr__hconn_t *c) {
    /* Request line: METHOD SP PATH SP HTTP/x.y */
    char method[8], path[256];
    c->req[c->len] = '\0';
    if (sscanf(c->req, "%7s %255s HTTP/", method, path) != 2) {
        gr__hconn_respond(c, 400, NULL, 0, "text/plain", 0);
        return;
    }
    int head = !strcmp(method, "HEAD");
    if (!head && strcmp(method, "GET") != 0) {
        gr__hconn_respond(c, 405, NULL, 0, "text/plain", 0);
        return;
    }
    char *q = strchr(path, '?');
    if (q) *q++ = '\0';
    c->head = head;
    c->request_seen = 1;
    c->pending = 1;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->h->handler(c->h->ud, c, path, q ? q : "");
}

void gr__http_respond(gr__http_req_t *c, int status, const char *ctype, const void *body, size_t len) {
    c->pending = 0;
    if (c->tcp_closed) {
        gr__hconn_free(c);
        return;
    }
    gr__hconn_respond(c, status, body, len, ctype, c->head);
}

int gr__http_header(const gr__http_req_t *c, const char *name, char *out, size_t size) {
    size_t nl = strlen(name);
    /* Header lines follow the request line; stop at the blank line. */
    const char *p = strchr(c->req, '\n');
    while (p && *++p && *p != '\r' && *p != '\n') {
        const char *end = strchr(p, '\n');
        if (!end) end = p + strlen(p);
        if ((size_t)(end - p) > nl && p[nl] == ':' && !strncasecmp(p, name, nl)) {
            const char *v = p + nl + 1;
            while (v < end && (*v == ' ' || *v == '\t'))
                v++;
            const char *ve = end;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            size_t n = (size_t)(ve - v);
            if (n + 1 > size) return -1;
            memcpy(out, v, n);
            out[n] = '\0';
            return (int)n;
        }
        p = *end ? end : NULL;
    }
    return -1;
}

int gr__http_add_header(gr__http_req_t *c, const char *line) {
    size_t n = strlen(line);
    if (n + 1 > sizeof c->extra || strpbrk(line, "\r\n")) return GR_EINVAL;
    memcpy(c->extra, line, n + 1);
    return 0;
}

static int gr__hexval(int ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

int gr__http_query_param(const char *query, const char *name, char *out, size_t size) {
    size_t nl = strlen(name);
    for (const char *p = query; p && *p;) {
        const char *end = strchr(p, '&');
        if (!end) end = p + strlen(p);
        if ((size_t)(end - p) >= nl && !strncmp(p, name, nl) && (p[nl] == '=' || p + nl == end)) {
            const char *v = p[nl] == '=' ? p + nl + 1 : end;
            size_t n = 0;
            while (v < end) {
                int ch = (unsigned char)*v++;
                if (ch == '+') {
                    ch = ' ';
                } else if (ch == '%') {
                    int hi = v < end ? gr__hexval(v[0]) : -1, lo = v + 1 < end ? gr__hexval(v[1]) : -1;
                    if (hi < 0 || lo < 0) return -1;
                    ch = hi * 16 + lo;
                    v += 2;
                }
                if (n + 1 >= size) return -1;
                out[n++] = (char)ch;
            }
            out[n] = '\0';
            return (int)n;
        }
        p = *end ? end + 1 : end;
    }
    return -1;
}

static void gr__hconn_alloc(uv_handle_t *hd, size_t s, uv_buf_t *b) {
    gr__hconn_t *c = hd->data;
    *b = uv_buf_init(c->req + c->len, (unsigned)(GR__HTTP_MAX_REQUEST - 1 - c->len));
}

static void gr__hconn_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    gr__hconn_t *c = s->data;
    if (n < 0) {
        gr__hconn_close(c);
        return;
    }
    c->len += (size_t)n;
    c->req[c->len] = '\0';
    if (strstr(c->req, "\r\n\r\n") || strstr(c->req, "\n\n")) {
        gr__hconn_request(c);
    } else if (c->len >= GR__HTTP_MAX_REQUEST - 1) {
        gr__hconn_respond(c, 413, NULL, 0, "text/plain", 0);
    }
}

static void gr__http_handle_closed(uv_handle_t *hd) { gr__http_handle_gone(hd->data); }

static void gr__http_accept(uv_stream_t *server, int status) {
    gr__http_t *h = server->data;
    if (status < 0) return;
    gr__hconn_t *c = gr__calloc(1, sizeof *c);
    if (!c) return;
    c->h = h;
    uv_tcp_init(h->loop, &c->tcp);
    c->tcp.data = c;
    c->opened = uv_now(h->loop);
    c->next = h->conns;
    if (h->conns) h->conns->prev = c;
    h->conns = c;
    h->n_conns++;
    h->open_handles++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        gr__hconn_close(c);
        return;
    }
    if (h->n_conns > GR__HTTP_MAX_CONNS) {
        /* Full: the oldest connection that has not sent a request yet goes
         * (64 idle sockets starved the probes for 15 s before). A probe
         * sends its request at once, so it is never the one waiting. */
        gr__hconn_t *victim = NULL;
        for (gr__hconn_t *o = h->conns; o; o = o->next)
            if (o != c && !o->request_seen && !uv_is_closing((uv_handle_t *)&o->tcp) &&
                (!victim || o->opened <= victim->opened))
                victim = o;
        if (!victim) {
            gr__hconn_close(c);
            return;
        }
        h->evicted++;
        gr__hconn_close(victim);
    }
    uv_read_start((uv_stream_t *)&c->tcp, gr__hconn_alloc, gr__hconn_read);
}

static void gr__http_sweep(uv_timer_t *t) {
    gr__http_t *h = t->data;
    uint64_t now = uv_now(h->loop);
    for (gr__hconn_t *c = h->conns; c; c = c->next)
        if (!c->responded && now - c->opened > GR__HTTP_IDLE_MS) gr__hconn_close(c);
}

int gr__http_new(uv_loop_t *loop, const char *host, int port, gr__http_handler handler, void *ud,
                 gr__http_t **out, char *err, size_t err_size) {
    struct sockaddr_storage ss;
    if (gr__make_addr(host, port, &ss) != 0) {
        snprintf(err, err_size, "http address '%s' is not a numeric IPv4/IPv6 address", host);
        return GR_ECONFIG;
    }
    gr__http_t *h = gr__calloc(1, sizeof *h);
    if (!h) return GR_ENOMEM;
    h->loop = loop;
    h->handler = handler;
    h->ud = ud;
    uv_tcp_init(loop, &h->listener);
    h->listener.data = h;
    uv_timer_init(loop, &h->sweep);
    h->sweep.data = h;
    h->open_handles = 2;
    int rc = uv_tcp_bind(&h->listener, (struct sockaddr *)&ss, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&h->listener, 64, gr__http_accept);
    if (rc != 0) {
        snprintf(err, err_size, "cannot listen for HTTP on %s:%d: %s", host, port, uv_strerror(rc));
        /* Freed by the close callbacks on the next loop turn. */
        h->closing = 1;
        uv_close((uv_handle_t *)&h->listener, gr__http_handle_closed);
        uv_close((uv_handle_t *)&h->sweep, gr__http_handle_closed);
        return GR_EIO;
    }
    struct sockaddr_storage bound;
    int bl = sizeof bound;
    uv_tcp_getsockname(&h->listener, (struct sockaddr *)&bound, &bl);
    h->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);
    uv_timer_start(&h->sweep, gr__http_sweep, 1000, 1000);
    uv_unref((uv_handle_t *)&h->sweep);
    *out = h;
    return 0;
}

int gr__http_port(const gr__http_t *h) { return h->port; }
uint64_t gr__http_evicted(const gr__http_t *h) { return h->evicted; }

void gr__http_close(gr__http_t *h, void (*cb)(void *), void *ud) {
    h->closing = 1;
    h->close_cb = cb;
    h->close_ud = ud;
    for (gr__hconn_t *c = h->conns; c; c = c->next)
        gr__hconn_close(c);
    uv_close((uv_handle_t *)&h->listener, gr__http_handle_closed);
    uv_close((uv_handle_t *)&h->sweep, gr__http_handle_closed);
}
