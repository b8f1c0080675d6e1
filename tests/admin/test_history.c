/* tests/admin/test_history.c - the dashboard's per-second history on a real
 * runtime (memory storage): a second's calls, errors and latency buckets
 * land in that second's sample, `since` filters, and methods nobody calls
 * have no series. Waits for real sample ticks (about 2.5 s). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "runtime/runtime.h"
#include "admin/history.h"
#include "support.h"

static void ok_fn(gr_grain_t *g, gr_msg_t *m, const uint8_t *arg, size_t len) { gr_reply(m, "ok", 2); }
static void bad_fn(gr_grain_t *g, gr_msg_t *m, const uint8_t *arg, size_t len) { gr_reply_error(m, "no"); }
static void idle_fn(gr_grain_t *g, gr_msg_t *m, const uint8_t *arg, size_t len) { gr_reply(m, NULL, 0); }

static const gr_method_t methods[] = {{"ok", ok_fn}, {"bad", bad_fn}, {"idle", idle_fn}, {NULL, NULL}};
static const gr_class_t cls = {.name = "H", .methods = methods};

static int closed_count;
static void closed(void *ud) { closed_count++; }

/* Make n calls of `method` and wait for all of them. */
static void calls(uv_loop_t *loop, gr_runtime_t *rt, const char *method, int n) {
    gr_test_reply_t *r = calloc((size_t)n, sizeof *r);
    for (int i = 0; i < n; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i % 7);
        gr_ref_t ref = {"H", key, strlen(key)};
        assert_int_equal(gr_call(rt, &ref, method, NULL, 0, 5000, gr_test_on_reply, &r[i]), 0);
    }
    for (int i = 0; i < n; i++)
        assert_true(gr_test_run_until(loop, &r[i].done, 5000));
    free(r);
}

/* The sample array of series "H"/method in json, as "[t,calls,errors,b..]". */
static const char *series(const char *json, const char *method) {
    char head[64];
    snprintf(head, sizeof head, "{\"class\":\"H\",\"method\":\"%s\",\"samples\":[", method);
    const char *p = strstr(json, head);
    return p ? p + strlen(head) : NULL;
}

static void test_samples(void **st) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    gr_storage_t *sto;
    gr_runtime_t *rt;
    gr__history_t *h;
    assert_int_equal(gr_storage_memory_new(&loop, &sto), 0);
    gr_runtime_options_t o;
    gr_runtime_options_init(&o);
    assert_int_equal(gr_runtime_new(&loop, sto, &o, &rt), 0);
    assert_int_equal(gr_runtime_register(rt, &cls), 0);
    assert_int_equal(gr__history_new(&loop, rt, &h), 0);

    /* Right after a tick, so the calls fall into one second's sample. */
    uv_timeval64_t tv;
    uv_gettimeofday(&tv);
    gr_test_run_for(&loop, 1000 - (uint64_t)tv.tv_usec / 1000 + 50);
    calls(&loop, rt, "ok", 40);
    calls(&loop, rt, "bad", 3);
    gr_test_run_for(&loop, 1100);

    gr__buf_t b;
    gr__buf_init(&b);
    assert_int_equal(gr__history_write_json(h, 0, 1 << 20, &b), 0);
    assert_int_equal(gr__buf_append(&b, "", 1), 0);
    const char *json = (const char *)b.data;
    const char *ok = series(json, "ok"), *bad = series(json, "bad");
    if (!ok || !bad) fail_msg("series missing in %s", json);
    assert_null(series(json, "idle")); /* never called: no series */
    long long t;
    unsigned calls_n, errors, bk[GR__HIST_BUCKETS];
    assert_int_equal(sscanf(ok, "[%lld,%u,%u", &t, &calls_n, &errors), 3);
    assert_int_equal(calls_n, 40);
    assert_int_equal(errors, 0);
    /* The latency buckets of that second count every call once. */
    const char *p = ok;
    for (int i = 0; i < 3; i++)
        p = strchr(p, ',') + 1;
    unsigned sum = 0;
    for (int i = 0; i < GR__HIST_BUCKETS; i++) {
        assert_int_equal(sscanf(p, "%u", &bk[i]), 1);
        sum += bk[i];
        p = strpbrk(p, ",]") + 1;
    }
    assert_int_equal(sum, 40);
    assert_int_equal(sscanf(bad, "[%lld,%u,%u", &t, &calls_n, &errors), 3);
    assert_int_equal(calls_n, 3);
    assert_int_equal(errors, 3);
    /* The silo's own per-second counters: calls accepted and failed. */
    char io[64];
    snprintf(io, sizeof io, "[%lld,43,3,", t);
    if (!strstr(json, io)) fail_msg("no storage sample %s in %s", io, json);
    snprintf(io, sizeof io, "[%lld,0,0,", t - 1); /* the quiet second before */
    if (!strstr(json, io)) fail_msg("no storage sample %s in %s", io, json);

    /* since = that second: nothing older comes back. */
    b.len = 0;
    assert_int_equal(gr__history_write_json(h, t, 1 << 20, &b), 0);
    assert_int_equal(gr__buf_append(&b, "", 1), 0);
    assert_null(series((const char *)b.data, "ok"));
    assert_non_null(strstr((const char *)b.data, "\"storage\":["));
    /* A budget too small for any sample: the newest seconds that fit (none
     * here), never an error or half a sample. */
    b.len = 0;
    assert_int_equal(gr__history_write_json(h, 0, 300, &b), 0);
    assert_int_equal(gr__buf_append(&b, "", 1), 0);
    assert_string_equal((const char *)b.data, "\"series\":[],\"storage\":[]");
    /* Room for about one second: the newest samples, not the oldest. */
    b.len = 0;
    assert_int_equal(gr__history_write_json(h, 0, 2 * 308 + 2 * 213 + 81, &b), 0);
    assert_int_equal(gr__buf_append(&b, "", 1), 0);
    char newest[64];
    snprintf(newest, sizeof newest, "\"storage\":[[%lld,43,3,", t);
    if (!strstr((const char *)b.data, newest)) /* the first storage sample is the newest one */
        fail_msg("expected the newest second only in %s", (char *)b.data);
    gr__buf_free(&b);

    gr__history_close(h, closed, NULL);
    gr_runtime_close(rt, closed, NULL);
    gr_test_run_until(&loop, &closed_count, 5000);
    while (closed_count < 2)
        gr_test_run_for(&loop, 10);
    gr_storage_close(sto, closed, NULL);
    while (closed_count < 3)
        gr_test_run_for(&loop, 10);
    gr_test_loop_close(&loop);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_samples)};
    return cmocka_run_group_tests_name("silo.history", tests, NULL, NULL);
}
