/* bench/bench_client.c - a load generator: W calls in flight over one
 * pipelined connection, for a bounded time and count, then throughput and
 * latency percentiles on one line.
 *   bench_client --silo HOST:PORT[,..] [--cluster C] [--method M] [--keys N]
 *                [--prefix P] [--window W] [--seconds S] [--max-calls N] [--label L]
 *                [--tls-ca F] [--tls-cert F --tls-key F] [--tls-server-name N] [--idem 1]
 *                [--retry-ms MS]
 * --retry-ms MS: a call that fails with a retryable error (a silo draining
 * or gone) is sent again 5 ms later, for up to MS; its latency includes
 * its retries (the count is printed).
 * --idem 1: each call carries a fresh idempotency key (docs/exactly-once.md).
 * Traffic goes only where --silo says (the bench scripts use 127.0.0.1). */
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>

#include <granary/granary.h>

typedef struct {
    gr_client_t *c;
    uv_loop_t *loop;
    const char *method, *prefix;
    int keys, window;
    uint64_t deadline_ns, max_calls;
    uint64_t sent, done, ok, failed, retried;
    uint64_t *lat_us;
    size_t nlat, caplat;
    int first_err;
    int stopping;
    int idem;            /* --idem 1: every call carries its own idempotency key */
    uint32_t retry_ms;   /* --retry-ms MS: retryable failures are retried for up to MS (the latency counts them) */
    unsigned long nonce; /* in the keys, so runs never share them */
} bench_t;

typedef struct {
    bench_t *b;
    uint64_t t0, first; /* this attempt's start; the call's first attempt */
    uint64_t n;         /* the call's number: its key */
    uv_timer_t backoff;
} op_t;

static void issue(bench_t *b);
static void attempt(op_t *op);

static void op_free(uv_handle_t *h) { free(h->data); }

static void on_backoff(uv_timer_t *t) { attempt(t->data); }

static void on_reply(void *ud, int status, const uint8_t *reply, size_t len) {
    op_t *op = ud;
    bench_t *b = op->b;
    uint64_t now = uv_hrtime();
    /* --retry-ms: a retryable failure (a silo draining or gone) is sent
     * again, same key, 5 ms later; its latency runs from the first attempt.
     * Not the client's retry_for_ms: that makes every call a keyed,
     * exactly-once call (a reply-log entry per call), another workload. */
    if (status != 0 && b->retry_ms && gr_err_retryable(status) &&
        now - op->first < (uint64_t)b->retry_ms * 1000000u) {
        b->retried++;
        uv_timer_start(&op->backoff, on_backoff, 5, 0);
        return;
    }
    uint64_t us = (now - op->first) / 1000;
    uv_close((uv_handle_t *)&op->backoff, op_free);
    if (status == 0) {
        b->ok++;
        if (b->nlat < b->caplat) b->lat_us[b->nlat++] = us;
    } else {
        if (!b->failed++) b->first_err = status;
    }
    b->done++;
    if (uv_hrtime() < b->deadline_ns && b->sent < b->max_calls)
        issue(b);
    else if (b->done == b->sent && !b->stopping) {
        b->stopping = 1;
        gr_client_close(b->c, NULL, NULL);
    }
}

static void attempt(op_t *op) {
    bench_t *b = op->b;
    char key[64];
    int n = snprintf(key, sizeof key, "%s%llu", b->prefix, (unsigned long long)(op->n % (uint64_t)b->keys));
    gr_ref_t ref = {"Counter", key, (size_t)n};
    op->t0 = uv_hrtime();
    gr_call_options_t co;
    gr_call_options_init(&co);
    co.timeout_ms = 30000;
    char idem[48];
    if (b->idem) {
        co.idempotency_key = idem;
        co.idempotency_key_len = (size_t)snprintf(idem, sizeof idem, "b%lx-%llu", b->nonce,
                                                  (unsigned long long)op->n);
    }
    int rc = gr_client_call_ex(b->c, &ref, b->method, NULL, 0, &co, on_reply, op);
    if (rc != 0) on_reply(op, rc, NULL, 0);
}

static void issue(bench_t *b) {
    op_t *op = malloc(sizeof *op);
    op->b = b;
    op->n = b->sent++;
    op->first = uv_hrtime();
    uv_timer_init(b->loop, &op->backoff);
    op->backoff.data = op;
    attempt(op);
}

/* SIGTERM ends the run as its deadline would: calls in flight complete and
 * the figures are printed (bench/roll.sh stops its load when a roll ends). */
static void on_term(uv_signal_t *h, int signum) {
    (void)signum;
    ((bench_t *)h->data)->deadline_ns = 0;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    gr_client_options_t o;
    gr_client_options_init(&o);
    bench_t b = {0};
    b.method = "get";
    b.prefix = "k";
    b.keys = 1000;
    b.nonce = (unsigned long)uv_hrtime();
    b.window = 64;
    double seconds = 3;
    b.max_calls = 50000000;
    const char *label = "calls";
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--silo"))
            o.silos = v;
        else if (!strcmp(a, "--cluster"))
            o.cluster = v;
        else if (!strcmp(a, "--method"))
            b.method = v;
        else if (!strcmp(a, "--keys"))
            b.keys = atoi(v);
        else if (!strcmp(a, "--prefix"))
            b.prefix = v;
        else if (!strcmp(a, "--window"))
            b.window = atoi(v);
        else if (!strcmp(a, "--seconds"))
            seconds = atof(v);
        else if (!strcmp(a, "--max-calls"))
            b.max_calls = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--label"))
            label = v;
        else if (!strcmp(a, "--idem"))
            b.idem = atoi(v);
        else if (!strcmp(a, "--retry-ms"))
            b.retry_ms = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--tls-ca"))
            o.tls_ca = v;
        else if (!strcmp(a, "--tls-cert"))
            o.tls_cert = v;
        else if (!strcmp(a, "--tls-key"))
            o.tls_key = v;
        else if (!strcmp(a, "--tls-server-name"))
            o.tls_server_name = v;
        else {
            fprintf(stderr, "bench_client: unknown option %s\n", a);
            return 2;
        }
    }
    if (b.keys < 1 || b.window < 1 || seconds <= 0 || seconds > 600) {
        fprintf(stderr, "bench_client: bad --keys/--window/--seconds\n");
        return 2;
    }
    b.loop = uv_default_loop();
    if (gr_client_new(b.loop, &o, &b.c) != 0) {
        fprintf(stderr, "bench_client: bad --silo\n");
        return 2;
    }
    b.caplat = 4000000;
    b.lat_us = malloc(b.caplat * sizeof *b.lat_us);
    uint64_t t0 = uv_hrtime();
    b.deadline_ns = t0 + (uint64_t)(seconds * 1e9);
    uv_signal_t term;
    uv_signal_init(b.loop, &term);
    term.data = &b;
    uv_signal_start(&term, on_term, SIGTERM);
    uv_unref((uv_handle_t *)&term); /* never what keeps the run going */
    for (int i = 0; i < b.window && (uint64_t)i < b.max_calls; i++)
        issue(&b);
    uv_run(b.loop, UV_RUN_DEFAULT);
    double el = (double)(uv_hrtime() - t0) / 1e9;
    qsort(b.lat_us, b.nlat, sizeof *b.lat_us, cmp_u64);
#define PCT(p) (b.nlat ? b.lat_us[(size_t)((double)(b.nlat - 1) * (p))] : 0)
    printf("%-28s %10.0f calls/s  ok %llu  failed %llu  p50 %llu us  p99 %llu us  p999 %llu us  (%.1f s, "
           "window %d, keys %d, retried %llu)\n",
           label, (double)b.ok / el, (unsigned long long)b.ok, (unsigned long long)b.failed,
           (unsigned long long)PCT(0.5), (unsigned long long)PCT(0.99), (unsigned long long)PCT(0.999), el,
           b.window, b.keys, (unsigned long long)b.retried);
    if (b.failed) fprintf(stderr, "first error: %s\n", gr_err_name(b.first_err));
    free(b.lat_us);
    return b.failed ? 1 : 0;
}
