/* tests/cluster/test_cluster.c - real silo processes forming a cluster over
 * TCP and a real PostgreSQL: single activation across silos, SIGTERM and
 * SIGKILL under load with a strict checker, scale-down 3 -> 1, refusal of
 * wrong secrets, and a silo cut off from the database fencing itself.
 *
 * The checker: workers send `incr_once OPID` (idempotent by operation id)
 * and retry each operation until it is acknowledged, so at the end every
 * counter must equal exactly the number of acknowledged operations. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <unistd.h>

#include "common/common.h"
#include "granary/client.h"
#include "support.h"
#include "wire/frame.h"

#define MAX_SILOS 4
#define NKEYS 24
#define NWORKERS 12

static char cluster[64];
static char log_path[1024];

typedef struct {
    pid_t pid;
    int port;
    char db[512];
} silo_t;

static silo_t silos[MAX_SILOS];

static int new_cluster(void **st) {
    static int n;
    snprintf(cluster, sizeof cluster, "c%d-%d", (int)getpid(), ++n);
    memset(silos, 0, sizeof silos);
    return 0;
}

static int kill_all(void **st) {
    for (int i = 0; i < MAX_SILOS; i++)
        if (silos[i].pid > 0) {
            kill(silos[i].pid, SIGKILL);
            gr_test_wait(silos[i].pid, 5000);
            silos[i].pid = 0;
        }
    return 0;
}

static void start_silo(int i, const char *db) {
    char listen[64];
    if (!silos[i].port) silos[i].port = gr_test_free_port();
    snprintf(listen, sizeof listen, "127.0.0.1:%d", silos[i].port);
    snprintf(silos[i].db, sizeof silos[i].db, "%s", db ? db : gr_test_pg_url());
    const char *argv[] = {gr_test_build_path("silo"), "run", "--database", silos[i].db, "--listen", listen,
                          "--grains", gr_test_build_path("examples/counter.so"), "--cluster", cluster,
                          "--secret", "s3cret", NULL};
    silos[i].pid = gr_test_spawn(argv, log_path);
    assert_true(silos[i].pid > 0);
    assert_int_equal(gr_test_wait_port(silos[i].port, 10000), 0);
}

static int count_active(void) {
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM granary_silo WHERE cluster = '%s' AND status = 'active'",
             cluster);
    char *v = gr_test_sql(gr_test_pg_url(), sql);
    int n = v ? atoi(v) : -1;
    free(v);
    return n;
}

/* Waits while running `loop` (NULL: sleeps), so an in-process proxy keeps
 * carrying the silos' database traffic meanwhile. */
static void wait_active_on(uv_loop_t *loop, int n) {
    for (int i = 0; i < 200; i++) {
        if (count_active() == n) return;
        if (loop)
            gr_test_run_for(loop, 50);
        else
            usleep(50000);
    }
    fail_msg("cluster did not reach %d active silos (have %d)", n, count_active());
}

static void wait_active(int n) { wait_active_on(NULL, n); }

static uint64_t now_ms(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

/* ---- one-off calls ---- */

typedef struct {
    int done, status;
    char reply[256];
} res_t;

static void on_res(void *ud, int status, const uint8_t *reply, size_t len) {
    res_t *r = ud;
    r->done = 1;
    r->status = status;
    size_t n = len < sizeof r->reply - 1 ? len : sizeof r->reply - 1;
    if (n) memcpy(r->reply, reply, n);
    r->reply[n] = '\0';
}

static gr_client_t *client_for(uv_loop_t *loop, const char *silos_list, const char *secret) {
    gr_client_options_t o;
    gr_client_options_init(&o);
    o.silos = silos_list;
    o.cluster = cluster;
    o.secret = secret;
    gr_client_t *c;
    assert_int_equal(gr_client_new(loop, &o, &c), 0);
    return c;
}

static int call_sync(uv_loop_t *loop, gr_client_t *c, const char *key, const char *method, const char *arg,
                     res_t *r) {
    memset(r, 0, sizeof *r);
    gr_ref_t ref = {"Counter", key, strlen(key)};
    assert_int_equal(gr_client_call(c, &ref, method, arg, arg ? strlen(arg) : 0, 5000, on_res, r), 0);
    gr_test_run_until(loop, &r->done, 10000);
    return r->status;
}

/* A call that retries retryable errors for up to `ms`. */
static int call_retry(uv_loop_t *loop, gr_client_t *c, const char *key, const char *method, const char *arg,
                      res_t *r, uint64_t ms) {
    uint64_t end = now_ms() + ms;
    int st;
    while ((st = call_sync(loop, c, key, method, arg, r)) != 0 && gr_err_retryable(st) && now_ms() < end)
        gr_test_run_for(loop, 30);
    if (st != 0) print_message("%s %s: %s: %s\n", key, method, gr_err_name(st), r->reply);
    return st;
}

/* ---- the load generator and checker ---- */

typedef struct load load_t;

typedef struct {
    load_t *load;
    int id;
    uint64_t seq;
    int key;
    int busy;
    uint64_t started;
    uv_timer_t retry;
} worker_t;

struct load {
    uv_loop_t *loop;
    gr_client_t *clients[MAX_SILOS];
    int nclients;
    worker_t workers[NWORKERS];
    int running;
    uint64_t acked[NKEYS];
    uint64_t attempted, acked_total, retryable_errors, other_errors, max_latency_ms;
    char first_other[256];
};

static void worker_issue(worker_t *w);

static void worker_retry_cb(uv_timer_t *t) { worker_issue(t->data); }

static void worker_done(void *ud, int status, const uint8_t *reply, size_t len) {
    worker_t *w = ud;
    load_t *l = w->load;
    if (status == 0) {
        l->acked[w->key]++;
        l->acked_total++;
        uint64_t lat = now_ms() - w->started;
        if (lat > l->max_latency_ms) l->max_latency_ms = lat;
        w->seq++;
        w->busy = 0;
        if (l->running) worker_issue(w);
        return;
    }
    if (gr_err_retryable(status)) {
        l->retryable_errors++;
        uv_timer_start(&w->retry, worker_retry_cb, 20, 0); /* same operation id again */
        return;
    }
    if (l->other_errors++ == 0)
        snprintf(l->first_other, sizeof l->first_other, "%s: %.*s", gr_err_name(status), (int)len, (const char *)reply);
    w->seq++;
    w->busy = 0;
    if (l->running) worker_issue(w);
}

static void worker_issue(worker_t *w) {
    load_t *l = w->load;
    char op[48], key[16];
    if (!w->busy) {
        w->busy = 1;
        w->key = (int)((w->id * 7 + w->seq * 5) % NKEYS);
        w->started = now_ms();
    }
    snprintf(op, sizeof op, "w%d-%llu", w->id, (unsigned long long)w->seq);
    snprintf(key, sizeof key, "ctr-%d", w->key);
    gr_ref_t ref = {"Counter", key, strlen(key)};
    l->attempted++;
    gr_client_t *c = l->clients[w->id % l->nclients];
    if (gr_client_call(c, &ref, "incr_once", op, strlen(op), 3000, worker_done, w) != 0)
        uv_timer_start(&w->retry, worker_retry_cb, 20, 0);
}

/* Clients: each starts at a different silo and fails over along the list. */
static void load_init(load_t *l, uv_loop_t *loop, int nsilos) {
    memset(l, 0, sizeof *l);
    l->loop = loop;
    l->nclients = nsilos;
    for (int i = 0; i < nsilos; i++) {
        char list[512] = "";
        size_t o = 0;
        for (int k = 0; k < nsilos; k++)
            o += (size_t)snprintf(list + o, sizeof list - o, "%s127.0.0.1:%d", k ? "," : "",
                                  silos[(i + k) % nsilos].port);
        l->clients[i] = client_for(loop, list, "s3cret");
    }
    for (int i = 0; i < NWORKERS; i++) {
        l->workers[i].load = l;
        l->workers[i].id = i;
        uv_timer_init(loop, &l->workers[i].retry);
        l->workers[i].retry.data = &l->workers[i];
    }
}

static void load_start(load_t *l) {
    l->running = 1;
    for (int i = 0; i < NWORKERS; i++) worker_issue(&l->workers[i]);
}

/* Stop issuing, let every operation in flight finish (acknowledged). */
static void load_stop(load_t *l) {
    l->running = 0;
    uint64_t end = now_ms() + 20000;
    for (;;) {
        int busy = 0;
        for (int i = 0; i < NWORKERS; i++) busy += l->workers[i].busy;
        if (!busy || now_ms() > end) break;
        gr_test_run_for(l->loop, 20);
    }
    for (int i = 0; i < NWORKERS; i++) assert_int_equal(l->workers[i].busy, 0);
}

/* Every counter equals its acknowledged operations, read through any silo. */
static void load_verify(load_t *l, const char *label) {
    res_t r;
    uint64_t lost = 0, dup = 0;
    for (int k = 0; k < NKEYS; k++) {
        char key[16];
        snprintf(key, sizeof key, "ctr-%d", k);
        assert_int_equal(call_retry(l->loop, l->clients[k % l->nclients], key, "get", NULL, &r, 10000), 0);
        uint64_t stored = strtoull(r.reply, NULL, 10);
        if (stored < l->acked[k]) lost += l->acked[k] - stored;
        if (stored > l->acked[k]) dup += stored - l->acked[k];
    }
    print_message("%s: attempted %llu, acknowledged %llu, retryable errors %llu, other errors %llu, "
                  "lost %llu, duplicated %llu, max latency %llu ms\n",
                  label, (unsigned long long)l->attempted, (unsigned long long)l->acked_total,
                  (unsigned long long)l->retryable_errors, (unsigned long long)l->other_errors,
                  (unsigned long long)lost, (unsigned long long)dup, (unsigned long long)l->max_latency_ms);
    if (l->other_errors) print_message("first non-retryable error: %s\n", l->first_other);
    assert_int_equal(lost, 0);
    assert_int_equal(dup, 0);
    assert_int_equal(l->other_errors, 0);
    assert_true(l->acked_total > 0);
}

static void load_close(load_t *l) {
    for (int i = 0; i < NWORKERS; i++) uv_close((uv_handle_t *)&l->workers[i].retry, NULL);
    for (int i = 0; i < l->nclients; i++) gr_client_close(l->clients[i], NULL, NULL);
}

/* SIGTERM silo i and keep `loop` (the load) running until it exits by
 * itself; returns its exit status (-1 on timeout) and the time it took. */
static int sigterm_and_wait(uv_loop_t *loop, int i, uint64_t *took_ms) {
    uint64_t t0 = now_ms();
    kill(silos[i].pid, SIGTERM);
    int exited = -1;
    while (now_ms() - t0 < 15000 && (exited = gr_test_wait(silos[i].pid, 0)) < 0) gr_test_run_for(loop, 20);
    if (took_ms) *took_ms = now_ms() - t0;
    if (exited >= 0) silos[i].pid = 0;
    return exited;
}

/* A key whose activation lives on silo i (placed there by entering through
 * it: placement is prefer-local); copied to key. */
static void key_hosted_on(uv_loop_t *loop, gr_client_t *via, int i, const char *prefix, char *key, size_t size) {
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

static void test_single_activation_across_silos(void **st) {
    for (int i = 0; i < 3; i++) start_silo(i, NULL);
    wait_active(3);
    uv_loop_t loop;
    uv_loop_init(&loop);
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
    for (int i = 0; i < 3; i++) assert_true(hosted[i] > 30);
    for (int i = 0; i < 3; i++) gr_client_close(c[i], NULL, NULL);
    gr_test_loop_close(&loop);
}

static void test_sigterm_under_load(void **st) {
    for (int i = 0; i < 3; i++) start_silo(i, NULL);
    wait_active(3);
    uv_loop_t loop;
    uv_loop_init(&loop);
    load_t l;
    load_init(&l, &loop, 3);
    load_start(&l);
    gr_test_run_for(&loop, 1500);
    uint64_t drain_ms;
    assert_int_equal(sigterm_and_wait(&loop, 1, &drain_ms), 0);
    print_message("SIGTERM drain under load took %llu ms\n", (unsigned long long)drain_ms);
    gr_test_run_for(&loop, 1500);
    load_stop(&l);
    load_verify(&l, "sigterm");
    load_close(&l);
    gr_test_loop_close(&loop);
}

static void test_sigkill_failover(void **st) {
    for (int i = 0; i < 3; i++) start_silo(i, NULL);
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
    load_t l;
    load_init(&l, &loop, 3);
    load_start(&l);
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
    load_stop(&l);
    load_verify(&l, "sigkill");
    load_close(&l);
    gr_client_close(via2, NULL, NULL);
    gr_client_close(via0, NULL, NULL);
    gr_test_loop_close(&loop);
}

static void test_scale_down_3_to_1(void **st) {
    for (int i = 0; i < 3; i++) start_silo(i, NULL);
    wait_active(3);
    uv_loop_t loop;
    uv_loop_init(&loop);
    load_t l;
    load_init(&l, &loop, 3);
    load_start(&l);
    for (int victim = 2; victim >= 1; victim--) {
        gr_test_run_for(&loop, 1000);
        assert_int_equal(sigterm_and_wait(&loop, victim, NULL), 0);
    }
    gr_test_run_for(&loop, 1000);
    load_stop(&l);
    load_verify(&l, "scale 3 -> 1");
    assert_int_equal(count_active(), 1);
    load_close(&l);
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
    gr__frame_encode_hello(&b, GR_PROTOCOL_VERSION, GR__ROLE_SILO, cluster, "nope", 4, "intruder");
    int fd = gr_test_raw_connect(silos[0].port), closed;
    gr_test_send_all(fd, b.data, b.len);
    assert_int_equal(gr_test_read_until(fd, GR__FRAME_GOAWAY, &closed), GR_EAUTH);
    close(fd);
    /* With the right secret but as a client, '$' system classes are refused. */
    b.len = 0;
    gr__frame_encode_hello(&b, GR_PROTOCOL_VERSION, GR__ROLE_CLIENT, cluster, "s3cret", 6, "sneaky");
    gr__frame_encode_request(&b, GR__FRAME_REQUEST, 5, 1000, "$dir", "x", 1, "register", "me", 2);
    fd = gr_test_raw_connect(silos[0].port);
    gr_test_send_all(fd, b.data, b.len);
    assert_int_equal(gr_test_read_until(fd, GR__FRAME_RESPONSE, &closed), GR_ENOCLASS);
    close(fd);
    gr__buf_free(&b);
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
    snprintf(via_proxy, sizeof via_proxy, "postgresql://granary@127.0.0.1:%d/granary", gr_test_proxy_port(px));
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
    while (now_ms() - t1 < 10000 && (exited = gr_test_wait(silos[2].pid, 0)) < 0) gr_test_run_for(&loop, 50);
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
    if (!gr_test_pg_url()) {
        fprintf(stderr, "no test database: run under ctest (the pg fixture starts one)\n");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    snprintf(log_path, sizeof log_path, "%s", gr_test_build_path("test_cluster.log"));
    unlink(log_path);
    const char *migrate[] = {gr_test_build_path("silo"), "migrate", "--database", gr_test_pg_url(), NULL};
    pid_t p = gr_test_spawn(migrate, log_path);
    if (gr_test_wait(p, 30000) != 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_single_activation_across_silos, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_sigterm_under_load, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_sigkill_failover, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_scale_down_3_to_1, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_wrong_secret_refused, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_partition_from_database_fences, new_cluster, kill_all),
    };
    return cmocka_run_group_tests_name("cluster", tests, NULL, NULL);
}
