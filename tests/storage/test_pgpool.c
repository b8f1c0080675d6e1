/* tests/storage/test_pgpool.c - the asynchronous PostgreSQL pool
 * (src/storage/pgpool.c) against a real server: conninfo checked without
 * connecting, 500 queries through 2 connections each answered once and
 * right, binary parameters with NUL bytes, a server error's message passed
 * on, a query over its timeout breaking only its connection, a wait for a
 * free connection bounded by op_timeout, a database that is not there
 * failing fast, close cancelling what is queued, and prepared statements
 * (prepared per connection, refused, forgotten by the server, lost with
 * their connection), and a deadlock's victim run again. */
#include <stdio.h>
#include <stdlib.h>

#include "base/base.h"
#include "storage/pgpool.h"
#include "support.h"

typedef struct {
    int done, status, rows;
    char value[256];
    char detail[512];
    uint64_t at_ms;
} res_t;

static void on_result(void *ud, int status, PGresult *res, const char *detail) {
    res_t *r = ud;
    r->done++;
    r->status = status;
    r->at_ms = gr_test_now_ms();
    if (res) {
        r->rows = PQntuples(res);
        if (r->rows && PQnfields(res)) {
            int n = PQgetlength(res, 0, 0);
            if (n > (int)sizeof r->value - 1) n = (int)sizeof r->value - 1;
            memcpy(r->value, PQgetvalue(res, 0, 0), (size_t)n);
            r->value[n] = '\0';
        }
    }
    if (detail) snprintf(r->detail, sizeof r->detail, "%s", detail);
}

static int closed;
static void on_closed(void *ud) { closed++; }

static gr__pgpool_t *pool(uv_loop_t *loop, const char *url, unsigned size, uint32_t op_ms,
                          uint32_t query_ms) {
    gr__pgpool_options_t o;
    gr__pgpool_options_init(&o);
    o.pool_size = size;
    if (op_ms) o.op_timeout_ms = op_ms;
    if (query_ms) o.query_timeout_ms = query_ms;
    gr__pgpool_t *p;
    assert_int_equal(gr__pgpool_new(loop, url, &o, &p), 0);
    return p;
}

static void pool_close(uv_loop_t *loop, gr__pgpool_t *p) {
    closed = 0;
    gr__pgpool_close(p, on_closed, NULL);
    assert_true(gr_test_run_until(loop, &closed, 5000));
}

static void test_conninfo_check(void **st) {
    char err[256];
    assert_int_equal(gr__pg_conninfo_check(gr_test_pg_url(), err, sizeof err), 0);
    assert_int_equal(
        gr__pg_conninfo_check("postgresql://u@127.0.0.1:5432/db?bogus_option=1", err, sizeof err),
        GR_ECONFIG);
    assert_true(strlen(err) > 0); /* libpq's reason, for the operator */
    assert_int_equal(gr__pg_conninfo_check("host=127.0.0.1 nonsense", err, sizeof err), GR_ECONFIG);
}

static void test_many_queries_two_connections(void **st) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    gr__pgpool_t *p = pool(&loop, gr_test_pg_url(), 2, 0, 0);
    enum { N = 500 };
    static res_t r[N];
    static char vals[N][16];
    memset(r, 0, sizeof r);
    for (int i = 0; i < N; i++) {
        snprintf(vals[i], sizeof vals[i], "%d", i * 3);
        const char *v[1] = {vals[i]};
        assert_int_equal(gr__pgpool_query(p, "SELECT $1::int + 1", 1, v, NULL, NULL, 0, on_result, &r[i]), 0);
    }
    int done = 0;
    uint64_t deadline = gr_test_now_ms() + 20000;
    while (done < N && gr_test_now_ms() < deadline) {
        uv_run(&loop, UV_RUN_ONCE);
        done = 0;
        for (int i = 0; i < N; i++)
            done += r[i].done;
    }
    assert_int_equal(done, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].done, 1);
        assert_int_equal(r[i].status, 0);
        assert_int_equal(atoi(r[i].value), i * 3 + 1);
    }
    /* Binary parameters keep every byte (NUL included). */
    static const char bytes[] = {'a', 0, 'b', 0, (char)0xff};
    const char *bv[1] = {bytes};
    int len[1] = {sizeof bytes}, fmt[1] = {1};
    res_t b = {0};
    assert_int_equal(gr__pgpool_query(p, "SELECT length($1::bytea)", 1, bv, len, fmt, 0, on_result, &b), 0);
    assert_true(gr_test_run_until(&loop, &b.done, 5000));
    assert_int_equal(b.status, 0);
    assert_int_equal(atoi(b.value), 5);
    /* A server error comes back with the server's words. */
    res_t e = {0};
    assert_int_equal(gr__pgpool_query(p, "SELECT 1 / 0", 0, NULL, NULL, NULL, 0, on_result, &e), 0);
    assert_true(gr_test_run_until(&loop, &e.done, 5000));
    assert_int_equal(e.status, GR_ESTORAGE);
    assert_non_null(strstr(e.detail, "division by zero"));
    assert_true(gr__pgpool_available(p));
    pool_close(&loop, p);
    gr_test_loop_close(&loop);
}

/* One query and its result: prepared as statement `stmt` with one int
 * parameter, or (stmt 0) unnamed and without parameters. */
static int run_prepared(uv_loop_t *loop, gr__pgpool_t *p, unsigned stmt, const char *sql, int arg, res_t *r) {
    char v0[16];
    snprintf(v0, sizeof v0, "%d", arg);
    const char *v[1] = {v0};
    memset(r, 0, sizeof *r);
    int rc = stmt ? gr__pgpool_query_prepared(p, stmt, sql, 1, v, NULL, NULL, 0, on_result, r)
                  : gr__pgpool_query(p, sql, 0, NULL, NULL, NULL, 0, on_result, r);
    if (rc) return rc;
    assert_true(gr_test_run_until(loop, &r->done, 5000));
    assert_int_equal(r->done, 1);
    return r->status;
}

/* Prepared statements: prepared on each connection by its first use, then
 * executed without PREPARE; custom-planned (the connection's setup); a
 * PREPARE the server refuses fails its query with the server's reason and
 * leaves the pool working; a statement the server dropped (DEALLOCATE ALL on
 * the same connection) and one on a connection the server killed are
 * prepared again and run once. */
static void test_prepared(void **st) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    gr__pgpool_options_t o;
    gr__pgpool_options_init(&o);
    o.pool_size = 1;
    o.custom_plans = 1;
    gr__pgpool_t *p;
    assert_int_equal(gr__pgpool_new(&loop, gr_test_pg_url(), &o, &p), 0);
    static const char add[] = "SELECT $1::int + 1";
    res_t r;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(run_prepared(&loop, p, 1, add, i, &r), 0);
        assert_int_equal(atoi(r.value), i + 1);
    }
    /* Prepared once on this connection: the server has it, by our name. */
    assert_int_equal(run_prepared(&loop, p, 0,
                                  "SELECT count(*) FROM pg_prepared_statements WHERE name = 'granary_1'", 0,
                                  &r),
                     0);
    assert_string_equal(r.value, "1");
    assert_int_equal(run_prepared(&loop, p, 0, "SHOW plan_cache_mode", 0, &r), 0);
    assert_string_equal(r.value, "force_custom_plan");
    /* A statement the server refuses to prepare. */
    assert_int_equal(run_prepared(&loop, p, 2, "SELECT $1::int + nosuchcolumn", 1, &r), GR_ESTORAGE);
    assert_non_null(strstr(r.detail, "nosuchcolumn"));
    assert_int_equal(run_prepared(&loop, p, 1, add, 41, &r), 0);
    assert_string_equal(r.value, "42");
    /* The server forgets it: prepared again, run once. */
    assert_int_equal(run_prepared(&loop, p, 0, "DEALLOCATE ALL", 0, &r), 0);
    assert_int_equal(run_prepared(&loop, p, 1, add, 7, &r), 0);
    assert_string_equal(r.value, "8");
    /* The connection dies (the outcome of what was in flight is unknown);
     * on the next connection the statement is prepared again. */
    assert_int_equal(run_prepared(&loop, p, 0, "SELECT pg_terminate_backend(pg_backend_pid())", 0, &r),
                     GR_ESTORAGE);
    int ok = 0;
    for (int i = 0; i < 50 && !ok; i++) { /* reconnecting: fails fast until it is back */
        ok = run_prepared(&loop, p, 1, add, 99, &r) == 0;
        if (!ok) gr_test_run_for(&loop, 100);
    }
    assert_true(ok);
    assert_string_equal(r.value, "100");
    assert_int_equal(gr__pgpool_query_prepared(p, 0, add, 0, NULL, NULL, NULL, 0, on_result, &r), GR_EINVAL);
    assert_int_equal(
        gr__pgpool_query_prepared(p, GR__PG_MAX_STMTS + 1, add, 0, NULL, NULL, NULL, 0, on_result, &r),
        GR_EINVAL);
    pool_close(&loop, p);
    gr_test_loop_close(&loop);
}

/* Two statements that lock the same two rows in opposite orders deadlock;
 * the server rolls one back (40P01) and the pool runs it again: both
 * succeed, and each row is changed exactly twice. */
static void test_deadlock_retried(void **st) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    gr__pgpool_t *p = pool(&loop, gr_test_pg_url(), 2, 0, 0);
    res_t r;
    assert_int_equal(run_prepared(&loop, p, 0, "DROP TABLE IF EXISTS pool_deadlock", 0, &r), 0);
    assert_int_equal(
        run_prepared(&loop, p, 0, "CREATE TABLE pool_deadlock (k int PRIMARY KEY, v int NOT NULL)", 0, &r),
        0);
    assert_int_equal(run_prepared(&loop, p, 0, "INSERT INTO pool_deadlock VALUES (1, 0), (2, 0)", 0, &r), 0);
    /* Lock one row, wait, then the other (the main query needs the CTEs). */
    static const char a[] = "WITH x AS (UPDATE pool_deadlock SET v = v + 1 WHERE k = 1 RETURNING 1), "
                            "w AS (SELECT pg_sleep(0.3) FROM x) "
                            "UPDATE pool_deadlock SET v = v + 1 WHERE k = 2 AND EXISTS (SELECT 1 FROM w)";
    static const char b[] = "WITH x AS (UPDATE pool_deadlock SET v = v + 1 WHERE k = 2 RETURNING 1), "
                            "w AS (SELECT pg_sleep(0.3) FROM x) "
                            "UPDATE pool_deadlock SET v = v + 1 WHERE k = 1 AND EXISTS (SELECT 1 FROM w)";
    res_t ra = {0}, rb = {0};
    assert_int_equal(gr__pgpool_query(p, a, 0, NULL, NULL, NULL, 0, on_result, &ra), 0);
    assert_int_equal(gr__pgpool_query(p, b, 0, NULL, NULL, NULL, 0, on_result, &rb), 0);
    assert_true(gr_test_run_until(&loop, &ra.done, 15000));
    assert_true(gr_test_run_until(&loop, &rb.done, 15000));
    assert_int_equal(ra.status, 0);
    assert_int_equal(rb.status, 0);
    assert_int_equal(
        run_prepared(&loop, p, 0, "SELECT string_agg(v::text, ',' ORDER BY k) FROM pool_deadlock", 0, &r), 0);
    assert_string_equal(r.value, "2,2");
    assert_int_equal(run_prepared(&loop, p, 0, "DROP TABLE pool_deadlock", 0, &r), 0);
    pool_close(&loop, p);
    gr_test_loop_close(&loop);
}

static void test_timeouts(void **st) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    /* One connection: a query over its 300 ms timeout breaks it (outcome
     * unknown), the next query gets a fresh connection. */
    gr__pgpool_t *p = pool(&loop, gr_test_pg_url(), 1, 0, 300);
    res_t slow = {0}, next = {0};
    uint64_t t0 = gr_test_now_ms();
    assert_int_equal(gr__pgpool_query(p, "SELECT pg_sleep(5)", 0, NULL, NULL, NULL, 0, on_result, &slow), 0);
    assert_true(gr_test_run_until(&loop, &slow.done, 5000));
    assert_int_equal(slow.status, GR_ESTORAGE);
    assert_true(slow.at_ms - t0 < 2500);
    /* Until the replacement connection is up the pool fails fast (it saw
     * its only connection fail); within a few backoff steps it serves again. */
    for (int attempt = 0; attempt < 30; attempt++) {
        memset(&next, 0, sizeof next);
        assert_int_equal(gr__pgpool_query(p, "SELECT 7", 0, NULL, NULL, NULL, 0, on_result, &next), 0);
        assert_true(gr_test_run_until(&loop, &next.done, 5000));
        if (next.status == 0) break;
        assert_int_equal(next.status, GR_ESTORAGE);
        gr_test_run_for(&loop, 100);
    }
    assert_int_equal(next.status, 0);
    assert_string_equal(next.value, "7");
    pool_close(&loop, p);

    /* Waiting for a free connection is bounded by op_timeout (250 ms). */
    p = pool(&loop, gr_test_pg_url(), 1, 250, 0);
    res_t busy = {0}, waiting = {0};
    t0 = gr_test_now_ms();
    assert_int_equal(gr__pgpool_query(p, "SELECT pg_sleep(1.5)", 0, NULL, NULL, NULL, 0, on_result, &busy),
                     0);
    assert_int_equal(gr__pgpool_query(p, "SELECT 1", 0, NULL, NULL, NULL, 0, on_result, &waiting), 0);
    assert_true(gr_test_run_until(&loop, &waiting.done, 5000));
    assert_int_equal(waiting.status, GR_ESTORAGE);
    assert_true(waiting.at_ms - t0 < 1200); /* failed before the busy one finished */
    assert_true(gr_test_run_until(&loop, &busy.done, 5000));
    assert_int_equal(busy.status, 0);
    pool_close(&loop, p);
    gr_test_loop_close(&loop);
}

static void test_database_not_there(void **st) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    char url[128];
    snprintf(url, sizeof url, "postgresql://nobody@127.0.0.1:%d/none?connect_timeout=2", gr_test_free_port());
    gr__pgpool_t *p = pool(&loop, url, 2, 1000, 0);
    res_t r = {0};
    uint64_t t0 = gr_test_now_ms();
    assert_int_equal(gr__pgpool_query(p, "SELECT 1", 0, NULL, NULL, NULL, 0, on_result, &r), 0);
    assert_true(gr_test_run_until(&loop, &r.done, 5000));
    assert_int_equal(r.status, GR_ESTORAGE);
    assert_true(r.at_ms - t0 < 2000);
    assert_false(gr__pgpool_available(p));
    /* Close cancels what is still queued. */
    res_t q[3];
    memset(q, 0, sizeof q);
    for (int i = 0; i < 3; i++)
        assert_int_equal(gr__pgpool_query(p, "SELECT 1", 0, NULL, NULL, NULL, 0, on_result, &q[i]), 0);
    pool_close(&loop, p);
    gr_test_run_for(&loop, 50);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(q[i].done, 1);
        assert_true(q[i].status == GR_ECANCELED || q[i].status == GR_ESTORAGE);
    }
    gr_test_loop_close(&loop);
}

int main(void) {
    if (!gr_test_pg_ready(0)) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conninfo_check), cmocka_unit_test(test_many_queries_two_connections),
        cmocka_unit_test(test_prepared),       cmocka_unit_test(test_deadlock_retried),
        cmocka_unit_test(test_timeouts),       cmocka_unit_test(test_database_not_there),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
