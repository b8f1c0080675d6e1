/* src/lifecycle/ttl.c - the state TTL sweep and migrate-state progress
 * (lifecycle/ttl.h, docs/lifecycle.md).
 *
 * Every tick one page of one class with a state_ttl_s is read in key order
 * from a cursor kept per class (so each statement touches at most
 * page_rows rows, and a pass over a class takes rows / page_rows ticks).
 * Of a page, this silo deletes the expired rows whose ring range it owns,
 * by one version-checked statement that skips grains active anywhere
 * (storage/lifecycle.h); the other silos delete theirs from their own
 * passes. A row that is expired but not ours is left for its owner: after a
 * membership change a range may be swept twice or late, never by two silos
 * at once with effect (the statement deletes a row once). */
#include <stdio.h>
#include <string.h>

#include "lifecycle/ttl.h"
#include "storage/lifecycle.h"

#define GR__TTL_MAX_PROGRESS 256

typedef struct gr__ttl_cursor {
    const gr_class_t *cls;
    uint64_t next_ms; /* loop time the next pass may start (after a pass: a tenth of the TTL, 1 s..1 h) */
    int has;
    size_t len;
    uint8_t key[GR_KEY_MAX];
} gr__ttl_cursor_t;

typedef struct gr__ttl_prog {
    char cls[GR_CLASS_NAME_MAX + 1];
    uint32_t to_format;
    uint64_t upgraded, skipped, failed, remaining;
    int finished;
} gr__ttl_prog_t;

struct gr__ttl {
    uv_loop_t *loop;
    gr_runtime_t *rt;
    char *conninfo, *self;
    char service[256];
    gr__ttl_opts_t opts;
    gr__ttl_owner_fn owner;
    void *owner_ud;
    gr__pgpool_t *pool; /* opened on first use */
    uv_timer_t tick;
    int active, sweeping, reading, closing;
    size_t next_class;          /* round robin over the registered classes */
    gr__ttl_cursor_t *cursors;  /* one per class with a TTL, as met */
    size_t n_cursors;
    gr__ttl_cursor_t *current;  /* the class of the page in flight */
    uint64_t last_progress_ms;
    gr__ttl_prog_t *progress;
    size_t n_progress;
    gr__ttl_stats_t stats;
    void (*close_cb)(void *);
    void *close_ud;
};

void gr__ttl_opts_init(gr__ttl_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->tick_ms = 1000;
    o->page_rows = 1000;
    o->progress_ms = 5000;
}

static int gr__ttl_pool(gr__ttl_t *t) {
    if (t->pool) return 0;
    gr__pgpool_options_t po;
    gr__pgpool_options_init(&po);
    po.pool_size = 1;
    po.query_timeout_ms = 10000;
    return gr__pgpool_new(t->loop, t->conninfo, &po, &t->pool);
}

/* The cursor of the next class with a TTL from next_class on, or NULL. */
static gr__ttl_cursor_t *gr__ttl_next(gr__ttl_t *t) {
    for (size_t tries = 0; tries < 2; tries++) {
        for (const gr_class_t *c; (c = gr__runtime_class_at(t->rt, t->next_class)) != NULL; t->next_class++) {
            if (!c->state_ttl_s || (c->flags & GR_CLASS_STATELESS_WORKER)) continue;
            gr__ttl_cursor_t *found = NULL;
            for (size_t i = 0; i < t->n_cursors && !found; i++)
                if (t->cursors[i].cls == c) found = &t->cursors[i];
            if (found && !found->has && found->next_ms > uv_now(t->loop)) continue; /* between passes */
            if (found) return found;
            gr__ttl_cursor_t *n = gr__realloc(t->cursors, (t->n_cursors + 1) * sizeof *n);
            if (!n) return NULL;
            t->cursors = n;
            memset(&n[t->n_cursors], 0, sizeof n[0]);
            n[t->n_cursors].cls = c;
            return &t->cursors[t->n_cursors++];
        }
        t->next_class = 0; /* wrap once */
    }
    return NULL;
}

static void gr__ttl_expired(void *ud, int status, uint64_t deleted, uint64_t held, uint64_t reminders,
                            const char *detail) {
    gr__ttl_t *t = ud;
    t->sweeping = 0;
    if (status == GR_ECANCELED || t->closing) return;
    if (status != 0) {
        t->stats.errors++;
        gr__log(GR_LOG_LEVEL_WARN, NULL, NULL, 0, "state TTL: deleting expired grains failed: %s",
                detail ? detail : gr_strerror(status));
        return;
    }
    t->stats.deleted += deleted;
    t->stats.held += held;
    t->stats.reminders += reminders;
}

static void gr__ttl_page(void *ud, int status, const gr__pgl_row_t *rows, size_t n, const char *detail) {
    gr__ttl_t *t = ud;
    gr__ttl_cursor_t *cur = t->current;
    t->sweeping = 0;
    t->current = NULL;
    if (status == GR_ECANCELED || t->closing) return;
    if (status != 0) {
        t->stats.errors++;
        gr__log(GR_LOG_LEVEL_WARN, NULL, NULL, 0, "state TTL: reading a page failed: %s",
                detail ? detail : gr_strerror(status));
        return;
    }
    const gr_class_t *cls = cur->cls;
    t->stats.scanned += n;
    gr__pgl_row_t *mine = n ? gr__calloc(n, sizeof *mine) : NULL;
    if (n && !mine) { /* the same page again next tick */
        t->stats.errors++;
        return;
    }
    size_t m = 0;
    for (size_t i = 0; i < n && mine; i++) {
        if (!rows[i].expired) continue;
        const char *owner = t->owner(t->owner_ud, cls->name, rows[i].key, rows[i].key_len);
        if (owner && !strcmp(owner, t->self)) mine[m++] = rows[i];
    }
    t->stats.expired += m;
    if (n < t->opts.page_rows || rows[n - 1].key_len > GR_KEY_MAX) {
        cur->has = 0; /* the class's last page: the next pass starts from its first key */
        uint64_t wait = (uint64_t)cls->state_ttl_s * 100; /* a tenth of the TTL, in ms */
        cur->next_ms = uv_now(t->loop) + (wait < 1000 ? 1000 : wait > 3600000 ? 3600000 : wait);
        t->stats.passes++;
        t->next_class++;
    } else {
        cur->has = 1;
        cur->len = rows[n - 1].key_len;
        memcpy(cur->key, rows[n - 1].key, cur->len);
    }
    if (m) {
        t->sweeping = 1;
        int rc = gr__pgl_expire(t->pool, t->service, cls->name, mine, m, cls->state_ttl_s, gr__ttl_expired, t);
        if (rc != 0) {
            t->sweeping = 0;
            t->stats.errors++;
        }
    }
    gr__free(mine);
}

static void gr__ttl_progress_read(void *ud, int status, const char *const *classes, const gr__pgl_progress_t *rows,
                                  size_t n) {
    gr__ttl_t *t = ud;
    t->reading = 0;
    if (status != 0 || t->closing) return;
    gr__ttl_prog_t *p = n ? gr__calloc(n, sizeof *p) : NULL;
    if (n && !p) return; /* keep the last one */
    for (size_t i = 0; i < n; i++) {
        snprintf(p[i].cls, sizeof p[i].cls, "%s", classes[i]);
        p[i].to_format = rows[i].to_format;
        p[i].upgraded = rows[i].upgraded;
        p[i].skipped = rows[i].skipped;
        p[i].failed = rows[i].failed;
        p[i].remaining = rows[i].remaining;
        p[i].finished = rows[i].finished;
    }
    gr__free(t->progress);
    t->progress = p;
    t->n_progress = n;
}

static void gr__ttl_tick(uv_timer_t *h) {
    gr__ttl_t *t = h->data;
    if (t->closing) return;
    uint64_t now = uv_now(t->loop);
    if (t->opts.progress_ms && !t->reading && now - t->last_progress_ms >= t->opts.progress_ms &&
        gr__ttl_pool(t) == 0) {
        t->last_progress_ms = now;
        t->reading = 1;
        if (gr__pgl_progress_read(t->pool, t->service, gr__ttl_progress_read, t) != 0) t->reading = 0;
    }
    if (!t->active || t->sweeping || !t->opts.page_rows) return;
    gr__ttl_cursor_t *cur = gr__ttl_next(t);
    if (!cur || gr__ttl_pool(t) != 0) return;
    t->sweeping = 1;
    t->current = cur;
    int rc = gr__pgl_scan(t->pool, t->service, cur->cls->name, cur->has ? cur->key : NULL, cur->len,
                          cur->cls->state_ttl_s, t->opts.page_rows, gr__ttl_page, t);
    if (rc != 0) {
        t->sweeping = 0;
        t->current = NULL;
        t->stats.errors++;
    }
}

int gr__ttl_new(uv_loop_t *loop, const char *conninfo, gr_runtime_t *rt, const char *self_id,
                const gr__ttl_opts_t *opts, gr__ttl_owner_fn owner, void *owner_ud, gr__ttl_t **out) {
    if (!loop || !conninfo || !rt || !self_id || !opts || !opts->service || !owner || !opts->tick_ms ||
        opts->page_rows > 10000 || strlen(opts->service) > 255)
        return GR_EINVAL;
    gr__ttl_t *t = gr__calloc(1, sizeof *t);
    if (!t) return GR_ENOMEM;
    t->conninfo = gr__strdup(conninfo);
    t->self = gr__strdup(self_id);
    if (!t->conninfo || !t->self) {
        gr__free(t->conninfo);
        gr__free(t->self);
        gr__free(t);
        return GR_ENOMEM;
    }
    t->loop = loop;
    t->rt = rt;
    t->opts = *opts;
    snprintf(t->service, sizeof t->service, "%s", opts->service);
    t->opts.service = t->service;
    t->owner = owner;
    t->owner_ud = owner_ud;
    uv_timer_init(loop, &t->tick);
    t->tick.data = t;
    uv_timer_start(&t->tick, gr__ttl_tick, opts->tick_ms, opts->tick_ms);
    *out = t;
    return 0;
}

void gr__ttl_set_active(gr__ttl_t *t, int on) { t->active = on; }

void gr__ttl_get_stats(const gr__ttl_t *t, gr__ttl_stats_t *out) { *out = t->stats; }

int gr__ttl_write_metrics(const gr__ttl_t *t, gr__buf_t *b) {
    const gr__ttl_stats_t *s = &t->stats;
    int rc = gr__buf_printf(
        b,
        "# HELP granary_state_ttl_scanned_total Stored rows the state TTL sweep looked at.\n"
        "# TYPE granary_state_ttl_scanned_total counter\ngranary_state_ttl_scanned_total %llu\n"
        "# HELP granary_state_ttl_deleted_total Grains deleted for their class's state_ttl_s.\n"
        "# TYPE granary_state_ttl_deleted_total counter\ngranary_state_ttl_deleted_total %llu\n"
        "# HELP granary_state_ttl_held_total Expired grains kept because they were active.\n"
        "# TYPE granary_state_ttl_held_total counter\ngranary_state_ttl_held_total %llu\n"
        "# HELP granary_state_ttl_reminders_deleted_total Reminders deleted with their grains.\n"
        "# TYPE granary_state_ttl_reminders_deleted_total counter\ngranary_state_ttl_reminders_deleted_total "
        "%llu\n"
        "# HELP granary_state_ttl_passes_total Sweeps that reached a class's last stored key.\n"
        "# TYPE granary_state_ttl_passes_total counter\ngranary_state_ttl_passes_total %llu\n"
        "# HELP granary_state_ttl_errors_total Statements of the state TTL sweep that failed.\n"
        "# TYPE granary_state_ttl_errors_total counter\ngranary_state_ttl_errors_total %llu\n",
        (unsigned long long)s->scanned, (unsigned long long)s->deleted, (unsigned long long)s->held,
        (unsigned long long)s->reminders, (unsigned long long)s->passes, (unsigned long long)s->errors);
    if (t->n_progress)
        rc |= gr__buf_printf(b, "# HELP granary_state_upgrade_rows Rows of a silo migrate-state run, by result "
                                "(read from the database).\n# TYPE granary_state_upgrade_rows gauge\n"
                                "# HELP granary_state_upgrade_remaining Rows at an older format at the run's last "
                                "count.\n# TYPE granary_state_upgrade_remaining gauge\n"
                                "# HELP granary_state_upgrade_finished 1 once the run has ended.\n"
                                "# TYPE granary_state_upgrade_finished gauge\n");
    for (size_t i = 0; i < t->n_progress && rc == 0; i++) {
        const gr__ttl_prog_t *p = &t->progress[i];
        rc |= gr__buf_printf(b,
                             "granary_state_upgrade_rows{class=\"%s\",to_format=\"%u\",result=\"upgraded\"} %llu\n"
                             "granary_state_upgrade_rows{class=\"%s\",to_format=\"%u\",result=\"skipped\"} %llu\n"
                             "granary_state_upgrade_rows{class=\"%s\",to_format=\"%u\",result=\"failed\"} %llu\n"
                             "granary_state_upgrade_remaining{class=\"%s\"} %llu\n"
                             "granary_state_upgrade_finished{class=\"%s\"} %d\n",
                             p->cls, (unsigned)p->to_format, (unsigned long long)p->upgraded, p->cls,
                             (unsigned)p->to_format, (unsigned long long)p->skipped, p->cls,
                             (unsigned)p->to_format, (unsigned long long)p->failed, p->cls,
                             (unsigned long long)p->remaining, p->cls, p->finished);
    }
    return rc ? GR_ENOMEM : 0;
}

static void gr__ttl_pool_closed(void *ud) {
    gr__ttl_t *t = ud;
    void (*cb)(void *) = t->close_cb;
    void *cud = t->close_ud;
    gr__free(t->cursors);
    gr__free(t->progress);
    gr__free(t->conninfo);
    gr__free(t->self);
    gr__free(t);
    if (cb) cb(cud);
}

static void gr__ttl_timer_closed(uv_handle_t *h) {
    gr__ttl_t *t = h->data;
    /* What is in flight completes GR_ECANCELED inside the pool's close,
     * before its callback frees us. */
    if (t->pool)
        gr__pgpool_close(t->pool, gr__ttl_pool_closed, t);
    else
        gr__ttl_pool_closed(t);
}

void gr__ttl_close(gr__ttl_t *t, void (*cb)(void *), void *ud) {
    t->closing = 1;
    t->close_cb = cb;
    t->close_ud = ud;
    uv_timer_stop(&t->tick);
    uv_close((uv_handle_t *)&t->tick, gr__ttl_timer_closed);
}
