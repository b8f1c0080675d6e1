/* src/reminders/reminders.c - durable reminders (docs/reminders.md).
 *
 * Rows live in granary_reminder (sql/003_reminders.sql) with the next due
 * time by the database clock. Every poll_ms each silo reads the due rows and
 * fires those whose grain's hash-ring range it owns, by calling the grain's
 * "$reminder" method through the runtime (so the call is routed to wherever
 * the grain lives, or activates it). When the grain acknowledges, the row is
 * advanced (or, for a one-shot, deleted) conditionally on the due time it
 * had, so a due time is consumed once even if two silos both fired it during
 * a view change: delivery is at least once. A failed fire leaves the row
 * due, so the next poll fires it again.
 */
#include <inttypes.h>
#include <stdio.h>

#include "base/base.h"
#include "storage/pgpool.h"
#include "reminders/reminders.h"

#define GR__REM_BATCH 512 /* due rows read per poll */

struct gr__reminders {
    uv_loop_t *loop;
    gr_runtime_t *rt;
    uint64_t fail_logged_ms; /* last warn line about a failed firing */
    gr__pgpool_t *pool;
    gr__reminders_opts_t opts;
    char service[256]; /* the cluster name: 1..255 bytes, as gr_silo_new accepts */
    char *self;
    gr__owner_fn owner;
    void *owner_ud;
    struct gr__fire *inflight; /* reminders fired and not yet answered */
    uv_timer_t poll;
    int firing, polling, closing;
    unsigned fires_in_flight;
    gr__reminders_stats_t stats;
    void (*close_cb)(void *);
    void *close_ud;
};

#define GR__NOW_US "(extract(epoch from clock_timestamp()) * 1000000)::bigint"

static const char GR__SQL_ADD[] =
    "INSERT INTO granary_reminder (service, grain_class, grain_key, name, due_us, period_ms) "
    "VALUES ($1, $2, $3, $4, " GR__NOW_US " + $5::bigint * 1000, $6::bigint) "
    "ON CONFLICT (service, grain_class, grain_key, name) "
    "DO UPDATE SET due_us = EXCLUDED.due_us, period_ms = EXCLUDED.period_ms, created_at = now()";
static const char GR__SQL_REMOVE[] = "DELETE FROM granary_reminder WHERE service = $1 AND grain_class = $2 "
                                     "AND grain_key = $3 AND name = $4 RETURNING 1";
static const char GR__SQL_LIST[] =
    "SELECT name, (due_us - " GR__NOW_US ") / 1000, period_ms FROM granary_reminder "
    "WHERE service = $1 AND grain_class = $2 AND grain_key = $3 ORDER BY name";
static const char GR__SQL_DUE[] =
    "SELECT grain_class, grain_key, name, due_us, period_ms FROM granary_reminder "
    "WHERE service = $1 AND due_us <= " GR__NOW_US " ORDER BY due_us LIMIT 512";
/* Next due time: the first one after now on the original schedule (no
 * drift; missed ticks collapse into the fire that just happened). */
static const char GR__SQL_ADVANCE[] =
    "UPDATE granary_reminder SET due_us = due_us + ((" GR__NOW_US " - due_us) / (period_ms * 1000) + 1) "
    "* period_ms * 1000 WHERE service = $1 AND grain_class = $2 AND grain_key = $3 AND name = $4 "
    "AND due_us = $5::bigint AND period_ms > 0";
static const char GR__SQL_DONE[] =
    "DELETE FROM granary_reminder WHERE service = $1 AND grain_class = $2 "
    "AND grain_key = $3 AND name = $4 AND due_us = $5::bigint AND period_ms = 0";

void gr__reminders_opts_init(gr__reminders_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->poll_ms = 1000;
    o->min_period_ms = 1000;
    o->fire_timeout_ms = 5000;
}

/* ---- add / remove / list ---- */

typedef struct gr__rem_req {
    gr_call_cb cb;
    void *ud;
    int kind; /* 0 add, 1 remove, 2 list */
} gr__rem_req_t;

static void gr__rem_req_done(void *ud, int status, PGresult *res, const char *detail) {
    gr__rem_req_t *q = ud;
    if (status != 0) {
        if (q->cb) q->cb(q->ud, status, (const uint8_t *)detail, detail ? strlen(detail) : 0);
        gr__free(q);
        return;
    }
    if (q->kind == 1 && PQntuples(res) == 0) {
        if (q->cb) q->cb(q->ud, GR_ENOENT, GR__LIT("no such reminder"));
    } else if (q->kind == 2) {
        gr__buf_t b;
        gr__buf_init(&b);
        int rc = 0;
        for (int i = 0; i < PQntuples(res) && rc == 0; i++) {
            /* int8 columns in binary: exactly 8 bytes, or the row is not ours to trust. */
            if (PQgetlength(res, i, 1) != 8 || PQgetlength(res, i, 2) != 8) {
                rc = GR_ESTORAGE;
                break;
            }
            rc = gr__buf_printf(&b, "%.*s %" PRId64 " %" PRId64 "\n", PQgetlength(res, i, 0),
                                PQgetvalue(res, i, 0),
                                (int64_t)gr__get_u64((const uint8_t *)PQgetvalue(res, i, 1)),
                                (int64_t)gr__get_u64((const uint8_t *)PQgetvalue(res, i, 2)));
        }
        if (rc != 0 && q->cb) {
            const char *why = rc == GR_ESTORAGE ? "malformed reminder row" : "out of memory";
            q->cb(q->ud, rc == GR_ESTORAGE ? GR_ESTORAGE : GR_ENOMEM, (const uint8_t *)why, strlen(why));
        } else if (q->cb) {
            q->cb(q->ud, 0, b.data, b.len);
        }
        gr__buf_free(&b);
    } else if (q->cb) {
        q->cb(q->ud, 0, NULL, 0);
    }
    gr__free(q);
}

static int gr__rem_query(gr__reminders_t *r, int kind, const char *sql, const char *cls, const uint8_t *key,
                         size_t key_len, const char *name, const char *p5, const char *p6, gr_call_cb cb,
                         void *ud) {
    if (r->closing) return GR_ESHUTDOWN;
    if (!gr__valid_class_name(cls) || key_len > GR_KEY_MAX || (name && !gr__valid_reminder_name(name)))
        return GR_EINVAL;
    gr__rem_req_t *q = gr__malloc(sizeof *q);
    if (!q) return GR_ENOMEM;
    q->cb = cb;
    q->ud = ud;
    q->kind = kind;
    const char *values[6] = {r->service, cls, key_len ? (const char *)key : "", name, p5, p6};
    int lengths[6] = {0, 0, (int)key_len, 0, 0, 0};
    int formats[6] = {0, 0, 1, 0, 0, 0};
    int n = p6 ? 6 : p5 ? 5 : name ? 4 : 3;
    int rc = gr__pgpool_query(r->pool, sql, n, values, lengths, formats, 1, gr__rem_req_done, q);
    if (rc != 0) gr__free(q);
    return rc;
}

static int gr__rem_add(void *ud, const char *cls, const uint8_t *key, size_t key_len, const char *name,
                       uint64_t due_ms, uint64_t period_ms, gr_call_cb cb, void *cb_ud) {
    gr__reminders_t *r = ud;
    /* Bounded so due_us + period arithmetic stays far from overflow. */
    if (due_ms > 100ull * 365 * 86400 * 1000 || period_ms > 100ull * 365 * 86400 * 1000) return GR_EINVAL;
    if (period_ms && period_ms < r->opts.min_period_ms) return GR_EINVAL;
    char due[24], period[24];
    snprintf(due, sizeof due, "%" PRIu64, due_ms);
    snprintf(period, sizeof period, "%" PRIu64, period_ms);
    return gr__rem_query(r, 0, GR__SQL_ADD, cls, key, key_len, name, due, period, cb, cb_ud);
}

static int gr__rem_remove(void *ud, const char *cls, const uint8_t *key, size_t key_len, const char *name,
                          gr_call_cb cb, void *cb_ud) {
    return gr__rem_query(ud, 1, GR__SQL_REMOVE, cls, key, key_len, name, NULL, NULL, cb, cb_ud);
}

static int gr__rem_list(void *ud, const char *cls, const uint8_t *key, size_t key_len, gr_call_cb cb,
                        void *cb_ud) {
    return gr__rem_query(ud, 2, GR__SQL_LIST, cls, key, key_len, NULL, NULL, NULL, cb, cb_ud);
}

static const gr__reminder_ops_t gr__rem_ops = {gr__rem_add, gr__rem_remove, gr__rem_list};

/* ---- the control class: granary reminder add|remove|list ---- */

int gr__reminders_control(gr__reminders_t *r, const char *method, const uint8_t *grain, size_t grain_len,
                          const uint8_t *arg, size_t arg_len, gr_call_cb done, void *ud) {
    int kind = !strcmp(method, "reminder_add")      ? 0
               : !strcmp(method, "reminder_remove") ? 1
               : !strcmp(method, "reminder_list")   ? 2
                                                    : -1;
    if (kind < 0) return GR_ENOMETHOD;
    /* grain is "CLASS/KEY": the class ends at the first '/'. */
    const uint8_t *slash = grain_len ? memchr(grain, '/', grain_len) : NULL;
    char cls[GR_CLASS_NAME_MAX + 1], text[512], name[GR_METHOD_NAME_MAX + 1] = "";
    unsigned long long due = 0, period = 0;
    size_t cl = slash ? (size_t)(slash - grain) : 0;
    int rc = 0;
    if (!slash || cl == 0 || cl > GR_CLASS_NAME_MAX || arg_len >= sizeof text) {
        rc = GR_EINVAL;
    } else {
        memcpy(cls, grain, cl);
        cls[cl] = '\0';
        if (arg_len) memcpy(text, arg, arg_len);
        text[arg_len] = '\0';
        int got = sscanf(text, "%128s %llu %llu", name, &due, &period);
        if ((kind == 0 && got != 3) || (kind == 1 && got < 1)) rc = GR_EINVAL;
    }
    const uint8_t *key = slash ? slash + 1 : NULL;
    size_t key_len = slash ? grain_len - cl - 1 : 0;
    if (rc == 0 && kind == 0) {
        /* A reminder nobody can receive would fail on every poll forever. */
        const gr_class_t *c = gr_runtime_find_class(r->rt, cls);
        char msg[GR_CLASS_NAME_MAX + 96];
        int n = 0;
        if (!c)
            n = snprintf(msg, sizeof msg, "no grain class '%s' on this silo", cls), rc = GR_ENOCLASS;
        else if (!c->on_reminder)
            n = snprintf(msg, sizeof msg, "class %s has no on_reminder handler", cls), rc = GR_ENOMETHOD;
        if (rc != 0) {
            done(ud, rc, (const uint8_t *)msg, (size_t)n);
            return 0;
        }
    }
    if (rc == 0 && kind == 0) rc = gr__rem_add(r, cls, key, key_len, name, due, period, done, ud);
    if (rc == 0 && kind == 1) rc = gr__rem_remove(r, cls, key, key_len, name, done, ud);
    if (rc == 0 && kind == 2) rc = gr__rem_list(r, cls, key, key_len, done, ud);
    if (rc != 0) {
        char msg[160];
        int n = rc == GR_EINVAL
                    ? snprintf(msg, sizeof msg,
                               "usage: grain CLASS/KEY; add takes NAME DUE_MS PERIOD_MS (period 0 "
                               "or at least %u ms), remove takes NAME",
                               (unsigned)r->opts.min_period_ms)
                    : snprintf(msg, sizeof msg, "%s", gr_strerror(rc));
        done(ud, rc, (const uint8_t *)msg, (size_t)n);
    }
    return 0;
}

/* ---- firing ---- */

typedef struct gr__fire {
    UT_hash_handle hh; /* in r->inflight, keyed by id */
    gr__reminders_t *r;
    char cls[GR_CLASS_NAME_MAX + 1];
    char name[GR_METHOD_NAME_MAX + 1];
    char due[24];
    int one_shot;
    int tracked; /* in r->inflight */
    size_t key_len;
    uint8_t *key; /* points into id */
    size_t id_len;
    uint8_t id[]; /* class '\0' name '\0' key: which reminder is in flight */
} gr__fire_t;

static void gr__rem_maybe_closed(gr__reminders_t *r);

static void gr__rem_advanced(void *ud, int status, PGresult *res, const char *detail) {
    gr__reminders_t *r = ud;
    if (status != 0 && status != GR_ECANCELED)
        GR__LOG_WARN("reminder not advanced (it will fire again): %s", detail);
    r->fires_in_flight--;
    gr__rem_maybe_closed(r);
}

static void gr__rem_fired(void *ud, int status, const uint8_t *reply, size_t len) {
    gr__fire_t *f = ud;
    gr__reminders_t *r = f->r;
    int queued = 0;
    GR__LOG_DEBUG("reminder %s of %s answered: %s", f->name, f->cls, gr_err_name(status));
    if (f->tracked) HASH_DEL(r->inflight, f);
    if (status == 0) {
        r->stats.fired++;
        if (!r->closing) {
            const char *values[5] = {r->service, f->cls, f->key_len ? (const char *)f->key : "", f->name,
                                     f->due};
            int lengths[5] = {0, 0, (int)f->key_len, 0, 0};
            int formats[5] = {0, 0, 1, 0, 0};
            queued = gr__pgpool_query(r->pool, f->one_shot ? GR__SQL_DONE : GR__SQL_ADVANCE, 5, values,
                                      lengths, formats, 1, gr__rem_advanced, r) == 0;
        }
    } else {
        r->stats.fire_failures++;
        /* Said at warn level at most every 10 s (with how many since), so
         * a reminder that always fails is seen without flooding the log. */
        uint64_t now = uv_now(r->loop);
        if (!r->fail_logged_ms || now - r->fail_logged_ms >= 10000) {
            GR__LOG_WARN(
                "reminder %s of %s failed (%s: %.*s); it fires again at the next poll (%llu failures so "
                "far)",
                f->name, f->cls, gr_err_name(status), (int)(len > 200 ? 200 : len), (const char *)reply,
                (unsigned long long)r->stats.fire_failures);
            r->fail_logged_ms = now;
        }
    }
    gr__free(f);
    if (!queued) {
        r->fires_in_flight--;
        gr__rem_maybe_closed(r);
    }
}

static void gr__rem_due(void *ud, int status, PGresult *res, const char *detail) {
    gr__reminders_t *r = ud;
    r->polling = 0;
    if (status != 0 || r->closing || !r->firing) {
        if (status != 0 && status != GR_ECANCELED) GR__LOG_DEBUG("reminder poll failed: %s", detail);
        gr__rem_maybe_closed(r);
        return;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        int cl = PQgetlength(res, i, 0), kl = PQgetlength(res, i, 1), nl = PQgetlength(res, i, 2);
        /* Columns 3 and 4 are int8 in binary: 8 bytes, or the row is skipped. */
        if (cl <= 0 || cl > (int)GR_CLASS_NAME_MAX || nl <= 0 || nl > (int)GR_METHOD_NAME_MAX ||
            kl > (int)GR_KEY_MAX || PQgetlength(res, i, 3) != 8 || PQgetlength(res, i, 4) != 8)
            continue;
        char cls[GR_CLASS_NAME_MAX + 1];
        memcpy(cls, PQgetvalue(res, i, 0), (size_t)cl);
        cls[cl] = '\0';
        const uint8_t *key = (const uint8_t *)PQgetvalue(res, i, 1);
        const char *owner = r->owner(r->owner_ud, cls, key, (size_t)kl);
        if (!owner || strcmp(owner, r->self) != 0) { /* another silo's range */
            GR__LOG_DEBUG("reminder due for %s, owned by %s", cls, owner ? owner : "(no view yet)");
            continue;
        }
        /* Still waiting for the grain's answer to an earlier firing: that
         * one decides; firing again now would only double it. */
        size_t id_len = (size_t)cl + 1 + (size_t)nl + 1 + (size_t)kl;
        uint8_t idbuf[GR_CLASS_NAME_MAX + GR_METHOD_NAME_MAX + GR_KEY_MAX + 2];
        memcpy(idbuf, cls, (size_t)cl + 1);
        memcpy(idbuf + cl + 1, PQgetvalue(res, i, 2), (size_t)nl);
        idbuf[cl + 1 + nl] = '\0';
        memcpy(idbuf + cl + nl + 2, key, (size_t)kl);
        gr__fire_t *busy = NULL;
        HASH_FIND(hh, r->inflight, idbuf, id_len, busy);
        if (busy) continue;
        gr__fire_t *f = gr__calloc(1, sizeof *f + id_len);
        if (!f) break;
        f->r = r;
        memcpy(f->id, idbuf, id_len);
        f->id_len = id_len;
        f->key = f->id + cl + nl + 2;
        memcpy(f->cls, cls, (size_t)cl + 1);
        memcpy(f->name, PQgetvalue(res, i, 2), (size_t)nl);
        f->name[nl] = '\0';
        snprintf(f->due, sizeof f->due, "%" PRId64,
                 (int64_t)gr__get_u64((const uint8_t *)PQgetvalue(res, i, 3)));
        f->one_shot = gr__get_u64((const uint8_t *)PQgetvalue(res, i, 4)) == 0;
        f->key_len = (size_t)kl;
        gr_ref_t ref = {f->cls, f->key, f->key_len};
        if (gr_call(r->rt, &ref, GR__REMINDER_METHOD, f->name, strlen(f->name), r->opts.fire_timeout_ms,
                    gr__rem_fired, f) != 0) {
            gr__free(f);
            continue;
        }
        HASH_ADD_KEYPTR(hh, r->inflight, f->id, f->id_len, f);
        f->tracked = !gr__hash_oom(); /* untracked, it may fire twice: at-least-once allows it */
        r->fires_in_flight++;
        GR__LOG_DEBUG("reminder %s of %s fired (due %s)", f->name, f->cls, f->due);
    }
}

static void gr__rem_poll(uv_timer_t *t) {
    gr__reminders_t *r = t->data;
    /* A reminder whose firing is still unanswered is skipped (r->inflight),
     * so one slow grain delays only its own reminders. */
    if (!r->firing || r->polling || r->closing) {
        if (r->polling) GR__LOG_DEBUG("reminder poll skipped: the previous one is still running");
        return;
    }
    r->stats.polls++;
    const char *values[1] = {r->service};
    if (gr__pgpool_query(r->pool, GR__SQL_DUE, 1, values, NULL, NULL, 1, gr__rem_due, r) == 0) r->polling = 1;
}

void gr__reminders_set_firing(gr__reminders_t *r, int on) { r->firing = on; }

int gr__reminders_new(uv_loop_t *loop, const char *conninfo, gr_runtime_t *rt, const char *self_id,
                      const gr__reminders_opts_t *opts, gr__owner_fn owner, void *owner_ud,
                      gr__reminders_t **out) {
    if (!loop || !conninfo || !rt || !self_id || !opts || !opts->service || !owner || !opts->poll_ms ||
        !opts->fire_timeout_ms || strlen(opts->service) > 255)
        return GR_EINVAL;
    gr__reminders_t *r = gr__calloc(1, sizeof *r);
    if (!r) return GR_ENOMEM;
    gr__pgpool_options_t po;
    gr__pgpool_options_init(&po);
    po.pool_size = 2; /* the poll and the grains' add/remove/list */
    po.query_timeout_ms = 10000;
    int rc = gr__pgpool_new(loop, conninfo, &po, &r->pool);
    if (rc == 0) {
        r->self = gr__strdup(self_id);
        if (!r->self) rc = GR_ENOMEM;
    }
    if (rc != 0) {
        if (r->pool) gr__pgpool_close(r->pool, NULL, NULL);
        gr__free(r);
        return rc;
    }
    r->loop = loop;
    r->rt = rt;
    r->opts = *opts;
    snprintf(r->service, sizeof r->service, "%s", opts->service);
    r->opts.service = r->service;
    r->owner = owner;
    r->owner_ud = owner_ud;
    uv_timer_init(loop, &r->poll);
    r->poll.data = r;
    uv_timer_start(&r->poll, gr__rem_poll, opts->poll_ms, opts->poll_ms);
    gr__runtime_set_reminders(rt, &gr__rem_ops, r);
    *out = r;
    return 0;
}

void gr__reminders_get_stats(const gr__reminders_t *r, gr__reminders_stats_t *out) {
    *out = r->stats;
    out->in_flight = r->fires_in_flight;
    out->firing = r->firing;
    out->polling = r->polling;
}

static void gr__rem_pool_closed(void *ud) {
    gr__reminders_t *r = ud;
    void (*cb)(void *) = r->close_cb;
    void *cud = r->close_ud;
    gr__free(r->self);
    gr__free(r);
    if (cb) cb(cud);
}

/* The pool closes once no fire is waiting on the runtime: their callbacks
 * still use the pool and this struct. */
static void gr__rem_maybe_closed(gr__reminders_t *r) {
    if (!r->closing || r->fires_in_flight || r->polling || !r->pool) return;
    gr__pgpool_t *pool = r->pool;
    r->pool = NULL;
    gr__pgpool_close(pool, gr__rem_pool_closed, r);
}

static void gr__rem_timer_closed(uv_handle_t *h) {
    gr__reminders_t *r = h->data;
    r->polling = 0; /* an answer still due comes back GR_ECANCELED inside the pool's close */
    gr__rem_maybe_closed(r);
}

void gr__reminders_close(gr__reminders_t *r, void (*cb)(void *), void *ud) {
    r->closing = 1;
    r->close_cb = cb;
    r->close_ud = ud;
    gr__runtime_set_reminders(r->rt, NULL, NULL);
    uv_close((uv_handle_t *)&r->poll, gr__rem_timer_closed);
}
