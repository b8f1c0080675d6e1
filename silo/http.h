/* silo/http.h - a minimal HTTP/1.1 server for probes and metrics: GET and
 * HEAD only, one request per connection, bounded request size, connection
 * count and idle time. Not a general web server on purpose. */
#ifndef GR_SILO_HTTP_H
#define GR_SILO_HTTP_H

#include <uv.h>

#include "common/common.h"

typedef struct gr__http gr__http_t;

/* Fill body and *content_type for `path`; return the HTTP status. */
typedef int (*gr__http_handler)(void *ud, const char *path, gr__buf_t *body, const char **content_type);

int gr__http_new(uv_loop_t *loop, const char *host, int port, gr__http_handler handler, void *ud,
                 gr__http_t **out, char *err, size_t err_size);
int gr__http_port(const gr__http_t *h);
void gr__http_close(gr__http_t *h, void (*cb)(void *), void *ud);

#endif
