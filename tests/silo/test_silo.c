/* tests/silo/test_silo.c - the real `silo` and `granary` binaries against a
 * real PostgreSQL: acknowledged increments survive SIGKILL and restart,
 * SIGTERM drains and exits 0, the CLI contract holds, and hostile input
 * (garbage, oversized frames, wrong secret or version, slow and silent
 * peers) gets a clear answer while the silo keeps serving others. */
#include "silo_fixture.h"

static void test_cli_contract(void **st) {
    char out[16384];
    const char *help[] = {gr_test_build_path("silo"), "--help", NULL};
    assert_int_equal(run_capture(help, out, sizeof out), 0);
    const char *must[] = {
        "--database",  "GRANARY_DATABASE_URL",   "--listen",     "GRANARY_LISTEN", "--grains",
        "--advertise", "GRANARY_CLUSTER_SECRET", "--log-format", "migrate",        "status"};
    for (size_t i = 0; i < sizeof must / sizeof must[0]; i++) {
        if (!strstr(out, must[i])) fail_msg("silo --help lacks %s", must[i]);
    }
    /* Every flag in --help is documented in docs/configuration.md. */
    char doc_path[1024];
    snprintf(doc_path, sizeof doc_path, "%s/docs/configuration.md", getenv("GRANARY_SOURCE_DIR"));
    FILE *df = fopen(doc_path, "r");
    assert_non_null(df);
    static char doc[65536];
    size_t dn = fread(doc, 1, sizeof doc - 1, df);
    doc[dn] = '\0';
    fclose(df);
    for (char *p = strstr(out, "\n  --"); p; p = strstr(p + 1, "\n  --")) {
        char flag[64];
        sscanf(p + 3, "%63s", flag);
        char needle[80];
        snprintf(needle, sizeof needle, "`%s", flag);
        if (!strstr(doc, needle)) fail_msg("%s is not documented in docs/configuration.md", flag);
    }
    const char *bad_listen[] = {gr_test_build_path("silo"), "run", "--memory", "--listen", "nonsense", NULL};
    assert_int_equal(run_cmd(bad_listen, 10000), 2);
    const char *bad_num[] = {gr_test_build_path("silo"), "run", "--idle-ms", "-5", NULL};
    assert_int_equal(run_cmd(bad_num, 10000), 2);
    /* Messages that name the setting and the problem (issue 17, item 4). */
    struct {
        const char *flag, *value, *says;
    } bad[] = {{"--listen", "127.0.0.1:99999", "port out of range"},
               {"--pg-pool", "65", "--pg-pool must be between 1 and 64"},
               {"--heartbeat-ms", "2147483648", "--heartbeat-ms must be at most 60000"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *argv_bad[] = {gr_test_build_path("silo"),
                                  "run",
                                  "--memory",
                                  "--grains",
                                  gr_test_build_path("examples/counter.so"),
                                  bad[i].flag,
                                  bad[i].value,
                                  NULL};
        assert_int_equal(run_capture_fds(argv_bad, out, sizeof out, 1), 2);
        if (!strstr(out, bad[i].says))
            fail_msg("%s %s: expected '%s', got: %s", bad[i].flag, bad[i].value, bad[i].says, out);
    }
    /* `silo migrate --help` is migrate's help, not run's. */
    const char *mhelp[] = {gr_test_build_path("silo"), "migrate", "--help", NULL};
    assert_int_equal(run_capture(mhelp, out, sizeof out), 0);
    assert_non_null(strstr(out, "migrate"));
    assert_non_null(strstr(out, "--database"));
    assert_null(strstr(out, "--listen"));
    const char *no_db[] = {gr_test_build_path("silo"), "run", "--grains",
                           gr_test_build_path("examples/counter.so"), NULL};
    assert_int_equal(run_cmd(no_db, 10000), 2);
    /* A database URL that can never connect is refused at start (exit 2),
     * not retried forever (issue 17). */
    const char *bad_urls[][2] = {{"postgresql://granary@127.0.0.1:abc/granary", "invalid integer value"},
                                 {"host=127.0.0.1 bogus=1", "invalid connection option"}};
    for (size_t i = 0; i < sizeof bad_urls / sizeof bad_urls[0]; i++) {
        const char *argv_url[] = {gr_test_build_path("silo"),
                                  "run",
                                  "--database",
                                  bad_urls[i][0],
                                  "--grains",
                                  gr_test_build_path("examples/counter.so"),
                                  NULL};
        assert_int_equal(run_capture_fds(argv_url, out, sizeof out, 1), 2);
        if (!strstr(out, "--database: ") || !strstr(out, bad_urls[i][1]))
            fail_msg("--database %s: expected '%s', got: %s", bad_urls[i][0], bad_urls[i][1], out);
    }
    /* A server that refuses us for good (no such role, no such database)
     * is not retried forever either: exit 2 at once, saying what to fix. */
    int pg_port = 0;
    assert_int_equal(sscanf(strrchr(gr_test_pg_url(), ':') + 1, "%d", &pg_port), 1);
    char refused[2][160];
    snprintf(refused[0], sizeof refused[0], "postgresql://no_such_role@127.0.0.1:%d/granary", pg_port);
    snprintf(refused[1], sizeof refused[1], "postgresql://granary@127.0.0.1:%d/no_such_db", pg_port);
    for (int i = 0; i < 2; i++) {
        const char *argv_ref[] = {gr_test_build_path("silo"),
                                  "run",
                                  "--database",
                                  refused[i],
                                  "--grains",
                                  gr_test_build_path("examples/counter.so"),
                                  NULL};
        uint64_t t0 = gr_test_now_ms();
        assert_int_equal(run_capture_fds(argv_ref, out, sizeof out, 1), 2);
        assert_true(gr_test_now_ms() - t0 < 8000);
        if (!strstr(out, "does not exist") || !strstr(out, "does not heal by retrying"))
            fail_msg("--database %s: got: %s", refused[i], out);
    }
    const char *bad_so[] = {gr_test_build_path("silo"), "run", "--memory", "--grains",
                            "/nonexistent.so",          NULL};
    assert_int_equal(run_cmd(bad_so, 10000), 2);
    const char *migrate[] = {gr_test_build_path("silo"), "migrate", "--database", gr_test_pg_url(), NULL};
    assert_int_equal(run_cmd(migrate, 30000), 0);
    assert_int_equal(run_cmd(migrate, 30000), 0);
    const char *status[] = {gr_test_build_path("silo"), "status", "--database", gr_test_pg_url(), NULL};
    assert_int_equal(run_capture(status, out, sizeof out), 0);
    assert_non_null(strstr(out, "schema version"));
    /* JSON logs: every line is one object with ts, level, silo and msg. */
    char jlisten[64], jlog[1100];
    snprintf(jlisten, sizeof jlisten, "127.0.0.1:%d", gr_test_free_port());
    snprintf(jlog, sizeof jlog, "%s.json", log_path);
    unlink(jlog);
    const char *json_silo[] = {gr_test_build_path("silo"),
                               "run",
                               "--memory",
                               "--listen",
                               jlisten,
                               "--grains",
                               gr_test_build_path("examples/counter.so"),
                               "--log-format",
                               "json",
                               NULL};
    pid_t jp = gr_test_spawn(json_silo, jlog);
    usleep(300000);
    kill(jp, SIGTERM);
    assert_int_equal(gr_test_wait(jp, 10000), 0);
    FILE *jf = fopen(jlog, "r");
    assert_non_null(jf);
    char line[2048];
    int lines = 0;
    while (fgets(line, sizeof line, jf)) {
        lines++;
        if (line[0] != '{' || !strstr(line, "\"ts\":") || !strstr(line, "\"level\":") ||
            !strstr(line, "\"silo\":") || !strstr(line, "\"msg\":") || line[strlen(line) - 2] != '}')
            fail_msg("not a JSON log line: %s", line);
    }
    fclose(jf);
    assert_true(lines >= 2);
    const char *ghelp[] = {gr_test_build_path("granary"), "--help", NULL};
    assert_int_equal(run_capture(ghelp, out, sizeof out), 0);
    assert_non_null(strstr(out, "Exit status"));
}

/* The seed thread's case: N acknowledged incrs, kill -9, restart, read N. */
/* A silo started against a database nobody migrated says what to do
 * (issue 17): its retries name `silo migrate`. */
static void test_unmigrated_database_hint(void **st) {
    const char *url = gr_test_pg_url();
    free(gr_test_sql(url, "DROP DATABASE IF EXISTS granary_unmigrated"));
    free(gr_test_sql(url, "CREATE DATABASE granary_unmigrated"));
    char empty[600];
    snprintf(empty, sizeof empty, "%.*s/granary_unmigrated", (int)(strrchr(url, '/') - url), url);
    char log[1024], listen[32];
    snprintf(log, sizeof log, "%s", gr_test_build_path("test_silo_unmigrated.log"));
    unlink(log);
    snprintf(listen, sizeof listen, "127.0.0.1:%d", gr_test_free_port());
    const char *argv[] = {gr_test_build_path("silo"),
                          "run",
                          "--database",
                          empty,
                          "--listen",
                          listen,
                          "--grains",
                          gr_test_build_path("examples/counter.so"),
                          NULL};
    pid_t pid = gr_test_spawn(argv, log);
    assert_true(pid > 0);
    int found = 0;
    for (int i = 0; i < 100 && !found; i++) {
        usleep(50000);
        FILE *f = fopen(log, "r");
        char line[1024];
        while (f && fgets(line, sizeof line, f))
            if (strstr(line, "run `silo migrate --database URL`")) found = 1;
        if (f) fclose(f);
    }
    kill(pid, SIGKILL);
    gr_test_wait(pid, 5000);
    if (!found) gr_test_print_tail(log, 20);
    assert_true(found);
    free(gr_test_sql(url, "DROP DATABASE IF EXISTS granary_unmigrated"));
}

static void test_counter_survives_kill9(void **st) {
    const char *migrate[] = {gr_test_build_path("silo"), "migrate", "--database", gr_test_pg_url(), NULL};
    assert_int_equal(run_cmd(migrate, 30000), 0);
    silo_t s;
    int port = gr_test_free_port();
    assert_int_equal(start_silo(&s, port, NULL), 0);
    load_t load;
    memset(&load, 0, sizeof load);
    run_load(port, 20, 25, &load);
    assert_int_equal(load.failed, 0);
    kill(s.pid, SIGKILL);
    assert_int_equal(gr_test_wait(s.pid, 5000), 128 + SIGKILL);
    assert_int_equal(start_silo(&s, port, NULL), 0);
    for (int k = 0; k < 20; k++) {
        char key[16];
        res_t r;
        snprintf(key, sizeof key, "load-%d", k);
        /* The killed incarnation's activation claims pass to the new one
         * once its lease has run out (docs/directory.md): until then a call
         * fails with the retryable GR_ENOTHERE. */
        uint64_t end = gr_test_now_ms() + 5000;
        int rc;
        while ((rc = call_once(port, NULL, key, "get", &r)) != 0 && gr_err_retryable(rc) &&
               gr_test_now_ms() < end)
            usleep(50000);
        assert_int_equal(rc, 0);
        assert_int_equal(atoi(r.reply), load.acked[k]);
        assert_int_equal(load.acked[k], 25);
    }
    /* The database agrees, byte for byte. */
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT sum(convert_from(state, 'UTF8')::bigint) FROM granary_grain_state "
             "WHERE grain_class = 'Counter' AND service = '%s'",
             cluster);
    char *v = gr_test_sql(gr_test_pg_url(), sql);
    assert_non_null(v);
    assert_int_equal(atoi(v), 20 * 25);
    free(v);
    /* The CLI against the restarted silo. */
    char addr[64], out[256];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    const char *get[] = {gr_test_build_path("granary"),
                         "call",
                         "--cluster",
                         cluster,
                         "--silo",
                         addr,
                         "Counter/load-0",
                         "get",
                         NULL};
    assert_int_equal(run_capture(get, out, sizeof out), 0);
    assert_string_equal(out, "25\n");
    /* The argument from stdin with '-'. */
    char shcmd[512];
    snprintf(shcmd, sizeof shcmd, "printf 7 | '%s' call --cluster %s --silo %s Counter/load-2 incr -",
             gr_test_build_path("granary"), cluster, addr);
    const char *piped[] = {"/bin/sh", "-c", shcmd, NULL};
    assert_int_equal(run_capture(piped, out, sizeof out), 0);
    assert_string_equal(out, "32\n");
    /* A host name is resolved without blocking (localhost is in /etc/hosts). */
    char by_name[64];
    snprintf(by_name, sizeof by_name, "localhost:%d", port);
    const char *named[] = {gr_test_build_path("granary"),
                           "call",
                           "--cluster",
                           cluster,
                           "--silo",
                           by_name,
                           "Counter/load-0",
                           "get",
                           NULL};
    assert_int_equal(run_capture(named, out, sizeof out), 0);
    assert_string_equal(out, "25\n");
    const char *nocls[] = {
        gr_test_build_path("granary"), "call", "--cluster", cluster, "--silo", addr, "Nope/x", "get", NULL};
    assert_int_equal(run_capture(nocls, out, sizeof out), 1);
    const char *json[] = {gr_test_build_path("granary"),
                          "call",
                          "--json",
                          "--cluster",
                          cluster,
                          "--silo",
                          addr,
                          "Counter/load-1",
                          "incr",
                          NULL};
    assert_int_equal(run_capture(json, out, sizeof out), 0);
    assert_string_equal(out, "{\"ok\":true,\"reply\":\"26\"}\n");
    /* members and grains, as operators see them. */
    static char big[8192];
    const char *members[] = {
        gr_test_build_path("granary"), "members", "--cluster", cluster, "--silo", addr, NULL};
    assert_int_equal(run_capture(members, big, sizeof big), 0);
    assert_non_null(strstr(big, " active "));
    const char *grains[] = {
        gr_test_build_path("granary"), "grains", "--json", "--cluster", cluster, "--silo", addr, NULL};
    assert_int_equal(run_capture(grains, big, sizeof big), 0);
    assert_non_null(strstr(big, "\"class\":\"Counter\",\"active\":20}"));
    kill(s.pid, SIGTERM);
    assert_int_equal(gr_test_wait(s.pid, 10000), 0);
    /* Nobody listening: a retryable error, exit 75. */
    assert_int_equal(run_capture(get, out, sizeof out), 75);
}

/* Explicit deactivation and state clearing from inside a grain, through a
 * real silo on PostgreSQL: Counter `reset` deletes the row before it replies,
 * `deactivate` ends the activation (the next call reloads from the table). */
static void test_reset_and_deactivate(void **st) {
    silo_t s;
    int port = gr_test_free_port();
    assert_int_equal(start_silo(&s, port, NULL), 0);
    res_t r;
    for (int i = 0; i < 3; i++)
        assert_int_equal(call_once(port, NULL, "rz", "incr", &r), 0);
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM granary_grain_state WHERE grain_class = 'Counter' AND service = '%s' "
             "AND grain_key = 'rz'",
             cluster);
    char *v = gr_test_sql(gr_test_pg_url(), sql);
    assert_string_equal(v, "1");
    free(v);
    assert_int_equal(call_once(port, NULL, "rz", "reset", &r), 0);
    assert_string_equal(r.reply, "0");
    v = gr_test_sql(gr_test_pg_url(), sql); /* deleted before the reply left */
    assert_string_equal(v, "0");
    free(v);
    assert_int_equal(call_once(port, NULL, "rz", "get", &r), 0);
    assert_string_equal(r.reply, "0");
    assert_int_equal(call_once(port, NULL, "rz", "incr", &r), 0);
    assert_string_equal(r.reply, "1");
    /* Deactivate, change the row behind the silo's back, and the next call
     * must reload it: proof that the activation really ended. */
    assert_int_equal(call_once(port, NULL, "rz", "deactivate", &r), 0);
    assert_string_equal(r.reply, "ok");
    snprintf(sql, sizeof sql,
             "UPDATE granary_grain_state SET state = convert_to('41', 'UTF8'), version = version + 1 "
             "WHERE grain_class = 'Counter' AND service = '%s' AND grain_key = 'rz' RETURNING version",
             cluster);
    /* Deactivation completes right after the reply; allow for a slow CI. */
    int reloaded = 0;
    for (int attempt = 0; attempt < 50 && !reloaded; attempt++) {
        usleep(100000);
        v = gr_test_sql(gr_test_pg_url(), sql);
        free(v);
        assert_int_equal(call_once(port, NULL, "rz", "get", &r), 0);
        reloaded = strcmp(r.reply, "1") != 0;
    }
    assert_true(reloaded);
    assert_string_equal(r.reply, "41");
    /* A missing method is a clear error naming it. */
    assert_int_equal(call_once(port, NULL, "rz", "no_such_method", &r), GR_ENOMETHOD);
    assert_non_null(strstr(r.reply, "no_such_method"));
    kill(s.pid, SIGKILL);
    gr_test_wait(s.pid, 5000);
}

/* `granary reminder add|list|remove` through a real silo on PostgreSQL;
 * the reminder fires the Counter's on_reminder; '$' methods are refused
 * to clients. */
static void test_reminder_cli(void **st) {
    silo_t s;
    int port = gr_test_free_port();
    const char *const fast[] = {"--reminder-poll-ms", "100", "--reminder-min-period-ms", "200", NULL};
    assert_int_equal(start_silo(&s, port, fast), 0);
    char addr[64], out[1024];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    res_t r;
    assert_int_equal(call_once(port, NULL, "rc", "get", &r), 0); /* joined and serving */
    const char *add[] = {gr_test_build_path("granary"),
                         "reminder",
                         "add",
                         "Counter/rc",
                         "tick",
                         "--due",
                         "0",
                         "--period",
                         "200",
                         "--cluster",
                         cluster,
                         "--silo",
                         addr,
                         NULL};
    assert_int_equal(run_capture(add, out, sizeof out), 0);
    assert_string_equal(out, "ok\n");
    const char *list[] = {gr_test_build_path("granary"),
                          "reminder",
                          "list",
                          "Counter/rc",
                          "--json",
                          "--cluster",
                          cluster,
                          "--silo",
                          addr,
                          NULL};
    assert_int_equal(run_capture(list, out, sizeof out), 0);
    assert_non_null(strstr(out, "\"name\":\"tick\""));
    assert_non_null(strstr(out, "\"period_ms\":200"));
    usleep(1200000);
    assert_int_equal(call_once(port, NULL, "rc", "get", &r), 0);
    print_message("reminder fired %d times in 1.2 s (period 200 ms)\n", atoi(r.reply));
    assert_true(atoi(r.reply) >= 3);
    const char *rm[] = {gr_test_build_path("granary"),
                        "reminder",
                        "remove",
                        "Counter/rc",
                        "tick",
                        "--cluster",
                        cluster,
                        "--silo",
                        addr,
                        NULL};
    assert_int_equal(run_capture(rm, out, sizeof out), 0);
    assert_int_equal(run_capture(rm, out, sizeof out), 1); /* GR_ENOENT: nothing to remove */
    const char *too_fast[] = {gr_test_build_path("granary"),
                              "reminder",
                              "add",
                              "Counter/rc",
                              "t2",
                              "--period",
                              "50",
                              "--cluster",
                              cluster,
                              "--silo",
                              addr,
                              NULL};
    assert_int_equal(run_capture(too_fast, out, sizeof out), 1);
    const char *bad[] = {gr_test_build_path("granary"), "reminder", "add", "nocls", "t", NULL};
    assert_int_equal(run_capture(bad, out, sizeof out), 2);
    /* A client may not call the reminder entry point itself. */
    assert_int_equal(call_once(port, NULL, "rc", "$reminder", &r), GR_ENOMETHOD);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM granary_reminder WHERE service = '%s'", cluster);
    char *v = gr_test_sql(gr_test_pg_url(), sql);
    assert_string_equal(v, "0");
    free(v);
    kill(s.pid, SIGKILL);
    gr_test_wait(s.pid, 5000);
}

static void test_sigterm_drains_and_exits_zero(void **st) {
    silo_t s;
    int port = gr_test_free_port();
    assert_int_equal(start_silo(&s, port, NULL), 0);
    load_t load;
    memset(&load, 0, sizeof load);
    run_load(port, 50, 2, &load);
    assert_int_equal(load.failed, 0);
    struct timeval t0, t1;
    gettimeofday(&t0, NULL);
    kill(s.pid, SIGTERM);
    assert_int_equal(gr_test_wait(s.pid, 20000), 0);
    gettimeofday(&t1, NULL);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_usec - t0.tv_usec) / 1000;
    assert_true(ms < 5000);
}

/* A graceful stop that cannot finish (a grain whose call never ends within
 * --drain-timeout-ms) exits 1 soon after the deadline, whatever is still
 * pending (issue 12, item 5: it logged "timed out; exiting 1" and ran on). */
static void test_sigterm_drain_timeout_exits(void **st) {
    silo_t s;
    int port = gr_test_free_port();
    const char *extra[] = {"--drain-timeout-ms", "500", NULL};
    assert_int_equal(start_silo(&s, port, extra), 0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    gr_client_t *c = client_to(&loop, port);
    res_t r;
    memset(&r, 0, sizeof r);
    gr_ref_t ref = {"Counter", "never-ends", 10};
    assert_int_equal(gr_client_call(c, &ref, "sleep", "30000", 5, 40000, on_done, &r), 0);
    gr_test_run_for(&loop, 300); /* the call is in its turn now */
    uint64_t t0 = gr_test_now_ms();
    kill(s.pid, SIGTERM);
    int st_exit = -1;
    while (st_exit < 0 && gr_test_now_ms() - t0 < 10000) {
        gr_test_run_for(&loop, 20);
        st_exit = gr_test_wait(s.pid, 0);
    }
    uint64_t took = gr_test_now_ms() - t0;
    if (st_exit < 0) kill(s.pid, SIGKILL);
    assert_int_equal(st_exit, 1);
    assert_true(took < 5000);
    gr_client_close(c, NULL, NULL);
    gr_test_run_for(&loop, 20);
    gr_test_loop_close(&loop);
}

/* Calls in flight at every size a user reaches, on fresh grains (each one
 * an activation and a persisted write): 1, 32, 256, 257 (one past a full
 * storage batch), 1024 and 4096 pipelined on one connection. Every call
 * answers "1", none fails, and the silo still serves and drains after
 * (issue 12: from 257 on, grains behind a full batch were wedged forever). */
static void test_inflight_sizes(void **st) {
    silo_t s;
    int port = gr_test_free_port();
    assert_int_equal(start_silo(&s, port, NULL), 0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    gr_client_t *c = client_to(&loop, port);
    char err[320];
    if (gr_h_burst_sweep(&loop, c, "Counter", "burst", err, sizeof err) != 0) fail_msg("%s", err);
    gr_client_close(c, NULL, NULL);
    gr_test_run_for(&loop, 20);
    gr_test_loop_close(&loop);
    kill(s.pid, SIGTERM);
    assert_int_equal(gr_test_wait(s.pid, 20000), 0);
}

/* ---- hostile input (raw sockets: tests/support) ---- */

int main(void) {
    if (!gr_test_pg_url()) {
        fprintf(stderr, "no test database: run under ctest (the pg fixture starts one)\n");
        return 1;
    }
    snprintf(log_path, sizeof log_path, "%s", gr_test_build_path("test_silo.log"));
    unlink(log_path);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_cli_contract, new_cluster),
        cmocka_unit_test(test_unmigrated_database_hint),
        cmocka_unit_test_setup(test_counter_survives_kill9, new_cluster),
        cmocka_unit_test_setup(test_sigterm_drains_and_exits_zero, new_cluster),
        cmocka_unit_test_setup(test_sigterm_drain_timeout_exits, new_cluster),
        cmocka_unit_test_setup(test_inflight_sizes, new_cluster),
        cmocka_unit_test_setup(test_reset_and_deactivate, new_cluster),
        cmocka_unit_test_setup(test_reminder_cli, new_cluster),
    };
    return cmocka_run_group_tests_name("silo.process", tests, NULL, NULL);
}
