/* src/admin/http.h - the silo's small HTTP/1.1 server: probes, metrics, the
 * dashboard and the grain-call API (docs/http-api.md). GET, HEAD and POST
 * with a Content-Length body; keep-alive and pipelining (answers in request
 * order); bounded request size, connection count and idle time. Not a
 * general web server on purpose. */
#ifndef GR_SILO_HTTP_H
#define GR_SILO_HTTP_H

#include <uv.h>

#include "base/base.h"

typedef struct gr__http gr__http_t;
typedef struct gr__hconn gr__http_req_t;

#define GR__HTTP_MAX_HEAD 8192u                /* request line and headers */
#define GR__HTTP_MAX_TARGET 1024u              /* path and query */
#define GR__HTTP_MAX_BODY (GR_ARG_MAX + 1024u) /* a call's argument, as on the wire */

/* One parsed request; pointers borrow from the buffer given to the parser. */
typedef struct gr__http_parsed {
    char method[8];
    const char *target; /* path and query, not NUL-terminated */
    size_t target_len;
    const char *headers; /* the header lines, up to and including the empty line */
    size_t headers_len;
    const uint8_t *body;
    size_t body_len;
    size_t head_len; /* bytes of request line and headers */
    int http10, close, keep_alive, chunked;
} gr__http_parsed_t;

/* Parse one request from the front of buf[0..len). Pure: no allocation, no
 * state (fuzzed by tests/silo/test_http.c). Returns 0 (the whole request,
 * head and body, is there: it is head_len + body_len bytes; with `chunked`
 * set only the head was parsed), GR__EAGAIN (more bytes needed), GR_ETOOBIG
 * (head over GR__HTTP_MAX_HEAD, or a Content-Length over max_body: then
 * head_len is set), or GR_EPROTO (malformed: bad request line, a header
 * without a name or with control bytes, two or non-numeric Content-Length). */
int gr__http_parse(const uint8_t *buf, size_t len, size_t max_body, gr__http_parsed_t *out);

/* Percent-decode s[0..n) into out (at most size bytes; any byte value):
 * the decoded length, or -1 if malformed or too long. */
int gr__http_pct_decode(const char *s, size_t n, uint8_t *out, size_t size);

/* A request for `path` with its raw query string ("" if none; both valid
 * during the call only). The handler answers with gr__http_respond(), now
 * or later from another callback, exactly once. */
typedef void (*gr__http_handler)(void *ud, gr__http_req_t *req, const char *path, const char *query);

/* Answer a request (body copied). If the client went away meanwhile the
 * answer is dropped; either way `req` is gone afterwards. */
void gr__http_respond(gr__http_req_t *req, int status, const char *content_type, const void *body,
                      size_t len);

/* The request's method ("GET", "HEAD", "POST") and body (len 0: none);
 * valid until it is answered. */
const char *gr__http_method(const gr__http_req_t *req);
const uint8_t *gr__http_body(const gr__http_req_t *req, size_t *len);

/* Query parameter `name`, percent- and '+'-decoded into out (NUL-terminated):
 * its length, or -1 when missing, malformed or longer than size-1. */
int gr__http_query_param(const char *query, const char *name, char *out, size_t size);

/* The value of request header `name` (case-insensitive), trimmed, copied to
 * out; its length, or -1 if absent or longer than size - 1. */
int gr__http_header(const gr__http_req_t *req, const char *name, char *out, size_t size);

/* One more header line for the answer (no CR/LF; two at most, < 320 bytes
 * together): 0 or GR_EINVAL. */
int gr__http_add_header(gr__http_req_t *req, const char *line);

/* Connections closed because the limit was reached and they were idle. */
uint64_t gr__http_evicted(const gr__http_t *h);

int gr__http_new(uv_loop_t *loop, const char *host, int port, gr__http_handler handler, void *ud,
                 gr__http_t **out, char *err, size_t err_size);
int gr__http_port(const gr__http_t *h);
void gr__http_close(gr__http_t *h, void (*cb)(void *), void *ud);

#endif
