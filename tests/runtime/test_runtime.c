/* tests/runtime/test_runtime.c - the grain runtime on the memory provider,
 * calls and turns: activation, single activation per id, turn order, async
 * replies, persist-before-reply, conflicts between two runtimes (two silos),
 * grain-to-grain calls, timeouts, call cycles, interleaving. State, timers,
 * workers, reminders and keys: test_runtime_state.c. */
#include "runtime_fixture.h"

static void test_activation_once_per_id(void **state) {
    fx_t *fx = *state;
    res_t r;
    call(fx, fx->rt, "Counter", "a", "incr", NULL, 0, &r);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.reply, "1");
    call(fx, fx->rt, "Counter", "a", "incr", NULL, 0, &r);
    assert_string_equal(r.reply, "2");
    assert_int_equal(activations, 1);
    assert_int_equal(gr_runtime_activation_count(fx->rt), 1);
    call(fx, fx->rt, "Counter", "b", "get", NULL, 0, &r);
    assert_string_equal(r.reply, "0");
    assert_int_equal(activations, 2);
    /* Many concurrent first calls to one id still make one activation. */
    res_t rs[50];
    memset(rs, 0, sizeof rs);
    gr_ref_t ref = {"Counter", "c", 1};
    for (int i = 0; i < 50; i++)
        assert_int_equal(gr_call(fx->rt, &ref, "incr", NULL, 0, 0, on_done, &rs[i]), 0);
    gr_test_run_for(&fx->loop, 200);
    for (int i = 0; i < 50; i++) {
        assert_int_equal(rs[i].done, 1);
        assert_int_equal(rs[i].status, 0);
    }
    assert_int_equal(activations, 3);
    call(fx, fx->rt, "Counter", "c", "get", NULL, 0, &r);
    assert_string_equal(r.reply, "50");
}

static void test_turn_order_and_no_overlap(void **state) {
    fx_t *fx = *state;
    res_t rs[100];
    memset(rs, 0, sizeof rs);
    gr_ref_t ref = {"Counter", "order", 5}; /* Lazy would go idle mid-test */
    char args[100][8];
    for (int i = 0; i < 100; i++) {
        snprintf(args[i], sizeof args[i], "%d", i);
        /* Interleave slow (async-reply) turns: the next must wait for them. */
        const char *m = i % 10 == 0 ? "slow" : "record";
        assert_int_equal(gr_call(fx->rt, &ref, m, args[i], strlen(args[i]) + 1, 0, on_done, &rs[i]), 0);
    }
    gr_test_run_for(&fx->loop, 500);
    for (int i = 0; i < 100; i++)
        assert_int_equal(rs[i].done, 1);
    assert_int_equal(busy_violations, 0);
    /* The recorded sequence is the submission order (slow ones skipped). */
    char expect[1024];
    size_t o = 0;
    for (int i = 0; i < 100; i++)
        if (i % 10) o += (size_t)snprintf(expect + o, sizeof expect - o, "%s%d", o ? "," : "", i);
    res_t *big = calloc(1, sizeof *big);
    gr_ref_t ref2 = {"Counter", "order", 5};
    assert_int_equal(gr_call(fx->rt, &ref2, "dump", NULL, 0, 0, on_done, big), 0);
    assert_true(gr_test_run_until(&fx->loop, &big->done, 2000));
    assert_int_equal(big->status, 0);
    assert_string_equal(big->reply, expect);
    free(big);
}

static void test_async_reply_keeps_grain_busy(void **state) {
    fx_t *fx = *state;
    res_t a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    gr_ref_t ref = {"Lazy", "busy", 4};
    assert_int_equal(gr_call(fx->rt, &ref, "slow", NULL, 0, 0, on_done, &a), 0);
    assert_int_equal(gr_call(fx->rt, &ref, "get", NULL, 0, 0, on_done, &b), 0);
    assert_true(gr_test_run_until(&fx->loop, &b.done, 2000));
    /* The second call waited behind the slow turn: it finished after it,
     * whatever the machine's timing. */
    assert_int_equal(a.done, 1);
    assert_true(a.order < b.order);
    assert_string_equal(a.reply, "late");
}

static void test_persist_before_reply(void **state) {
    fx_t *fx = *state;
    res_t r;
    call(fx, fx->rt, "Counter", "p", "incr", NULL, 0, &r);
    call(fx, fx->rt, "Counter", "p", "incr", NULL, 0, &r);
    assert_string_equal(r.reply, "2");
    /* A second runtime (another silo) sees the acknowledged value: it was
     * in storage before the reply left. */
    call(fx, fx->rt2, "Counter", "p", "get", NULL, 0, &r);
    assert_string_equal(r.reply, "2");
    gr__runtime_stats_t s;
    gr__runtime_get_stats(fx->rt, &s);
    assert_int_equal(s.storage_writes, 2);
}

/* Promise 1: two activations of one grain on two silos: the stale one's
 * write conflicts, it answers with an error and reloads, never overwriting. */
static void test_conflict_between_silos(void **state) {
    fx_t *fx = *state;
    res_t r;
    call(fx, fx->rt, "Counter", "x", "get", NULL, 0, &r);  /* A activates at v0 */
    call(fx, fx->rt2, "Counter", "x", "get", NULL, 0, &r); /* B activates at v0 */
    call(fx, fx->rt, "Counter", "x", "incr", NULL, 0, &r); /* A commits v1 */
    assert_int_equal(r.status, 0);
    assert_string_equal(r.reply, "1");
    call(fx, fx->rt2, "Counter", "x", "incr", NULL, 0, &r); /* B is stale */
    assert_int_equal(r.status, GR_ECONFLICT);
    gr_test_run_for(&fx->loop, 20);
    assert_int_equal(gr_runtime_activation_count(fx->rt2), 0); /* B deactivated */
    call(fx, fx->rt2, "Counter", "x", "incr", NULL, 0, &r);    /* B reloads: 1 + 1 */
    assert_int_equal(r.status, 0);
    assert_string_equal(r.reply, "2");
    call(fx, fx->rt, "Counter", "x", "incr", NULL, 0, &r); /* now A is stale */
    assert_int_equal(r.status, GR_ECONFLICT);
    call(fx, fx->rt, "Counter", "x", "get", NULL, 0, &r);
    assert_string_equal(r.reply, "2");
}

/* Calls queued behind a conflicting write go to a fresh activation. */
static void test_conflict_forwards_queue(void **state) {
    fx_t *fx = *state;
    res_t r;
    call(fx, fx->rt, "Counter", "q", "get", NULL, 0, &r);
    call(fx, fx->rt2, "Counter", "q", "incr", NULL, 0, &r); /* B commits v1 */
    res_t rs[4];
    memset(rs, 0, sizeof rs);
    gr_ref_t ref = {"Counter", "q", 1};
    for (int i = 0; i < 4; i++)
        assert_int_equal(gr_call(fx->rt, &ref, "incr", NULL, 0, 0, on_done, &rs[i]), 0);
    gr_test_run_for(&fx->loop, 100);
    for (int i = 0; i < 4; i++)
        assert_int_equal(rs[i].done, 1); /* a status of 0 must be an answer, not "never ran" */
    assert_int_equal(rs[0].status, GR_ECONFLICT);
    for (int i = 1; i < 4; i++)
        assert_int_equal(rs[i].status, 0);
    assert_string_equal(rs[3].reply, "4");
}

static void test_unknown_class_method_and_app_error(void **state) {
    fx_t *fx = *state;
    res_t r;
    call(fx, fx->rt, "Nope", "k", "get", NULL, 0, &r);
    assert_int_equal(r.status, GR_ENOCLASS);
    assert_non_null(strstr(r.reply, "Nope"));
    call(fx, fx->rt, "Counter", "k", "nope", NULL, 0, &r);
    assert_int_equal(r.status, GR_ENOMETHOD);
    assert_non_null(strstr(r.reply, "nope"));
    call(fx, fx->rt, "Counter", "k", "fail", NULL, 0, &r);
    assert_int_equal(r.status, GR_EAPP);
    assert_string_equal(r.reply, "no such thing");
    call(fx, fx->rt, "Broken", "k", "get", NULL, 0, &r);
    assert_int_equal(r.status, GR_EACTIVATE);
    assert_int_equal(gr_runtime_activation_count(fx->rt), 1); /* only Counter/k */
    gr_ref_t ref = {"Counter", "k", 1};
    static uint8_t bigkey[GR_KEY_MAX + 1];
    gr_ref_t big = {"Counter", bigkey, sizeof bigkey};
    assert_int_equal(gr_call(fx->rt, &big, "get", NULL, 0, 0, on_done, &r), GR_ETOOBIG);
    assert_int_equal(gr_call(fx->rt, &ref, "", NULL, 0, 0, on_done, &r), GR_EINVAL);
    assert_int_equal(gr_call(fx->rt, &ref, "get", NULL, 0, 0, NULL, &r), GR_EINVAL);
}

static void test_grain_calls_grain(void **state) {
    fx_t *fx = *state;
    res_t r;
    call(fx, fx->rt, "Relay", "r", "relay", "target", 0, &r);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.reply, "1");
    call(fx, fx->rt, "Counter", "target", "get", NULL, 0, &r);
    assert_string_equal(r.reply, "1");
}

static void test_timeout_and_late_reply(void **state) {
    fx_t *fx = *state;
    res_t r;
    call(fx, fx->rt, "Lazy", "t", "never", NULL, 50, &r);
    assert_int_equal(r.status, GR_ETIMEDOUT);
    gr_test_run_for(&fx->loop, 300);
    gr__runtime_stats_t s;
    gr__runtime_get_stats(fx->rt, &s);
    assert_int_equal(s.late_replies, 1);
}

/* Timeout defaults: a call passing 0 gets the class's call_timeout_ms (50 ms
 * for Quick) or the runtime's (30 s); the handler sees what is left. */
static void test_class_timeout_and_remaining(void **state) {
    fx_t *fx = *state;
    res_t r;
    uv_update_time(&fx->loop);
    uint64_t t0 = uv_now(&fx->loop);
    call(fx, fx->rt, "Quick", "q", "never", NULL, 0, &r);
    assert_int_equal(r.status, GR_ETIMEDOUT);
    uv_update_time(&fx->loop);
    assert_true(uv_now(&fx->loop) - t0 < 1000); /* 50 ms, not the 30 s default */
    call(fx, fx->rt, "Quick", "q2", "remaining", NULL, 0, &r);
    assert_true(atoi(r.reply) > 0 && atoi(r.reply) <= 50);
    call(fx, fx->rt, "Quick", "q2", "remaining", NULL, 5000, &r); /* an explicit one wins */
    assert_true(atoi(r.reply) > 50 && atoi(r.reply) <= 5000);
    call(fx, fx->rt, "Counter", "q3", "remaining", NULL, 0, &r);
    assert_true(atoi(r.reply) > 29000 && atoi(r.reply) <= 30000);
    /* The timed-out call's reply arrives later: dropped and counted. */
    gr_test_run_for(&fx->loop, 300);
    gr__runtime_stats_t s;
    gr__runtime_get_stats(fx->rt, &s);
    assert_int_equal(s.late_replies, 1);
}

/* A -> B -> A on a non-reentrant grain fails at once with GR_EDEADLOCK
 * (not after the 2 s timeout), naming the cycle; through an interleaving
 * method, or on a reentrant class, the same cycle completes. */
static void test_call_cycles(void **state) {
    fx_t *fx = *state;
    res_t r;
    uv_update_time(&fx->loop);
    uint64_t t0 = uv_now(&fx->loop);
    call(fx, fx->rt, "Ring", "a", "call", "Ring b call Ring a incr", 0, &r);
    uv_update_time(&fx->loop);
    assert_int_equal(r.status, GR_EAPP); /* a relays b's error text */
    assert_non_null(strstr(r.reply, "GR_EAPP: GR_EDEADLOCK: call cycle Ring/a -> Ring/b -> Ring/a"));
    assert_true(uv_now(&fx->loop) - t0 < 1000);
    /* A direct self-call is the shortest cycle. */
    call(fx, fx->rt, "Ring", "s", "call", "Ring s incr", 0, &r);
    assert_non_null(strstr(r.reply, "GR_EDEADLOCK: call cycle Ring/s -> Ring/s"));
    /* "get" interleaves: the cycle is fine. */
    call(fx, fx->rt, "Ring", "a", "incr", NULL, 0, &r);
    call(fx, fx->rt, "Ring", "a", "call", "Ring b call Ring a get", 0, &r);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.reply, "1");
    /* A reentrant class accepts the cycle for any method. */
    call(fx, fx->rt, "RRing", "a", "call", "RRing b call RRing a incr", 0, &r);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.reply, "1");
    /* A chain that never comes back is no cycle: a -> c -> d works. */
    call(fx, fx->rt, "Ring", "a", "call", "Ring c call Ring d get", 0, &r);
    assert_int_equal(r.status, 0);
    gr__runtime_stats_t st;
    gr__runtime_get_stats(fx->rt, &st);
    assert_int_equal(st.deadlocks, 2);
}

/* While a non-reentrant grain waits, an interleaving call runs and an
 * ordinary one waits its turn. */
static void test_interleave_while_busy(void **state) {
    fx_t *fx = *state;
    res_t slow, get, incr;
    memset(&slow, 0, sizeof slow);
    memset(&get, 0, sizeof get);
    memset(&incr, 0, sizeof incr);
    gr_ref_t ref = {"Ring", "busy", 4};
    completions = 0;
    assert_int_equal(gr_call(fx->rt, &ref, "slow", NULL, 0, 0, on_done, &slow), 0);
    assert_int_equal(gr_call(fx->rt, &ref, "incr", NULL, 0, 0, on_done, &incr), 0);
    assert_int_equal(gr_call(fx->rt, &ref, "get", NULL, 0, 0, on_done, &get), 0);
    gr_test_run_for(&fx->loop, 100);
    assert_int_equal(slow.status, 0);
    assert_int_equal(incr.status, 0);
    assert_int_equal(get.status, 0);
    /* Only the head of the queue may start: get, queued behind incr, waits
     * for it (FIFO is kept), and incr waits for slow. */
    assert_true(slow.order < incr.order);
    assert_true(incr.order < get.order);
    /* With the grain busy (a call that answers after 200 ms: a wide margin on
     * a slow sanitizer build) and only an interleaving call queued, it runs
     * at once and answers first. */
    memset(&slow, 0, sizeof slow);
    memset(&get, 0, sizeof get);
    assert_int_equal(gr_call(fx->rt, &ref, "never", NULL, 0, 0, on_done, &slow), 0);
    gr_test_run_for(&fx->loop, 1);
    assert_int_equal(gr_call(fx->rt, &ref, "get", NULL, 0, 0, on_done, &get), 0);
    assert_true(gr_test_run_until(&fx->loop, &get.done, 2000));
    assert_int_equal(slow.done, 0);
    assert_true(gr_test_run_until(&fx->loop, &slow.done, 2000));
    assert_true(get.order < slow.order);
    assert_string_equal(get.reply, "1");
    assert_int_equal(busy_violations, 0);
    /* A bad interleave list is refused at registration. */
    static const char *const bad[] = {"nope", NULL};
    static const gr_class_t bad_cls = {.name = "Bad", .methods = ring_methods, .interleave = bad};
    assert_int_equal(gr_runtime_register(fx->rt, &bad_cls), GR_EINVAL);
    /* So are a bad read-only list and an unknown placement. */
    static const gr_class_t bad_ro = {.name = "BadRo", .methods = ring_methods, .read_only = bad};
    assert_int_equal(gr_runtime_register(fx->rt, &bad_ro), GR_EINVAL);
    static const gr_class_t bad_place = {.name = "BadPlace", .methods = ring_methods, .placement = 3};
    assert_int_equal(gr_runtime_register(fx->rt, &bad_place), GR_EINVAL);
    static const gr_class_t hashed = {.name = "Hashed", .methods = ring_methods, .placement = GR_PLACE_HASH};
    assert_int_equal(gr_runtime_register(fx->rt, &hashed), 0);
}

/* Stateless workers: concurrent calls to one key spread over up to
 * max_workers activations (3), which never touch storage and refuse state. */

int main(void) {
    gr_log_setup(GR_LOG_LEVEL_ERROR, GR_LOG_FORMAT_TEXT, "test");
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_activation_once_per_id),
        T(test_turn_order_and_no_overlap),
        T(test_async_reply_keeps_grain_busy),
        T(test_persist_before_reply),
        T(test_conflict_between_silos),
        T(test_conflict_forwards_queue),
        T(test_unknown_class_method_and_app_error),
        T(test_grain_calls_grain),
        T(test_timeout_and_late_reply),
        T(test_class_timeout_and_remaining),
        T(test_call_cycles),
        T(test_interleave_while_busy),
    };
    return cmocka_run_group_tests_name("runtime", tests, NULL, NULL);
}
