/* tests/storage/test_lifecycle.c - the state lifecycle's statements and the
 * upgrade run (docs/lifecycle.md) on a real PostgreSQL: a TTL page marks
 * exactly the rows not written for the TTL and pages in key order; the
 * expiry deletes an expired row with its old reminders and expired replies,
 * and keeps one whose grain a live silo holds, one written since the page
 * (version moved), one not expired, one with a reminder registered within
 * the TTL and one with a reply within its retention, while a dead holder past its lease does not
 * protect its row; migrate-state upgrades every old row through the class
 * (version + 1, new format, last write time kept), passes over a live
 * grain (GR_ETIMEDOUT) or a refused row (GR_EACTIVATE) and says so,
 * resumes from a saved cursor, and the `silo migrate-state` command does
 * the same with its exit codes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/base.h"
#include "granary/granary.h"
#include "storage/lifecycle.h"
#include "support.h"

static char svc[64];

/* Run SQL built from fmt; the first column of the first row (malloc'd) or NULL. */
static char *query(const char *fmt, va_list ap) {
    char q[2048];
    vsnprintf(q, sizeof q, fmt, ap);
    return gr_test_sql(gr_test_pg_url(), q);
}

static void sql(const char *fmt, ...) GR__PRINTF(1, 2);
static void sql(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    free(query(fmt, ap));
    va_end(ap);
}

static int sql_int(const char *fmt, ...) GR__PRINTF(1, 2);
static int sql_int(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *v = query(fmt, ap);
    va_end(ap);
    int n = v ? atoi(v) : -1;
    free(v);
    return n;
}

/* A row of class cls, key k (text), state bytes st, version v, format f,
 * last written `age` ago (an interval). */
static void row(const char *cls, const char *k, const char *st, int v, int f, const char *age) {
    sql("INSERT INTO granary_grain_state (grain_key, grain_class, service, state, version, state_format, "
        "updated_at) VALUES (convert_to('%s', 'UTF8'), '%s', '%s', convert_to('%s', 'UTF8'), %d, %d, now() - "
        "interval '%s')",
        k, cls, svc, st, v, f, age);
}

/* Silo `id` in the service: live (heartbeat now) or dead past its lease. */
static void silo(const char *id, int dead) {
    sql("INSERT INTO granary_silo (cluster, silo_id, address, port, generation, status, heartbeat_at, lease_ms) "
        "VALUES ('%s', '%s', '127.0.0.1', 1, 1, '%s', now() - interval '%s', 1200)",
        svc, id, dead ? "dead" : "active", dead ? "1 minute" : "0 seconds");
}

static void claim(const char *cls, const char *k, const char *holder) {
    sql("INSERT INTO granary_activation (grain_key, grain_class, service, silo_id, token) VALUES "
        "(convert_to('%s', 'UTF8'), '%s', '%s', '%s', 7)",
        k, cls, svc, holder);
}

static int exists(const char *cls, const char *k) {
    return sql_int("SELECT count(*) FROM granary_grain_state WHERE service = '%s' AND grain_class = '%s' AND "
                   "grain_key = convert_to('%s', 'UTF8')",
                   svc, cls, k);
}

/* ---- the TTL statements ---- */

typedef struct {
    int done, status;
    size_t n;
    char keys[16][16];
    int64_t versions[16];
    int expired[16];
    uint64_t deleted, held, reminders;
} res_t;

static void on_page(void *ud, int status, const gr__pgl_row_t *rows, size_t n, const char *detail) {
    res_t *r = ud;
    r->done = 1;
    r->status = status;
    r->n = n;
    for (size_t i = 0; i < n && i < 16; i++) {
        snprintf(r->keys[i], sizeof r->keys[i], "%.*s", (int)rows[i].key_len, (const char *)rows[i].key);
        r->versions[i] = rows[i].version;
        r->expired[i] = rows[i].expired;
    }
    if (status) print_message("page failed: %s\n", detail ? detail : "");
}

static void on_expire(void *ud, int status, uint64_t deleted, uint64_t held, uint64_t reminders,
                      const char *detail) {
    res_t *r = ud;
    r->done = 1;
    r->status = status;
    r->deleted = deleted;
    r->held = held;
    r->reminders = reminders;
    if (status) print_message("expiry failed: %s\n", detail ? detail : "");
}

static int closed;
static void on_closed(void *ud) { closed = 1; }

static void test_ttl_statements(void **st) {
    snprintf(svc, sizeof svc, "ttl-%d", (int)getpid());
    /* a: expired, never claimed; b: expired, a live silo holds it; c:
     * expired, written again after the page (version 3 -> 4 below); d: not
     * expired; e: expired, held by a silo dead past its lease; f: expired,
     * claim released. */
    row("T", "a", "x", 3, 0, "1 hour");
    row("T", "b", "x", 3, 0, "1 hour");
    row("T", "c", "x", 3, 0, "1 hour");
    row("T", "d", "x", 3, 0, "1 second");
    row("T", "e", "x", 3, 0, "1 hour");
    row("T", "f", "x", 3, 0, "1 hour");
    row("Other", "a", "x", 3, 0, "1 hour"); /* another class: never touched */
    /* g: expired, but a reminder was registered within the TTL; h: expired,
     * but a stored reply is within its retention. Both are kept. */
    row("T", "g", "x", 3, 0, "1 hour");
    row("T", "h", "x", 3, 0, "1 hour");
    silo("live", 0);
    silo("gone", 1);
    claim("T", "b", "live");
    claim("T", "e", "gone");
    claim("T", "f", "");
    sql("INSERT INTO granary_reminder (service, grain_class, grain_key, name, due_us, period_ms, created_at) "
        "VALUES ('%s', 'T', 'a', 'r1', 0, 1000, now() - interval '1 hour'), "
        "('%s', 'T', 'a', 'r2', 0, 0, now() - interval '1 hour'), ('%s', 'T', 'd', 'r1', 0, 1000, now()), "
        "('%s', 'T', 'g', 'r1', 0, 1000, now())",
        svc, svc, svc, svc);
    sql("INSERT INTO granary_reply (grain_key, grain_class, service, idem_key, status, reply, at_ms, expires_ms) "
        "VALUES ('a', 'T', '%s', 'k', 0, 'r', 0, 1), ('h', 'T', '%s', 'k', 0, 'r', 0, 9000000000000)",
        svc, svc);

    uv_loop_t loop;
    uv_loop_init(&loop);
    gr__pgpool_options_t po;
    gr__pgpool_options_init(&po);
    po.pool_size = 1;
    gr__pgpool_t *pool = NULL;
    assert_int_equal(gr__pgpool_new(&loop, gr_test_pg_url(), &po, &pool), 0);

    /* Pages of 4, in key order; a TTL of 60 s marks all but d. */
    res_t r = {0};
    assert_int_equal(gr__pgl_scan(pool, svc, "T", NULL, 0, 60, 4, on_page, &r), 0);
    assert_true(gr_test_run_until(&loop, &r.done, 10000));
    assert_int_equal(r.status, 0);
    assert_int_equal(r.n, 4);
    assert_string_equal(r.keys[0], "a");
    assert_string_equal(r.keys[3], "d");
    assert_true(r.expired[0] && r.expired[1] && r.expired[2] && !r.expired[3]);
    assert_int_equal(r.versions[0], 3);
    memset(&r, 0, sizeof r);
    assert_int_equal(gr__pgl_scan(pool, svc, "T", (const uint8_t *)"d", 1, 60, 4, on_page, &r), 0);
    assert_true(gr_test_run_until(&loop, &r.done, 10000));
    assert_int_equal(r.n, 4);
    assert_string_equal(r.keys[0], "e");
    assert_string_equal(r.keys[3], "h");
    memset(&r, 0, sizeof r);
    assert_int_equal(gr__pgl_scan(pool, svc, "T", (const uint8_t *)"h", 1, 60, 4, on_page, &r), 0);
    assert_true(gr_test_run_until(&loop, &r.done, 10000));
    assert_int_equal(r.n, 0); /* past the last key */

    /* c is written after the page: the expiry must not delete it. */
    sql("UPDATE granary_grain_state SET version = 4 WHERE service = '%s' AND grain_class = 'T' AND grain_key = 'c'",
        svc);
    gr__pgl_row_t rows[8];
    const char *ks[8] = {"a", "b", "c", "d", "e", "f", "g", "h"};
    for (int i = 0; i < 8; i++)
        rows[i] = (gr__pgl_row_t){.key = (const uint8_t *)ks[i], .key_len = 1, .version = 3, .expired = 1};
    memset(&r, 0, sizeof r);
    assert_int_equal(gr__pgl_expire(pool, svc, "T", rows, 8, 60, on_expire, &r), 0);
    assert_true(gr_test_run_until(&loop, &r.done, 10000));
    assert_int_equal(r.status, 0);
    print_message("expiry: %llu deleted, %llu held, %llu reminders\n", (unsigned long long)r.deleted,
                  (unsigned long long)r.held, (unsigned long long)r.reminders);
    assert_int_equal(r.deleted, 3); /* a, e, f */
    assert_int_equal(r.held, 1);    /* b */
    assert_int_equal(r.reminders, 2);
    assert_int_equal(exists("T", "a"), 0);
    assert_int_equal(exists("T", "b"), 1);
    assert_int_equal(exists("T", "c"), 1);
    assert_int_equal(exists("T", "d"), 1);
    assert_int_equal(exists("T", "e"), 0);
    assert_int_equal(exists("T", "f"), 0);
    assert_int_equal(exists("T", "g"), 1);
    assert_int_equal(exists("T", "h"), 1);
    assert_int_equal(exists("Other", "a"), 1);
    assert_int_equal(sql_int("SELECT count(*) FROM granary_reminder WHERE service = '%s'", svc), 2); /* d's, g's */
    assert_int_equal(sql_int("SELECT count(*) FROM granary_reply WHERE service = '%s'", svc), 1);  /* h's */
    /* The live holder's claim is untouched; the others are released. */
    assert_int_equal(sql_int("SELECT count(*) FROM granary_activation WHERE service = '%s' AND silo_id = 'live'",
                             svc),
                     1);
    assert_int_equal(sql_int("SELECT count(*) FROM granary_activation WHERE service = '%s' AND silo_id = 'gone'",
                             svc),
                     0);

    closed = 0;
    gr__pgpool_close(pool, on_closed, NULL);
    assert_true(gr_test_run_until(&loop, &closed, 5000));
    gr_test_loop_close(&loop);
}

/* ---- migrate-state ---- */

/* Format 1 -> 2: the bytes get a '!' appended; "bad" is refused. */
static int up(gr_grain_t *g, const uint8_t *old, size_t len, uint32_t old_version) {
    if (old_version != 1 || (len == 3 && !memcmp(old, "bad", 3))) return -1;
    char b[64];
    if (len + 1 > sizeof b) return -1;
    memcpy(b, old, len);
    b[len] = '!';
    return gr_state_set(g, b, len + 1);
}
static void noop(gr_grain_t *g, gr_msg_t *m, const uint8_t *a, size_t n) { gr_reply(m, NULL, 0); }
static const gr_method_t up_methods[] = {{"noop", noop}, {NULL, NULL}};
static const gr_class_t up_class = {.name = "U", .methods = up_methods, .state_version = 2, .upgrade_state = up};

static char *state_of(const char *k) {
    char q[512];
    snprintf(q, sizeof q,
             "SELECT convert_from(state, 'UTF8') || ' v' || version || ' f' || state_format || "
             "CASE WHEN updated_at < now() - interval '30 minutes' THEN ' old' ELSE ' new' END "
             "FROM granary_grain_state WHERE service = '%s' AND grain_class = 'U' AND grain_key = '%s'",
             svc, k);
    return gr_test_sql(gr_test_pg_url(), q);
}

static int reports;
static void on_progress(void *ud, const gr_state_upgrade_progress_t *p) { reports++; }

static void test_upgrade(void **st) {
    snprintf(svc, sizeof svc, "upg-%d", (int)getpid());
    char k[16];
    for (int i = 0; i < 9; i++) {
        snprintf(k, sizeof k, "u%d", i);
        row("U", k, i == 7 ? "bad" : "s", 5, i == 8 ? 2 : 1, "1 hour");
    }
    silo("live", 0);
    claim("U", "u6", "live"); /* active: passed over */
    gr_state_upgrade_options_t o;
    gr_state_upgrade_options_init(&o);
    o.cluster = svc;
    o.batch = 2;
    o.wait_ms = 0;
    o.progress = on_progress;
    gr_state_upgrade_progress_t p;
    char err[512];
    int rc = gr_storage_pg_upgrade_state(gr_test_pg_url(), &up_class, &o, &p, err, sizeof err);
    print_message("first run: %s; %llu upgraded, %llu skipped, %llu failed, %llu left, %d reports\n", err,
                  (unsigned long long)p.upgraded, (unsigned long long)p.skipped, (unsigned long long)p.failed,
                  (unsigned long long)p.remaining, reports);
    assert_int_equal(rc, GR_EACTIVATE); /* u7 refused (and u6 left) */
    assert_int_equal(p.upgraded, 6);
    assert_int_equal(p.skipped, 1);
    assert_int_equal(p.failed, 1);
    assert_int_equal(p.remaining, 2);
    assert_true(p.finished && reports >= 5);
    char *s = state_of("u0");
    assert_string_equal(s, "s! v6 f2 old"); /* upgraded, version + 1, last write kept */
    free(s);
    s = state_of("u6");
    assert_string_equal(s, "s v5 f1 old");
    free(s);
    s = state_of("u8");
    assert_string_equal(s, "s v5 f2 old"); /* at the new format already: untouched */
    free(s);
    assert_int_equal(sql_int("SELECT upgraded FROM granary_state_upgrade WHERE service = '%s'", svc), 6);

    /* Only u6 left and its grain still live: GR_ETIMEDOUT, after waiting. */
    sql("DELETE FROM granary_grain_state WHERE service = '%s' AND grain_key = 'u7'", svc);
    o.wait_ms = 500;
    uint64_t t0 = gr_test_now_ms();
    rc = gr_storage_pg_upgrade_state(gr_test_pg_url(), &up_class, &o, &p, err, sizeof err);
    assert_int_equal(rc, GR_ETIMEDOUT);
    assert_true(gr_test_now_ms() - t0 >= 400);
    assert_int_equal(p.remaining, 1);
    assert_non_null(strstr(err, "still at an older format"));

    /* An interrupted run resumes from its cursor, then looks at the keys
     * before it once more (u1 was written at the old format meanwhile). */
    sql("UPDATE granary_activation SET silo_id = '' WHERE service = '%s'", svc);
    sql("UPDATE granary_grain_state SET state_format = 1, state = 's' WHERE service = '%s' AND grain_key = 'u1'",
        svc);
    sql("UPDATE granary_state_upgrade SET finished_at = NULL, cursor_key = 'u3', upgraded = 100 WHERE service = "
        "'%s'",
        svc);
    rc = gr_storage_pg_upgrade_state(gr_test_pg_url(), &up_class, &o, &p, err, sizeof err);
    assert_int_equal(rc, 0);
    assert_true(p.resumed);
    assert_int_equal(p.upgraded, 102); /* u6, then u1 */
    assert_int_equal(p.remaining, 0);
    s = state_of("u1");
    assert_string_equal(s, "s! v7 f2 old"); /* v6 rewritten by hand at v6, upgraded: v7 */
    free(s);

    /* Refused at once: a class that cannot upgrade. */
    static const gr_class_t plain = {.name = "P", .methods = up_methods};
    assert_int_equal(gr_storage_pg_upgrade_state(gr_test_pg_url(), &plain, &o, NULL, err, sizeof err), GR_EINVAL);
}

/* The command: progress lines, exit 0 when done, 2 without a class. */
static void test_command(void **st) {
    snprintf(svc, sizeof svc, "cmd-%d", (int)getpid());
    char k[16];
    for (int i = 0; i < 30; i++) {
        snprintf(k, sizeof k, "c%d", i);
        sql("INSERT INTO granary_grain_state (grain_key, grain_class, service, state, version, state_format) VALUES "
            "(convert_to('%s', 'UTF8'), 'Counter', '%s', '\\x0000000000000005', 1, 0)",
            k, svc);
    }
    char log[512];
    snprintf(log, sizeof log, "%s", gr_test_build_path("test_lifecycle_cmd.log"));
    remove(log);
    const char *argv[] = {gr_test_build_path("silo"), "migrate-state", "Counter", "--database", gr_test_pg_url(),
                          "--cluster", svc, "--grains", gr_test_build_path("examples/counter.so"),
                          "--batch", "7", NULL};
    pid_t pid = gr_test_spawn(argv, log);
    assert_true(pid > 0);
    int code = gr_test_wait(pid, 30000);
    if (code != 0) gr_test_print_tail(log, 20);
    assert_int_equal(code, 0);
    assert_int_equal(sql_int("SELECT count(*) FROM granary_grain_state WHERE service = '%s' AND state_format = 1 "
                             "AND version = 2",
                             svc),
                     30);
    FILE *f = fopen(log, "r");
    assert_non_null(f);
    char line[512];
    int lines = 0, finished = 0;
    while (fgets(line, sizeof line, f)) {
        lines += strstr(line, "migrate-state Counter -> format 1") != NULL;
        finished += strstr(line, "30 upgraded") && strstr(line, "finished");
    }
    fclose(f);
    assert_true(lines >= 5); /* the start, one per batch of 7, the end */
    assert_int_equal(finished, 1);
    const char *bad[] = {gr_test_build_path("silo"), "migrate-state", "--database", gr_test_pg_url(), NULL};
    pid = gr_test_spawn(bad, log);
    assert_int_equal(gr_test_wait(pid, 10000), 2);
}

int main(void) {
    if (!gr_test_pg_ready(1)) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ttl_statements),
        cmocka_unit_test(test_upgrade),
        cmocka_unit_test(test_command),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
