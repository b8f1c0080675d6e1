/* tests/cluster/test_migration.c - live migration and rebalancing
 * (docs/migration.md) between real silo processes on a real PostgreSQL:
 * a SIGTERM hands every activation to the silo that hosts it next, which
 * serves it without one storage read (and with its reply log: a repeated
 * keyed call is not run twice); with --no-migrate the same drain makes the
 * next silo read every grain (the control that shows the first check can
 * fail); silos that join take their share of the activations within
 * seconds, nothing is moved twice, and no value is lost; a silo-role peer
 * that forges a hand-over moves nothing; and a silo process under
 * --max-activations, fed grains without end, never holds more than its
 * bound while nothing acknowledged is lost. Figures from /metrics. */
#include "client/client_internal.h"
#include "cluster_fixture.h"

#define NGRAINS 400

static int http_port[GR_H_MAX_SILOS];
static char http_arg[GR_H_MAX_SILOS][32];
static const char *args[GR_H_MAX_SILOS][8];

/* Silo i serves /metrics on a port of its own, plus `more` flags. */
static void with_http(int i, const char *const *more) {
    if (!http_port[i]) http_port[i] = gr_test_free_port();
    snprintf(http_arg[i], sizeof http_arg[i], "127.0.0.1:%d", http_port[i]);
    int n = 0;
    args[i][n++] = "--http";
    args[i][n++] = http_arg[i];
    for (int k = 0; more && more[k] && n < 7; k++)
        args[i][n++] = more[k];
    args[i][n] = NULL;
    silos[i].extra = args[i];
}

/* A sample of silo i's /metrics: the value of the line that starts with
 * `name` followed by a space (labels included in name), or -1. */
static double metric(int i, const char *name) {
    static char body[1 << 20];
    if (gr_test_http_get(http_port[i], "/metrics", body, sizeof body) != 200) return -1;
    size_t nl = strlen(name);
    for (char *p = body; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (!strncmp(p, name, nl) && p[nl] == ' ') return strtod(p + nl + 1, NULL);
    return -1;
}

#define READS "granary_storage_reads_total"
#define MIG_IN "granary_migrations_total{direction=\"in\",result=\"ok\"}"
#define MIG_OUT "granary_migrations_total{direction=\"out\",result=\"ok\"}"
#define ACTIVE "granary_activations{class=\"Counter\"}"

static int keyed_incr(uv_loop_t *loop, gr_client_t *c, const char *key, const char *idem, res_t *r) {
    memset(r, 0, sizeof *r);
    gr_ref_t ref = {"Counter", key, strlen(key)};
    gr_call_options_t o;
    gr_call_options_init(&o);
    o.timeout_ms = 5000;
    o.idempotency_key = idem;
    o.idempotency_key_len = strlen(idem);
    assert_int_equal(gr_client_call_ex(c, &ref, "incr", NULL, 0, &o, on_res, r), 0);
    gr_test_run_until(loop, &r->done, 10000);
    return r->status;
}

/* NGRAINS fresh counters on silo 0 (entered through it: prefer-local),
 * each incremented once; mig-0 twice more, by one keyed call sent twice. */
static void fill_silo0(uv_loop_t *loop, gr_client_t *c0, const char *prefix) {
    char err[256] = "";
    assert_int_equal(gr_h_burst(loop, c0, "Counter", prefix, NGRAINS, 20000, err, sizeof err), 0);
    char key[64];
    snprintf(key, sizeof key, "%s-0", prefix);
    res_t r;
    assert_int_equal(keyed_incr(loop, c0, key, "once", &r), 0);
    assert_string_equal(r.reply, "2");
}

/* Every counter has its value, read through c; mig-0's keyed call, sent
 * again, is answered from the reply log (still 2, not 3). */
static void check_values(uv_loop_t *loop, gr_client_t *c, const char *prefix) {
    char key[64];
    res_t r;
    for (int k = 0; k < NGRAINS; k++) {
        snprintf(key, sizeof key, "%s-%d", prefix, k);
        assert_int_equal(call_retry(loop, c, key, "get", NULL, &r, 5000), 0);
        if (strcmp(r.reply, k == 0 ? "2" : "1") != 0) fail_msg("%s = %s after the move", key, r.reply);
    }
    snprintf(key, sizeof key, "%s-0", prefix);
    assert_int_equal(keyed_incr(loop, c, key, "once", &r), 0);
    assert_string_equal(r.reply, "2");
}

static void drain_case(int migrate) {
    static const char *const no_migrate[] = {"--no-migrate", NULL};
    with_http(0, migrate ? NULL : no_migrate);
    with_http(1, NULL);
    uv_loop_t loop;
    start_two_silos(&loop);
    char list0[64], list1[64];
    snprintf(list0, sizeof list0, "127.0.0.1:%d", silos[0].port);
    snprintf(list1, sizeof list1, "127.0.0.1:%d", silos[1].port);
    gr_client_t *c0 = client_for(&loop, list0, cl.secret), *c1 = client_for(&loop, list1, cl.secret);
    fill_silo0(&loop, c0, "mig");
    assert_true(metric(0, ACTIVE) >= NGRAINS);
    double reads_before = metric(1, READS);
    assert_true(reads_before >= 0);
    uint64_t took = 0;
    assert_int_equal(sigterm_and_wait(&loop, 0, &took), 0);
    double in = metric(1, MIG_IN);
    print_message("drain of %d grains (%s) took %llu ms; silo 1 took over %.0f live\n", NGRAINS,
                  migrate ? "migrating" : "--no-migrate", (unsigned long long)took, in);
    if (migrate) {
        assert_true(in == NGRAINS);
        assert_true(metric(1, ACTIVE) == NGRAINS);
    } else {
        assert_true(in == 0);
    }
    check_values(&loop, c1, "mig");
    double reads = metric(1, READS) - reads_before;
    print_message("storage reads on silo 1 caused by the drain: %.0f\n", reads);
    if (migrate)
        assert_true(reads == 0);
    else
        assert_true(reads >= NGRAINS);
    /* The claims moved with the activations: each names silo 1's incarnation. */
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM granary_activation a JOIN granary_silo s ON s.cluster = a.service AND "
             "s.silo_id = a.silo_id WHERE a.service = '%s' AND s.status = 'active' AND a.grain_key::text "
             "LIKE '%%6d69672d%%'",
             cl.name);
    char *v = gr_test_sql(gr_test_pg_url(), sql);
    print_message("claims held by the survivor: %s\n", v);
    assert_int_equal(atoi(v), NGRAINS);
    free(v);
    gr_client_close(c0, NULL, NULL);
    gr_client_close(c1, NULL, NULL);
    gr_test_loop_close(&loop);
}

static void test_drain_migrates(void **st) { drain_case(1); }
static void test_drain_without_migration_reads(void **st) { drain_case(0); }

/* Silos 0..n-1 get /metrics ports and `flags`; only silo 0 starts (loop
 * initialised) and becomes active. Returns a client of silo 0. */
static gr_client_t *first_silo(uv_loop_t *loop, int n, const char *const *flags) {
    for (int i = 0; i < n; i++)
        with_http(i, flags);
    uv_loop_init(loop);
    start_silo(0, NULL);
    wait_active_on(loop, 1);
    char list0[64];
    snprintf(list0, sizeof list0, "127.0.0.1:%d", silos[0].port);
    return client_for(loop, list0, cl.secret);
}

/* Scale 1 -> 3: the new silos take their share (each at least a quarter of
 * the grains) within seconds, by migration (no storage read on them), no
 * activation is moved twice (the new silos move nothing out), and every
 * value is intact. */
static void test_rebalance_on_join(void **st) {
    uv_loop_t loop;
    gr_client_t *c0 = first_silo(&loop, 3, NULL);
    fill_silo0(&loop, c0, "reb");
    uint64_t t0 = now_ms();
    start_silo(1, NULL);
    start_silo(2, NULL);
    wait_active_on(&loop, 3);
    uint64_t balanced = 0;
    while (!balanced && now_ms() - t0 < 20000) {
        gr_test_run_for(&loop, 100);
        if (metric(1, ACTIVE) >= NGRAINS / 4 && metric(2, ACTIVE) >= NGRAINS / 4) balanced = now_ms() - t0;
    }
    print_message("1 -> 3 silos: each new one hosts >= 25%% of %d grains %llu ms after they were started "
                  "(%.0f / %.0f / %.0f)\n",
                  NGRAINS, (unsigned long long)balanced, metric(0, ACTIVE), metric(1, ACTIVE), metric(2, ACTIVE));
    assert_true(balanced > 0);
    gr_test_run_for(&loop, 2500); /* settle: nothing may move back */
    /* Every grain is active exactly once: none left behind frozen on silo 0
     * (a move whose answer never came), none doubled. */
    double total = metric(0, ACTIVE) + metric(1, ACTIVE) + metric(2, ACTIVE);
    print_message("activations after settling: %.0f / %.0f / %.0f\n", metric(0, ACTIVE), metric(1, ACTIVE),
                  metric(2, ACTIVE));
    assert_true(total == NGRAINS);
    assert_true(metric(0, "granary_migrations_in_flight") == 0);
    for (int i = 1; i < 3; i++) {
        assert_true(metric(i, READS) == 0);
        assert_true(metric(i, MIG_OUT) == 0);
    }
    assert_true(metric(0, "granary_rebalance_moves_total") == metric(1, MIG_IN) + metric(2, MIG_IN));
    char list[128];
    gr_h_silo_list(&cl, 1, 3, list, sizeof list);
    gr_client_t *c = client_for(&loop, list, cl.secret);
    check_values(&loop, c, "reb");
    for (int i = 1; i < 3; i++)
        assert_true(metric(i, READS) == 0);
    gr_client_close(c0, NULL, NULL);
    gr_client_close(c, NULL, NULL);
    gr_test_loop_close(&loop);
}

/* A `$mig in` payload for Counter/key naming `source` and `token`, with
 * state bytes "41" at version 1 (wire format of src/runtime/migrate.c). */
static size_t forged_payload(uint8_t *p, const char *source, uint32_t token) {
    size_t sl = strlen(source), n = 0;
    p[n++] = 1;
    p[n++] = 0;
    gr__put_u16(p + n, (uint16_t)sl);
    n += 2;
    memcpy(p + n, source, sl);
    n += sl;
    gr__put_u32(p + n, token);
    gr__put_u64(p + n + 4, 1);
    gr__put_u32(p + n + 12, 0);
    gr__put_u32(p + n + 16, 2);
    n += 20;
    memcpy(p + n, "41", 2);
    n += 2;
    gr__put_u32(p + n, 0);
    return n + 4;
}

/* Peers that lie: a connection with the silo role hands silo 1 an
 * activation of silo 0 (every token from 1 to 64), once with a HELLO name
 * other than the source it claims and once with a payload that is cut
 * short. Silo 1 refuses each (GR_EAUTH / GR_EPROTO, said as a refusal)
 * and nothing moves: silo 0 still serves the grain with its value, and
 * silo 1 took nothing in and read nothing. */
static void test_forged_handover(void **st) {
    with_http(0, NULL);
    with_http(1, NULL);
    uv_loop_t loop;
    start_two_silos(&loop);
    char list0[64], list1[64];
    snprintf(list0, sizeof list0, "127.0.0.1:%d", silos[0].port);
    snprintf(list1, sizeof list1, "127.0.0.1:%d", silos[1].port);
    gr_client_t *c0 = client_for(&loop, list0, cl.secret);
    char key[64];
    key_hosted_on(&loop, c0, 0, "forge", key, sizeof key);
    res_t r;
    assert_int_equal(call_retry(&loop, c0, key, "incr", NULL, &r, 5000), 0);
    assert_int_equal(call_retry(&loop, c0, key, "where", NULL, &r, 5000), 0);
    char source[256];
    snprintf(source, sizeof source, "%s", r.reply);
    /* Both hold the silo secret (tests/support/harness.c): peers the
     * handshake lets in as silos, lying past it. */
    gr_client_t *forger = client_for(&loop, list1, "s1lo-s3cret"); /* HELLO name "client" */
    gr__client_set_role(forger, GR__ROLE_SILO);
    /* One that says it is silo 0 sends only payloads cut short: the parser
     * refuses them (a whole one would be tried against the claim, whose
     * token this test does not know: the silo secret is what keeps such a
     * peer out, docs/security.md). */
    gr_client_options_t lo;
    gr_client_options_init(&lo);
    lo.silos = list1;
    lo.cluster = cl.name;
    lo.secret = "s1lo-s3cret";
    lo.name = source;
    gr_client_t *liar;
    assert_int_equal(gr_client_new(&loop, &lo, &liar), 0);
    gr__client_set_role(liar, GR__ROLE_SILO);
    uint8_t id[64], payload[256];
    size_t cl_len = strlen("Counter"), kl = strlen(key);
    memcpy(id, "Counter", cl_len + 1);
    memcpy(id + cl_len + 1, key, kl);
    gr_ref_t ref = {"$mig", (const char *)id, cl_len + 1 + kl};
    int eauth = 0, eproto = 0;
    for (uint32_t token = 1; token <= 64; token++) {
        size_t n = forged_payload(payload, source, token);
        for (int liar_turn = 0; liar_turn < 2; liar_turn++) {
            memset(&r, 0, sizeof r);
            assert_int_equal(gr_client_call(liar_turn ? liar : forger, &ref, "in", payload, liar_turn ? n - 3 : n,
                                            5000, on_res, &r),
                             0);
            gr_test_run_until(&loop, &r.done, 10000);
            assert_true(r.done);
            if (strncmp(r.reply, "refused: ", 9) != 0)
                fail_msg("forged hand-over answered %d %s", r.status, r.reply);
            eauth += r.status == GR_EAUTH;
            eproto += r.status == GR_EPROTO;
        }
    }
    print_message("forged hand-overs: %d refused as not from their source, %d cut short refused\n", eauth,
                  eproto);
    assert_int_equal(eauth, 64);
    assert_int_equal(eproto, 64);
    assert_true(metric(1, MIG_IN) == 0);
    assert_true(metric(1, READS) == 0);
    gr_client_t *c1 = client_for(&loop, list1, cl.secret);
    assert_int_equal(call_retry(&loop, c1, key, "incr", NULL, &r, 5000), 0);
    assert_string_equal(r.reply, "2");
    assert_int_equal(call_retry(&loop, c1, key, "where", NULL, &r, 5000), 0);
    assert_string_equal(r.reply, source);
    gr_client_close(forger, NULL, NULL);
    gr_client_close(liar, NULL, NULL);
    gr_client_close(c0, NULL, NULL);
    gr_client_close(c1, NULL, NULL);
    gr_test_loop_close(&loop);
}

/* ---- rebalancing by calls ---- */

#define HOT 12
#define CALLS "granary_calls_total{class=\"Counter\",method=\"get\"}"

typedef struct hot_load {
    gr_client_t *c;
    int in_flight, failed;
    uint64_t sent;
} hot_load_t;

static void hot_done(void *ud, int status, const uint8_t *reply, size_t len) {
    hot_load_t *h = ud;
    h->in_flight--;
    if (status != 0 && !gr_err_retryable(status) && h->failed++ == 0)
        print_message("hot get: %s %.*s\n", gr_err_name(status), (int)len, reply);
}

/* One get to each hot grain (through silo 0) unless the last round is still out. */
static void hot_round(hot_load_t *h) {
    if (h->in_flight) return;
    for (int k = 0; k < HOT; k++) {
        char key[32];
        snprintf(key, sizeof key, "hot-%d", k);
        gr_ref_t ref = {"Counter", key, strlen(key)};
        if (gr_client_call(h->c, &ref, "get", NULL, 0, 5000, hot_done, h) == 0) h->in_flight++, h->sent++;
    }
}

static double calls_on(int i) { return metric(i, CALLS); }

/* --rebalance-by calls: three silos; 300 idle grains and HOT busy ones,
 * all on silo 0, the busy ones called in rounds through silo 0. The
 * rebalancer evens out calls, not counts: within 15 s silos 1 and 2 each
 * run at least a sixth of the calls (over a 2 s sample), while most idle
 * grains stay on silo 0 (by count they would have spread evenly). */
static void test_rebalance_by_calls(void **st) {
    static const char *const by_calls[] = {"--rebalance-by", "calls", NULL};
    uv_loop_t loop;
    gr_client_t *c0 = first_silo(&loop, 3, by_calls);
    char err[256] = "";
    assert_int_equal(gr_h_burst(&loop, c0, "Counter", "idle", 300, 20000, err, sizeof err), 0);
    assert_int_equal(gr_h_burst(&loop, c0, "Counter", "hot", HOT, 20000, err, sizeof err), 0);
    start_silo(1, NULL);
    start_silo(2, NULL);
    wait_active_on(&loop, 3);
    hot_load_t h = {c0, 0, 0, 0};
    uint64_t t0 = now_ms(), spread = 0;
    double share1 = 0, share2 = 0;
    while (!spread && now_ms() - t0 < 15000) {
        double c[3], d[3];
        for (int i = 0; i < 3; i++)
            c[i] = calls_on(i);
        uint64_t s0 = now_ms();
        while (now_ms() - s0 < 2000) {
            hot_round(&h);
            gr_test_run_for(&loop, 2);
        }
        double all = 0;
        for (int i = 0; i < 3; i++)
            all += d[i] = calls_on(i) - c[i];
        share1 = all > 0 ? d[1] / all : 0;
        share2 = all > 0 ? d[2] / all : 0;
        print_message("calls in 2 s: %.0f / %.0f / %.0f; active %.0f / %.0f / %.0f\n", d[0], d[1], d[2],
                      metric(0, ACTIVE), metric(1, ACTIVE), metric(2, ACTIVE));
        if (share1 >= 1.0 / 6 && share2 >= 1.0 / 6) spread = now_ms() - t0;
    }
    while (h.in_flight)
        gr_test_run_for(&loop, 5);
    print_message("by calls: silos 1 and 2 run %.0f %% and %.0f %% of the calls %llu ms after joining; %llu gets\n",
                  share1 * 100, share2 * 100, (unsigned long long)spread, (unsigned long long)h.sent);
    assert_int_equal(h.failed, 0);
    assert_true(spread > 0);
    /* Counts were not what moved: most idle grains are still on silo 0. */
    assert_true(metric(0, ACTIVE) >= 200);
    gr_client_close(c0, NULL, NULL);
    gr_test_loop_close(&loop);
}

/* ---- a silo process at its memory bounds ---- */

#define BOUND 200
#define CREATED 3000
#define WINDOW 64

typedef struct bounded {
    uv_loop_t *loop;
    gr_client_t *c;
    int next, acked, failed, refused, in_flight;
    uv_timer_t retry;
    int retry_keys[WINDOW];
    int n_retry;
} bounded_t;

typedef struct bcall {
    bounded_t *b;
    int key;
} bcall_t;

static void bounded_send(bounded_t *b, int key);

static void bounded_done(void *ud, int status, const uint8_t *reply, size_t len) {
    bcall_t *q = ud;
    bounded_t *b = q->b;
    b->in_flight--;
    if (status == GR_EOVERLOAD && b->n_retry < WINDOW) {
        b->refused++; /* at the bound: sent again shortly */
        b->retry_keys[b->n_retry++] = q->key;
    } else if (status == 0 && len == 1 && reply[0] == '1') {
        b->acked++;
    } else {
        if (b->failed++ == 0) print_message("incr %d: %s %.*s\n", q->key, gr_err_name(status), (int)len, reply);
    }
    free(q);
    if (b->next < CREATED && !b->n_retry) bounded_send(b, b->next++);
}

static void bounded_send(bounded_t *b, int key) {
    char k[32];
    snprintf(k, sizeof k, "bnd-%d", key);
    gr_ref_t ref = {"Counter", k, strlen(k)};
    bcall_t *q = malloc(sizeof *q);
    assert_non_null(q);
    *q = (bcall_t){b, key};
    b->in_flight++;
    assert_int_equal(gr_client_call(b->c, &ref, "incr", NULL, 0, 10000, bounded_done, q), 0);
}

static void bounded_retry(uv_timer_t *t) {
    bounded_t *b = t->data;
    while (b->n_retry)
        bounded_send(b, b->retry_keys[--b->n_retry]);
    while (b->in_flight < WINDOW && b->next < CREATED)
        bounded_send(b, b->next++);
}

/* --max-activations BOUND: CREATED new grains, WINDOW calls in flight,
 * each refusal (GR_EOVERLOAD) sent again 2 ms later; every 20 ms sample of
 * the silo's activations stays within the bound, idle ones are evicted
 * (their state written first), and every incr acknowledged is read back. */
static void test_bounded_silo(void **st) {
    static const char *const bound[] = {"--max-activations", "200", NULL};
    uv_loop_t loop;
    bounded_t b;
    memset(&b, 0, sizeof b);
    b.loop = &loop;
    b.c = first_silo(&loop, 1, bound);
    uv_timer_init(&loop, &b.retry);
    b.retry.data = &b;
    uv_timer_start(&b.retry, bounded_retry, 2, 2);
    double peak = 0;
    uint64_t end = now_ms() + 120000;
    while ((b.next < CREATED || b.in_flight || b.n_retry) && now_ms() < end) {
        gr_test_run_for(&loop, 20);
        double a = metric(0, ACTIVE);
        if (a > peak) peak = a;
    }
    uv_timer_stop(&b.retry);
    uv_close((uv_handle_t *)&b.retry, NULL);
    double evicted = metric(0, "granary_activations_evicted_total");
    print_message("%d grains under --max-activations %d: peak %.0f active, %.0f evicted, %d refused and sent "
                  "again, %d acknowledged, %d failed\n",
                  CREATED, BOUND, peak, evicted, b.refused, b.acked, b.failed);
    assert_int_equal(b.failed, 0);
    assert_int_equal(b.acked, CREATED);
    assert_true(peak > 0 && peak <= BOUND);
    assert_true(evicted >= CREATED - BOUND);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM granary_grain_state WHERE service = '%s' AND grain_class = 'Counter' AND "
             "convert_from(state, 'UTF8') = '1'",
             cl.name);
    char *v = gr_test_sql(gr_test_pg_url(), sql);
    assert_int_equal(atoi(v), CREATED); /* nothing acknowledged was lost */
    free(v);
    gr_client_close(b.c, NULL, NULL);
    gr_test_loop_close(&loop);
}

int main(void) {
    if (gr_test_process_setup("test_migration.log", log_path, sizeof log_path) != 0) return 1;
    if (getenv("GR_TEST_FILTER")) cmocka_set_test_filter(getenv("GR_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_drain_migrates, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_drain_without_migration_reads, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_rebalance_on_join, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_forged_handover, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_bounded_silo, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_rebalance_by_calls, new_cluster, kill_all),
    };
    return cmocka_run_group_tests_name("migration", tests, NULL, NULL);
}
