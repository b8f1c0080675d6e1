/* tests/support/harness.c - see harness.h. */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "support.h"

uint64_t gr_h_now_ms(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

void gr_h_cluster_init(gr_h_cluster_t *c, const char *name, const char *pg_url, const char *log_path) {
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    snprintf(c->secret, sizeof c->secret, "s3cret");
    snprintf(c->log_path, sizeof c->log_path, "%s", log_path);
    c->pg_url = pg_url;
}

int gr_h_start_silo(gr_h_cluster_t *c, int i, const char *db) {
    gr_h_silo_t *s = &c->silos[i];
    char listen[64];
    if (!s->host[0]) snprintf(s->host, sizeof s->host, "127.0.0.1");
    if (!s->port) s->port = gr_test_free_port();
    snprintf(listen, sizeof listen, "%s:%d", s->host, s->port);
    snprintf(s->db, sizeof s->db, "%s", db ? db : c->pg_url);
    const char *silo_argv[] = {gr_test_build_path("silo"),
                               "run",
                               "--database",
                               s->db,
                               "--listen",
                               listen,
                               "--grains",
                               gr_test_build_path(s->grains ? s->grains : "examples/counter.so"),
                               "--cluster",
                               c->name,
                               "--secret",
                               c->secret,
                               "--silo-secret",
                               "s1lo-s3cret",
                               NULL};
    const char *argv[48] = {0};
    int a = 0;
    if (s->netns[0]) { /* `ip netns exec` execs the silo: same pid */
        argv[a++] = "/usr/sbin/ip";
        argv[a++] = "netns";
        argv[a++] = "exec";
        argv[a++] = s->netns;
    }
    for (int k = 0; silo_argv[k]; k++)
        argv[a++] = silo_argv[k];
    char cert[600], key[600], ca[600];
    if (c->tls_dir[0]) {
        snprintf(cert, sizeof cert, "%s/silo.crt", c->tls_dir);
        snprintf(key, sizeof key, "%s/silo.key", c->tls_dir);
        snprintf(ca, sizeof ca, "%s/ca.crt", c->tls_dir);
        const char *tls[] = {"--tls-cert",  cert, "--tls-key",         key,
                             "--tls-ca",    ca,   "--tls-client-auth", "--tls-server-name",
                             "granary-silo"};
        for (size_t k = 0; k < sizeof tls / sizeof tls[0]; k++)
            argv[a++] = tls[k];
    }
    for (int k = 0; s->extra && s->extra[k] && a < 46; k++)
        argv[a++] = s->extra[k];
    s->pid = gr_test_spawn(argv, c->log_path);
    if (s->pid <= 0) return -1;
    return gr_test_wait_addr(s->host, s->port, 10000);
}

int gr_h_count_active(const gr_h_cluster_t *c) {
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM granary_silo WHERE cluster = '%s' AND status = 'active'",
             c->name);
    char *v = gr_test_sql(c->pg_url, sql);
    int n = v ? atoi(v) : -1;
    free(v);
    return n;
}

int gr_h_wait_active(const gr_h_cluster_t *c, uv_loop_t *loop, int n, uint64_t timeout_ms) {
    uint64_t end = gr_h_now_ms() + timeout_ms;
    while (gr_h_now_ms() < end) {
        if (gr_h_count_active(c) == n) return 0;
        if (loop)
            gr_test_run_for(loop, 50);
        else
            usleep(50000);
    }
    return -1;
}

int gr_h_sigterm_and_wait(gr_h_cluster_t *c, uv_loop_t *loop, int i, uint64_t *took_ms) {
    uint64_t t0 = gr_h_now_ms();
    kill(c->silos[i].pid, SIGTERM);
    int exited = -1;
    while (gr_h_now_ms() - t0 < 15000 && (exited = gr_test_wait(c->silos[i].pid, 0)) < 0) {
        if (loop)
            gr_test_run_for(loop, 20);
        else
            usleep(20000);
    }
    if (took_ms) *took_ms = gr_h_now_ms() - t0;
    if (exited >= 0) c->silos[i].pid = 0;
    return exited;
}

void gr_h_kill(gr_h_cluster_t *c, int i) {
    if (c->silos[i].pid <= 0) return;
    kill(c->silos[i].pid, SIGKILL);
    gr_test_wait(c->silos[i].pid, 5000);
    c->silos[i].pid = 0;
}

void gr_h_kill_all(gr_h_cluster_t *c) {
    for (int i = 0; i < GR_H_MAX_SILOS; i++)
        gr_h_kill(c, i);
}

int gr_h_make_certs(char *dir, size_t size) {
    const char *src = getenv("GRANARY_SOURCE_DIR");
    snprintf(dir, size, "/tmp/granary-certs.XXXXXX");
    if (!src || !mkdtemp(dir)) return -1;
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "bash '%s/tests/support/make_certs.sh' '%s'", src, dir);
    return system(cmd) == 0 ? 0 : -1;
}

gr_client_t *gr_h_client(const gr_h_cluster_t *c, uv_loop_t *loop, const char *list) {
    gr_client_options_t o;
    gr_client_options_init(&o);
    o.silos = list;
    o.cluster = c->name;
    o.secret = c->secret;
    char ca[600], cert[600], key[600];
    if (c->tls_dir[0]) {
        snprintf(ca, sizeof ca, "%s/ca.crt", c->tls_dir);
        snprintf(cert, sizeof cert, "%s/client.crt", c->tls_dir);
        snprintf(key, sizeof key, "%s/client.key", c->tls_dir);
        o.tls_ca = ca;
        o.tls_cert = cert;
        o.tls_key = key;
        o.tls_server_name = "granary-silo";
    }
    gr_client_t *cl;
    return gr_client_new(loop, &o, &cl) == 0 ? cl : NULL;
}

void gr_h_silo_list(const gr_h_cluster_t *c, int first, int n_total, char *out, size_t size) {
    size_t o = 0;
    out[0] = '\0';
    for (int k = 0; k < n_total && o < size; k++)
        o += (size_t)snprintf(out + o, size - o, "%s%s:%d", k ? "," : "",
                              c->silos[(first + k) % n_total].host[0] ? c->silos[(first + k) % n_total].host
                                                                      : "127.0.0.1",
                              c->silos[(first + k) % n_total].port);
}

/* ---- bursts ---- */

typedef struct {
    int done, failed;
    char *err;
    size_t err_size;
} gr_h_burst_t;

typedef struct {
    gr_h_burst_t *b;
} gr_h_burst_call_t;

static void gr_h_burst_done(void *ud, int status, const uint8_t *reply, size_t len) {
    gr_h_burst_t *b = ud;
    b->done++;
    if (status == 0 && len == 1 && reply[0] == '1') return;
    if (b->failed++ == 0)
        snprintf(b->err, b->err_size, "%s: %.*s", gr_err_name(status), (int)(len < 200 ? len : 200),
                 (const char *)reply);
}

int gr_h_burst(uv_loop_t *loop, gr_client_t *c, const char *cls, const char *prefix, int n,
               uint64_t timeout_ms, char *err, size_t err_size) {
    gr_h_burst_t b = {0, 0, err, err_size};
    err[0] = '\0';
    int sent = 0;
    for (int i = 0; i < n; i++) {
        char key[64];
        snprintf(key, sizeof key, "%s-%d", prefix, i);
        gr_ref_t ref = {cls, key, strlen(key)};
        if (gr_client_call(c, &ref, "incr", NULL, 0, (uint32_t)timeout_ms, gr_h_burst_done, &b) == 0)
            sent++;
        else if (b.failed++ == 0)
            snprintf(err, err_size, "call %d could not be sent", i);
    }
    uint64_t end = gr_h_now_ms() + timeout_ms + 2000;
    while (b.done < sent && gr_h_now_ms() < end)
        gr_test_run_for(loop, 10);
    if (b.done < sent && !err[0]) snprintf(err, err_size, "%d calls never answered", sent - b.done);
    return b.failed + (sent - b.done);
}

int gr_h_burst_sweep(uv_loop_t *loop, gr_client_t *c, const char *cls, const char *tag, char *err,
                     size_t err_size) {
    static const int sizes[] = {1, 32, 256, 257, 1024, 4096};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char prefix[48], first[256];
        snprintf(prefix, sizeof prefix, "%s%d", tag, sizes[i]);
        int failed = gr_h_burst(loop, c, cls, prefix, sizes[i], 30000, first, sizeof first);
        if (failed) {
            snprintf(err, err_size, "%d in flight: %d calls failed, first: %s", sizes[i], failed, first);
            return -1;
        }
    }
    return 0;
}

/* ---- the load ---- */

typedef struct gr_h_worker {
    gr_h_load_t *load;
    int id;
    uint64_t seq;
    int key;
    int busy;
    int hot;     /* a worker of the hot workload */
    int get;     /* the operation in progress is a get */
    int retried; /* ... and was sent more than once */
    uint64_t rng;
    uint64_t started, inv_us;
    uv_timer_t retry;
} gr_h_worker_t;

/* One acknowledged operation of the history. */
typedef struct gr_h_op {
    uint64_t inv_us, ack_us; /* first send, final acknowledgement (one monotonic clock) */
    int64_t value;           /* the counter value it returned */
    uint16_t key;
    uint8_t get, retried;
} gr_h_op_t;

struct gr_h_load {
    gr_h_cluster_t *cluster;
    uv_loop_t *loop;
    gr_client_t *clients[GR_H_MAX_SILOS];
    int nclients, nworkers, nkeys, nhot_keys;
    gr_h_worker_t workers[GR_H_MAX_WORKERS];
    int running;
    uint64_t nonce;                 /* in every operation's idempotency key: loads never share keys */
    uint64_t acked[GR_H_MAX_KEYS];  /* incrs acknowledged, per key */
    uint64_t issued[GR_H_MAX_KEYS]; /* incrs started (each counted once, however often sent) */
    gr_h_summary_t sum;
    uint64_t *lat;
    size_t nlat, caplat;
    gr_h_op_t *hist;
    size_t nhist, caphist;
};

static uint64_t gr_h_now_us(void) { return uv_hrtime() / 1000u; }

/* Key index k: ctr-k for the counters, hot-(k - nkeys) for the hot ones. */
static void gr_h_key_name(const gr_h_load_t *l, int k, char *out, size_t size) {
    if (k < l->nkeys)
        snprintf(out, size, "ctr-%d", k);
    else
        snprintf(out, size, "hot-%d", k - l->nkeys);
}

static void gr_h_issue(gr_h_worker_t *w);

static void gr_h_retry_cb(uv_timer_t *t) { gr_h_issue(t->data); }

static void gr_h_record(gr_h_load_t *l, gr_h_worker_t *w, const uint8_t *reply, size_t len) {
    if (l->nhist == l->caphist) {
        size_t cap = l->caphist ? l->caphist * 2 : 65536;
        gr_h_op_t *n = realloc(l->hist, cap * sizeof *n);
        if (!n) return;
        l->hist = n;
        l->caphist = cap;
    }
    char num[32];
    size_t n = len < sizeof num - 1 ? len : sizeof num - 1;
    memcpy(num, reply, n);
    num[n] = '\0';
    gr_h_op_t *op = &l->hist[l->nhist++];
    op->inv_us = w->inv_us;
    op->ack_us = gr_h_now_us();
    op->value = strtoll(num, NULL, 10);
    op->key = (uint16_t)w->key;
    op->get = (uint8_t)w->get;
    op->retried = (uint8_t)w->retried;
}

static void gr_h_done(void *ud, int status, const uint8_t *reply, size_t len) {
    gr_h_worker_t *w = ud;
    gr_h_load_t *l = w->load;
    if (status == 0 || !gr_err_retryable(status)) {
        uint64_t lat = gr_h_now_ms() - w->started;
        if (status == 0) {
            gr_h_record(l, w, reply, len);
            if (!w->get) l->acked[w->key]++;
            l->sum.acknowledged++;
            if (lat > l->sum.max_latency_ms) l->sum.max_latency_ms = lat;
            if (l->nlat < l->caplat) l->lat[l->nlat++] = lat;
        } else if (l->sum.other_errors++ == 0) {
            snprintf(l->sum.first_other_error, sizeof l->sum.first_other_error, "%s: %.*s",
                     gr_err_name(status), (int)(len < 200 ? len : 200), (const char *)reply);
        }
        w->seq++;
        w->busy = 0;
        if (l->running) gr_h_issue(w);
        return;
    }
    l->sum.retryable_errors++;
    uv_timer_start(&w->retry, gr_h_retry_cb, 20, 0); /* the same operation id again */
}

static void gr_h_issue(gr_h_worker_t *w) {
    gr_h_load_t *l = w->load;
    char op[48], key[16];
    if (!w->busy) {
        w->busy = 1;
        w->retried = 0;
        if (w->hot) {
            w->rng ^= w->rng << 13, w->rng ^= w->rng >> 7, w->rng ^= w->rng << 17;
            w->key = l->nkeys + (int)(w->rng % (uint64_t)l->nhot_keys);
            w->get = (w->rng >> 32) % 2 == 0;
        } else {
            w->key = (int)((w->id * 7 + w->seq * 5) % (uint64_t)l->nkeys);
            w->get = 0;
        }
        if (!w->get) l->issued[w->key]++;
        w->started = gr_h_now_ms();
        w->inv_us = gr_h_now_us();
    } else {
        w->retried = 1;
    }
    snprintf(op, sizeof op, "%llx-w%d-%llu", (unsigned long long)l->nonce, w->id, (unsigned long long)w->seq);
    gr_h_key_name(l, w->key, key, sizeof key);
    gr_ref_t ref = {"Counter", key, strlen(key)};
    l->sum.attempted++;
    /* A hot worker enters through a different silo for each operation. */
    int ci = w->hot ? (int)((uint64_t)w->id + w->seq) % l->nclients : w->id % l->nclients;
    gr_client_t *c = l->clients[ci];
    /* A plain incr with the framework's idempotency key: every send of one
     * operation carries the same key, so it counts once (docs/exactly-once.md). */
    gr_call_options_t co;
    gr_call_options_init(&co);
    co.timeout_ms = 3000;
    co.idempotency_key = op;
    co.idempotency_key_len = strlen(op);
    int rc = w->get ? gr_client_call(c, &ref, "get", NULL, 0, 3000, gr_h_done, w)
                    : gr_client_call_ex(c, &ref, "incr", NULL, 0, &co, gr_h_done, w);
    if (rc != 0) uv_timer_start(&w->retry, gr_h_retry_cb, 20, 0);
}

gr_h_load_t *gr_h_load_new(gr_h_cluster_t *c, uv_loop_t *loop, int n_clients, int workers, int keys) {
    if (n_clients < 1 || n_clients > GR_H_MAX_SILOS || workers < 1 || workers > GR_H_MAX_WORKERS ||
        keys < 1 || keys > GR_H_MAX_KEYS)
        return NULL;
    gr_h_load_t *l = calloc(1, sizeof *l);
    l->cluster = c;
    l->loop = loop;
    l->nonce = uv_hrtime() ^ ((uint64_t)getpid() << 40);
    l->nclients = n_clients;
    l->nworkers = workers;
    l->nkeys = keys;
    l->caplat = 1 << 21;
    l->lat = malloc(l->caplat * sizeof *l->lat);
    for (int i = 0; i < n_clients; i++) {
        char list[1024];
        gr_h_silo_list(c, i, n_clients, list, sizeof list);
        l->clients[i] = gr_h_client(c, loop, list);
    }
    for (int i = 0; i < workers; i++) {
        l->workers[i].load = l;
        l->workers[i].id = i;
        uv_timer_init(loop, &l->workers[i].retry);
        l->workers[i].retry.data = &l->workers[i];
    }
    return l;
}

int gr_h_load_add_hot(gr_h_load_t *l, int workers, int keys) {
    if (workers < 1 || keys < 1 || l->nworkers + workers > GR_H_MAX_WORKERS ||
        l->nkeys + keys > GR_H_MAX_KEYS || l->running)
        return -1;
    l->nhot_keys = keys;
    for (int i = l->nworkers; i < l->nworkers + workers; i++) {
        gr_h_worker_t *w = &l->workers[i];
        w->load = l;
        w->id = i;
        w->hot = 1;
        w->rng = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
        uv_timer_init(l->loop, &w->retry);
        w->retry.data = w;
    }
    l->nworkers += workers;
    return 0;
}

void gr_h_load_start(gr_h_load_t *l) {
    l->running = 1;
    for (int i = 0; i < l->nworkers; i++)
        gr_h_issue(&l->workers[i]);
}

int gr_h_load_stop(gr_h_load_t *l, uint64_t timeout_ms) {
    l->running = 0;
    uint64_t end = gr_h_now_ms() + timeout_ms;
    for (;;) {
        int busy = 0;
        for (int i = 0; i < l->nworkers; i++)
            busy += l->workers[i].busy;
        if (!busy) return 0;
        if (gr_h_now_ms() > end) return -1;
        gr_test_run_for(l->loop, 20);
    }
}

static int gr_h_cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* ---- the history checker ----
 * A counter is linearizable when its acknowledged operations can be put in
 * one order that respects real time. For a counter whose incrs each add one
 * and return the new value, that comes down to, per key:
 *  - real time: if X was acknowledged before Y was first sent, Y returns at
 *    least X's value, and more than it if Y is an incr (Y took effect after
 *    X, on a counter already at X's value or beyond; a retried incr whose
 *    first send was applied gets that send's stored reply (its key), and
 *    X was then not acknowledged before Y was first sent);
 *  - no value twice: two incrs answered on their first send (so each
 *    returned the value its own increment made) never return the same value;
 *  - the final value lies between the acknowledged and the attempted incrs.
 * Sorting by acknowledgement with a running maximum makes the first check
 * O(n log n). */
static int gr_h_cmp_ack(const void *a, const void *b) {
    const gr_h_op_t *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return x->ack_us < y->ack_us ? -1 : x->ack_us > y->ack_us;
}

static int gr_h_cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void gr_h_violation(gr_h_load_t *l, const char *fmt, const char *key, const gr_h_op_t *y,
                           const gr_h_op_t *x) {
    if (l->sum.first_violation[0]) return;
    snprintf(l->sum.first_violation, sizeof l->sum.first_violation, fmt, key, y->get ? "get" : "incr",
             (long long)y->value, (unsigned long long)y->inv_us % 100000000u,
             x ? (x->get ? "get" : "incr") : "", x ? (long long)x->value : 0LL,
             x ? (unsigned long long)x->ack_us % 100000000u : 0ULL);
}

static void gr_h_check_history(gr_h_load_t *l, const int64_t *final) {
    l->sum.history_ops = l->nhist;
    if (!l->nhist) return;
    qsort(l->hist, l->nhist, sizeof *l->hist, gr_h_cmp_ack);
    size_t *best = malloc(l->nhist * sizeof *best); /* index of the max value acknowledged so far */
    int64_t *vals = malloc(l->nhist * sizeof *vals);
    if (!best || !vals) {
        free(best);
        free(vals);
        return;
    }
    for (size_t from = 0; from < l->nhist;) {
        size_t to = from;
        while (to < l->nhist && l->hist[to].key == l->hist[from].key)
            to++;
        char key[16];
        gr_h_key_name(l, l->hist[from].key, key, sizeof key);
        for (size_t i = from; i < to; i++)
            best[i] = i == from || l->hist[i].value > l->hist[best[i - 1]].value ? i : best[i - 1];
        size_t nv = 0;
        for (size_t i = from; i < to; i++) {
            const gr_h_op_t *y = &l->hist[i];
            l->sum.gets += y->get;
            if (!y->get && !y->retried) vals[nv++] = y->value;
            /* The last op acknowledged before y was first sent. */
            size_t lo = from, hi = to;
            while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (l->hist[mid].ack_us < y->inv_us)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            const gr_h_op_t *x = lo > from ? &l->hist[best[lo - 1]] : NULL;
            if (x && (y->value < x->value || (!y->get && y->value == x->value))) {
                l->sum.stale_reads++;
                gr_h_violation(l,
                               "%s: %s -> %lld sent at %llu us, after %s -> %lld was acknowledged at %llu us",
                               key, y, x);
            }
            if (final[y->key] >= 0 && y->value > final[y->key]) {
                l->sum.stale_reads++;
                if (!l->sum.first_violation[0])
                    snprintf(l->sum.first_violation, sizeof l->sum.first_violation,
                             "%s: %s -> %lld is above the final value %lld", key, y->get ? "get" : "incr",
                             (long long)y->value, (long long) final[y->key]);
            }
        }
        qsort(vals, nv, sizeof *vals, gr_h_cmp_i64);
        for (size_t i = 1; i < nv; i++)
            if (vals[i] == vals[i - 1]) {
                if (l->sum.doubled_values++ == 0 && !l->sum.first_violation[0])
                    snprintf(l->sum.first_violation, sizeof l->sum.first_violation,
                             "%s: two first-try incrs both returned %lld", key, (long long)vals[i]);
            }
        from = to;
    }
    free(best);
    free(vals);
}

int gr_h_load_verify(gr_h_load_t *l, gr_h_summary_t *out) {
    int unread = 0;
    /* One budget for all the keys: a cluster that cannot answer must fail
     * the run in bounded time, not wait 15 s per key. */
    uint64_t end = gr_h_now_ms() + 30000;
    int64_t final[GR_H_MAX_KEYS];
    for (int k = 0; k < l->nkeys + l->nhot_keys; k++) {
        final[k] = -1;
        char key[16];
        gr_h_key_name(l, k, key, sizeof key);
        gr_ref_t ref = {"Counter", key, strlen(key)};
        gr_test_reply_t r;
        do {
            memset(&r, 0, sizeof r);
            if (gr_client_call(l->clients[k % l->nclients], &ref, "get", NULL, 0, 3000, gr_test_on_reply,
                               &r) != 0)
                break;
            gr_test_run_until(l->loop, &r.done, 5000);
            if (r.status != 0) gr_test_run_for(l->loop, 50);
        } while (r.status != 0 && gr_err_retryable(r.status) && gr_h_now_ms() < end);
        if (r.status != 0) {
            if (unread++ == 0)
                printf("verify: cannot read %s back: %s %s\n", key, gr_err_name(r.status), r.reply);
            continue;
        }
        uint64_t stored = strtoull(r.reply, NULL, 10);
        final[k] = (int64_t)stored;
        if (stored < l->acked[k]) l->sum.lost += l->acked[k] - stored;
        if (stored > l->acked[k]) l->sum.duplicated += stored - l->acked[k];
        if (stored < l->acked[k] || stored > l->issued[k]) {
            if (l->sum.out_of_range++ == 0 && !l->sum.first_violation[0])
                snprintf(l->sum.first_violation, sizeof l->sum.first_violation,
                         "%s: final value %llu outside [%llu acknowledged, %llu attempted] increments", key,
                         (unsigned long long)stored, (unsigned long long)l->acked[k],
                         (unsigned long long)l->issued[k]);
        }
    }
    gr_h_check_history(l, final);
    if (l->nlat) {
        qsort(l->lat, l->nlat, sizeof *l->lat, gr_h_cmp);
        l->sum.p99_latency_ms = l->lat[(size_t)((double)(l->nlat - 1) * 0.99)];
        l->sum.longest_unavailable_ms = l->lat[l->nlat - 1];
    }
    *out = l->sum;
    return (unread || l->sum.lost || l->sum.duplicated || l->sum.other_errors || !l->sum.acknowledged ||
            l->sum.stale_reads || l->sum.doubled_values || l->sum.out_of_range)
               ? -1
               : 0;
}

void gr_h_summary_print(const gr_h_summary_t *s, const char *label) {
    printf(
        "%s: attempted %llu, acknowledged %llu, failed with a clear retryable error %llu, other errors %llu, "
        "lost %llu, duplicated %llu, max latency %llu ms, p99 %llu ms, longest unavailability %llu ms\n",
        label, (unsigned long long)s->attempted, (unsigned long long)s->acknowledged,
        (unsigned long long)s->retryable_errors, (unsigned long long)s->other_errors,
        (unsigned long long)s->lost, (unsigned long long)s->duplicated, (unsigned long long)s->max_latency_ms,
        (unsigned long long)s->p99_latency_ms, (unsigned long long)s->longest_unavailable_ms);
    printf("%s: history checker: %llu acknowledged operations (%llu gets): %llu stale reads, %llu doubled "
           "values, %llu final values out of range\n",
           label, (unsigned long long)s->history_ops, (unsigned long long)s->gets,
           (unsigned long long)s->stale_reads, (unsigned long long)s->doubled_values,
           (unsigned long long)s->out_of_range);
    if (s->first_violation[0]) printf("first violation: %s\n", s->first_violation);
    if (s->other_errors) printf("first non-retryable error: %s\n", s->first_other_error);
    fflush(stdout);
}

void gr_h_load_free(gr_h_load_t *l) {
    for (int i = 0; i < l->nworkers; i++)
        uv_close((uv_handle_t *)&l->workers[i].retry, NULL);
    for (int i = 0; i < l->nclients; i++)
        if (l->clients[i]) gr_client_close(l->clients[i], NULL, NULL);
    gr_test_run_for(l->loop, 10); /* let the closes finish before the memory goes */
    free(l->lat);
    free(l->hist);
    free(l);
}
