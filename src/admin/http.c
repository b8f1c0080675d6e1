/* src/admin/http.c - see http.h. HTTP/1.1 with keep-alive and pipelining: one
 * request of a connection is in the handler at a time, the next is parsed
 * only once it is answered, so answers leave in request order and what a
 * connection buffers is one request. A connection's next request is read
 * only while less than GR__HTTP_WRITE_HIGH of answers waits for the peer to
 * read, so a peer that pipelines and never reads cannot grow the silo.
 * Bounds: 8 KiB of request line and headers, GR__HTTP_MAX_BODY of body
 * (Content-Length only: no chunked uploads), 10 s for a whole request to
 * arrive, 5 s idle, at most 256 connections of which 192 may wait for a
 * call's answer; a new connection beyond 256 evicts the one idle the longest
 * (else the slowest half-received one), so neither idle nor dribbling
 * sockets can lock the probes out. A connection whose request is
 * being answered later (pending) outlives its socket until the answer
 * comes, so handlers never see a freed request. The parser is a pure
 * function (gr__http_parse), fuzzed by tests/silo/test_http.c. */
#include <stdio.h>
#include <strings.h>

#include "admin/http.h"
#include "wire/stream.h"

#define GR__HTTP_MAX_CONNS 256
#define GR__HTTP_MAX_PENDING 192 /* connections waiting for an answer: the rest stays for probes */
#define GR__HTTP_IDLE_MS 5000
#define GR__HTTP_REQUEST_MS 10000 /* a request must arrive whole within this */
#define GR__HTTP_WRITE_HIGH (64u * 1024u)

typedef struct gr__hconn {
    uv_tcp_t tcp;
    struct gr__http *h;
    struct gr__hconn *next, *prev;
    gr__buf_t in; /* bytes read; [0, off) are answered requests, dropped lazily */
    size_t off;
    gr__http_parsed_t req; /* the request in the handler (pending) */
    uint64_t req_started;  /* when the first byte of the request now arriving came (0: none) */
    char path[1024];
    uint64_t last_active;
    int pending;     /* handed to the handler, not answered yet */
    int tcp_closed;  /* socket closed: an answer is only freed */
    int close_after; /* Connection: close, HTTP/1.0, or an error: close once written */
    int eof;         /* the peer half-closed: answer what is buffered, then close */
    int writes;      /* in flight */
    int reading;
    int in_next; /* inside gr__hconn_next: an answer given now only records itself */
    uint64_t served;
    char extra[1024]; /* more header lines for the next answer (Set-Cookie, ...), or "" */
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
    int n_pending;
    uint64_t evicted; /* idle connections closed to make room */
    int open_handles;
    int closing;
    void (*close_cb)(void *);
    void *close_ud;
};

/* ---- the parser ---- */

static int gr__http_tchar(int ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

int gr__http_parse(const uint8_t *buf, size_t len, size_t max_body, gr__http_parsed_t *out) {
    memset(out, 0, sizeof *out);
    /* The head ends at the first empty line (CRLF CRLF, or bare LF LF). */
    size_t head = 0;
    for (size_t i = 0; i + 1 < len && i < GR__HTTP_MAX_HEAD; i++) {
        if (buf[i] == '\n' && buf[i + 1] == '\n') {
            head = i + 2;
            break;
        }
        if (buf[i] == '\n' && buf[i + 1] == '\r' && i + 2 < len && buf[i + 2] == '\n') {
            head = i + 3;
            break;
        }
    }
    if (!head) return len >= GR__HTTP_MAX_HEAD ? GR_ETOOBIG : GR__EAGAIN;
    /* Request line: METHOD SP TARGET SP HTTP/1.x */
    const uint8_t *p = buf, *end = buf + head;
    size_t ml = 0;
    while (p + ml < end && gr__http_tchar(p[ml]))
        ml++;
    if (ml == 0 || ml >= sizeof out->method || p[ml] != ' ') return GR_EPROTO;
    memcpy(out->method, p, ml);
    p += ml + 1;
    const uint8_t *t = p;
    while (p<end && * p> ' ' && *p < 0x7f)
        p++;
    if (p == t || (size_t)(p - t) >= GR__HTTP_MAX_TARGET || *p != ' ' || t[0] != '/') return GR_EPROTO;
    out->target = (const char *)t;
    out->target_len = (size_t)(p - t);
    p++;
    if (end - p < 9 || memcmp(p, GR__LIT("HTTP/1.")) != 0 || (p[7] != '0' && p[7] != '1')) return GR_EPROTO;
    out->http10 = p[7] == '0';
    p += 8;
    if (*p == '\r') p++;
    if (*p != '\n') return GR_EPROTO;
    p++;
    out->headers = (const char *)p;
    out->headers_len = (size_t)(end - p);
    /* Headers: NAME ":" VALUE lines; the ones that frame the message are read here. */
    int have_length = 0;
    uint64_t clen = 0;
    while (p < end && *p != '\r' && *p != '\n') {
        const uint8_t *ls = p;
        while (p < end && *p != '\n')
            p++;
        const uint8_t *le = p; /* at '\n' */
        p++;
        const uint8_t *colon = memchr(ls, ':', (size_t)(le - ls));
        if (!colon || colon == ls) return GR_EPROTO;
        for (const uint8_t *q = ls; q < colon; q++)
            if (!gr__http_tchar(*q)) return GR_EPROTO; /* no spaces before ':' (smuggling) */
        for (const uint8_t *q = colon + 1; q < le; q++)
            if (*q == 0 || (*q < 0x20 && *q != '\t' && !(*q == '\r' && q + 1 == le))) return GR_EPROTO;
        size_t nl = (size_t)(colon - ls);
        const uint8_t *v = colon + 1, *ve = le;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        if (nl == 14 && !strncasecmp((const char *)ls, GR__LIT("Content-Length"))) {
            if (have_length || v == ve) return GR_EPROTO; /* one, and a number */
            for (const uint8_t *q = v; q < ve; q++) {
                if (*q < '0' || *q > '9' || clen > (uint64_t)1 << 40) return GR_EPROTO;
                clen = clen * 10 + (uint64_t)(*q - '0');
            }
            have_length = 1;
        } else if (nl == 17 && !strncasecmp((const char *)ls, GR__LIT("Transfer-Encoding"))) {
            out->chunked = 1; /* refused by the caller: bodies come with Content-Length */
        } else if (nl == 10 && !strncasecmp((const char *)ls, GR__LIT("Connection"))) {
            size_t vl = (size_t)(ve - v);
            if (vl == 5 && !strncasecmp((const char *)v, GR__LIT("close"))) out->close = 1;
            if (vl == 10 && !strncasecmp((const char *)v, GR__LIT("keep-alive"))) out->keep_alive = 1;
        }
    }
    /* The loop stopped at the empty line that ends the head, and only there
     * (a line starting with CR would otherwise hide headers from framing). */
    if (!((p + 1 == end && p[0] == '\n') || (p + 2 == end && p[0] == '\r' && p[1] == '\n'))) return GR_EPROTO;
    if (out->chunked) {
        out->head_len = head;
        return 0;
    }
    out->head_len = head;
    if (clen > max_body) return GR_ETOOBIG;
    out->body_len = (size_t)clen;
    if (len - head < clen) return GR__EAGAIN;
    out->body = buf + head;
    return 0;
}

/* ---- connections ---- */

static void gr__http_handle_gone(gr__http_t *h) {
    if (--h->open_handles != 0 || !h->closing) return;
    void (*cb)(void *) = h->close_cb;
    void *ud = h->close_ud;
    gr__free(h);
    if (cb) cb(ud);
}

static void gr__hconn_free(gr__hconn_t *c) {
    gr__http_t *h = c->h;
    gr__buf_free(&c->in);
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

static void gr__hconn_next(gr__hconn_t *c);

static void gr__hconn_written(void *ud, int status) {
    gr__hconn_t *c = ud;
    c->writes--;
    if (uv_is_closing((uv_handle_t *)&c->tcp)) return;
    c->last_active = uv_now(c->h->loop);
    if (status < 0 || (c->close_after && c->writes == 0 && !c->pending)) {
        gr__hconn_close(c);
        return;
    }
    gr__hconn_next(c); /* the peer read: a pipelined request may go on */
}

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
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Error";
    }
}

static void gr__hconn_send(gr__hconn_t *c, int status, const void *body, size_t blen, const char *ctype,
                           int head) {
    gr__buf_t out;
    gr__buf_init(&out);
    int rc = gr__buf_printf(
        &out,
        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nCache-Control: no-store\r\n"
        "X-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\n%s%s%s\r\n",
        status, gr__reason(status), ctype, blen, c->extra, c->extra[0] ? "\r\n" : "",
        c->close_after ? "Connection: close\r\n" : "");
    c->extra[0] = '\0';
    if (rc == 0 && !head && blen) rc = gr__buf_append(&out, body, blen);
    /* One write per response, as every connection writes (wire/stream.h). */
    if (rc != 0 || gr__stream_write((uv_stream_t *)&c->tcp, NULL, &out, gr__hconn_written, c) != 1) {
        gr__buf_free(&out);
        gr__hconn_close(c);
        return;
    }
    c->writes++;
}

/* An answer the server gives itself (a request it will not hand over):
 * the connection closes after it, as the stream may be out of step. */
static void gr__hconn_refuse(gr__hconn_t *c, int status, const char *why) {
    c->close_after = 1;
    if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
    gr__hconn_send(c, status, why, strlen(why), "text/plain; charset=utf-8", 0);
}

static void gr__hconn_alloc(uv_handle_t *hd, size_t s, uv_buf_t *b);
static void gr__hconn_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b);

/* Drop answered requests from the front of the buffer, and give back the
 * memory of a large one once it is gone. */
static void gr__hconn_compact(gr__hconn_t *c) {
    if (!c->off) return;
    gr__buf_consume(&c->in, c->off);
    c->off = 0;
    if (c->in.cap > 256u * 1024u && c->in.len <= 16u * 1024u) {
        gr__buf_t small;
        gr__buf_init(&small);
        if (gr__buf_append(&small, c->in.len ? c->in.data : (const uint8_t *)"", c->in.len ? c->in.len : 0) ==
            0) {
            gr__buf_free(&c->in);
            c->in = small;
        }
    }
}

/* Parse what is buffered, one request at a time: hand a whole request to
 * the handler, or wait for more bytes, or refuse. A loop, not recursion: a
 * handler that answers at once only records it (in_next), and the loop goes
 * on with the next pipelined request, so thousands of them cannot exhaust
 * the stack. */
static void gr__hconn_next(gr__hconn_t *c) {
    if (c->in_next) return;
    c->in_next = 1;
    while (!c->pending && !c->tcp_closed && !uv_is_closing((uv_handle_t *)&c->tcp) && !c->close_after) {
        if (c->tcp.write_queue_size > GR__HTTP_WRITE_HIGH) {
            /* The peer does not read its answers: read nothing more until
             * it does (gr__hconn_written resumes). */
            if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp);
            c->reading = 0;
            break;
        }
        gr__http_parsed_t r;
        size_t avail = c->in.len - c->off;
        int rc = avail ? gr__http_parse(c->in.data + c->off, avail, GR__HTTP_MAX_BODY, &r) : GR__EAGAIN;
        if (rc == GR__EAGAIN) {
            gr__hconn_compact(c);
            if (!c->in.len)
                c->req_started = 0;
            else if (!c->req_started) /* the part of a pipelined request that came with the last one */
                c->req_started = uv_now(c->h->loop);
            if (c->eof) {
                /* Half-closed: nothing more will come; close once answered. */
                c->close_after = 1;
                if (!c->writes) gr__hconn_close(c);
            } else if (!c->reading &&
                       uv_read_start((uv_stream_t *)&c->tcp, gr__hconn_alloc, gr__hconn_read) == 0) {
                c->reading = 1;
            }
            break;
        }
        if (rc == GR_ETOOBIG) {
            gr__hconn_refuse(c, r.head_len ? 413 : 431,
                             r.head_len ? "request body over the limit\n" : "request head over 8 KiB\n");
            break;
        }
        if (rc != 0) {
            gr__hconn_refuse(c, 400, "malformed request\n");
            break;
        }
        if (r.chunked) {
            gr__hconn_refuse(c, 411,
                             "send the body with Content-Length (chunked uploads are not accepted)\n");
            break;
        }
        int get = !strcmp(r.method, "GET"), head = !strcmp(r.method, "HEAD"),
            post = !strcmp(r.method, "POST");
        if (!get && !head && !post) {
            gr__hconn_refuse(c, 405, "GET, HEAD or POST\n");
            break;
        }
        if (r.target_len >= sizeof c->path) {
            gr__hconn_refuse(c, 414, "request target too long\n");
            break;
        }
        if (post && c->h->n_pending >= GR__HTTP_MAX_PENDING) {
            /* Calls that wait for grains must leave room for the probes. */
            gr__http_add_header(c, "Retry-After: 1");
            gr__hconn_refuse(c, 503, "too many HTTP calls in progress on this silo; retry\n");
            break;
        }
        memcpy(c->path, r.target, r.target_len);
        c->path[r.target_len] = '\0';
        char *q = strchr(c->path, '?');
        if (q) *q++ = '\0';
        c->req = r;
        c->req_started = 0;
        c->close_after = r.close || (r.http10 && !r.keep_alive);
        c->pending = 1;
        c->h->n_pending++;
        c->last_active = uv_now(c->h->loop);
        if (c->reading) uv_read_stop((uv_stream_t *)&c->tcp); /* one request at a time */
        c->reading = 0;
        c->h->handler(c->h->ud, c, c->path, q ? q : "");
    }
    c->in_next = 0;
}

void gr__http_respond(gr__http_req_t *c, int status, const char *ctype, const void *body, size_t len) {
    c->pending = 0;
    c->h->n_pending--;
    if (c->tcp_closed) {
        gr__hconn_free(c);
        return;
    }
    int head = !strcmp(c->req.method, "HEAD");
    gr__hconn_send(c, status, body, len, ctype, head);
    c->served++;
    c->last_active = uv_now(c->h->loop);
    c->off += c->req.head_len + c->req.body_len;
    memset(&c->req, 0, sizeof c->req);
    if (c->close_after) {
        if (!c->writes) gr__hconn_close(c);
        return;
    }
    gr__hconn_next(c); /* a pipelined request may be waiting (a no-op inside the loop) */
}

const char *gr__http_method(const gr__http_req_t *c) { return c->req.method; }

const uint8_t *gr__http_body(const gr__http_req_t *c, size_t *len) {
    *len = c->req.body_len;
    return c->req.body;
}

int gr__http_header(const gr__http_req_t *c, const char *name, char *out, size_t size) {
    size_t nl = strlen(name);
    const char *p = c->req.headers, *end = p ? p + c->req.headers_len : NULL;
    while (p && p < end && *p != '\r' && *p != '\n') {
        const char *le = memchr(p, '\n', (size_t)(end - p));
        if (!le) le = end;
        if ((size_t)(le - p) > nl && p[nl] == ':' && !strncasecmp(p, name, nl)) {
            const char *v = p + nl + 1, *ve = le;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            size_t n = (size_t)(ve - v);
            if (n + 1 > size) return -1;
            memcpy(out, v, n);
            out[n] = '\0';
            return (int)n;
        }
        p = le + 1;
    }
    return -1;
}

int gr__http_add_header(gr__http_req_t *c, const char *line) {
    size_t n = strlen(line);
    if (n + 1 > sizeof c->extra || strpbrk(line, "\r\n")) return GR_EINVAL;
    if (c->extra[0]) { /* another line: CRLF between them */
        size_t have = strlen(c->extra);
        if (have + 2 + n + 1 > sizeof c->extra) return GR_EINVAL;
        memcpy(c->extra + have, GR__LIT("\r\n"));
        memcpy(c->extra + have + 2, line, n + 1);
        return 0;
    }
    memcpy(c->extra, line, n + 1);
    return 0;
}

static int gr__hexval(int ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

int gr__http_pct_decode(const char *s, size_t n, uint8_t *out, size_t size) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int ch = (unsigned char)s[i];
        if (ch == '%') {
            int hi = i + 1 < n ? gr__hexval(s[i + 1]) : -1, lo = i + 2 < n ? gr__hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0) return -1;
            ch = hi * 16 + lo;
            i += 2;
        }
        if (o >= size) return -1;
        out[o++] = (uint8_t)ch;
    }
    return (int)o;
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
    /* Never more than one request's worth (head + largest body) buffered. */
    size_t limit = c->off + GR__HTTP_MAX_HEAD + 4 + GR__HTTP_MAX_BODY;
    size_t want = c->in.len < limit ? limit - c->in.len : 0;
    if (want > 65536) want = 65536;
    if (!want || gr__buf_reserve(&c->in, want) != 0) {
        *b = uv_buf_init(NULL, 0);
        return;
    }
    *b = uv_buf_init((char *)c->in.data + c->in.len, (unsigned)want);
}

static void gr__hconn_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    gr__hconn_t *c = s->data;
    if (n == UV_EOF) {
        /* A half-close: what was sent is still answered, then we close. */
        c->eof = 1;
        uv_read_stop(s);
        c->reading = 0;
        gr__hconn_next(c);
        return;
    }
    if (n < 0) {
        gr__hconn_close(c);
        return;
    }
    if (n == 0) return;
    if (c->in.len == c->off && !c->req_started) c->req_started = uv_now(c->h->loop);
    c->in.len += (size_t)n;
    c->last_active = uv_now(c->h->loop);
    gr__hconn_next(c);
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
    c->last_active = uv_now(h->loop);
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
        /* Full: the connection idle the longest goes (no request in the
         * handler, none half-received): 64 idle sockets starved the probes
         * for 15 s before. A probe sends its request at once, so it is
         * never the one waiting. */
        gr__hconn_t *victim = NULL;
        for (gr__hconn_t *o = h->conns; o; o = o->next)
            if (o != c && !o->pending && o->in.len == o->off && !uv_is_closing((uv_handle_t *)&o->tcp) &&
                (!victim || o->last_active <= victim->last_active))
                victim = o;
        for (gr__hconn_t *o = h->conns; !victim && o; o = o->next) /* else the slowest half-received */
            if (o != c && !o->pending && o->req_started && !uv_is_closing((uv_handle_t *)&o->tcp) &&
                (!victim || o->req_started <= victim->req_started))
                victim = o;
        if (!victim) {
            gr__hconn_close(c);
            return;
        }
        h->evicted++;
        gr__hconn_close(victim);
    }
    uv_tcp_nodelay(&c->tcp, 1);
    gr__hconn_next(c);
}

static void gr__http_sweep(uv_timer_t *t) {
    gr__http_t *h = t->data;
    uint64_t now = uv_now(h->loop);
    for (gr__hconn_t *c = h->conns; c; c = c->next) {
        if (c->pending) continue;
        if (c->req_started && now - c->req_started > GR__HTTP_REQUEST_MS)
            gr__hconn_close(c); /* dribbling a request (slowloris) holds a slot no longer */
        else if (now - c->last_active > GR__HTTP_IDLE_MS)
            gr__hconn_close(c); /* idle, or an answer the peer has not read for 5 s */
    }
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
    if (rc == 0) rc = uv_listen((uv_stream_t *)&h->listener, 128, gr__http_accept);
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
