/* src/admin/httpapi.c - the grain-call API on the HTTP port (docs/http-api.md):
 *   POST /v1/grains/{class}/{key}/{method}   body = argument, answer = reply
 *   GET  /v1/grains/{class}/{key}            where the grain is active
 *   GET  /v1/openapi.json                    this API, described
 * A call goes through the silo's runtime like a call from the binary
 * protocol: any silo accepts any grain (the router sends it on), with the
 * Idempotency-Key and Granary-Timeout-Ms headers as the call's options.
 * Errors are JSON {"error": "GR_...", "message": "..."} with a status that
 * says what to do (4xx: fix the request, 429/503 with Retry-After: retry,
 * 504: the outcome is unknown, retry with the same Idempotency-Key). */
#include <stdio.h>
#include <stdlib.h>

#include "admin/httpapi.h"

static const char gr__json[] = "application/json";

/* Status and Retry-After for a call's error (docs/http-api.md). */
static int gr__http_status_of(int err, int *retry_after) {
    *retry_after = 0;
    switch (err) {
    case GR_ENOCLASS:
    case GR_ENOMETHOD:
        return 404;
    case GR_ETOOBIG:
        return 413;
    case GR_EINVAL:
    case GR_EPROTO:
        return 400;
    case GR_EAPP:
        return 422;
    case GR_EDEADLOCK:
        return 409;
    case GR_EOVERLOAD:
        *retry_after = 1;
        return 429;
    case GR_ETIMEDOUT:
        return 504;
    default:
        if (gr_err_retryable(err)) {
            *retry_after = 1;
            return 503;
        }
        return 500;
    }
}

/* The JSON error answer, with `status` (0: the one err maps to). */
static void gr__api_error_status(gr__http_req_t *req, int status, int err, const void *msg, size_t len) {
    gr__buf_t b;
    gr__buf_init(&b);
    int retry_after;
    int mapped = gr__http_status_of(err, &retry_after);
    if (!status) status = mapped;
    int rc = gr__buf_printf(&b, "{\"error\":\"%s\",\"retryable\":%s,\"message\":", gr_err_name(err),
                            gr_err_retryable(err) ? "true" : "false");
    rc |= gr__buf_json_str(&b, msg, len);
    rc |= gr__buf_printf(&b, "}\n");
    char line[64];
    snprintf(line, sizeof line, "Granary-Error: %s", gr_err_name(err));
    gr__http_add_header(req, line);
    if (retry_after) gr__http_add_header(req, "Retry-After: 1");
    if (rc != 0)
        gr__http_respond(req, 500, gr__json, GR__LIT("{\"error\":\"GR_ENOMEM\"}\n"));
    else
        gr__http_respond(req, status, gr__json, b.data, b.len);
    gr__buf_free(&b);
}

static void gr__api_error(gr__http_req_t *req, int err, const void *msg, size_t len) {
    gr__api_error_status(req, 0, err, msg, len);
}

static void gr__api_error_text(gr__http_req_t *req, int err, const char *msg) {
    gr__api_error(req, err, msg, strlen(msg));
}

/* A path that exists, asked with the wrong method. */
static void gr__api_method_not_allowed(gr__http_req_t *req, const char *allow, const char *msg) {
    gr__http_add_header(req, allow);
    gr__api_error_status(req, 405, GR_EINVAL, msg, strlen(msg));
}

typedef struct gr__api_call {
    gr__http_req_t *req;
    char ctype[128];
} gr__api_call_t;

static void gr__api_done(void *ud, int status, const uint8_t *reply, size_t len) {
    gr__api_call_t *k = ud;
    if (status == 0)
        gr__http_respond(k->req, 200, k->ctype, reply, len);
    else
        gr__api_error(k->req, status, reply, len);
    gr__free(k);
}

/* The next path segment after *p (up to '/' or the end), percent-decoded
 * into out: its length, or -1. */
static int gr__segment(const char **p, uint8_t *out, size_t size) {
    const char *s = *p, *e = strchr(s, '/');
    size_t n = e ? (size_t)(e - s) : strlen(s);
    *p = e ? e + 1 : s + n;
    return gr__http_pct_decode(s, n, out, size);
}

static void gr__api_call(const gr__httpapi_env_t *env, gr__http_req_t *req, const char *cls,
                         const uint8_t *key, size_t key_len, const char *method) {
    static char v[GR__HTTP_MAX_HEAD]; /* a header is never longer than the head (one loop thread) */
    gr_call_options_t o;
    gr_call_options_init(&o);
    if (gr__http_header(req, "Granary-Timeout-Ms", v, sizeof v) >= 0) {
        char *end;
        unsigned long t = strtoul(v, &end, 10);
        /* At most 5 minutes: a waiting HTTP call holds one of the port's slots. */
        if (!v[0] || *end || v[0] == '-' || t == 0 || t > 300000ul) {
            gr__api_error_text(req, GR_EINVAL, "Granary-Timeout-Ms: milliseconds, 1..300000");
            return;
        }
        o.timeout_ms = (uint32_t)t;
    }
    int il = gr__http_header(req, "Idempotency-Key", v, sizeof v);
    if (il == 0 || il > (int)GR_IDEM_KEY_MAX) {
        gr__api_error_text(req, GR_EINVAL, "Idempotency-Key: 1..128 bytes");
        return;
    }
    if (il > 0) {
        o.idempotency_key = v;
        o.idempotency_key_len = (size_t)il;
    }
    gr__api_call_t *k = gr__calloc(1, sizeof *k);
    if (!k) {
        gr__api_error_text(req, GR_ENOMEM, "out of memory");
        return;
    }
    k->req = req;
    /* The reply is bytes: it goes back with the type the caller sent. */
    if (gr__http_header(req, "Content-Type", k->ctype, sizeof k->ctype) <= 0)
        snprintf(k->ctype, sizeof k->ctype, "application/octet-stream");
    size_t al;
    const uint8_t *arg = gr__http_body(req, &al);
    gr_ref_t ref = {cls, key, key_len};
    int rc = gr_call_ex(env->rt, &ref, method, al ? arg : NULL, al, &o, gr__api_done, k);
    if (rc != 0) {
        gr__free(k);
        gr__api_error_text(req, rc, gr_strerror(rc));
    }
}

typedef struct gr__api_where {
    gr__http_req_t *req;
    char cls[GR_CLASS_NAME_MAX + 1];
} gr__api_where_t;

static void gr__api_where_done(void *ud, int status, const uint8_t *reply, size_t len) {
    gr__api_where_t *w = ud;
    if (status != 0) {
        gr__api_error(w->req, status, reply, len);
    } else {
        gr__buf_t b;
        gr__buf_init(&b);
        int rc = gr__buf_printf(&b, "{\"class\":");
        rc |= gr__buf_json_str(&b, w->cls, strlen(w->cls));
        rc |= gr__buf_printf(&b, ",\"active\":%s,\"silo\":", len ? "true" : "false");
        rc |= len ? gr__buf_json_str(&b, reply, len) : gr__buf_printf(&b, "null");
        rc |= gr__buf_printf(&b, "}\n");
        if (rc != 0)
            gr__api_error_text(w->req, GR_ENOMEM, "out of memory");
        else
            gr__http_respond(w->req, 200, gr__json, b.data, b.len);
        gr__buf_free(&b);
    }
    gr__free(w);
}

static void gr__api_where(const gr__httpapi_env_t *env, gr__http_req_t *req, const char *cls,
                          const uint8_t *key, size_t key_len) {
    gr__api_where_t *w = gr__calloc(1, sizeof *w);
    if (!w) {
        gr__api_error_text(req, GR_ENOMEM, "out of memory");
        return;
    }
    w->req = req;
    snprintf(w->cls, sizeof w->cls, "%s", cls);
    if (!gr_runtime_find_class(env->rt, cls)) {
        gr__free(w);
        char msg[GR_CLASS_NAME_MAX + 40];
        snprintf(msg, sizeof msg, "no grain class '%s' on this silo", cls);
        gr__api_error_text(req, GR_ENOCLASS, msg);
        return;
    }
    if (env->router) {
        gr__router_locate(env->router, cls, key, key_len, gr__api_where_done, w);
    } else {
        /* One silo: it is here if it is active here. */
        int here = gr__runtime_hosts(env->rt, cls, key, key_len);
        gr__api_where_done(w, 0, (const uint8_t *)env->silo_id, here ? strlen(env->silo_id) : 0);
    }
}

extern const char gr__openapi_json[];

int gr__httpapi_handle(const gr__httpapi_env_t *env, gr__http_req_t *req, const char *path) {
    if (strncmp(path, GR__LIT("/v1/")) != 0) return 0;
    const char *method = gr__http_method(req);
    if (!strcmp(path, "/v1/openapi.json")) {
        gr__http_respond(req, 200, gr__json, gr__openapi_json, strlen(gr__openapi_json));
        return 1;
    }
    if (strncmp(path, GR__LIT("/v1/grains/")) != 0) {
        gr__api_error_text(req, GR_ENOCLASS, "not found: POST /v1/grains/{class}/{key}/{method}");
        return 1;
    }
    const char *p = path + 11;
    uint8_t cls[GR_CLASS_NAME_MAX + 1], key[GR_KEY_MAX], m[GR_METHOD_NAME_MAX + 1];
    int cl = gr__segment(&p, cls, sizeof cls - 1);
    if (cl <= 0 || memchr(cls, '\0', (size_t)cl)) {
        gr__api_error_text(req, GR_EINVAL, "the path's class segment is empty, malformed or too long");
        return 1;
    }
    cls[cl] = '\0';
    if (!*p && p[-1] != '/') {
        gr__api_error_text(req, GR_EINVAL, "the path needs a key: /v1/grains/{class}/{key}[/{method}]");
        return 1;
    }
    int kl = gr__segment(&p, key, sizeof key);
    if (kl < 0) {
        gr__api_error_text(req, GR_EINVAL, "the path's key segment is malformed or over 1024 bytes");
        return 1;
    }
    if (!*p && (p == path || p[-1] != '/')) {
        if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
            gr__api_method_not_allowed(req, "Allow: GET, HEAD",
                                       "use GET to see where a grain is, POST .../{method} to call it");
            return 1;
        }
        gr__api_where(env, req, (const char *)cls, key, (size_t)kl);
        return 1;
    }
    int ml = gr__segment(&p, m, sizeof m - 1);
    if (ml <= 0 || *p || memchr(m, '\0', (size_t)ml)) {
        gr__api_error_text(req, GR_EINVAL, "the path's method segment is empty, malformed or too long");
        return 1;
    }
    m[ml] = '\0';
    if (strcmp(method, "POST") != 0) {
        gr__api_method_not_allowed(req, "Allow: POST", "grain calls are POST requests");
        return 1;
    }
    gr__api_call(env, req, (const char *)cls, key, (size_t)kl, (const char *)m);
    return 1;
}
