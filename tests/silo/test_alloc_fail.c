/* tests/silo/test_alloc_fail.c - every allocation on the call path fails in
 * turn (issue 14): through gr_replace_allocator, the Nth allocation after a
 * call starts returns NULL, for N = 0, 1, 2, ... until a call completes
 * without reaching N. Each call must end cleanly (an error code from the
 * table, or success), never crash or hang; a later call on the same grain
 * must work; and once everything is closed, every allocation made through
 * the hook has been freed (a leak on any error path shows up here, with or
 * without the sanitizers). Two paths: gr_call on a runtime (a new
 * activation each time, persist-before-reply, an idempotency key), and a C
 * client calling an in-process silo over loopback TCP (client, frames,
 * gateway, runtime). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "granary/granary.h"
#include "runtime/runtime.h"
#include "support.h"

/* ---- the failing allocator ---- */

static long live;         /* blocks allocated through the hook and not yet freed */
static long counted;      /* allocations since arming */
static long fail_at = -1; /* index of the allocation that fails; -1: none */
static int failed;        /* the armed failure happened */

static int should_fail(void) {
    if (fail_at < 0) return 0;
    if (counted++ != fail_at) return 0;
    failed = 1;
    return 1;
}
static void *t_malloc(size_t n) {
    if (should_fail()) return NULL;
    void *p = malloc(n);
    if (p) live++;
    return p;
}
static void *t_calloc(size_t a, size_t b) {
    if (should_fail()) return NULL;
    void *p = calloc(a, b);
    if (p) live++;
    return p;
}
static void *t_realloc(void *p, size_t n) {
    if (n == 0) { /* never used by the library, but keep the count right */
        if (p) live--;
        free(p);
        return NULL;
    }
    if (should_fail()) return NULL;
    void *q = realloc(p, n);
    if (q && !p) live++;
    return q;
}
static void t_free(void *p) {
    if (p) live--;
    free(p);
}
static void arm(long n) {
    counted = 0;
    failed = 0;
    fail_at = n;
}
static void disarm(void) { fail_at = -1; }

/* ---- a persisted counter whose handlers cope with a failed allocation ---- */

static int64_t state_int(gr_grain_t *g) {
    const uint8_t *d;
    size_t n;
    gr_state_get(g, &d, &n);
    char buf[32] = {0};
    if (n && n < sizeof buf) memcpy(buf, d, n);
    return strtoll(buf, NULL, 10);
}

/* gr_reply may fail (GR_ENOMEM) and leaves the message unanswered then:
 * one failure is injected per call, so a second attempt succeeds. */
static void reply_int(gr_msg_t *m, int64_t v) {
    /* Padded past the call record's inline space (32 bytes), so that
     * delivering the reply allocates a copy: that allocation fails too. */
    char buf[64];
    int n = snprintf(buf, sizeof buf, "%-40" PRId64, v);
    if (gr_reply(m, buf, (size_t)n) != 0 && gr_reply(m, buf, (size_t)n) != 0)
        assert_int_equal(gr_reply_error(m, NULL), 0);
}

/* Handler runs per class (0: Counter, 1: Volatile) and method (0: incr, 1: get):
 * every run completes its call exactly once, so the runtime's per-method
 * call counters must equal these however replies failed and were retried. */
static uint64_t runs[2][2];
static void count_run(gr_grain_t *g, int method) {
    runs[strcmp(gr_grain_class(g)->name, "Counter") != 0][method]++;
}

static void m_incr(gr_grain_t *g, gr_msg_t *m, const uint8_t *a, size_t al) {
    count_run(g, 0);
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%" PRId64, state_int(g) + 1);
    if (gr_state_set(g, buf, (size_t)n) != 0) {
        if (gr_reply_error(m, "out of memory") != 0) assert_int_equal(gr_reply_error(m, NULL), 0);
        return;
    }
    reply_int(m, state_int(g));
}
static void m_get(gr_grain_t *g, gr_msg_t *m, const uint8_t *a, size_t al) {
    count_run(g, 1);
    reply_int(m, state_int(g));
}

static void check_method(void *ud, const gr__method_stats_t *ms) {
    int cls = strcmp(ms->cls, "Counter") != 0, method = strcmp(ms->method, "incr") != 0;
    if (ms->calls != runs[cls][method])
        fail_msg("%s.%s: %llu calls counted for %llu runs", ms->cls, ms->method,
                 (unsigned long long)ms->calls, (unsigned long long)runs[cls][method]);
}

static const gr_method_t counter_methods[] = {{"incr", m_incr}, {"get", m_get}, {NULL, NULL}};
static const gr_class_t counter = {
    .name = "Counter", .methods = counter_methods, .flags = GR_CLASS_PERSIST_BEFORE_REPLY};
/* The same without persist-before-reply: replies leave at once, through the
 * copying path (gr__msg_complete_copy), keyed ones settling their entry. */
static const gr_class_t volatile_counter = {.name = "Volatile", .methods = counter_methods};
static const char *sweep_class = "Counter";

/* An injected failure must surface as one of these (or not at all). */
static int clean_error(int status) {
    return status == 0 || status == GR_ENOMEM || status == GR_ECONN || status == GR_ESTORAGE ||
           status == GR_EACTIVATE || status == GR_EAPP;
}

typedef int (*call_fn)(void *ctx, const gr_ref_t *ref, const char *method, const char *idem,
                       gr_test_reply_t *r);

/* The sweep: returns the number of allocation points the call path has. */
static gr_runtime_t *stats_rt; /* the runtime whose counters a sweep checks, or NULL */

static long sweep(uv_loop_t *loop, void *ctx, call_fn call, const char *method, int keyed) {
    long n;
    for (n = 0; n < 5000; n++) {
        char key[32], idem[32];
        snprintf(key, sizeof key, "k%ld-%s%s", n, method,
                 keyed ? "-keyed" : ""); /* a fresh grain per sweep and n */
        snprintf(idem, sizeof idem, "i%ld", n);
        gr_ref_t ref = {sweep_class, key, strlen(key)};
        gr_test_reply_t r = {0};
        gr__runtime_stats_t before, after;
        if (stats_rt) gr__runtime_get_stats(stats_rt, &before);
        arm(n);
        int rc = call(ctx, &ref, method, keyed ? idem : NULL, &r);
        if (rc == 0) {
            assert_true(gr_test_run_until(loop, &r.done, 5000)); /* ended: no hang */
            if (!clean_error(r.status))
                fail_msg("allocation %ld: %s ended with %s (%.*s)", n, method, gr_err_name(r.status),
                         (int)r.len, r.reply);
        } else if (rc != GR_ENOMEM) {
            fail_msg("allocation %ld: the call returned %s", n, gr_err_name(rc));
        }
        int reached = failed;
        disarm();
        if (stats_rt && rc == 0) { /* each failed call counted once, a successful one not at all */
            gr__runtime_get_stats(stats_rt, &after);
            assert_int_equal(after.calls_failed - before.calls_failed, r.status != 0 ? 1 : 0);
        }
        if (!reached) { /* the whole path ran without reaching allocation n */
            assert_int_equal(rc, 0);
            assert_int_equal(r.status, 0);
            break;
        }
        /* A keyed incr retried with its key counts once, whatever the
         * failure did to the first attempt (docs/exactly-once.md). */
        if (keyed && !strcmp(method, "incr")) {
            gr_test_reply_t again;
            for (int attempt = 0;; attempt++) {
                memset(&again, 0, sizeof again);
                assert_int_equal(call(ctx, &ref, "incr", idem, &again), 0);
                assert_true(gr_test_run_until(loop, &again.done, 5000));
                /* 0, or the grain's own error answer (GR_EAPP: its handler
                 * could not set the state), which the key replays. */
                if (again.status == 0 || again.status == GR_EAPP) break;
                if (attempt == 3 || !gr_err_retryable(again.status))
                    fail_msg("allocation %ld: the keyed retry failed: %s", n, gr_err_name(again.status));
            }
            gr_test_reply_t v = {0};
            assert_int_equal(call(ctx, &ref, "get", NULL, &v), 0);
            assert_true(gr_test_run_until(loop, &v.done, 5000));
            assert_int_equal(v.status, 0);
            int want = again.status == 0 ? 1 : 0;
            if (atoi(v.reply) != want)
                fail_msg("allocation %ld: a keyed incr answered %s counted %d times (first attempt: %s)", n,
                         gr_err_name(again.status), atoi(v.reply),
                         rc ? gr_err_name(rc) : gr_err_name(r.status));
        }
        /* The grain still works (a connection an error closed reconnects). */
        for (int attempt = 0;; attempt++) {
            gr_test_reply_t again = {0};
            assert_int_equal(call(ctx, &ref, "get", NULL, &again), 0);
            assert_true(gr_test_run_until(loop, &again.done, 5000));
            if (again.status == 0) break;
            if (attempt == 3 || !gr_err_retryable(again.status))
                fail_msg("allocation %ld: the grain is left broken: %s", n, gr_err_name(again.status));
        }
    }
    if (!(n > 2 && n < 5000)) fail_msg("%s: %ld allocation points", method, n);
    return n;
}

/* ---- gr_call on a runtime ---- */

static int rt_call(void *ctx, const gr_ref_t *ref, const char *method, const char *idem, gr_test_reply_t *r) {
    gr_call_options_t o;
    gr_call_options_init(&o);
    o.timeout_ms = 3000;
    o.idempotency_key = idem;
    o.idempotency_key_len = idem ? strlen(idem) : 0;
    return gr_call_ex(ctx, ref, method, NULL, 0, &o, gr_test_on_reply, r);
}

static int closed;
static void on_closed(void *ud) { closed++; }

static void test_runtime_path(void **st) {
    long live0 = live; /* a test that failed before this one may have left blocks behind */
    uv_loop_t loop;
    uv_loop_init(&loop);
    gr_storage_t *storage;
    assert_int_equal(gr_storage_memory_new(&loop, &storage), 0);
    gr_runtime_options_t ro;
    gr_runtime_options_init(&ro);
    gr_runtime_t *rt;
    assert_int_equal(gr_runtime_new(&loop, storage, &ro, &rt), 0);
    assert_int_equal(gr_runtime_register(rt, &counter), 0);
    assert_int_equal(gr_runtime_register(rt, &volatile_counter), 0);
    stats_rt = rt;
    long a = sweep(&loop, rt, rt_call, "incr", 0);
    long b = sweep(&loop, rt, rt_call, "incr", 1);
    long c = sweep(&loop, rt, rt_call, "get", 0);
    sweep_class = "Volatile";
    long d = sweep(&loop, rt, rt_call, "incr", 0);
    long e = sweep(&loop, rt, rt_call, "incr", 1);
    sweep_class = "Counter";
    gr__runtime_foreach_method(rt, check_method, NULL);
    stats_rt = NULL;
    print_message(
        "runtime: %ld, %ld (keyed) and %ld (get) allocation points swept; without persist-before-reply "
        "%ld and %ld (keyed)\n",
        a, b, c, d, e);
    closed = 0;
    gr_runtime_close(rt, on_closed, NULL);
    assert_true(gr_test_run_until(&loop, &closed, 5000));
    gr_storage_close(storage, on_closed, NULL);
    gr_test_run_for(&loop, 50);
    assert_int_equal(closed, 2);
    gr_test_loop_close(&loop);
    assert_int_equal(live, live0); /* nothing leaked on any error path */
}

/* ---- a C client and an in-process silo over TCP ---- */

static int client_call(void *ctx, const gr_ref_t *ref, const char *method, const char *idem,
                       gr_test_reply_t *r) {
    gr_call_options_t o;
    gr_call_options_init(&o);
    o.timeout_ms = 3000;
    o.idempotency_key = idem;
    o.idempotency_key_len = idem ? strlen(idem) : 0;
    return gr_client_call_ex(ctx, ref, method, NULL, 0, &o, gr_test_on_reply, r);
}

static void test_client_silo_path(void **st) {
    long live0 = live;
    stats_rt = NULL;
    uv_loop_t loop;
    uv_loop_init(&loop);
    int port = gr_test_free_port();
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    gr_silo_options_t so;
    gr_silo_options_init(&so);
    so.memory_storage = 1;
    so.listen = listen;
    gr_silo_t *silo;
    char err[256] = "";
    assert_int_equal(gr_silo_new(&loop, &so, &silo, err, sizeof err), 0);
    assert_int_equal(gr_silo_register(silo, &counter), 0);
    assert_int_equal(gr_silo_start(silo, err, sizeof err), 0);
    gr_client_options_t co;
    gr_client_options_init(&co);
    co.silos = listen;
    gr_client_t *client;
    assert_int_equal(gr_client_new(&loop, &co, &client), 0);
    long a = sweep(&loop, client, client_call, "incr", 0);
    long b = sweep(&loop, client, client_call, "incr", 1);
    print_message("client -> silo: %ld and %ld (keyed) allocation points swept\n", a, b);
    closed = 0;
    gr_client_close(client, on_closed, NULL);
    gr_silo_close(silo, on_closed, NULL);
    gr_test_run_for(&loop, 200);
    assert_int_equal(closed, 2);
    gr_test_loop_close(&loop);
    assert_int_equal(live, live0);
}

int main(void) {
    /* Before any Granary object exists, as gr_replace_allocator requires. */
    if (gr_replace_allocator(t_malloc, t_realloc, t_calloc, t_free) != 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_runtime_path),
        cmocka_unit_test(test_client_silo_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
