/* tests/silo/test_silo.c - the real `silo` and `granary` binaries against a
 * real PostgreSQL: acknowledged increments survive SIGKILL and restart,
 * SIGTERM drains and exits 0, the CLI contract holds, and hostile input
 * (garbage, oversized frames, wrong secret or version, slow and silent
 * peers) gets a clear answer while the silo keeps serving others. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/base.h"
#include "granary/client.h"
#include "support.h"
#include "harness.h"
#include "admin/http.h"
#include "wire/frame.h"

static char log_path[1024];
/* Each case runs its silos in a cluster of its own: state rows and
 * membership are scoped by the cluster name, so cases cannot interfere. */
static char cluster[64];

static int new_cluster(void **st) {
    static int n;
    snprintf(cluster, sizeof cluster, "t%d-%d", (int)getpid(), ++n);
    return 0;
}

typedef struct {
    pid_t pid;
    int port;
} silo_t;

/* Start a silo hosting the Counter example on 127.0.0.1:port in this case's
 * cluster; `extra` is a NULL-terminated list of more flags (or NULL). */
static int start_silo(silo_t *s, int port, const char *const *extra) {
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    const char *argv[32] = {gr_test_build_path("silo"),
                            "run",
                            "--database",
                            gr_test_pg_url(),
                            "--listen",
                            listen,
                            "--grains",
                            gr_test_build_path("examples/counter.so"),
                            "--cluster",
                            cluster,
                            "--handshake-timeout-ms",
                            "300"};
    int n = 12;
    for (int i = 0; extra && extra[i] && n < 31; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    s->port = port;
    s->pid = gr_test_spawn(argv, log_path);
    if (s->pid < 0) return -1;
    return gr_test_wait_port(port, 10000);
}

static int run_cmd(const char *const argv[], uint64_t timeout_ms) {
    pid_t p = gr_test_spawn(argv, log_path);
    return p < 0 ? -1 : gr_test_wait(p, timeout_ms);
}

/* Run a command and capture its stdout (and with_stderr, its stderr too)
 * into out (NUL-terminated). */
static int run_capture_fds(const char *const argv[], char *out, size_t out_size, int with_stderr) {
    int fds[2];
    if (pipe(fds) != 0) return -1;
    pid_t p = fork();
    if (p == 0) {
        dup2(fds[1], 1);
        if (with_stderr) dup2(fds[1], 2);
        close(fds[0]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    size_t n = 0;
    ssize_t k;
    while (n + 1 < out_size && (k = read(fds[0], out + n, out_size - n - 1)) > 0)
        n += (size_t)k;
    out[n] = '\0';
    char sink[4096];
    while (read(fds[0], sink, sizeof sink) > 0) {
    }
    close(fds[0]);
    return gr_test_wait(p, 30000);
}

static int run_capture(const char *const argv[], char *out, size_t out_size) {
    return run_capture_fds(argv, out, out_size, 0);
}

/* ---- a client driving calls from the test ---- */

typedef gr_test_reply_t res_t;
#define on_done gr_test_on_reply

/* A client of this case's cluster for the silo on 127.0.0.1:port, with
 * the client secret `secret` (NULL: none). */
static gr_client_t *client_with(uv_loop_t *loop, int port, const char *secret) {
    gr_client_options_t o;
    gr_client_options_init(&o);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    o.silos = addr;
    o.secret = secret;
    o.cluster = cluster;
    gr_client_t *c;
    assert_int_equal(gr_client_new(loop, &o, &c), 0);
    return c;
}

static gr_client_t *client_to(uv_loop_t *loop, int port) { return client_with(loop, port, NULL); }

static int call_once(int port, const char *secret, const char *key, const char *method, res_t *r) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    gr_client_t *c = client_with(&loop, port, secret);
    memset(r, 0, sizeof *r);
    gr_ref_t ref = {"Counter", key, strlen(key)};
    assert_int_equal(gr_client_call(c, &ref, method, NULL, 0, 5000, on_done, r), 0);
    gr_test_run_until(&loop, &r->done, 10000);
    gr_client_close(c, NULL, NULL);
    gr_test_loop_close(&loop);
    return r->status;
}

/* Pipelined incrs over NK keys, INCRS each; counts acknowledgements. */
typedef struct {
    int acked[64];
    int failed;
    int outstanding;
} load_t;

typedef struct {
    load_t *load;
    int key;
} ticket_t;

static void on_incr(void *ud, int status, const uint8_t *reply, size_t len) {
    ticket_t *t = ud;
    if (status == 0) {
        t->load->acked[t->key]++;
    } else {
        if (t->load->failed++ == 0)
            print_message("first failed incr: %s: %.*s\n", gr_err_name(status), (int)len,
                          (const char *)reply);
    }
    t->load->outstanding--;
    free(t);
}

static void run_load(int port, int nkeys, int incrs, load_t *load) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    gr_client_t *c = client_to(&loop, port);
    for (int i = 0; i < incrs; i++) {
        for (int k = 0; k < nkeys; k++) {
            char key[16];
            snprintf(key, sizeof key, "load-%d", k);
            gr_ref_t ref = {"Counter", key, strlen(key)};
            ticket_t *t = malloc(sizeof *t);
            t->load = load;
            t->key = k;
            assert_int_equal(gr_client_call(c, &ref, "incr", NULL, 0, 10000, on_incr, t), 0);
            load->outstanding++;
        }
    }
    int zero = 0;
    for (int spin = 0; spin < 3000 && load->outstanding > 0; spin++) {
        gr_test_run_until(&loop, &zero, 10);
    }
    assert_int_equal(load->outstanding, 0);
    gr_client_close(c, NULL, NULL);
    gr_test_loop_close(&loop);
}

/* ---- cases ---- */

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

static void test_hostile_input(void **st) {
    silo_t s;
    int port = gr_test_free_port();
    assert_int_equal(start_silo(&s, port, (const char *[]){"--secret", "letmein", NULL}), 0);
    int closed;
    gr__buf_t b;
    gr__buf_init(&b);

    /* HTTP instead of frames: GOAWAY(EPROTO), then close. */
    int fd = gr_test_raw_connect(port);
    gr_test_send_all(fd, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27);
    assert_int_equal(gr_test_read_until(fd, GR__FRAME_GOAWAY, &closed), GR_EPROTO);
    assert_true(gr_test_peer_closed(fd));
    close(fd);

    /* A frame announcing 2 GB: refused from the header. */
    fd = gr_test_raw_connect(port);
    uint8_t hdr[16] = {0x7f, 0xff, 0xff, 0xff, 0x47, 0x52, GR__FRAME_REQUEST};
    gr_test_send_all(fd, hdr, sizeof hdr);
    assert_int_equal(gr_test_read_until(fd, GR__FRAME_GOAWAY, &closed), GR_ETOOBIG);
    close(fd);

    /* Wrong secret, wrong version. */
    fd = gr_test_raw_connect(port);
    gr__frame_encode_hello(&b, GR_PROTOCOL_VERSION, GR__ROLE_CLIENT, cluster, "wrong", 5, "t");
    gr_test_send_all(fd, b.data, b.len);
    assert_int_equal(gr_test_read_until(fd, GR__FRAME_GOAWAY, &closed), GR_EAUTH);
    close(fd);
    b.len = 0;
    fd = gr_test_raw_connect(port);
    gr__frame_encode_hello(&b, 99, GR__ROLE_CLIENT, cluster, "letmein", 7, "t");
    gr_test_send_all(fd, b.data, b.len);
    assert_int_equal(gr_test_read_until(fd, GR__FRAME_GOAWAY, &closed), GR_EVERSION);
    close(fd);

    /* A request before the handshake. */
    b.len = 0;
    fd = gr_test_raw_connect(port);
    gr__frame_encode_request(&b, GR__FRAME_REQUEST, 1, 0, "Counter", "k", 1, "get", NULL, 0);
    gr_test_send_all(fd, b.data, b.len);
    assert_int_equal(gr_test_read_until(fd, GR__FRAME_GOAWAY, &closed), GR_EPROTO);
    close(fd);

    /* A silent peer is closed after the handshake timeout (300 ms here). */
    fd = gr_test_raw_connect(port);
    assert_true(gr_test_peer_closed(fd));
    close(fd);

    /* Byte at a time: a slow but valid peer is served. Includes a key with
     * NUL and quote bytes and a NUL inside the method name (refused). */
    b.len = 0;
    fd = gr_test_raw_connect(port);
    gr__frame_encode_hello(&b, GR_PROTOCOL_VERSION, GR__ROLE_CLIENT, cluster, "letmein", 7, "slow");
    const uint8_t key[] = {'a', 0, '\'', '"'};
    gr__frame_encode_request(&b, GR__FRAME_REQUEST, 7, 5000, "Counter", key, sizeof key, "incr", NULL, 0);
    for (size_t i = 0; i < b.len; i++)
        gr_test_send_all(fd, b.data + i, 1);
    assert_int_equal(gr_test_read_until(fd, GR__FRAME_RESPONSE, &closed), 0);
    b.len = 0;
    gr__frame_encode_request(&b, GR__FRAME_REQUEST, 8, 5000, "Counter", "k", 1, "g\x01t", NULL, 0);
    b.data[b.len - 2] = 0; /* "g\0t" */
    gr_test_send_all(fd, b.data, b.len);
    assert_int_equal(gr_test_read_until(fd, GR__FRAME_RESPONSE, &closed), GR_EPROTO);
    /* Unknown class and an over-long key are answered, not fatal. */
    b.len = 0;
    gr__frame_encode_request(&b, GR__FRAME_REQUEST, 9, 5000, "Nope", "k", 1, "get", NULL, 0);
    gr_test_send_all(fd, b.data, b.len);
    assert_int_equal(gr_test_read_until(fd, GR__FRAME_RESPONSE, &closed), GR_ENOCLASS);
    b.len = 0;
    static uint8_t bigkey[10 * 1024];
    gr__frame_encode_request(&b, GR__FRAME_REQUEST, 10, 5000, "Counter", "k", 1, "get", NULL, 0);
    gr__put_u32(b.data + GR_FRAME_HEADER_SIZE + 8, sizeof bigkey); /* claims a 10 kB key */
    gr__buf_append(&b, bigkey, sizeof bigkey);
    gr__put_u32(b.data, (uint32_t)(b.len - 4));
    gr_test_send_all(fd, b.data, b.len);
    assert_int_equal(gr_test_read_until(fd, GR__FRAME_GOAWAY, &closed), GR_ETOOBIG);
    close(fd);
    gr__buf_free(&b);

    /* Through all of it the silo kept serving well-behaved clients. */
    res_t r;
    assert_int_equal(call_once(port, "letmein", "after", "incr", &r), 0);
    assert_string_equal(r.reply, "1");
    assert_int_equal(call_once(port, "wrong", "after", "get", &r), GR_EAUTH);
    kill(s.pid, SIGTERM);
    assert_int_equal(gr_test_wait(s.pid, 10000), 0);

    /* Secrets never reach the log: not the cluster secret, not a database
     * password, also when the database cannot be reached. */
    char listen[64], pw_url[128];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", gr_test_free_port());
    snprintf(pw_url, sizeof pw_url, "postgresql://granary:hunter2pw@127.0.0.1:%d/granary",
             gr_test_free_port());
    const char *argv[] = {gr_test_build_path("silo"),
                          "run",
                          "--database",
                          pw_url,
                          "--listen",
                          listen,
                          "--grains",
                          gr_test_build_path("examples/counter.so"),
                          "--secret",
                          "letmein",
                          "--log-level",
                          "debug",
                          NULL};
    pid_t p = gr_test_spawn(argv, log_path);
    usleep(800000);
    kill(p, SIGTERM);
    assert_int_equal(gr_test_wait(p, 10000), 0);
    FILE *f = fopen(log_path, "r");
    assert_non_null(f);
    static char logbuf[1 << 20];
    size_t n = fread(logbuf, 1, sizeof logbuf - 1, f);
    logbuf[n] = '\0';
    fclose(f);
    assert_non_null(strstr(logbuf, "cannot connect to postgres")); /* the failure is logged... */
    assert_null(strstr(logbuf, "hunter2pw"));                      /* ...without the password */
    assert_null(strstr(logbuf, "letmein"));
}

/* A client that sends but never reads: the silo stops reading from it
 * (back-pressure) instead of buffering without bound, and stays responsive. */
static void test_client_that_never_reads(void **st) {
    silo_t s;
    int port = gr_test_free_port();
    assert_int_equal(start_silo(&s, port, NULL), 0);
    int fd = gr_test_raw_connect(port);
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    gr__buf_t b;
    gr__buf_init(&b);
    gr__frame_encode_hello(&b, GR_PROTOCOL_VERSION, GR__ROLE_CLIENT, cluster, "", 0, "greedy");
    gr_test_send_all(fd, b.data, b.len);
    /* Each "where" reply is ~30 bytes; send bounded batches, non-blocking,
     * until the silo stops accepting our bytes. */
    struct timeval tv = {0, 200000};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    size_t sent = 0;
    for (int batch = 0; batch < 2000; batch++) {
        b.len = 0;
        for (int i = 0; i < 500; i++)
            gr__frame_encode_request(&b, GR__FRAME_REQUEST, (uint64_t)batch * 500 + i, 60000, "Counter", "w",
                                     1, "where", NULL, 0);
        ssize_t k = write(fd, b.data, b.len);
        if (k <= 0) break;
        sent += (size_t)k;
    }
    /* The silo is still responsive to others. */
    res_t r;
    assert_int_equal(call_once(port, NULL, "still", "incr", &r), 0);
    /* Its memory stayed bounded: check RSS of the silo process. */
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)s.pid);
    FILE *f = fopen(path, "r");
    long rss_kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) rss_kb = atol(line + 6);
    if (f) fclose(f);
    print_message("client sent %zu bytes without reading; silo RSS %ld kB\n", sent, rss_kb);
    assert_true(rss_kb < 512 * 1024);
    close(fd);
    gr__buf_free(&b);
    kill(s.pid, SIGTERM);
    assert_int_equal(gr_test_wait(s.pid, 10000), 0);
}

/* Resource limits: connections and calls in flight per connection are
 * capped, and a breach is a clear error, not a crash or unbounded memory. */
static void test_limits(void **st) {
    silo_t s;
    int port = gr_test_free_port();
    const char *limits[] = {"--max-connections", "2", "--max-inflight", "4", "--max-queue", "3", NULL};
    assert_int_equal(start_silo(&s, port, limits), 0);
    usleep(200000); /* the port probe's own connection must be gone first */
    gr__buf_t hello;
    gr__buf_init(&hello);
    gr__frame_encode_hello(&hello, GR_PROTOCOL_VERSION, GR__ROLE_CLIENT, cluster, "", 0, "limits");
    int a = gr_test_raw_connect(port), b = gr_test_raw_connect(port), closed;
    gr_test_send_all(a, hello.data, hello.len);
    gr_test_send_all(b, hello.data, hello.len);
    assert_int_equal(gr_test_read_until(a, GR__FRAME_HELLO_OK, &closed), 0);
    assert_int_equal(gr_test_read_until(b, GR__FRAME_HELLO_OK, &closed), 0);
    /* The third one is over --max-connections once it has said HELLO (a
     * connection that never does counts against --max-preauth-connections
     * only: docs/security.md). */
    int c = gr_test_raw_connect(port);
    gr_test_send_all(c, hello.data, hello.len);
    assert_int_equal(gr_test_read_until(c, GR__FRAME_GOAWAY, &closed), GR_EOVERLOAD);
    close(c);
    /* Ten slow calls pipelined to one grain: four in flight at most, and the
     * grain queues three: the rest get GR_EOVERLOAD at once. */
    gr__buf_t reqs;
    gr__buf_init(&reqs);
    for (int i = 0; i < 10; i++)
        gr__frame_encode_request(&reqs, GR__FRAME_REQUEST, (uint64_t)i + 1, 10000, "Counter", "busy", 4,
                                 "sleep", "300", 3);
    gr_test_send_all(a, reqs.data, reqs.len);
    int ok = 0, over = 0;
    for (int i = 0; i < 10; i++) {
        int32_t st2 = gr_test_read_until(a, GR__FRAME_RESPONSE, &closed);
        if (closed) break;
        ok += st2 == 0;
        over += st2 == GR_EOVERLOAD;
    }
    print_message("10 pipelined slow calls: %d answered, %d refused with GR_EOVERLOAD\n", ok, over);
    assert_int_equal(ok + over, 10);
    assert_true(over >= 6);
    assert_true(ok >= 1);
    close(a);
    close(b);
    gr__buf_free(&hello);
    gr__buf_free(&reqs);
    kill(s.pid, SIGTERM);
    assert_int_equal(gr_test_wait(s.pid, 10000), 0);
}

/* Probes and metrics over real HTTP, and /readyz turning unready while a
 * graceful stop waits for a call in flight. */
/* A silo serving HTTP on a free port (*hport), `more` flags after --http
 * (may be NULL); returns once the HTTP port accepts connections. */
static void start_http_silo(silo_t *s, int port, int *hport, const char *more) {
    static char http[64];
    if (!*hport) *hport = gr_test_free_port();
    snprintf(http, sizeof http, "127.0.0.1:%d", *hport);
    assert_int_equal(start_silo(s, port, (const char *[]){"--http", http, more, NULL}), 0);
    assert_int_equal(gr_test_wait_port(*hport, 5000), 0);
}

static void test_http_probes_and_metrics(void **st) {
    silo_t s;
    int port = gr_test_free_port(), hport = 0;
    char body[1 << 16];
    start_http_silo(&s, port, &hport, NULL);
    assert_int_equal(gr_test_http_get(hport, "/healthz", body, sizeof body), 200);
    int ready = 0;
    for (int i = 0; i < 100 && ready != 200; i++) {
        ready = gr_test_http_get(hport, "/readyz", body, sizeof body);
        if (ready != 200) usleep(20000);
    }
    assert_int_equal(ready, 200);
    res_t r;
    assert_int_equal(call_once(port, NULL, "m", "incr", &r), 0);
    assert_int_equal(gr_test_http_get(hport, "/metrics", body, sizeof body), 200);
    const char *names[] = {"granary_activations{class=\"Counter\"} 1",
                           "granary_calls_total{class=\"Counter\",method=\"incr\"} 1",
                           "granary_call_errors_total{class=\"Counter\",method=\"incr\"} 0",
                           "granary_call_duration_seconds_bucket{class=\"Counter\",le=\"+Inf\"} 1",
                           "granary_storage_reads_total 1",
                           "granary_storage_writes_total 1",
                           "granary_storage_conflicts_total 0",
                           "granary_storage_read_duration_seconds_count 1",
                           "granary_storage_write_duration_seconds_count 1",
                           "granary_membership_size 1",
                           "granary_membership_view_version",
                           "granary_directory_entries 1",
                           "granary_connections ",
                           "granary_queued_messages 0",
                           "granary_drain_remaining 0",
                           "granary_silo_ready 1",
                           "granary_inflight_calls 0",
                           "process_cpu_seconds_total ",
                           "process_resident_memory_bytes ",
                           "process_open_fds ",
                           "process_start_time_seconds ",
                           "granary_build_info{version=\""};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strstr(body, names[i])) fail_msg("/metrics lacks '%s':\n%s", names[i], body);
    /* Every family has # HELP then # TYPE (what `promtool check metrics`
     * asks first: 30 of 42 had no HELP before). */
    for (const char *t = strstr(body, "# TYPE "); t; t = strstr(t + 1, "# TYPE ")) {
        char fam[128], help[160];
        if (sscanf(t, "# TYPE %127s", fam) != 1) fail_msg("bad TYPE line at '%.60s'", t);
        snprintf(help, sizeof help, "# HELP %s ", fam);
        if (!strstr(body, help)) fail_msg("/metrics: family %s has no # HELP", fam);
    }
    /* Every sample line parses as NAME[{LABELS}] VALUE. */
    for (char *line = strtok(body, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#') continue;
        char *sp = strrchr(line, ' ');
        assert_non_null(sp);
        char *end;
        strtod(sp + 1, &end);
        if (*end) fail_msg("bad sample value in '%s'", line);
    }
    assert_int_equal(gr_test_http_get(hport, "/nope", body, sizeof body), 404);
    /* A call in flight holds the drain; meanwhile /readyz says 503. */
    pid_t sleeper;
    {
        char addr[64];
        snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
        const char *argv[] = {gr_test_build_path("granary"),
                              "call",
                              "--cluster",
                              cluster,
                              "--silo",
                              addr,
                              "Counter/slow",
                              "sleep",
                              "1500",
                              NULL};
        sleeper = gr_test_spawn(argv, log_path);
    }
    usleep(300000);
    kill(s.pid, SIGTERM);
    usleep(200000);
    assert_int_equal(gr_test_http_get(hport, "/readyz", body, sizeof body), 503);
    assert_non_null(strstr(body, "draining"));
    assert_int_equal(gr_test_wait(sleeper, 10000), 0); /* answered before the silo left */
    assert_int_equal(gr_test_wait(s.pid, 10000), 0);
}

/* The dashboard's page and JSON on the HTTP port of a single silo, and
 * --no-dashboard turning them off. The browser side is tests/e2e/. */
static void test_dashboard_http(void **st) {
    char q[64];
    assert_int_equal(gr__http_query_param("a=1&class=Coun%74er&key=x+y%2Fz&e", "class", q, sizeof q), 7);
    assert_string_equal(q, "Counter");
    assert_int_equal(gr__http_query_param("a=1&class=Counter&key=x+y%2Fz&e", "key", q, sizeof q), 5);
    assert_string_equal(q, "x y/z");
    assert_int_equal(gr__http_query_param("a=1&e", "e", q, sizeof q), 0);
    assert_int_equal(gr__http_query_param("a=1", "b", q, sizeof q), -1);
    assert_int_equal(gr__http_query_param("a=%zz", "a", q, sizeof q), -1);
    assert_int_equal(gr__http_query_param("a=123456", "a", q, 4), -1);

    silo_t s;
    int port = gr_test_free_port(), hport = 0;
    char body[1 << 16];
    start_http_silo(&s, port, &hport, NULL);
    assert_int_equal(gr_test_http_get(hport, "/", body, sizeof body), 200);
    assert_non_null(strstr(body, "<title>Granary dashboard</title>"));
    assert_int_equal(gr_test_http_get(hport, "/dashboard.js", body, sizeof body), 200);
    assert_int_equal(gr_test_http_get(hport, "/dashboard.css", body, sizeof body), 200);
    res_t r;
    assert_int_equal(call_once(port, NULL, "d 1", "incr", &r), 0);
    /* The per-second sample of that call appears within about a second. */
    int seen = 0;
    for (int i = 0; i < 40 && !seen; i++) {
        assert_int_equal(gr_test_http_get(hport, "/api/cluster", body, sizeof body), 200);
        seen = strstr(body, "{\"class\":\"Counter\",\"method\":\"incr\",\"samples\":[[") != NULL;
        if (!seen) usleep(100000);
    }
    if (!seen) fail_msg("no sample of Counter.incr in /api/cluster:\n%s", body);
    assert_non_null(strstr(body, "\"view\":{\"version\":"));
    assert_non_null(strstr(body, "\"status\":\"active\""));
    assert_non_null(strstr(body, "{\"name\":\"Counter\",\"active\":1}"));
    assert_non_null(strstr(body, "[\"Counter\",\"get\",1,"));      /* read-only */
    assert_non_null(strstr(body, "[\"Counter\",\"incr\",0,1,0]")); /* not read-only, one call */
    assert_int_equal(gr_test_http_get(hport, "/api/silo?since=0", body, sizeof body), 200);
    assert_non_null(strstr(body, "\"storage_writes\":1"));
    assert_non_null(strstr(body, "\"directory_entries\":1,"));
    /* Where the grain lives, and a read-only call; keys are percent-decoded. */
    assert_int_equal(gr_test_http_get(hport, "/api/locate?class=Counter&key=d%201", body, sizeof body), 200);
    assert_non_null(strstr(body, "\"key\":\"d 1\""));
    assert_non_null(strstr(body, "\"host\":\"127.0.0.1:"));
    assert_int_equal(gr_test_http_get(hport, "/api/locate?class=Counter&key=nobody", body, sizeof body), 200);
    assert_non_null(strstr(body, "\"host\":null"));
    assert_int_equal(gr_test_http_get(hport, "/api/call?class=Counter&key=d+1&method=get", body, sizeof body),
                     200);
    assert_non_null(strstr(body, "\"status\":\"ok\""));
    assert_non_null(strstr(body, "\"reply\":\"1\""));
    /* Anything else is refused, and nothing ran. */
    assert_int_equal(
        gr_test_http_get(hport, "/api/call?class=Counter&key=d+1&method=incr", body, sizeof body), 403);
    assert_non_null(strstr(body, "not declared read-only"));
    assert_int_equal(
        gr_test_http_get(hport, "/api/call?class=Counter&key=d+1&method=nope", body, sizeof body), 404);
    assert_int_equal(gr_test_http_get(hport, "/api/call?class=Nope&key=x&method=get", body, sizeof body),
                     404);
    assert_int_equal(gr_test_http_get(hport, "/api/call?key=x&method=get", body, sizeof body), 400);
    assert_int_equal(gr_test_http_get(hport, "/api/call?class=Counter&key=d+1&method=get", body, sizeof body),
                     200);
    assert_non_null(strstr(body, "\"reply\":\"1\""));
    kill(s.pid, SIGTERM);
    assert_int_equal(gr_test_wait(s.pid, 10000), 0);

    /* --no-dashboard: probes and metrics only. */
    start_http_silo(&s, port, &hport, "--no-dashboard");
    assert_int_equal(gr_test_http_get(hport, "/", body, sizeof body), 404);
    assert_int_equal(gr_test_http_get(hport, "/api/cluster", body, sizeof body), 404);
    assert_int_equal(gr_test_http_get(hport, "/healthz", body, sizeof body), 200);
    kill(s.pid, SIGTERM);
    assert_int_equal(gr_test_wait(s.pid, 10000), 0);
}

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
        cmocka_unit_test_setup(test_hostile_input, new_cluster),
        cmocka_unit_test_setup(test_client_that_never_reads, new_cluster),
        cmocka_unit_test_setup(test_http_probes_and_metrics, new_cluster),
        cmocka_unit_test_setup(test_dashboard_http, new_cluster),
        cmocka_unit_test_setup(test_limits, new_cluster),
    };
    return cmocka_run_group_tests_name("silo.process", tests, NULL, NULL);
}
