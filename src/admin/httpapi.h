/* src/admin/httpapi.h - the grain-call API on the HTTP port (docs/http-api.md). */
#ifndef GR_SILO_HTTPAPI_H
#define GR_SILO_HTTPAPI_H

#include "runtime/runtime.h"
#include "admin/http.h"
#include "cluster/router.h"

typedef struct gr__httpapi_env {
    gr_runtime_t *rt;
    gr__router_t *router; /* NULL: one silo (memory mode) */
    const char *silo_id;
} gr__httpapi_env_t;

/* Answer a request under /v1/ (1), or leave it (0: not an API path). The
 * caller has checked the token and Host already. */
int gr__httpapi_handle(const gr__httpapi_env_t *env, gr__http_req_t *req, const char *path);

#endif
