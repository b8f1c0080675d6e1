/* tests/runtime/test_runtime_state.c - the grain runtime on the memory
 * provider, state and time: stateless workers, state versions and upgrades,
 * reminder dispatch, timers, idle deactivation, mailbox limits, drain,
 * close, clearing state, idempotency keys. Calls and turns: test_runtime.c. */
#include "runtime_fixture.h"

static void test_stateless_workers(void **state) {
    fx_t *fx = *state;
    gr__runtime_stats_t before, after;
    gr__runtime_get_stats(fx->rt, &before);
    res_t rs[10];
    memset(rs, 0, sizeof rs);
    gr_ref_t ref = {"Worker", "w", 1};
    for (int i = 0; i < 10; i++)
        assert_int_equal(gr_call(fx->rt, &ref, "slow", NULL, 0, 0, on_done, &rs[i]), 0);
    uv_update_time(&fx->loop);
    uint64_t t0 = uv_now(&fx->loop);
    int done = 0;
    while (done < 10 && uv_now(&fx->loop) - t0 < 2000) {
        gr_test_run_for(&fx->loop, 1);
        done = 0;
        for (int i = 0; i < 10; i++)
            done += rs[i].done;
    }
    for (int i = 0; i < 10; i++) {
        assert_int_equal(rs[i].status, 0);
        assert_string_equal(rs[i].reply, "late");
    }
    assert_int_equal(activations, 3);     /* capped at max_workers */
    assert_int_equal(busy_violations, 0); /* each activation still one turn at a time */
    assert_int_equal(gr_runtime_activation_count(fx->rt), 3);
    gr__runtime_get_stats(fx->rt, &after);
    assert_int_equal(after.storage_reads, before.storage_reads);
    assert_int_equal(after.storage_writes, before.storage_writes);
    /* A single call at a time reuses the idle first worker. */
    res_t r;
    call(fx, fx->rt, "Worker", "w", "where", NULL, 0, &r);
    assert_int_equal(activations, 3);
    call(fx, fx->rt, "Worker", "w", "set", NULL, 0, &r);
    assert_int_equal(atoi(r.reply), GR_ESTATE);
    /* Another runtime (silo) serves the same key with its own workers. */
    call(fx, fx->rt2, "Worker", "w", "where", NULL, 0, &r);
    assert_string_equal(r.reply, "silo-b");
    /* Idle workers deactivate like any grain. */
    gr_test_run_for(&fx->loop, 400);
    assert_int_equal(gr_runtime_activation_count(fx->rt), 0);
    assert_int_equal(deactivations, 4);
}

/* State versioning across a rolling deploy: silo A runs Doc v1, silo B Doc
 * v2. B upgrades what A wrote; once B wrote format 2, A refuses to activate
 * the grain (retryable GR_ESTATEVERSION) and the newer row stays untouched. */
static void test_state_versions(void **state) {
    fx_t *fx = *state;
    assert_int_equal(gr_runtime_register(fx->rt, &doc_v1), 0);
    assert_int_equal(gr_runtime_register(fx->rt2, &doc_v2), 0);
    upgrades = 0;
    res_t r;
    call(fx, fx->rt, "Doc", "d", "set", "hello", 0, &r);
    gr_test_run_for(&fx->loop, 10);
    assert_int_equal(storage_row(fx, "Doc", "d").format, 1);
    call(fx, fx->rt, "Doc", "d", "bye", NULL, 0, &r);
    call(fx, fx->rt2, "Doc", "d", "get", NULL, 0, &r);
    assert_string_equal(r.reply, "v2:hello");
    assert_int_equal(upgrades, 1);
    call(fx, fx->rt2, "Doc", "d", "bye", NULL, 0, &r); /* the upgraded state is saved */
    gr_test_run_for(&fx->loop, 20);
    sread_t row = storage_row(fx, "Doc", "d");
    assert_int_equal(row.format, 2);
    assert_int_equal(row.version, 2);
    /* The old silo must not activate (nor ever overwrite) newer state. */
    gr_test_run_for(&fx->loop, 20);
    call(fx, fx->rt, "Doc", "d", "get", NULL, 0, &r);
    assert_int_equal(r.status, GR_ESTATEVERSION);
    assert_non_null(strstr(r.reply, "format 2, newer than this silo's Doc (state_version 1)"));
    assert_true(gr_err_retryable(GR_ESTATEVERSION));
    call(fx, fx->rt, "Doc", "d", "set", "old code", 0, &r);
    assert_int_equal(r.status, GR_ESTATEVERSION);
    row = storage_row(fx, "Doc", "d");
    assert_int_equal(row.version, 2);
    assert_int_equal(row.format, 2);
    /* The new silo still serves it, without upgrading again. */
    call(fx, fx->rt2, "Doc", "d", "get", NULL, 0, &r);
    assert_string_equal(r.reply, "v2:hello");
    assert_int_equal(upgrades, 1);
    gr__runtime_stats_t s;
    gr__runtime_get_stats(fx->rt, &s);
    assert_int_equal(s.state_too_new, 2);
}

/* An upgrade that fails fails the activation and writes nothing. */
static void test_state_upgrade_failure(void **state) {
    fx_t *fx = *state;
    assert_int_equal(gr_runtime_register(fx->rt, &doc_v1), 0);
    assert_int_equal(gr_runtime_register(fx->rt2, &doc_v3), 0);
    res_t r;
    call(fx, fx->rt, "Doc", "u", "set", "x", 0, &r);
    call(fx, fx->rt, "Doc", "u", "bye", NULL, 0, &r);
    gr_test_run_for(&fx->loop, 20);
    call(fx, fx->rt2, "Doc", "u", "get", NULL, 0, &r);
    assert_int_equal(r.status, GR_EACTIVATE);
    assert_non_null(strstr(r.reply, "upgrading the state from format 1 to 3 failed"));
    gr_test_run_for(&fx->loop, 20);
    sread_t row = storage_row(fx, "Doc", "u");
    assert_int_equal(row.version, 1);
    assert_int_equal(row.format, 1);
}

static void test_reminder_dispatch(void **state) {
    fx_t *fx = *state;
    res_t r;
    /* No reminder service (no silo with PostgreSQL): a clear GR_ESTATE. */
    call(fx, fx->rt, "Rem", "a", "remind", "tick", 0, &r);
    assert_int_equal(atoi(r.reply), GR_ESTATE);
    /* With one, the grain's class and key and the arguments reach it. */
    gr__runtime_set_reminders(fx->rt, &fake_ops, NULL);
    call(fx, fx->rt, "Rem", "a", "remind", "tick", 0, &r);
    assert_string_equal(r.reply, "0");
    assert_string_equal(fake_seen, "Rem/a tick 10 0");
    call(fx, fx->rt, "Rem", "a", "remind", "bad name", 0, &r); /* names have no spaces */
    assert_int_equal(atoi(r.reply), GR_EINVAL);
    /* A firing is a turn that runs on_reminder; its reply is the ack. */
    reminded[0] = '\0';
    call(fx, fx->rt, "Rem", "b", GR__REMINDER_METHOD, "tick", 0, &r);
    assert_int_equal(r.status, 0);
    assert_string_equal(reminded, "tick");
    call(fx, fx->rt, "Rem", "b", "get", NULL, 0, &r);
    assert_string_equal(r.reply, "1");
    /* A class without on_reminder: the firing fails clearly. */
    call(fx, fx->rt, "Counter", "c", GR__REMINDER_METHOD, "tick", 0, &r);
    assert_int_equal(r.status, GR_ENOMETHOD);
    gr__runtime_set_reminders(fx->rt, NULL, NULL);
}

static void test_timers(void **state) {
    fx_t *fx = *state;
    res_t r;
    call(fx, fx->rt, "Counter", "tm", "timer", NULL, 0, &r);
    assert_int_equal(r.status, 0); /* the timer started */
    gr_test_run_for(&fx->loop, 120);
    call(fx, fx->rt, "Counter", "tm", "ticks", NULL, 0, &r);
    assert_int_equal(r.status, 0);
    int ticks = atoi(r.reply);
    assert_true(ticks >= 5);
    assert_true(ticks <= 13);
}

static void test_idle_deactivation_saves_state(void **state) {
    fx_t *fx = *state;
    res_t r;
    /* Lazy does not persist before reply: the change is only in memory. */
    call(fx, fx->rt, "Lazy", "idle", "incr", NULL, 0, &r);
    call(fx, fx->rt, "Lazy", "idle", "timer", NULL, 0, &r); /* timers do not keep it alive */
    assert_int_equal(gr_runtime_activation_count(fx->rt), 1);
    gr_test_run_for(&fx->loop, 300);
    assert_int_equal(gr_runtime_activation_count(fx->rt), 0);
    assert_int_equal(deactivations, 1);
    /* Reactivation (on the other runtime, even) reads the saved value. */
    call(fx, fx->rt2, "Lazy", "idle", "get", NULL, 0, &r);
    assert_string_equal(r.reply, "1");
    /* Explicit deactivation. */
    call(fx, fx->rt, "Counter", "bye", "bye", NULL, 0, &r);
    gr_test_run_for(&fx->loop, 20);
    assert_int_equal(gr_runtime_activation_count(fx->rt), 0);
}

static void test_mailbox_limit(void **state) {
    fx_t *fx = *state;
    /* rt2 allows 5 queued messages per grain. */
    res_t rs[20];
    memset(rs, 0, sizeof rs);
    gr_ref_t ref = {"Lazy", "full", 4};
    for (int i = 0; i < 20; i++)
        assert_int_equal(gr_call(fx->rt2, &ref, "slow", NULL, 0, 0, on_done, &rs[i]), 0);
    gr_test_run_for(&fx->loop, 400);
    int ok = 0, over = 0;
    for (int i = 0; i < 20; i++) {
        assert_int_equal(rs[i].done, 1);
        ok += rs[i].status == 0;
        over += rs[i].status == GR_EOVERLOAD;
    }
    assert_int_equal(ok + over, 20);
    assert_true(over >= 10);
    assert_true(ok >= 5);
}

static void drained(gr_runtime_t *rt, void *ud) { (*(int *)ud)++; }

static void test_drain_saves_everything(void **state) {
    fx_t *fx = *state;
    res_t r;
    for (int i = 0; i < 20; i++) {
        char key[8];
        snprintf(key, sizeof key, "d%d", i);
        call(fx, fx->rt, "Lazy", key, "incr", NULL, 0, &r);
    }
    assert_int_equal(gr_runtime_activation_count(fx->rt), 20);
    int done = 0;
    assert_int_equal(gr_runtime_drain(fx->rt, drained, &done), 0);
    assert_int_equal(done, 0);
    assert_int_equal(gr_runtime_drain(fx->rt, drained, &done), GR_ESTATE);
    gr_ref_t ref = {"Lazy", "new", 3};
    assert_int_equal(gr_call(fx->rt, &ref, "get", NULL, 0, 0, on_done, &r), GR_ESHUTDOWN);
    assert_true(gr_test_run_until(&fx->loop, &done, 2000));
    assert_int_equal(gr_runtime_activation_count(fx->rt), 0);
    for (int i = 0; i < 20; i++) {
        char key[8];
        snprintf(key, sizeof key, "d%d", i);
        call(fx, fx->rt2, "Lazy", key, "get", NULL, 0, &r);
        assert_string_equal(r.reply, "1");
    }
}

static void test_close_cancels_pending(void **state) {
    fx_t *fx = *state;
    res_t r;
    memset(&r, 0, sizeof r);
    gr_ref_t ref = {"Lazy", "pending", 7};
    assert_int_equal(gr_call(fx->rt, &ref, "never", NULL, 0, 0, on_done, &r), 0);
    gr_test_run_for(&fx->loop, 10);
    int done = 0;
    gr_runtime_close(fx->rt, closed, &done);
    assert_int_equal(r.done, 1);
    assert_int_equal(r.status, GR_ECANCELED);
    assert_true(gr_test_run_until(&fx->loop, &done, 2000));
    fx->rt = make_rt(fx, "silo-a2", 100); /* for the teardown */
}

/* gr_state_clear deletes the row (version-checked) before the reply of a
 * persist-before-reply class; the next write inserts a fresh row; a stale
 * activation's clear conflicts instead of deleting newer state. */
static void test_clear_state(void **state) {
    fx_t *fx = *state;
    res_t r;
    for (int i = 0; i < 3; i++)
        call(fx, fx->rt, "Counter", "c", "incr", NULL, 0, &r);
    sread_t s = storage_row(fx, "Counter", "c");
    assert_int_equal(s.version, 3);
    call(fx, fx->rt, "Counter", "c", "reset", NULL, 0, &r);
    assert_int_equal(r.status, 0);
    s = storage_row(fx, "Counter", "c");
    assert_int_equal(s.status, 0);
    assert_int_equal(s.version, 0); /* no row */
    assert_int_equal(s.len, 0);
    call(fx, fx->rt, "Counter", "c", "version", NULL, 0, &r);
    assert_string_equal(r.reply, "0");
    call(fx, fx->rt, "Counter", "c", "incr", NULL, 0, &r);
    assert_string_equal(r.reply, "1");
    assert_int_equal(storage_row(fx, "Counter", "c").version, 1);
    /* Clearing a grain that was never stored does no I/O and succeeds. */
    gr__runtime_stats_t before, after;
    gr__runtime_get_stats(fx->rt, &before);
    call(fx, fx->rt, "Counter", "never-stored", "reset", NULL, 0, &r);
    assert_int_equal(r.status, 0);
    gr__runtime_get_stats(fx->rt, &after);
    assert_int_equal(after.storage_writes, before.storage_writes);
    /* A stale activation (rt2 loaded v1, rt wrote v2) must not delete. */
    call(fx, fx->rt2, "Counter", "c", "get", NULL, 0, &r);
    call(fx, fx->rt, "Counter", "c", "incr", NULL, 0, &r);
    call(fx, fx->rt2, "Counter", "c", "reset", NULL, 0, &r);
    assert_int_equal(r.status, GR_ECONFLICT);
    assert_int_equal(storage_row(fx, "Counter", "c").version, 2);
    /* Lazy (no persist-before-reply): the deletion happens on deactivation. */
    call(fx, fx->rt, "Lazy", "l", "incr", NULL, 0, &r);
    call(fx, fx->rt, "Lazy", "l", "bye", NULL, 0, &r); /* saves v1 */
    gr_test_run_for(&fx->loop, 20);
    assert_int_equal(storage_row(fx, "Lazy", "l").version, 1);
    call(fx, fx->rt, "Lazy", "l", "reset", NULL, 0, &r);
    assert_int_equal(storage_row(fx, "Lazy", "l").version, 1); /* not yet */
    call(fx, fx->rt, "Lazy", "l", "bye", NULL, 0, &r);
    gr_test_run_for(&fx->loop, 20);
    assert_int_equal(storage_row(fx, "Lazy", "l").version, 0);
}

static void test_where(void **state) {
    fx_t *fx = *state;
    res_t r;
    call(fx, fx->rt2, "Counter", "w", "where", NULL, 0, &r);
    assert_string_equal(r.reply, "silo-b");
}

/* Idempotency keys (docs/exactly-once.md): a repeat gets the first reply
 * without running, on this silo or another (the log is stored with the
 * state in the same write), concurrent repeats wait for the first, the
 * count and age bounds hold, and a class that does not persist keeps its
 * log in the activation only. */
static void test_idempotency_keys(void **state) {
    fx_t *fx = *state;
    res_t r, r2;
    call_key(fx, fx->rt, "Counter", "k", "incr", "op-1", &r);
    assert_string_equal(r.reply, "1");
    call_key(fx, fx->rt, "Counter", "k", "incr", "op-1", &r);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.reply, "1"); /* the stored reply: the handler did not run */
    call(fx, fx->rt, "Counter", "k", "get", NULL, 0, &r);
    assert_string_equal(r.reply, "1");
    call_key(fx, fx->rt, "Counter", "k", "incr", "op-2", &r);
    assert_string_equal(r.reply, "2");
    gr__runtime_stats_t st;
    gr__runtime_get_stats(fx->rt, &st);
    assert_int_equal(st.idem_replays, 1);
    /* Stored with the state: another silo's activation answers from it. */
    sread_t row = storage_row(fx, "Counter", "k");
    assert_true(row.format & 0x40000000u);
    call_key(fx, fx->rt2, "Counter", "k", "incr", "op-1", &r);
    assert_string_equal(r.reply, "1");
    call_key(fx, fx->rt2, "Counter", "k", "incr", "op-2", &r);
    assert_string_equal(r.reply, "2");
    call(fx, fx->rt2, "Counter", "k", "get", NULL, 0, &r);
    assert_string_equal(r.reply, "2");
    /* Application errors are answers too. */
    call_key(fx, fx->rt, "Counter", "e", "fail", "op-f", &r);
    assert_int_equal(r.status, GR_EAPP);
    call_key(fx, fx->rt, "Counter", "e", "fail", "op-f", &r2);
    assert_int_equal(r2.status, GR_EAPP);
    assert_string_equal(r2.reply, r.reply);

    /* Two calls with one key at once on a reentrant class: the second waits
     * for the first (it would otherwise run beside it) and gets its reply. */
    gr_ref_t ref = {"Keyed", "w", 1};
    gr_call_options_t o;
    gr_call_options_init(&o);
    o.idempotency_key = "slow-1";
    o.idempotency_key_len = 6;
    memset(&r, 0, sizeof r);
    memset(&r2, 0, sizeof r2);
    assert_int_equal(gr_call_ex(fx->rt, &ref, "slow", NULL, 0, &o, on_done, &r), 0);
    assert_int_equal(gr_call_ex(fx->rt, &ref, "slow", NULL, 0, &o, on_done, &r2), 0);
    assert_true(gr_test_run_until(&fx->loop, &r.done, 5000));
    assert_true(gr_test_run_until(&fx->loop, &r2.done, 5000));
    assert_int_equal(r.status, 0);
    assert_int_equal(r2.status, 0);
    assert_string_equal(r2.reply, "late");
    gr__runtime_get_stats(fx->rt, &st);
    assert_int_equal(st.idem_waits, 1);
    assert_int_equal(busy_violations, 0); /* slow never ran twice at once */

    /* Bounds: 3 keys, then the oldest goes; 300 ms, then every key goes. */
    const char *ks[] = {"a", "b", "c", "d"};
    for (int i = 0; i < 4; i++)
        call_key(fx, fx->rt, "Keyed", "n", "incr", ks[i], &r);
    assert_string_equal(r.reply, "4");
    call_key(fx, fx->rt, "Keyed", "n", "incr", "d", &r);
    assert_string_equal(r.reply, "4"); /* remembered */
    call_key(fx, fx->rt, "Keyed", "n", "incr", "a", &r);
    assert_string_equal(r.reply, "5"); /* forgotten (count bound, at the write of "d"): runs again */
    gr_test_run_for(&fx->loop, 350);
    call_key(fx, fx->rt, "Keyed", "n", "incr", "d", &r); /* the write of this prunes by age... */
    assert_string_equal(r.reply, "6");                   /* ...and "d" was older than 300 ms */

    /* Not persisted before reply: the log is written with the state when
     * the state is (here at deactivation), never apart from it. */
    call_key(fx, fx->rt, "Lazy", "m", "incr", "op-1", &r);
    call_key(fx, fx->rt, "Lazy", "m", "incr", "op-1", &r2);
    assert_string_equal(r.reply, "1");
    assert_string_equal(r2.reply, "1");
    int before = deactivations;
    gr_test_run_for(&fx->loop, 300); /* idle (60 ms): deactivated, state and log saved together */
    assert_int_equal(deactivations, before + 1);
    call_key(fx, fx->rt, "Lazy", "m", "incr", "op-1", &r);
    assert_string_equal(r.reply, "1");
    call_key(fx, fx->rt, "Lazy", "m", "incr", "op-2", &r);
    assert_string_equal(r.reply, "2");

    /* A keyed call that clears the state: its reply is stored with the
     * clear (the row is written empty rather than deleted), so another
     * silo answers the repeat from storage. */
    call_key(fx, fx->rt, "Counter", "cl", "incr", "c-1", &r);
    call_key(fx, fx->rt, "Counter", "cl", "reset", "c-2", &r);
    assert_string_equal(r.reply, "0");
    gr__runtime_get_stats(fx->rt2, &st);
    uint64_t replays = st.idem_replays;
    call_key(fx, fx->rt2, "Counter", "cl", "reset", "c-2", &r);
    assert_int_equal(r.status, 0);
    gr__runtime_get_stats(fx->rt2, &st);
    assert_int_equal(st.idem_replays, replays + 1);
    call_key(fx, fx->rt2, "Counter", "cl", "incr", "c-1", &r);
    assert_string_equal(r.reply, "1"); /* the first incr's own answer */
    call(fx, fx->rt2, "Counter", "cl", "get", NULL, 0, &r);
    assert_string_equal(r.reply, "0");

    /* Keys over the limit are refused before anything runs. */
    char big[GR_IDEM_KEY_MAX + 2];
    memset(big, 'k', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    gr_ref_t kref = {"Counter", "k", 1};
    o.idempotency_key = big;
    o.idempotency_key_len = GR_IDEM_KEY_MAX + 1;
    assert_int_equal(gr_call_ex(fx->rt, &kref, "incr", NULL, 0, &o, on_done, &r), GR_ETOOBIG);
}

int main(void) {
    gr_log_setup(GR_LOG_LEVEL_ERROR, GR_LOG_FORMAT_TEXT, "test");
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_timers),
        T(test_idle_deactivation_saves_state),
        T(test_mailbox_limit),
        T(test_drain_saves_everything),
        T(test_close_cancels_pending),
        T(test_where),
        T(test_clear_state),
        T(test_stateless_workers),
        T(test_state_versions),
        T(test_state_upgrade_failure),
        T(test_reminder_dispatch),
        T(test_idempotency_keys),
    };
    return cmocka_run_group_tests_name("runtime.state", tests, NULL, NULL);
}
