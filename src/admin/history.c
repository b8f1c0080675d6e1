/* src/admin/history.c - see history.h. Each series is a ring indexed by the unix
 * second, so a sample is found and expired without bookkeeping; a series is
 * allocated the first time its method is called (most methods never are). */
#include <stdio.h>

#include "admin/history.h"

typedef struct gr__sample {
    int64_t t; /* unix second; 0: empty */
    uint32_t calls, errors;
    uint32_t buckets[GR__HIST_BUCKETS];
} gr__sample_t;

typedef struct gr__series {
    UT_hash_handle hh;
    char *name; /* "Class/method": class names have no '/' */
    size_t cls_len;
    uint64_t last_calls, last_errors, last_buckets[GR__HIST_BUCKETS];
    gr__sample_t ring[GR__HISTORY_SECONDS];
} gr__series_t;

typedef struct gr__io_sample {
    int64_t t;
    uint32_t calls, failed, reads, writes, conflicts, errors;
} gr__io_sample_t;

struct gr__history {
    uv_loop_t *loop;
    gr_runtime_t *rt;
    uv_timer_t timer;
    gr__series_t *series;
    gr__runtime_stats_t last_stats;
    gr__io_sample_t io[GR__HISTORY_SECONDS];
    uint64_t last_cpu_us, last_wall_ms;
    double cpu;
    int64_t now; /* the second being sampled */
    void (*close_cb)(void *);
    void *close_ud;
};

static int64_t gr__unix_seconds(void) { return (int64_t)(gr__wall_ms() / 1000); }

static uint32_t gr__delta(uint64_t now, uint64_t *last) {
    uint64_t d = now >= *last ? now - *last : 0;
    *last = now;
    return d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
}

static void gr__history_method(void *ud, const gr__method_stats_t *ms) {
    gr__history_t *h = ud;
    char name[GR_CLASS_NAME_MAX + GR_METHOD_NAME_MAX + 2];
    int n = snprintf(name, sizeof name, "%s/%s", ms->cls, ms->method);
    if (n < 0 || (size_t)n >= sizeof name) return;
    gr__series_t *s = NULL;
    HASH_FIND_STR(h->series, name, s);
    if (!s) {
        if (ms->calls == 0) return;
        s = gr__calloc(1, sizeof *s);
        if (!s || !(s->name = gr__strdup(name))) {
            gr__free(s);
            return;
        }
        s->cls_len = strlen(ms->cls);
        HASH_ADD_KEYPTR(hh, h->series, s->name, strlen(s->name), s);
        if (gr__hash_oom()) {
            gr__free(s->name);
            gr__free(s);
            return;
        }
    }
    uint32_t calls = gr__delta(ms->calls, &s->last_calls);
    uint32_t errors = gr__delta(ms->errors, &s->last_errors);
    uint32_t buckets[GR__HIST_BUCKETS];
    for (size_t i = 0; i < GR__HIST_BUCKETS; i++)
        buckets[i] = gr__delta(ms->latency->buckets[i], &s->last_buckets[i]);
    if (calls == 0) return;
    gr__sample_t *x = &s->ring[h->now % GR__HISTORY_SECONDS];
    if (x->t != h->now) { /* a slot from five minutes ago, or empty */
        memset(x, 0, sizeof *x);
        x->t = h->now;
    }
    x->calls += calls;
    x->errors += errors;
    for (size_t i = 0; i < GR__HIST_BUCKETS; i++)
        x->buckets[i] += buckets[i];
}

static void gr__history_tick(uv_timer_t *t) {
    gr__history_t *h = t->data;
    h->now = gr__unix_seconds();
    gr__runtime_foreach_method(h->rt, gr__history_method, h);

    gr__runtime_stats_t st;
    gr__runtime_get_stats(h->rt, &st);
    gr__io_sample_t *x = &h->io[h->now % GR__HISTORY_SECONDS];
    if (x->t != h->now) {
        memset(x, 0, sizeof *x);
        x->t = h->now;
    }
    x->calls += gr__delta(st.calls, &h->last_stats.calls);
    x->failed += gr__delta(st.calls_failed, &h->last_stats.calls_failed);
    x->reads += gr__delta(st.storage_reads, &h->last_stats.storage_reads);
    x->writes += gr__delta(st.storage_writes, &h->last_stats.storage_writes);
    x->conflicts += gr__delta(st.storage_conflicts, &h->last_stats.storage_conflicts);
    x->errors += gr__delta(st.storage_errors, &h->last_stats.storage_errors);

    uv_rusage_t ru;
    uint64_t wall = uv_now(h->loop);
    if (uv_getrusage(&ru) == 0) {
        uint64_t cpu = (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 +
                       (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
        if (h->last_wall_ms && wall > h->last_wall_ms)
            h->cpu = (double)(cpu - h->last_cpu_us) / 1000.0 / (double)(wall - h->last_wall_ms);
        h->last_cpu_us = cpu;
        h->last_wall_ms = wall;
    }
}

int gr__history_new(uv_loop_t *loop, gr_runtime_t *rt, gr__history_t **out) {
    gr__history_t *h = gr__calloc(1, sizeof *h);
    if (!h) return GR_ENOMEM;
    h->loop = loop;
    h->rt = rt;
    gr__runtime_get_stats(rt, &h->last_stats);
    uv_timer_init(loop, &h->timer);
    h->timer.data = h;
    /* Sample just after each wall-clock second so silos' samples line up. */
    uv_timer_start(&h->timer, gr__history_tick, 1000 - gr__wall_ms() % 1000 + 5, 1000);
    uv_unref((uv_handle_t *)&h->timer);
    *out = h;
    return 0;
}

/* Samples after `since` and within the last five minutes, oldest first. */
static int gr__keep(int64_t t, int64_t since, int64_t now) {
    return t > since && t > now - GR__HISTORY_SECONDS;
}

/* Raise `since` until the samples after it fit in about max_bytes, dropping
 * the oldest seconds first. The estimates are upper bounds per sample: 16
 * buckets and three counters, or the six storage counters, with their
 * separators. */
static int64_t gr__fit_since(const gr__history_t *h, int64_t since, int64_t now, size_t max_bytes) {
    enum { SERIES_SAMPLE = 19 * 11 + 4, IO_SAMPLE = 7 * 11 + 4, SERIES_HEAD = 2 * 130 + 48 };
    size_t used = 0;
    for (const gr__series_t *s = h->series; s; s = s->hh.next)
        used += SERIES_HEAD;
    for (int64_t t = now; t > since && t > now - GR__HISTORY_SECONDS; t--) {
        size_t need = IO_SAMPLE;
        for (const gr__series_t *s = h->series; s; s = s->hh.next)
            if (s->ring[t % GR__HISTORY_SECONDS].t == t) need += SERIES_SAMPLE;
        if (used + need > max_bytes) return t;
        used += need;
    }
    return since;
}

int gr__history_write_json(const gr__history_t *h, int64_t since, size_t max_bytes, gr__buf_t *b) {
    int64_t now = gr__unix_seconds();
    since = gr__fit_since(h, since, now, max_bytes);
    int rc = gr__buf_printf(b, "\"series\":[");
    int first = 1;
    for (const gr__series_t *s = h->series; s && rc == 0; s = s->hh.next) {
        int64_t start = now - GR__HISTORY_SECONDS + 1;
        int any = 0;
        for (int64_t t = start; t <= now && rc == 0; t++) {
            const gr__sample_t *x = &s->ring[t % GR__HISTORY_SECONDS];
            if (x->t != t || !gr__keep(t, since, now)) continue;
            if (!any) {
                rc |= gr__buf_printf(b, "%s{\"class\":", first ? "" : ",");
                rc |= gr__buf_json_str(b, s->name, s->cls_len);
                rc |= gr__buf_printf(b, ",\"method\":");
                rc |= gr__buf_json_str(b, s->name + s->cls_len + 1, strlen(s->name + s->cls_len + 1));
                rc |= gr__buf_printf(b, ",\"samples\":[");
                first = 0;
            }
            rc |= gr__buf_printf(b, "%s[%lld,%u,%u", any ? "," : "", (long long)t, x->calls, x->errors);
            for (size_t i = 0; i < GR__HIST_BUCKETS; i++)
                rc |= gr__buf_printf(b, ",%u", x->buckets[i]);
            rc |= gr__buf_printf(b, "]");
            any = 1;
        }
        if (any) rc |= gr__buf_printf(b, "]}");
    }
    rc |= gr__buf_printf(b, "],\"storage\":[");
    first = 1;
    for (int64_t t = now - GR__HISTORY_SECONDS + 1; t <= now && rc == 0; t++) {
        const gr__io_sample_t *x = &h->io[t % GR__HISTORY_SECONDS];
        if (x->t != t || !gr__keep(t, since, now)) continue;
        rc |= gr__buf_printf(b, "%s[%lld,%u,%u,%u,%u,%u,%u]", first ? "" : ",", (long long)t, x->calls,
                             x->failed, x->reads, x->writes, x->conflicts, x->errors);
        first = 0;
    }
    rc |= gr__buf_printf(b, "]");
    return rc ? GR_ENOMEM : 0;
}

double gr__history_cpu(const gr__history_t *h) { return h->cpu; }

static void gr__history_closed(uv_handle_t *hd) {
    gr__history_t *h = hd->data;
    gr__series_t *s, *tmp;
    HASH_ITER(hh, h->series, s, tmp) {
        HASH_DEL(h->series, s);
        gr__free(s->name);
        gr__free(s);
    }
    void (*cb)(void *) = h->close_cb;
    void *ud = h->close_ud;
    gr__free(h);
    if (cb) cb(ud);
}

void gr__history_close(gr__history_t *h, void (*cb)(void *), void *ud) {
    h->close_cb = cb;
    h->close_ud = ud;
    uv_close((uv_handle_t *)&h->timer, gr__history_closed);
}
