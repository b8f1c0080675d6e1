/* silo/http.h - a minimal HTTP/1.1 server for probes, metrics and the
 * dashboard: GET and HEAD only, one request per connection, bounded request
 * size, connection count and idle time. Not a general web server on purpose. */
#ifndef GR_SILO_HTTP_H
#define GR_SILO_HTTP_H

#include <uv.h>

#include "common/common.h"

typedef struct gr__http gr__http_t;
typedef struct gr__hconn gr__http_req_t;

/* A request for `path` with its raw query string ("" if none; both valid
 * during the call only). The handler answers with gr__http_respond(), now
 * or later from another callback, exactly once. */
typedef void (*gr__http_handler)(void *ud, gr__http_req_t *req, const char *path, const char *query);

/* Answer a request (body copied). If the client went away meanwhile the
 * answer is dropped; either way `req` is gone afterwards. */
void gr__http_respond(gr__http_req_t *req, int status, const char *content_type, const void *body,
                      size_t len);

/* Query parameter `name`, percent- and '+'-decoded into out (NUL-terminated):
 * its length, or -1 when missing, malformed or longer than size-1. */
int gr__http_query_param(const char *query, const char *name, char *out, size_t size);

/* The value of request header `name` (case-insensitive), trimmed, copied to
 * out; its length, or -1 if absent or longer than size - 1. */
int gr__http_header(const gr__http_req_t *req, const char *name, char *out, size_t size);

/* One more header line for the answer (no CR/LF, < 320 bytes): 0 or GR_EINVAL. */
int gr__http_add_header(gr__http_req_t *req, const char *line);

/* Connections closed because the limit was reached and they were idle. */
uint64_t gr__http_evicted(const gr__http_t *h);

int gr__http_new(uv_loop_t *loop, const char *host, int port, gr__http_handler handler, void *ud,
                 gr__http_t **out, char *err, size_t err_size);
int gr__http_port(const gr__http_t *h);
void gr__http_close(gr__http_t *h, void (*cb)(void *), void *ud);

#endif
