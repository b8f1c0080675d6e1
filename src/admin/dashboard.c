/* src/admin/dashboard.c - see dashboard.h. The cluster view is gathered per
 * request: this silo's part is written at once, every other member is
 * asked with a "$silo dashboard" call (1.5 s timeout) and the page gets
 * whatever answered. The gathering owns its request and buffers, so it
 * completes safely even if the dashboard closes meanwhile (the router and
 * runtime cancel their calls on close). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "admin/dashboard.h"
#include "admin/history.h"
#include "web_assets.h"

#define GR__DASH_CHANGES 64
#define GR__DASH_PEER_TIMEOUT_MS 1500
#define GR__DASH_CALL_TIMEOUT_MS 5000

typedef struct gr__change {
    int64_t t_ms;
    int64_t version;
    char id[128];
    char from[16], to[16]; /* "" : not in the view */
} gr__change_t;

struct gr__dashboard {
    uv_loop_t *loop;
    gr__dashboard_env_t env;
    gr__history_t *history;
    int64_t started_ms;
    gr__member_t *prev; /* the last view, to tell what changed */
    size_t n_prev;
    int have_view;
    gr__change_t changes[GR__DASH_CHANGES];
    size_t n_changes, next_change;
    void (*close_cb)(void *);
    void *close_ud;
};

int gr__dashboard_new(uv_loop_t *loop, const gr__dashboard_env_t *env, gr__dashboard_t **out) {
    gr__dashboard_t *d = gr__calloc(1, sizeof *d);
    if (!d) return GR_ENOMEM;
    d->loop = loop;
    d->env = *env;
    d->started_ms = gr__wall_ms();
    int rc = gr__history_new(loop, env->rt, &d->history);
    if (rc != 0) {
        gr__free(d);
        return rc;
    }
    *out = d;
    return 0;
}

/* ---- membership changes ---- */

static void gr__dash_change(gr__dashboard_t *d, int64_t version, const char *id, const char *from,
                            const char *to) {
    gr__change_t *c = &d->changes[d->next_change];
    d->next_change = (d->next_change + 1) % GR__DASH_CHANGES;
    if (d->n_changes < GR__DASH_CHANGES) d->n_changes++;
    c->t_ms = gr__wall_ms();
    c->version = version;
    snprintf(c->id, sizeof c->id, "%s", id);
    snprintf(c->from, sizeof c->from, "%s", from);
    snprintf(c->to, sizeof c->to, "%s", to);
}

static const gr__member_t *gr__find_member(const gr__member_t *ms, size_t n, const char *id) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(ms[i].id, id)) return &ms[i];
    return NULL;
}

void gr__dashboard_on_view(gr__dashboard_t *d, const gr__view_t *v) {
    for (size_t i = 0; i < v->n; i++) {
        const gr__member_t *old = gr__find_member(d->prev, d->n_prev, v->members[i].id);
        if (!old || old->status != v->members[i].status)
            gr__dash_change(d, v->version, v->members[i].id,
                            old ? gr__member_status_name(old->status) : (d->have_view ? "" : "seen"),
                            gr__member_status_name(v->members[i].status));
    }
    for (size_t i = 0; i < d->n_prev; i++)
        if (!gr__find_member(v->members, v->n, d->prev[i].id))
            gr__dash_change(d, v->version, d->prev[i].id, gr__member_status_name(d->prev[i].status), "");
    gr__member_t *copy = v->n ? gr__malloc(v->n * sizeof *copy) : NULL;
    if (v->n && !copy) return; /* next view compares with the older one */
    if (v->n) memcpy(copy, v->members, v->n * sizeof *copy);
    gr__free(d->prev);
    d->prev = copy;
    d->n_prev = v->n;
    d->have_view = 1;
}

/* ---- this silo's part ---- */

/* A JSON array being filled by a runtime iterator. */
typedef struct gr__dash_list {
    gr__buf_t *b;
    int first;
} gr__dash_list_t;

static void gr__dash_add_class(void *ud, const char *cls, uint64_t active) {
    gr__dash_list_t *l = ud;
    gr__buf_printf(l->b, "%s{\"name\":", l->first ? "" : ",");
    gr__buf_json_str(l->b, cls, strlen(cls));
    gr__buf_printf(l->b, ",\"active\":%llu}", (unsigned long long)active);
    l->first = 0;
}

/* [class, method, read_only, calls, errors] per method: one pass over the
 * runtime's table. */
static void gr__dash_add_method(void *ud, const gr__method_stats_t *ms) {
    gr__dash_list_t *m = ud;
    gr__buf_printf(m->b, "%s[", m->first ? "" : ",");
    gr__buf_json_str(m->b, ms->cls, strlen(ms->cls));
    gr__buf_printf(m->b, ",");
    gr__buf_json_str(m->b, ms->method, strlen(ms->method));
    gr__buf_printf(m->b, ",%d,%llu,%llu]", ms->read_only, (unsigned long long)ms->calls,
                   (unsigned long long)ms->errors);
    m->first = 0;
}

/* One JSON object describing this silo; samples after `since`. */
static int gr__dash_self(gr__dashboard_t *d, int64_t since, gr__buf_t *b) {
    const gr__dashboard_env_t *e = &d->env;
    gr__gateway_stats_t g;
    gr__gateway_get_stats(e->gw, &g);
    gr__runtime_stats_t rs;
    gr__runtime_get_stats(e->rt, &rs);
    size_t rss = 0;
    uv_resident_set_memory(&rss);
    int rc = gr__buf_printf(b, "{\"id\":");
    rc |= gr__buf_json_str(b, e->silo_id, strlen(e->silo_id));
    rc |= gr__buf_printf(b, ",\"state\":\"%s\",\"address\":", e->state(e->ud));
    char addr[96];
    snprintf(addr, sizeof addr, "%s:%d", e->host, gr__gateway_port(e->gw));
    rc |= gr__buf_json_str(b, addr, strlen(addr));
    rc |= gr__buf_printf(b,
                         ",\"pid\":%d,\"started_ms\":%lld,\"now_ms\":%lld,\"load\":{\"activations\":%zu,"
                         "\"connections\":%llu,\"inflight\":%llu,\"cpu\":%.3f,\"rss_bytes\":%zu},"
                         "\"totals\":{\"calls\":%llu,\"calls_failed\":%llu,\"activations\":%llu,"
                         "\"deactivations\":%llu,\"storage_reads\":%llu,\"storage_writes\":%llu,"
                         "\"storage_conflicts\":%llu,\"storage_errors\":%llu,\"late_replies\":%llu,"
                         "\"call_cycles\":%llu",
                         (int)getpid(), (long long)d->started_ms, (long long)gr__wall_ms(),
                         gr_runtime_activation_count(e->rt), (unsigned long long)g.connections_open,
                         (unsigned long long)g.inflight, gr__history_cpu(d->history), rss,
                         (unsigned long long)rs.calls, (unsigned long long)rs.calls_failed,
                         (unsigned long long)rs.activations, (unsigned long long)rs.deactivations,
                         (unsigned long long)rs.storage_reads, (unsigned long long)rs.storage_writes,
                         (unsigned long long)rs.storage_conflicts, (unsigned long long)rs.storage_errors,
                         (unsigned long long)rs.late_replies, (unsigned long long)rs.deadlocks);
    if (e->router) {
        gr__router_stats_t r;
        gr__router_get_stats(e->router, &r);
        rc |= gr__buf_printf(b, ",\"forwarded\":%llu,\"directory_entries\":%llu,\"directory_cached\":%llu",
                             (unsigned long long)r.forwarded, (unsigned long long)r.partition_entries,
                             (unsigned long long)r.cache_entries);
        /* Live migration (docs/migration.md): what moved in and out, what
         * the targets refused, what ended unknown, what rebalancing sent. */
        rc |= gr__buf_printf(b,
                             ",\"migrated_in\":%llu,\"migrated_out\":%llu,\"migrate_refused\":%llu,"
                             "\"migrate_failed\":%llu,\"rebalance_moves\":%llu",
                             (unsigned long long)rs.migrated_in, (unsigned long long)rs.migrated_out,
                             (unsigned long long)rs.migrate_refused, (unsigned long long)rs.migrate_failed,
                             (unsigned long long)r.rebalance_moves);
    }
    if (e->reminders) {
        gr__reminders_stats_t r;
        gr__reminders_get_stats(e->reminders, &r);
        rc |= gr__buf_printf(b, ",\"reminders_fired\":%llu,\"reminder_failures\":%llu",
                             (unsigned long long)r.fired, (unsigned long long)r.fire_failures);
    }
    rc |= gr__buf_printf(b, "},\"classes\":[");
    gr__dash_list_t classes = {b, 1}, methods = {b, 1};
    gr__runtime_foreach_class(e->rt, gr__dash_add_class, &classes);
    rc |= gr__buf_printf(b, "],\"methods\":[");
    gr__runtime_foreach_method(e->rt, gr__dash_add_method, &methods);
    rc |= gr__buf_printf(b, "],");
    /* Half a frame for the samples leaves the rest for the counters. */
    size_t budget = e->max_frame_bytes / 2 < 512 * 1024 ? e->max_frame_bytes / 2 : 512 * 1024;
    rc |= gr__history_write_json(d->history, since, budget, b);
    rc |= gr__buf_printf(b, "}");
    return rc ? GR_ENOMEM : 0;
}

static int64_t gr__parse_since(const char *s, size_t n) {
    char tmp[24];
    if (n == 0 || n >= sizeof tmp) return 0;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    char *end;
    errno = 0;
    long long v = strtoll(tmp, &end, 10);
    return errno || *end || v < 0 ? 0 : (int64_t)v;
}

/* The `since` query parameter (0 when absent or malformed). */
static int64_t gr__query_since(const char *query) {
    char v[24];
    int n = gr__http_query_param(query, "since", v, sizeof v);
    return n > 0 ? gr__parse_since(v, (size_t)n) : 0;
}

void gr__dashboard_fragment_call(gr__dashboard_t *d, const uint8_t *arg, size_t arg_len, gr_call_cb done,
                                 void *ud) {
    gr__buf_t b;
    gr__buf_init(&b);
    int rc = gr__dash_self(d, gr__parse_since((const char *)arg, arg_len), &b);
    done(ud, rc, b.data, rc ? 0 : b.len);
    gr__buf_free(&b);
}

/* ---- answering ---- */

/* A failed call as one JSON string: "GR_ENAME: detail" (detail cut at 200 bytes). */
static int gr__json_status(gr__buf_t *b, int status, const uint8_t *detail, size_t len) {
    char msg[256];
    snprintf(msg, sizeof msg, "%s%s%.*s", gr_err_name(status), len ? ": " : "", (int)(len > 200 ? 200 : len),
             len ? (const char *)detail : "");
    return gr__buf_json_str(b, msg, strlen(msg));
}

static void gr__respond_json(gr__http_req_t *req, int status, const gr__buf_t *b) {
    gr__http_respond(req, status, "application/json", b->data, b->len);
}

/* {"error": msg} with an HTTP status. */
static void gr__respond_error(gr__http_req_t *req, int status, const char *msg) {
    gr__buf_t b;
    gr__buf_init(&b);
    gr__buf_printf(&b, "{\"error\":");
    gr__buf_json_str(&b, msg, strlen(msg));
    gr__buf_printf(&b, "}");
    gr__respond_json(req, status, &b);
    gr__buf_free(&b);
}

/* ---- the cluster view ---- */

typedef struct gr__gather gr__gather_t;

typedef struct gr__gather_part {
    gr__gather_t *g;
    char id[128];
    int done, status;
    gr__buf_t body;
} gr__gather_part_t;

struct gr__gather {
    gr__http_req_t *req;
    gr__buf_t out; /* everything before the peers' parts */
    size_t n, waiting;
    gr__gather_part_t parts[];
};

static void gr__gather_finish(gr__gather_t *g) {
    int rc = 0;
    for (size_t i = 0; i < g->n; i++) {
        gr__gather_part_t *p = &g->parts[i];
        rc |= gr__buf_printf(&g->out, ",");
        if (p->status == 0 && p->body.len) {
            rc |= gr__buf_append(&g->out, p->body.data, p->body.len);
        } else {
            rc |= gr__buf_printf(&g->out, "{\"id\":");
            rc |= gr__buf_json_str(&g->out, p->id, strlen(p->id));
            rc |= gr__buf_printf(&g->out, ",\"error\":");
            rc |= gr__json_status(&g->out, p->status, p->body.data, p->body.len);
            rc |= gr__buf_printf(&g->out, "}");
        }
        gr__buf_free(&p->body);
    }
    rc |= gr__buf_printf(&g->out, "]}");
    if (rc)
        gr__respond_error(g->req, 503, "out of memory");
    else
        gr__respond_json(g->req, 200, &g->out);
    gr__buf_free(&g->out);
    gr__free(g);
}

static void gr__gather_reply(void *ud, int status, const uint8_t *reply, size_t len) {
    gr__gather_part_t *p = ud;
    p->done = 1;
    p->status = status;
    if (len) gr__buf_append(&p->body, reply, len);
    if (--p->g->waiting == 0) gr__gather_finish(p->g);
}

static void gr__dash_cluster(gr__dashboard_t *d, gr__http_req_t *req, const char *query) {
    int64_t since = gr__query_since(query);
    const gr__dashboard_env_t *e = &d->env;
    const gr__view_t *v = e->view(e->ud);
    size_t peers = 0;
    for (size_t i = 0; v && i < v->n; i++)
        peers += strcmp(v->members[i].id, e->silo_id) != 0;
    gr__gather_t *g = gr__calloc(1, sizeof *g + peers * sizeof g->parts[0]);
    if (!g) {
        gr__respond_error(req, 503, "out of memory");
        return;
    }
    g->req = req;
    gr__buf_t *b = &g->out;
    int rc = gr__buf_printf(b, "{\"cluster\":");
    rc |= gr__buf_json_str(b, e->cluster, strlen(e->cluster));
    rc |= gr__buf_printf(b, ",\"served_by\":");
    rc |= gr__buf_json_str(b, e->silo_id, strlen(e->silo_id));
    rc |= gr__buf_printf(b, ",\"now_ms\":%lld,\"history_seconds\":%d,\"latency_le_us\":[",
                         (long long)gr__wall_ms(), GR__HISTORY_SECONDS);
    for (size_t i = 0; i + 1 < GR__HIST_BUCKETS; i++)
        rc |= gr__buf_printf(b, "%s%llu", i ? "," : "", (unsigned long long)(gr__hist_le(i) / 1000));
    rc |= gr__buf_printf(b, "],\"view\":{\"version\":%lld,\"members\":[", v ? (long long)v->version : 0LL);
    for (size_t i = 0; v && i < v->n; i++) {
        const gr__member_t *m = &v->members[i];
        char addr[96];
        snprintf(addr, sizeof addr, "%s:%d", m->address, m->port);
        rc |= gr__buf_printf(b, "%s{\"id\":", i ? "," : "");
        rc |= gr__buf_json_str(b, m->id, strlen(m->id));
        rc |= gr__buf_printf(b, ",\"address\":");
        rc |= gr__buf_json_str(b, addr, strlen(addr));
        rc |= gr__buf_printf(b, ",\"status\":\"%s\",\"heartbeat_age_ms\":%lld}",
                             gr__member_status_name(m->status), (long long)m->age_ms);
    }
    rc |= gr__buf_printf(b, "]},\"changes\":[");
    for (size_t i = 0; i < d->n_changes; i++) { /* newest first */
        const gr__change_t *c = &d->changes[(d->next_change + GR__DASH_CHANGES - 1 - i) % GR__DASH_CHANGES];
        rc |= gr__buf_printf(b, "%s{\"t_ms\":%lld,\"version\":%lld,\"id\":", i ? "," : "", (long long)c->t_ms,
                             (long long)c->version);
        rc |= gr__buf_json_str(b, c->id, strlen(c->id));
        rc |= gr__buf_printf(b, ",\"from\":\"%s\",\"to\":\"%s\"}", c->from, c->to);
    }
    rc |= gr__buf_printf(b, "],\"silos\":[");
    rc |= gr__dash_self(d, since, b);
    if (rc) {
        gr__buf_free(b);
        gr__free(g);
        gr__respond_error(req, 503, "out of memory");
        return;
    }
    char arg[24];
    int al = snprintf(arg, sizeof arg, "%lld", (long long)since);
    g->waiting = 1; /* held until every call is sent */
    for (size_t i = 0; v && i < v->n; i++) {
        if (!strcmp(v->members[i].id, e->silo_id)) continue;
        gr__gather_part_t *p = &g->parts[g->n++];
        p->g = g;
        snprintf(p->id, sizeof p->id, "%s", v->members[i].id);
        gr__buf_init(&p->body);
        g->waiting++;
        int crc = e->router ? gr__router_call_silo(e->router, p->id, "dashboard", arg, (size_t)al,
                                                   GR__DASH_PEER_TIMEOUT_MS, gr__gather_reply, p)
                            : GR_ENOTHERE;
        if (crc != 0) gr__gather_reply(p, crc, NULL, 0);
    }
    if (--g->waiting == 0) gr__gather_finish(g);
}

/* ---- finding a grain ---- */

typedef struct gr__locate {
    gr__http_req_t *req;
    gr__buf_t out;
} gr__locate_t;

static void gr__locate_done(void *ud, int status, const uint8_t *reply, size_t len) {
    gr__locate_t *l = ud;
    gr__buf_t *b = &l->out;
    if (status == 0) {
        gr__buf_printf(b, ",\"host\":");
        if (len)
            gr__buf_json_str(b, reply, len);
        else
            gr__buf_printf(b, "null");
    } else {
        gr__buf_printf(b, ",\"host\":null,\"error\":");
        gr__json_status(b, status, reply, len);
    }
    gr__buf_printf(b, "}");
    gr__respond_json(l->req, 200, b);
    gr__buf_free(b);
    gr__free(l);
}

/* The class and key parameters, checked; 0 or an error already answered. */
static int gr__grain_params(gr__dashboard_t *d, gr__http_req_t *req, const char *query, char *cls,
                            size_t cls_size, char *key, size_t key_size, int *key_len, const gr_class_t **c) {
    int cl = gr__http_query_param(query, "class", cls, cls_size);
    *key_len = gr__http_query_param(query, "key", key, key_size);
    if (cl <= 0 || *key_len < 0) {
        gr__respond_error(req, 400, "class and key are required (key at most 1024 bytes)");
        return -1;
    }
    *c = gr_runtime_find_class(d->env.rt, cls);
    if (!*c) {
        char msg[GR_CLASS_NAME_MAX + 64];
        snprintf(msg, sizeof msg, "no grain class '%.128s' on this silo", cls);
        gr__respond_error(req, 404, msg);
        return -1;
    }
    return 0;
}

static void gr__dash_locate(gr__dashboard_t *d, gr__http_req_t *req, const char *query) {
    char cls[GR_CLASS_NAME_MAX + 1], key[GR_KEY_MAX + 1];
    int kl;
    const gr_class_t *c;
    if (gr__grain_params(d, req, query, cls, sizeof cls, key, sizeof key, &kl, &c) != 0) return;
    gr__locate_t *l = gr__calloc(1, sizeof *l);
    if (!l) {
        gr__respond_error(req, 503, "out of memory");
        return;
    }
    l->req = req;
    gr__buf_t *b = &l->out;
    gr__buf_printf(b, "{\"class\":");
    gr__buf_json_str(b, cls, strlen(cls));
    gr__buf_printf(b, ",\"key\":");
    gr__buf_json_str(b, key, (size_t)kl);
    gr__buf_printf(b, ",\"read_only\":[");
    for (const char *const *m = c->read_only; m && *m; m++) {
        if (m != c->read_only) gr__buf_printf(b, ",");
        gr__buf_json_str(b, *m, strlen(*m));
    }
    gr__buf_printf(b, "],\"stateless_worker\":%s", (c->flags & GR_CLASS_STATELESS_WORKER) ? "true" : "false");
    const char *owner = d->env.router ? gr__router_owner(d->env.router, cls, (const uint8_t *)key, (size_t)kl)
                                      : d->env.silo_id;
    gr__buf_printf(b, ",\"directory_owner\":");
    if (owner)
        gr__buf_json_str(b, owner, strlen(owner));
    else
        gr__buf_printf(b, "null");
    if (c->flags & GR_CLASS_STATELESS_WORKER) {
        /* Never registered: served wherever the call enters. */
        gr__locate_done(l, 0, NULL, 0);
    } else if (!d->env.router) {
        int here = gr__runtime_hosts(d->env.rt, cls, (const uint8_t *)key, (size_t)kl);
        gr__locate_done(l, 0, here ? (const uint8_t *)d->env.silo_id : NULL,
                        here ? strlen(d->env.silo_id) : 0);
    } else {
        gr__router_locate(d->env.router, cls, (const uint8_t *)key, (size_t)kl, gr__locate_done, l);
    }
}

/* ---- a read-only call ---- */

typedef struct gr__dcall {
    gr__http_req_t *req;
    uint64_t t0;
} gr__dcall_t;

static void gr__dcall_done(void *ud, int status, const uint8_t *reply, size_t len) {
    gr__dcall_t *c = ud;
    gr__buf_t b;
    gr__buf_init(&b);
    gr__buf_printf(
        &b, "{\"status\":\"%s\",\"code\":%d,\"took_us\":%llu,\"reply\":", status ? gr_err_name(status) : "ok",
        status, (unsigned long long)((uv_hrtime() - c->t0) / 1000));
    gr__buf_json_str(&b, reply, len);
    gr__buf_printf(&b, "}");
    gr__respond_json(c->req, 200, &b);
    gr__buf_free(&b);
    gr__free(c);
}

static void gr__dash_call(gr__dashboard_t *d, gr__http_req_t *req, const char *query) {
    char cls[GR_CLASS_NAME_MAX + 1], key[GR_KEY_MAX + 1], method[GR_METHOD_NAME_MAX + 1], arg[4096];
    int kl;
    const gr_class_t *c;
    if (gr__grain_params(d, req, query, cls, sizeof cls, key, sizeof key, &kl, &c) != 0) return;
    int ml = gr__http_query_param(query, "method", method, sizeof method);
    int al = gr__http_query_param(query, "arg", arg, sizeof arg);
    if (al < 0) al = 0, arg[0] = '\0';
    if (ml <= 0) {
        gr__respond_error(req, 400, "method is required");
        return;
    }
    int ro = gr__runtime_read_only(d->env.rt, cls, method);
    if (ro != 1) {
        char msg[GR_CLASS_NAME_MAX + GR_METHOD_NAME_MAX + 96];
        snprintf(
            msg, sizeof msg,
            ro == 0 ? "%s.%s is not declared read-only (gr_class_t.read_only); the dashboard only calls those"
                    : "class %s has no method %s",
            cls, method);
        gr__respond_error(req, ro == 0 ? 403 : 404, msg);
        return;
    }
    gr__dcall_t *dc = gr__malloc(sizeof *dc);
    if (!dc) {
        gr__respond_error(req, 503, "out of memory");
        return;
    }
    dc->req = req;
    dc->t0 = uv_hrtime();
    gr_ref_t ref = {cls, key, (size_t)kl};
    int rc = gr_call(d->env.rt, &ref, method, arg, (size_t)al, GR__DASH_CALL_TIMEOUT_MS, gr__dcall_done, dc);
    if (rc != 0) {
        gr__free(dc);
        gr__respond_error(req, 503, gr_strerror(rc));
    }
}

/* ---- routing ---- */

int gr__dashboard_http(gr__dashboard_t *d, gr__http_req_t *req, const char *path, const char *query) {
    if (!strcmp(path, "/api/cluster")) {
        gr__dash_cluster(d, req, query);
        return 1;
    }
    if (!strcmp(path, "/api/silo")) {
        gr__buf_t b;
        gr__buf_init(&b);
        if (gr__dash_self(d, gr__query_since(query), &b) == 0)
            gr__respond_json(req, 200, &b);
        else
            gr__respond_error(req, 503, "out of memory");
        gr__buf_free(&b);
        return 1;
    }
    if (!strcmp(path, "/api/locate")) {
        gr__dash_locate(d, req, query);
        return 1;
    }
    if (!strcmp(path, "/api/call")) {
        gr__dash_call(d, req, query);
        return 1;
    }
    const char *file = !strcmp(path, "/") || !strcmp(path, "/dashboard") ? "/index.html" : path;
    for (size_t i = 0; i < gr__web_assets_count; i++)
        if (!strcmp(gr__web_assets[i].path, file)) {
            gr__http_respond(req, 200, gr__web_assets[i].type, gr__web_assets[i].data, gr__web_assets[i].len);
            return 1;
        }
    return 0;
}

static void gr__dash_history_closed(void *ud) {
    gr__dashboard_t *d = ud;
    void (*cb)(void *) = d->close_cb;
    void *cud = d->close_ud;
    gr__free(d->prev);
    gr__free(d);
    if (cb) cb(cud);
}

void gr__dashboard_close(gr__dashboard_t *d, void (*cb)(void *), void *ud) {
    d->close_cb = cb;
    d->close_ud = ud;
    gr__history_close(d->history, gr__dash_history_closed, d);
}
