#define _GNU_SOURCE 1 /* memmem, strcasestr */
/* tests/cluster/test_cluster.c - real silo processes forming a cluster over
 * TCP and a real PostgreSQL: single activation across silos, SIGTERM and
 * SIGKILL under load with a strict checker, scale-down 3 -> 1, refusal of
 * wrong secrets, and a silo cut off from the database fencing itself.
 *
 * The checker: workers send plain `incr` with an idempotency key per
 * operation and retry each operation (same key) until it is acknowledged,
 * so at the end every counter must equal exactly the number of
 * acknowledged operations. */
#include "cluster_fixture.h"

static void test_single_activation_across_silos(void **st) {
    for (int i = 0; i < 3; i++)
        start_silo(i, NULL);
    wait_active(3);
    uv_loop_t loop;
    uv_loop_init(&loop);
    /* Every silo's view has all three active (a tick or two after the table
     * says so): this case checks the steady state; view changes are the
     * failover cases' business. */
    gr_test_run_for(&loop, 600);
    gr_client_t *c[3];
    for (int i = 0; i < 3; i++) {
        char a[32];
        snprintf(a, sizeof a, "127.0.0.1:%d", silos[i].port);
        c[i] = client_for(&loop, a, "s3cret");
    }
    res_t r;
    /* The same grain through each silo: one activation answers. */
    for (int g = 0; g < 20; g++) {
        char key[16], where[256] = "";
        snprintf(key, sizeof key, "one-%d", g);
        for (int i = 0; i < 3; i++) {
            assert_int_equal(call_retry(&loop, c[(g + i) % 3], key, "where", NULL, &r, 5000), 0);
            if (i == 0)
                snprintf(where, sizeof where, "%s", r.reply);
            else
                assert_string_equal(r.reply, where);
            assert_int_equal(call_retry(&loop, c[(g + i) % 3], key, "incr", NULL, &r, 5000), 0);
            assert_int_equal(atoi(r.reply), i + 1);
        }
    }
    /* 300 grains entered through all three silos spread over all three. */
    int hosted[3] = {0};
    for (int g = 0; g < 300; g++) {
        char key[16];
        snprintf(key, sizeof key, "spread-%d", g);
        assert_int_equal(call_retry(&loop, c[g % 3], key, "where", NULL, &r, 5000), 0);
        for (int i = 0; i < 3; i++) {
            char prefix[32];
            snprintf(prefix, sizeof prefix, "127.0.0.1:%d-", silos[i].port);
            if (!strncmp(r.reply, prefix, strlen(prefix))) hosted[i]++;
        }
    }
    print_message("300 grains hosted: %d / %d / %d\n", hosted[0], hosted[1], hosted[2]);
    assert_int_equal(hosted[0] + hosted[1] + hosted[2], 300);
    for (int i = 0; i < 3; i++)
        assert_true(hosted[i] > 30);
    for (int i = 0; i < 3; i++)
        gr_client_close(c[i], NULL, NULL);
    gr_test_loop_close(&loop);
}

static void test_sigterm_under_load(void **st) {
    for (int i = 0; i < 3; i++)
        start_silo(i, NULL);
    wait_active(3);
    uv_loop_t loop;
    uv_loop_init(&loop);
    gr_h_load_t *l = load_start(&loop, 3);
    gr_test_run_for(&loop, 1500);
    uint64_t drain_ms;
    assert_int_equal(sigterm_and_wait(&loop, 1, &drain_ms), 0);
    print_message("SIGTERM drain under load took %llu ms\n", (unsigned long long)drain_ms);
    gr_test_run_for(&loop, 1500);
    load_finish(l, "sigterm");
    gr_test_loop_close(&loop);
}

/* Whether the silos' log has a line containing every one of `needles`. */
static int log_has_line(const char *const *needles) {
    FILE *f = fopen(log_path, "r");
    if (!f) return 0;
    static char line[8192];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) {
        found = 1;
        for (int i = 0; needles[i] && found; i++)
            found = strstr(line, needles[i]) != NULL;
    }
    fclose(f);
    return found;
}

static void test_sigkill_failover(void **st) {
    /* JSON logs: the survivors' account of the failover is checked below. */
    static const char *const json[] = {"--log-format", "json", NULL};
    for (int i = 0; i < 3; i++) {
        silos[i].extra = json;
        start_silo(i, NULL);
    }
    wait_active(3);
    uv_loop_t loop;
    uv_loop_init(&loop);
    /* A grain placed on silo 2 (prefer-local: enter through it). */
    char a2[32], a0[32];
    snprintf(a2, sizeof a2, "127.0.0.1:%d", silos[2].port);
    snprintf(a0, sizeof a0, "127.0.0.1:%d", silos[0].port);
    gr_client_t *via2 = client_for(&loop, a2, "s3cret");
    gr_client_t *via0 = client_for(&loop, a0, "s3cret");
    res_t r;
    char victim_key[32];
    key_hosted_on(&loop, via2, 2, "victim", victim_key, sizeof victim_key);
    assert_int_equal(call_retry(&loop, via2, victim_key, "incr", NULL, &r, 5000), 0);
    gr_h_load_t *l = load_start(&loop, 3);
    gr_test_run_for(&loop, 1000);
    kill(silos[2].pid, SIGKILL);
    uint64_t t0 = now_ms();
    assert_int_equal(gr_test_wait(silos[2].pid, 5000), 128 + SIGKILL);
    silos[2].pid = 0;
    /* Probe the moved grain through another silo until it answers. */
    uint64_t first_ok = 0;
    while (!first_ok && now_ms() - t0 < 10000) {
        memset(&r, 0, sizeof r);
        gr_ref_t ref = {"Counter", victim_key, strlen(victim_key)};
        assert_int_equal(gr_client_call(via0, &ref, "get", NULL, 0, 1000, on_res, &r), 0);
        gr_test_run_until(&loop, &r.done, 2000);
        if (r.status == 0)
            first_ok = now_ms();
        else
            gr_test_run_for(&loop, 25);
    }
    assert_true(first_ok);
    assert_string_equal(r.reply, "1"); /* its state came along */
    uint64_t failover = first_ok - t0;
    print_message("first good call on a moved grain %llu ms after SIGKILL\n", (unsigned long long)failover);
    assert_true(failover < 2000);
    gr_test_run_for(&loop, 1000);
    load_finish(l, "sigkill");
    gr_client_close(via2, NULL, NULL);
    gr_client_close(via0, NULL, NULL);
    gr_test_loop_close(&loop);
    /* An operator's view of it (issue 17): who was declared dead, the view
     * that dropped it, and what the survivors lost and re-registered, as
     * JSON fields rather than inside the message. */
    char victim[64];
    snprintf(victim, sizeof victim, "\"peer\":\"127.0.0.1:%d-", silos[2].port);
    const char *dead[] = {"\"level\":\"warn\"", victim, "\"silent_ms\":", "\"lease_ms\":", NULL};
    assert_true(log_has_line(dead));
    char left[64];
    snprintf(left, sizeof left, "\"left\":\"127.0.0.1:%d-", silos[2].port);
    const char *view[] = {"\"view\":", "\"live\":\"2\"", left, NULL};
    assert_true(log_has_line(view));
    const char *closed[] = {"\"view\":", victim, "\"forwards_failed\":", NULL};
    assert_true(log_has_line(closed));
    const char *installed[] = {"\"entries_dropped\":", "\"cache_dropped\":", "\"reregistered\":", NULL};
    assert_true(log_has_line(installed));
}

static void test_scale_down_3_to_1(void **st) {
    for (int i = 0; i < 3; i++)
        start_silo(i, NULL);
    wait_active(3);
    uv_loop_t loop;
    uv_loop_init(&loop);
    gr_h_load_t *l = load_start(&loop, 3);
    for (int victim = 2; victim >= 1; victim--) {
        gr_test_run_for(&loop, 1000);
        assert_int_equal(sigterm_and_wait(&loop, victim, NULL), 0);
    }
    gr_test_run_for(&loop, 1000);
    load_finish(l, "scale 3 -> 1");
    assert_int_equal(count_active(), 1);
    gr_test_loop_close(&loop);
}

static void test_wrong_secret_refused(void **st) {
    start_silo(0, NULL);
    wait_active(1);
    uv_loop_t loop;
    uv_loop_init(&loop);
    char a[32];
    snprintf(a, sizeof a, "127.0.0.1:%d", silos[0].port);
    gr_client_t *bad = client_for(&loop, a, "wrong");
    res_t r;
    assert_int_equal(call_sync(&loop, bad, "k", "get", NULL, &r), GR_EAUTH);
    gr_client_close(bad, NULL, NULL);
    gr_test_loop_close(&loop);
    /* A would-be silo with the wrong secret cannot join the silo links. */
    gr__buf_t b;
    gr__buf_init(&b);
    gr__frame_encode_hello(&b, GR_PROTOCOL_VERSION, GR__ROLE_SILO, cl.name, "nope", 4, "intruder");
    int fd = gr_test_raw_connect(silos[0].port), closed;
    gr_test_send_all(fd, b.data, b.len);
    assert_int_equal(gr_test_read_until(fd, GR__FRAME_GOAWAY, &closed), GR_EAUTH);
    close(fd);
    /* With the right secret but as a client, '$' system classes are refused. */
    b.len = 0;
    gr__frame_encode_hello(&b, GR_PROTOCOL_VERSION, GR__ROLE_CLIENT, cl.name, "s3cret", 6, "sneaky");
    gr__frame_encode_request(&b, GR__FRAME_REQUEST, 5, 1000, "$dir", "x", 1, "register", "me", 2);
    fd = gr_test_raw_connect(silos[0].port);
    gr_test_send_all(fd, b.data, b.len);
    assert_int_equal(gr_test_read_until(fd, GR__FRAME_RESPONSE, &closed), GR_ENOCLASS);
    close(fd);
    gr__buf_free(&b);
}

/* The same, with a client to each (c0 enters through silo 0, c1 through 1). */
static void two_silos(uv_loop_t *loop, gr_client_t **c0, gr_client_t **c1) {
    start_two_silos(loop);
    char a0[32], a1[32];
    snprintf(a0, sizeof a0, "127.0.0.1:%d", silos[0].port);
    snprintf(a1, sizeof a1, "127.0.0.1:%d", silos[1].port);
    *c0 = client_for(loop, a0, "s3cret");
    *c1 = client_for(loop, a1, "s3cret");
}

/* Keys (and arguments) of every length up to the documented maximum work
 * through every silo, whichever silo owns their directory entry (issue 12: a 1017..1024
 * byte key failed with GR_ETOOBIG whenever the owner was the other silo,
 * because `$dir` carried class '\0' key past the key limit); one byte more is
 * refused on both paths. */
static int call_key(uv_loop_t *loop, gr_client_t *c, const uint8_t *key, size_t kl, const char *method,
                    res_t *r) {
    uint64_t end = now_ms() + 5000;
    int st;
    do {
        memset(r, 0, sizeof *r);
        gr_ref_t ref = {"Counter", key, kl};
        st = gr_client_call(c, &ref, method, NULL, 0, 5000, on_res, r);
        if (st != 0) return st;
        gr_test_run_until(loop, &r->done, 10000);
        st = r->status;
    } while (st != 0 && gr_err_retryable(st) && now_ms() < end);
    return st;
}

static void test_key_limits_across_silos(void **st) {
    uv_loop_t loop;
    gr_client_t *c0, *c1;
    two_silos(&loop, &c0, &c1);
    static uint8_t key[GR_KEY_MAX + 1];
    for (size_t i = 0; i < sizeof key; i++)
        key[i] = (uint8_t)(i * 31 + 7); /* every byte value, NUL included */
    static const size_t lens[] = {0, 1, GR_KEY_MAX - 1, GR_KEY_MAX};
    res_t r;
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        size_t kl = lens[li];
        /* 16 variants: both silos own some of their directory entries. */
        for (int v = 0; v < (kl ? 16 : 1); v++) {
            if (kl) key[kl - 1] = (uint8_t)v;
            gr_client_t *in = v % 2 ? c1 : c0, *out = v % 2 ? c0 : c1;
            int s1 = call_key(&loop, in, key, kl, "incr", &r);
            if (s1 != 0)
                fail_msg("key of %zu bytes (variant %d): incr: %s %s", kl, v, gr_err_name(s1), r.reply);
            long after = atol(r.reply);
            int s2 = call_key(&loop, out, key, kl, "get", &r);
            if (s2 != 0)
                fail_msg("key of %zu bytes (variant %d): get: %s %s", kl, v, gr_err_name(s2), r.reply);
            assert_int_equal(atol(r.reply), after);
        }
    }
    /* limit + 1: refused before anything is sent, through either silo. */
    assert_int_equal(call_key(&loop, c0, key, GR_KEY_MAX + 1, "get", &r), GR_ETOOBIG);
    assert_int_equal(call_key(&loop, c1, key, GR_KEY_MAX + 1, "get", &r), GR_ETOOBIG);
    /* Arguments at the limit on the forwarded path too: HashCounter grains
     * live on their ring owner, so of 8 keys entered through silo 0 some are
     * forwarded, 1 MiB argument, 1024-byte key and call chain included. */
    static uint8_t arg[GR_ARG_MAX + 1];
    memset(arg, 'a', sizeof arg);
    for (int v = 0; v < 8; v++) {
        key[GR_KEY_MAX - 1] = (uint8_t)(100 + v);
        uint64_t end = now_ms() + 5000;
        int st2;
        do {
            memset(&r, 0, sizeof r);
            gr_ref_t ref = {"HashCounter", key, GR_KEY_MAX};
            assert_int_equal(gr_client_call(c0, &ref, "get", arg, GR_ARG_MAX, 5000, on_res, &r), 0);
            gr_test_run_until(&loop, &r.done, 10000);
            st2 = r.status;
        } while (st2 != 0 && gr_err_retryable(st2) && now_ms() < end);
        if (st2 != 0) fail_msg("1 MiB argument, variant %d: %s %s", v, gr_err_name(st2), r.reply);
    }
    gr_ref_t big = {"HashCounter", key, GR_KEY_MAX};
    assert_int_equal(gr_client_call(c0, &big, "get", arg, GR_ARG_MAX + 1, 5000, on_res, &r), GR_ETOOBIG);
    gr_client_close(c0, NULL, NULL);
    gr_client_close(c1, NULL, NULL);
    gr_test_run_for(&loop, 50);
    gr_test_loop_close(&loop);
}

/* The same sizes of calls in flight on the cross-silo path: HashCounter
 * places each grain on its ring owner, so about half of a burst entering
 * through silo 0 is forwarded to silo 1 (activation, claim and write there). */
static void test_inflight_across_silos(void **st) {
    uv_loop_t loop;
    gr_client_t *c0, *c1;
    two_silos(&loop, &c0, &c1);
    char err[320];
    if (gr_h_burst_sweep(&loop, c0, "HashCounter", "xburst", err, sizeof err) != 0)
        fail_msg("across silos: %s", err);
    gr_client_close(c0, NULL, NULL);
    gr_client_close(c1, NULL, NULL);
    gr_test_run_for(&loop, 50);
    gr_test_loop_close(&loop);
}

/* A call cycle across two silos: Counter/a (on silo 0) calls Counter/b (on
 * silo 1), which calls a back. The call chain travels with the forwarded
 * request, so silo 0 refuses the call back at once with GR_EDEADLOCK instead
 * of letting it wait for its timeout; through "where", which interleaves,
 * the same cycle completes. */
static void test_call_cycle_across_silos(void **st) {
    uv_loop_t loop;
    gr_client_t *c0, *c1;
    two_silos(&loop, &c0, &c1);
    char ka[32], kb[32], arg[128];
    key_hosted_on(&loop, c0, 0, "cyc-a", ka, sizeof ka);
    key_hosted_on(&loop, c1, 1, "cyc-b", kb, sizeof kb);
    res_t r;
    snprintf(arg, sizeof arg, "%s relay %s incr", kb, ka);
    uint64_t t0 = now_ms();
    assert_int_equal(call_sync(&loop, c0, ka, "relay", arg, &r), GR_EAPP);
    uint64_t took = now_ms() - t0;
    print_message("cycle across silos refused in %llu ms: %s\n", (unsigned long long)took, r.reply);
    assert_non_null(strstr(r.reply, "GR_EDEADLOCK"));
    char want[128];
    snprintf(want, sizeof want, "Counter/%s -> Counter/%s -> Counter/%s", ka, kb, ka);
    assert_non_null(strstr(r.reply, want));
    assert_true(took < 2000);
    /* Nothing was incremented, and the grains are still served. */
    assert_int_equal(call_sync(&loop, c0, ka, "get", NULL, &r), 0);
    assert_string_equal(r.reply, "0");
    snprintf(arg, sizeof arg, "%s relay %s where", kb, ka);
    assert_int_equal(call_sync(&loop, c0, ka, "relay", arg, &r), 0);
    char hosted0[32];
    snprintf(hosted0, sizeof hosted0, "127.0.0.1:%d-", silos[0].port);
    assert_int_equal(strncmp(r.reply, hosted0, strlen(hosted0)), 0);
    /* Without a cycle the relay is an ordinary cross-silo call. */
    snprintf(arg, sizeof arg, "%s incr", kb);
    assert_int_equal(call_sync(&loop, c0, ka, "relay", arg, &r), 0);
    assert_string_equal(r.reply, "1");
    gr_client_close(c0, NULL, NULL);
    gr_client_close(c1, NULL, NULL);
    gr_test_loop_close(&loop);
}

/* A stateless worker is served by whichever silo a call enters, never
 * forwarded, with no directory entry and no state. */
/* Placement: calls entering through silo 0 only. Counter (local) starts
 * every grain there; HashCounter spreads them over all three silos by the
 * ring; RandomCounter over more than one. Each grain stays where it
 * started: a second call through another silo finds the same activation. */
static int hosts_of(uv_loop_t *loop, gr_client_t *via0, gr_client_t *via2, const char *cls, int per_silo[3]) {
    memset(per_silo, 0, 3 * sizeof per_silo[0]);
    for (int i = 0; i < 30; i++) {
        char key[32];
        snprintf(key, sizeof key, "place-%d", i);
        gr_ref_t ref = {cls, key, strlen(key)};
        res_t a, b;
        uint64_t end = now_ms() + 5000;
        do { /* retryable errors while the silos' views settle */
            memset(&a, 0, sizeof a);
            assert_int_equal(gr_client_call(via0, &ref, "where", NULL, 0, 5000, on_res, &a), 0);
            assert_true(gr_test_run_until(loop, &a.done, 10000));
        } while (a.status != 0 && gr_err_retryable(a.status) && now_ms() < end);
        assert_int_equal(a.status, 0);
        memset(&b, 0, sizeof b);
        assert_int_equal(gr_client_call(via2, &ref, "where", NULL, 0, 5000, on_res, &b), 0);
        assert_true(gr_test_run_until(loop, &b.done, 10000));
        assert_int_equal(b.status, 0);
        assert_string_equal(a.reply, b.reply);
        for (int s = 0; s < 3; s++) {
            char prefix[32];
            snprintf(prefix, sizeof prefix, "127.0.0.1:%d-", silos[s].port);
            if (!strncmp(a.reply, prefix, strlen(prefix))) per_silo[s]++;
        }
    }
    int used = 0;
    for (int s = 0; s < 3; s++)
        used += per_silo[s] > 0;
    print_message("%s: 30 grains entered via silo 0 -> %d / %d / %d\n", cls, per_silo[0], per_silo[1],
                  per_silo[2]);
    assert_int_equal(per_silo[0] + per_silo[1] + per_silo[2], 30);
    return used;
}

static void test_placement(void **st) {
    for (int i = 0; i < 3; i++)
        start_silo(i, NULL);
    wait_active(3);
    uv_loop_t loop;
    uv_loop_init(&loop);
    char a0[32], a2[32];
    snprintf(a0, sizeof a0, "127.0.0.1:%d", silos[0].port);
    snprintf(a2, sizeof a2, "127.0.0.1:%d", silos[2].port);
    gr_client_t *via0 = client_for(&loop, a0, "s3cret"), *via2 = client_for(&loop, a2, "s3cret");
    gr_test_run_for(&loop, 600); /* a few heartbeats: every silo's view has all three active */
    int n[3];
    assert_int_equal(hosts_of(&loop, via0, via2, "Counter", n), 1);
    assert_int_equal(n[0], 30);
    /* 64 ring points per silo: all three get some of 30 keys (a silo with
     * none would have odds of about 3 * (2/3)^30, 1.6e-5). */
    assert_int_equal(hosts_of(&loop, via0, via2, "HashCounter", n), 3);
    assert_true(hosts_of(&loop, via0, via2, "RandomCounter", n) >= 2);
    gr_client_close(via0, NULL, NULL);
    gr_client_close(via2, NULL, NULL);
    gr_test_loop_close(&loop);
}

static void test_stateless_worker_served_locally(void **st) {
    uv_loop_t loop;
    start_two_silos(&loop);
    for (int i = 0; i < 2; i++) {
        char a[32], hosted[32];
        snprintf(a, sizeof a, "127.0.0.1:%d", silos[i].port);
        snprintf(hosted, sizeof hosted, "127.0.0.1:%d-", silos[i].port);
        gr_client_t *c = client_for(&loop, a, "s3cret");
        res_t r;
        memset(&r, 0, sizeof r);
        gr_ref_t ref = {"Checksum", "k", 1};
        for (int j = 0; j < 5; j++) {
            memset(&r, 0, sizeof r);
            assert_int_equal(gr_client_call(c, &ref, "where", NULL, 0, 5000, gr_test_on_reply, &r), 0);
            assert_true(gr_test_run_until(&loop, &r.done, 10000));
            assert_int_equal(r.status, 0);
            assert_int_equal(strncmp(r.reply, hosted, strlen(hosted)), 0);
        }
        memset(&r, 0, sizeof r);
        assert_int_equal(gr_client_call(c, &ref, "sum", "abc", 3, 5000, gr_test_on_reply, &r), 0);
        assert_true(gr_test_run_until(&loop, &r.done, 10000));
        assert_string_equal(r.reply, "e16801510db89efd"); /* FNV-1a 64 of "abc" */
        gr_client_close(c, NULL, NULL);
    }
    /* Nothing stored for it. */
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM granary_grain_state WHERE grain_class = 'Checksum'");
    char *v = gr_test_sql(gr_test_pg_url(), sql);
    assert_string_equal(v, "0");
    free(v);
    gr_test_loop_close(&loop);
}

/* A rolling deploy of a new state version: silo 1 runs Counter with
 * state_version 2 beside silo 0 with version 1. Once silo 1 has written a
 * grain in format 2, silo 0 refuses to activate it (retryable
 * GR_ESTATEVERSION) and never overwrites it; silo 1 keeps serving it. */
static void test_state_version_rolling(void **st) {
    silos[1].grains = "examples/counter_v2.so";
    uv_loop_t loop;
    gr_client_t *c0, *c1;
    two_silos(&loop, &c0, &c1);
    char key[32];
    key_hosted_on(&loop, c1, 1, "ver", key, sizeof key);
    res_t r;
    for (int i = 0; i < 3; i++)
        assert_int_equal(call_retry(&loop, c1, key, "incr", NULL, &r, 5000), 0);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT state_format || ' ' || version FROM granary_grain_state WHERE service = '%s' AND "
             "grain_key = '%s'",
             cl.name, key);
    char *v = gr_test_sql(gr_test_pg_url(), sql);
    assert_string_equal(v, "2 3");
    free(v);
    /* End the activation on silo 1, then enter through the old silo 0: it
     * is placed there (prefer-local) and refuses. */
    assert_int_equal(call_sync(&loop, c1, key, "deactivate", NULL, &r), 0);
    gr_test_run_for(&loop, 200);
    int st0 = call_sync(&loop, c0, key, "incr", NULL, &r);
    print_message("old silo on newer state: %s: %s\n", gr_err_name(st0), r.reply);
    assert_int_equal(st0, GR_ESTATEVERSION);
    assert_non_null(strstr(r.reply, "format 2, newer than this silo's Counter (state_version 1)"));
    v = gr_test_sql(gr_test_pg_url(), sql);
    assert_string_equal(v, "2 3"); /* untouched */
    free(v);
    /* The new silo serves it with every acknowledged increment. */
    assert_int_equal(call_retry(&loop, c1, key, "get", NULL, &r, 5000), 0);
    assert_string_equal(r.reply, "3");
    gr_client_close(c0, NULL, NULL);
    gr_client_close(c1, NULL, NULL);
    gr_test_loop_close(&loop);
}

/* Durable reminders: registered from inside a grain, stored in PostgreSQL,
 * fired by the silo owning the grain's range; they keep firing after the
 * silo hosting the grain is killed (the survivor owns every range then), and
 * stop when unregistered. Each firing adds 1 to the Counter, committed
 * before the acknowledgement. */
static void test_reminders_survive_kill(void **st) {
    static const char *const fast[] = {"--reminder-poll-ms", "100", "--reminder-min-period-ms", "200", NULL};
    silos[0].extra = fast;
    silos[1].extra = fast;
    uv_loop_t loop;
    start_two_silos(&loop);
    char both[64];
    snprintf(both, sizeof both, "127.0.0.1:%d,127.0.0.1:%d", silos[0].port, silos[1].port);
    gr_client_t *c = client_for(&loop, both, "s3cret");
    res_t r;
    assert_int_equal(call_sync(&loop, c, "rem", "remind", "tick 0 100", &r), GR_EAPP); /* under the minimum */
    assert_non_null(strstr(r.reply, "too short"));
    assert_int_equal(call_sync(&loop, c, "rem", "remind", "tick 0 300", &r), 0);
    assert_int_equal(call_sync(&loop, c, "rem", "reminders", NULL, &r), 0);
    assert_int_equal(strncmp(r.reply, "tick ", 5), 0);
    assert_non_null(strstr(r.reply, " 300\n"));
    gr_test_run_for(&loop, 1600);
    assert_int_equal(call_retry(&loop, c, "rem", "get", NULL, &r, 5000), 0);
    int before = atoi(r.reply);
    print_message("reminder fired %d times in ~1.6 s (period 300 ms, poll 100 ms)\n", before);
    assert_true(before >= 3 && before <= 7);
    /* Kill the silo hosting the grain: the other one takes the grain and
     * the whole ring, and the reminder keeps firing. */
    assert_int_equal(call_retry(&loop, c, "rem", "where", NULL, &r, 5000), 0);
    char hosted0[32];
    snprintf(hosted0, sizeof hosted0, "127.0.0.1:%d-", silos[0].port);
    int victim = strncmp(r.reply, hosted0, strlen(hosted0)) == 0 ? 0 : 1;
    kill(silos[victim].pid, SIGKILL);
    gr_test_wait(silos[victim].pid, 5000);
    silos[victim].pid = 0;
    gr_test_run_for(&loop, 4000);
    assert_int_equal(call_retry(&loop, c, "rem", "get", NULL, &r, 5000), 0);
    int after = atoi(r.reply);
    print_message("after SIGKILL of silo %d: %d -> %d\n", victim, before, after);
    assert_true(after >= before + 4);
    /* Unregistered: it stops. */
    assert_int_equal(call_retry(&loop, c, "rem", "forget", "tick", &r, 5000), 0);
    assert_int_equal(call_sync(&loop, c, "rem", "forget", "tick", &r), GR_EAPP); /* gone already */
    assert_non_null(strstr(r.reply, "GR_ENOENT"));
    gr_test_run_for(&loop, 300); /* a fire already in flight may still land */
    assert_int_equal(call_sync(&loop, c, "rem", "get", NULL, &r), 0);
    int stopped = atoi(r.reply);
    gr_test_run_for(&loop, 1000);
    assert_int_equal(call_sync(&loop, c, "rem", "get", NULL, &r), 0);
    assert_int_equal(atoi(r.reply), stopped);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM granary_reminder WHERE service = '%s'", cl.name);
    char *v = gr_test_sql(gr_test_pg_url(), sql);
    assert_string_equal(v, "0");
    free(v);
    gr_client_close(c, NULL, NULL);
    gr_test_loop_close(&loop);
}

/* A silo cut off from PostgreSQL fences itself within the lease, the others
 * take its grains over with their state, and when the link comes back it
 * learns it was declared dead and exits with status 3. */
static void test_partition_from_database_fences(void **st) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    const char *url = gr_test_pg_url();
    const char *portp = strrchr(url, ':');
    gr_test_proxy_t *px = gr_test_proxy_start(&loop, atoi(portp + 1));
    char via_proxy[256];
    snprintf(via_proxy, sizeof via_proxy, "postgresql://granary@127.0.0.1:%d/granary",
             gr_test_proxy_port(px));
    start_silo(0, NULL);
    start_silo(1, NULL);
    start_silo(2, via_proxy);
    wait_active_on(&loop, 3);
    gr_test_run_for(&loop, 400); /* every silo's view has all three active */
    char a2[32], a0[32];
    snprintf(a2, sizeof a2, "127.0.0.1:%d", silos[2].port);
    snprintf(a0, sizeof a0, "127.0.0.1:%d", silos[0].port);
    gr_client_t *via2 = client_for(&loop, a2, "s3cret");
    gr_client_t *via0 = client_for(&loop, a0, "s3cret");
    res_t r;
    char key[32];
    key_hosted_on(&loop, via2, 2, "cut", key, sizeof key);
    assert_int_equal(call_retry(&loop, via2, key, "incr", NULL, &r, 5000), 0);
    assert_string_equal(r.reply, "1");

    gr_test_proxy_cut(px);
    uint64_t t0 = now_ms();
    /* The others take over: the grain answers through silo 0, state intact. */
    uint64_t moved = 0;
    while (!moved && now_ms() - t0 < 10000) {
        if (call_sync(&loop, via0, key, "incr", NULL, &r) == 0)
            moved = now_ms();
        else
            gr_test_run_for(&loop, 50);
    }
    assert_true(moved);
    assert_string_equal(r.reply, "2");
    print_message("grain of the partitioned silo served elsewhere %llu ms after the cut\n",
                  (unsigned long long)(moved - t0));
    /* The partitioned silo fenced itself: it serves nothing. */
    assert_int_equal(call_sync(&loop, via2, "fresh-key", "get", NULL, &r), GR_ENOTHERE);
    assert_non_null(strstr(r.reply, "fenced"));
    /* Link back: it finds itself declared dead and exits 3. */
    gr_test_proxy_restore(px);
    int exited = -1;
    uint64_t t1 = now_ms();
    while (now_ms() - t1 < 10000 && (exited = gr_test_wait(silos[2].pid, 0)) < 0)
        gr_test_run_for(&loop, 50);
    if (exited != 3) gr_test_print_tail(log_path, 60);
    assert_int_equal(exited, 3);
    silos[2].pid = 0;
    assert_int_equal(call_retry(&loop, via0, key, "get", NULL, &r, 5000), 0);
    assert_string_equal(r.reply, "2");
    gr_client_close(via2, NULL, NULL);
    gr_client_close(via0, NULL, NULL);
    gr_test_proxy_close(px);
    gr_test_loop_close(&loop);
}

int main(void) {
    if (gr_test_process_setup("test_cluster.log", log_path, sizeof log_path) != 0) return 1;
    /* GR_TEST_FILTER=test_key* runs only the cases whose name matches. */
    if (getenv("GR_TEST_FILTER")) cmocka_set_test_filter(getenv("GR_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_single_activation_across_silos, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_call_cycle_across_silos, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_key_limits_across_silos, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_inflight_across_silos, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_stateless_worker_served_locally, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_placement, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_state_version_rolling, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_reminders_survive_kill, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_sigterm_under_load, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_sigkill_failover, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_scale_down_3_to_1, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_wrong_secret_refused, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_partition_from_database_fences, new_cluster, kill_all),
    };
    return cmocka_run_group_tests_name("cluster", tests, NULL, NULL);
}
