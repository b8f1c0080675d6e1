#define _GNU_SOURCE 1 /* memmem, strcasestr */
/* tests/cluster/cluster_fixture.c - the shared part of the cluster tests
 * (cluster_fixture.h). */
#include "cluster_fixture.h"

char log_path[1024];
gr_h_cluster_t cl;
gr_h_silo_t *silos = cl.silos;

int new_cluster(void **st) {
    static int n;
    char name[64];
    snprintf(name, sizeof name, "c%d-%d", (int)getpid(), ++n);
    gr_h_cluster_init(&cl, name, gr_test_pg_url(), log_path);
    return 0;
}

int kill_all(void **st) {
    gr_h_kill_all(&cl);
    return 0;
}

void start_silo(int i, const char *db) { assert_int_equal(gr_h_start_silo(&cl, i, db), 0); }

int count_active(void) { return gr_h_count_active(&cl); }

void wait_active_on(uv_loop_t *loop, int n) {
    if (gr_h_wait_active(&cl, loop, n, 10000) != 0)
        fail_msg("cluster did not reach %d active silos (have %d)", n, count_active());
}

void wait_active(int n) { wait_active_on(NULL, n); }

/* ---- one-off calls ---- */

gr_client_t *client_for(uv_loop_t *loop, const char *silos_list, const char *secret) {
    gr_client_options_t o;
    gr_client_options_init(&o);
    o.silos = silos_list;
    o.cluster = cl.name;
    o.secret = secret;
    gr_client_t *c;
    assert_int_equal(gr_client_new(loop, &o, &c), 0);
    return c;
}

int call_sync(uv_loop_t *loop, gr_client_t *c, const char *key, const char *method, const char *arg,
              res_t *r) {
    memset(r, 0, sizeof *r);
    gr_ref_t ref = {"Counter", key, strlen(key)};
    assert_int_equal(gr_client_call(c, &ref, method, arg, arg ? strlen(arg) : 0, 5000, on_res, r), 0);
    gr_test_run_until(loop, &r->done, 10000);
    return r->status;
}

/* A call that retries retryable errors for up to `ms`. */
int call_retry(uv_loop_t *loop, gr_client_t *c, const char *key, const char *method, const char *arg,
               res_t *r, uint64_t ms) {
    uint64_t end = now_ms() + ms;
    int st;
    while ((st = call_sync(loop, c, key, method, arg, r)) != 0 && gr_err_retryable(st) && now_ms() < end)
        gr_test_run_for(loop, 30);
    if (st != 0) print_message("%s %s: %s: %s\n", key, method, gr_err_name(st), r->reply);
    return st;
}

/* ---- the checked load (tests/support/harness.c) ---- */

gr_h_load_t *load_start(uv_loop_t *loop, int nsilos) {
    gr_h_load_t *l = gr_h_load_new(&cl, loop, nsilos, NWORKERS, NKEYS);
    assert_non_null(l);
    gr_h_load_start(l);
    return l;
}

/* Stop, read back, compare: nothing lost, nothing duplicated. */
void load_finish(gr_h_load_t *l, const char *label) {
    assert_int_equal(gr_h_load_stop(l, 20000), 0);
    gr_h_summary_t sum;
    int rc = gr_h_load_verify(l, &sum);
    gr_h_summary_print(&sum, label);
    assert_int_equal(sum.lost, 0);
    assert_int_equal(sum.duplicated, 0);
    assert_int_equal(sum.other_errors, 0);
    assert_int_equal(rc, 0);
    gr_h_load_free(l);
}

int sigterm_and_wait(uv_loop_t *loop, int i, uint64_t *took_ms) {
    return gr_h_sigterm_and_wait(&cl, loop, i, took_ms);
}

/* A key whose activation lives on silo i (placed there by entering through
 * it: placement is prefer-local); copied to key. */
void key_hosted_on(uv_loop_t *loop, gr_client_t *via, int i, const char *prefix, char *key, size_t size) {
    char hosted[32];
    snprintf(hosted, sizeof hosted, "127.0.0.1:%d-", silos[i].port);
    res_t r;
    for (int g = 0; g < 50; g++) {
        snprintf(key, size, "%s-%d", prefix, g);
        assert_int_equal(call_retry(loop, via, key, "where", NULL, &r, 5000), 0);
        if (!strncmp(r.reply, hosted, strlen(hosted))) return;
    }
    fail_msg("no key of 50 landed on silo %d", i);
}

/* ---- cases ---- */

/* Start silos 0 and 1 and wait until both are active in each other's view. */
void start_two_silos(uv_loop_t *loop) {
    start_silo(0, NULL);
    start_silo(1, NULL);
    uv_loop_init(loop);
    wait_active_on(loop, 2);
    gr_test_run_for(loop, 400);
}
