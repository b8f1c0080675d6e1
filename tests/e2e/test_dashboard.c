/* tests/e2e/test_dashboard.c - the dashboard as an operator sees it: three
 * real silo processes on the test PostgreSQL, a checked load running through
 * them, and Debian's Chromium (headless, driven by tests/e2e/dashboard.mjs
 * through playwright-core) looking at silo 0's HTTP port. The driver
 * answers one line per command, read on this test's loop so the load keeps
 * running while the browser waits.
 *
 * Skips (exit 77) with a message when Chromium, node or playwright-core is
 * missing, unless GRANARY_E2E_REQUIRED=1 (scripts/test.sh sets it after
 * installing them): then it fails. Screenshots go to BUILD/e2e/. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "support.h"

static char log_path[1024];
static char shots[1024];
static gr_h_cluster_t cl;
static char http_addr[3][32];
static const char *extra[3][5];
static uv_loop_t loop;
static gr_h_load_t *load;

/* ---- the browser driver ---- */

typedef struct drv {
    uv_process_t proc;
    uv_pipe_t in, out;
    char buf[16384];
    size_t len;
    int have_line, exited;
    int64_t status;
} drv_t;

static drv_t drv;

static void drv_alloc(uv_handle_t *h, size_t s, uv_buf_t *b) {
    *b = uv_buf_init(drv.buf + drv.len, (unsigned)(sizeof drv.buf - 1 - drv.len));
}

static void drv_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
    if (n < 0) {
        uv_read_stop(s);
        drv.have_line = 1; /* EOF: the waiter sees no line and fails */
        return;
    }
    drv.len += (size_t)n;
    drv.buf[drv.len] = '\0';
    if (memchr(drv.buf, '\n', drv.len) || drv.len >= sizeof drv.buf - 1) drv.have_line = 1;
}

static void drv_exit(uv_process_t *p, int64_t status, int sig) {
    drv.exited = 1;
    drv.status = sig ? 128 + sig : status;
    drv.have_line = 1;
}

static void drv_written(uv_write_t *w, int status) { free(w); }

/* The next complete line from the driver into `line` (NUL-terminated), or 0
 * if none came within timeout_ms. */
static int drv_line(char *line, size_t size, uint64_t timeout_ms) {
    uint64_t end = gr_h_now_ms() + timeout_ms;
    for (;;) {
        char *nl = memchr(drv.buf, '\n', drv.len);
        if (nl) {
            *nl = '\0';
            snprintf(line, size, "%s", drv.buf);
            size_t used = (size_t)(nl - drv.buf) + 1;
            memmove(drv.buf, drv.buf + used, drv.len - used);
            drv.len -= used;
            drv.buf[drv.len] = '\0';
            return 1;
        }
        uint64_t now = gr_h_now_ms();
        if (now >= end || drv.exited) return 0;
        drv.have_line = 0;
        gr_test_run_until(&loop, &drv.have_line, end - now);
    }
}

/* Send one command and wait for its answer (the driver's own waits are
 * 20 s; timeout_ms should be longer). Copies the detail after "ok" into
 * reply; fails the test on "fail" or silence. */
static void drv_cmd(const char *cmd, char *reply, size_t size, uint64_t timeout_ms) {
    static unsigned id;
    char msg[1200];
    int n = snprintf(msg, sizeof msg, "%u %s\n", ++id, cmd);
    uv_write_t *w = malloc(sizeof *w + (size_t)n);
    memcpy(w + 1, msg, (size_t)n);
    uv_buf_t b = uv_buf_init((char *)(w + 1), (unsigned)n);
    assert_int_equal(uv_write(w, (uv_stream_t *)&drv.in, &b, 1, drv_written), 0);
    char line[sizeof drv.buf];
    char want[16];
    snprintf(want, sizeof want, "%u ", id);
    uint64_t end = gr_h_now_ms() + timeout_ms;
    for (;;) {
        uint64_t now = gr_h_now_ms();
        if (now >= end || !drv_line(line, sizeof line, end - now)) {
            gr_test_print_tail(log_path, 40);
            fail_msg("browser driver gave no answer to '%s' within %llu ms%s", cmd,
                     (unsigned long long)timeout_ms, drv.exited ? " (it exited)" : "");
        }
        if (!strncmp(line, want, strlen(want))) break;
        print_message("  browser (late answer, ignored): %s\n", line);
    }
    const char *rest = line + strlen(want);
    print_message("  browser: %s -> %s\n", cmd, rest);
    if (strncmp(rest, "ok", 2) != 0) {
        gr_test_print_tail(log_path, 40);
        fail_msg("browser: '%s' failed: %s", cmd, rest);
    }
    if (reply) {
        rest += rest[2] ? 3 : 2;
        size_t rl = strlen(rest) < size - 1 ? strlen(rest) : size - 1;
        memcpy(reply, rest, rl);
        reply[rl] = '\0';
    }
}

static void drv_start(const char *node, const char *chromium) {
    char url[96], script[1024];
    snprintf(url, sizeof url, "http://%s/?token=e2e-t0ken", http_addr[0]);
    snprintf(script, sizeof script, "%s/tests/e2e/dashboard.mjs", getenv("GRANARY_SOURCE_DIR"));
    char *args[] = {(char *)node,     script,          "--url", url, "--chromium",
                    (char *)chromium, "--max-seconds", "400",   NULL};
    uv_pipe_init(&loop, &drv.in, 0);
    uv_pipe_init(&loop, &drv.out, 0);
    FILE *lf = fopen(log_path, "a");
    assert_non_null(lf);
    uv_stdio_container_t io[3];
    io[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
    io[0].data.stream = (uv_stream_t *)&drv.in;
    io[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    io[1].data.stream = (uv_stream_t *)&drv.out;
    io[2].flags = UV_INHERIT_FD;
    io[2].data.fd = fileno(lf);
    uv_process_options_t po;
    memset(&po, 0, sizeof po);
    po.file = node;
    po.args = args;
    po.exit_cb = drv_exit;
    po.stdio_count = 3;
    po.stdio = io;
    int rc = uv_spawn(&loop, &drv.proc, &po);
    fclose(lf);
    if (rc != 0) fail_msg("cannot start %s: %s", node, uv_strerror(rc));
    uv_read_start((uv_stream_t *)&drv.out, drv_alloc, drv_read);
}

static void drv_stop(void) {
    if (!drv.exited) {
        uv_buf_t b = uv_buf_init("0 quit\n", 7);
        uv_write_t *w = malloc(sizeof *w);
        if (uv_write(w, (uv_stream_t *)&drv.in, &b, 1, drv_written) != 0) free(w);
        gr_test_run_until(&loop, &drv.exited, 15000);
    }
    if (!drv.exited) uv_process_kill(&drv.proc, SIGKILL);
    gr_test_run_until(&loop, &drv.exited, 5000);
}

/* ---- the cluster ---- */

static void wait_active(int n) {
    if (gr_h_wait_active(&cl, &loop, n, 20000) != 0) {
        gr_test_print_tail(log_path, 40);
        fail_msg("cluster did not reach %d active silos (have %d)", n, gr_h_count_active(&cl));
    }
}

static void shot(const char *name) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "screenshot %s/%s", shots, name);
    drv_cmd(cmd, NULL, 0, 30000);
}

/* ---- tests, in order: they share the cluster and the page ---- */

static void test_members_and_traffic(void **st) {
    char r[512];
    drv_cmd("open", r, sizeof r, 60000);
    drv_cmd("members 3", r, sizeof r, 30000);
    /* The load has been running since setup: its grains and calls show. */
    drv_cmd("grains-at-least 16", r, sizeof r, 30000);
    drv_cmd("calls-total", r, sizeof r, 5000);
    long before = atol(r);
    gr_test_run_for(&loop, 2500);
    char cmd[64];
    snprintf(cmd, sizeof cmd, "calls-total-above %ld", before);
    drv_cmd(cmd, r, sizeof r, 30000);
    assert_true(atol(r) > before);
    drv_cmd("method-chart Counter.incr", r, sizeof r, 30000);
    /* Calls of this test's own: 12 new grains through silo 2, with a method
     * the load never calls. The page's grain count and charts follow. */
    drv_cmd("grains-at-least 0", r, sizeof r, 30000);
    long grains = atol(r);
    char list[64];
    gr_h_silo_list(&cl, 2, 3, list, sizeof list);
    gr_client_t *c = gr_h_client(&cl, &loop, list);
    assert_non_null(c);
    gr_test_reply_t rep[12];
    for (int i = 0; i < 12; i++) {
        char key[32];
        snprintf(key, sizeof key, "e2e-new-%d", i);
        gr_ref_t ref = {"Counter", key, strlen(key)};
        memset(&rep[i], 0, sizeof rep[i]);
        assert_int_equal(gr_client_call(c, &ref, "where", NULL, 0, 10000, gr_test_on_reply, &rep[i]), 0);
    }
    for (int i = 0; i < 12; i++) {
        assert_true(gr_test_run_until(&loop, &rep[i].done, 15000));
        assert_int_equal(rep[i].status, 0);
    }
    gr_client_close(c, NULL, NULL);
    snprintf(cmd, sizeof cmd, "grains-at-least %ld", grains + 12);
    drv_cmd(cmd, r, sizeof r, 30000);
    drv_cmd("method-chart Counter.where", r, sizeof r, 30000);
    drv_cmd("window 60", r, sizeof r, 10000);
    shot("dashboard.png");
    drv_cmd("errors", r, sizeof r, 5000);
}

static void test_search_and_call(void **st) {
    char r[512];
    /* The load's keys are "ctr-<N>": each is active somewhere. */
    drv_cmd("locate Counter ctr-3", r, sizeof r, 30000);
    assert_non_null(strstr(r, "active on 127.0.0.1:"));
    drv_cmd("call where", r, sizeof r, 30000);
    assert_non_null(strstr(r, "→ ok"));
    assert_non_null(strstr(r, "127.0.0.1:"));
    drv_cmd("call get", r, sizeof r, 30000);
    assert_non_null(strstr(r, "→ ok"));
    /* A grain nobody called is not active anywhere. */
    drv_cmd("locate Counter never-called-e2e", r, sizeof r, 30000);
    assert_non_null(strstr(r, "not active"));
    drv_cmd("errors", r, sizeof r, 5000);
}

static void test_rolling_restart(void **st) {
    char r[512];
    /* Silos 1, 2, then 0 (the one serving the page) stop gracefully and
     * come back on the same ports, one at a time, under load. */
    const int order[3] = {1, 2, 0};
    for (int k = 0; k < 3; k++) {
        int i = order[k];
        uint64_t took;
        assert_int_equal(gr_h_sigterm_and_wait(&cl, &loop, i, &took), 0);
        print_message("silo %d stopped gracefully in %llu ms\n", i, (unsigned long long)took);
        if (i == 0) {
            drv_cmd("connection lost", r, sizeof r, 30000);
        } else {
            drv_cmd("members 2", r, sizeof r, 30000);
            drv_cmd("changes-include left the view", r, sizeof r, 30000);
            /* Its activations moved live to the others: the page shows them. */
            drv_cmd("moved-in-at-least 1", r, sizeof r, 30000);
            if (k == 0) shot("rolling-one-down.png");
        }
        assert_int_equal(gr_h_start_silo(&cl, i, NULL), 0);
        wait_active(3);
        if (i == 0) drv_cmd("connection live", r, sizeof r, 30000);
        drv_cmd("members 3", r, sizeof r, 30000);
        if (k == 1) {
            gr_test_run_for(&loop, 1500);
            shot("rolling-restart.png");
        }
    }
    /* The page kept the changes it saw before its silo restarted, and shows
     * the new ones. */
    drv_cmd("changes-include left the view", r, sizeof r, 30000);
    drv_cmd("changes-include joining → active", r, sizeof r, 30000);
    drv_cmd("calls-total", r, sizeof r, 5000);
    long before = atol(r);
    char cmd[64];
    snprintf(cmd, sizeof cmd, "calls-total-above %ld", before);
    drv_cmd(cmd, r, sizeof r, 30000);
    drv_cmd("viewport 390 844", r, sizeof r, 10000);
    shot("dashboard-phone.png");
    drv_cmd("errors", r, sizeof r, 5000);
    /* Nothing the load had acknowledged was lost during the restart. */
    assert_int_equal(gr_h_load_stop(load, 30000), 0);
    gr_h_summary_t sum;
    int rc = gr_h_load_verify(load, &sum);
    gr_h_summary_print(&sum, "dashboard rolling restart");
    gr_h_load_free(load);
    load = NULL;
    assert_int_equal(sum.lost, 0);
    assert_int_equal(sum.duplicated, 0);
    assert_int_equal(rc, 0);
}

/* ---- setup ---- */

static int setup(void **st) {
    char name[64];
    snprintf(name, sizeof name, "e2e%d", (int)getpid());
    gr_h_cluster_init(&cl, name, gr_test_pg_url(), log_path);
    uv_loop_init(&loop);
    for (int i = 0; i < 3; i++) {
        snprintf(http_addr[i], sizeof http_addr[i], "127.0.0.1:%d", gr_test_free_port());
        extra[i][0] = "--http";
        extra[i][1] = http_addr[i];
        /* With a cluster secret, /api/call needs the HTTP token; the page
         * is opened once with ?token=, which sets the cookie the page's own
         * requests then carry (docs/security.md). */
        extra[i][2] = "--http-token";
        extra[i][3] = "e2e-t0ken";
        extra[i][4] = NULL;
        cl.silos[i].extra = extra[i];
        if (gr_h_start_silo(&cl, i, NULL) != 0) {
            gr_test_print_tail(log_path, 40);
            return -1;
        }
    }
    if (gr_h_wait_active(&cl, &loop, 3, 20000) != 0) return -1;
    load = gr_h_load_new(&cl, &loop, 3, 4, 24);
    if (!load) return -1;
    gr_h_load_start(load);
    return 0;
}

static int teardown(void **st) {
    drv_stop();
    if (load) {
        gr_h_load_stop(load, 10000);
        gr_h_load_free(load);
    }
    gr_h_kill_all(&cl);
    gr_test_loop_close(&loop); /* closes the driver's pipes and process handle */
    return 0;
}

static const char *find_node(void) {
    static char path[1024];
    const char *p = getenv("PATH");
    while (p && *p) {
        const char *end = strchr(p, ':');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        snprintf(path, sizeof path, "%.*s/node", (int)n, p);
        if (access(path, X_OK) == 0) return path;
        p = end ? end + 1 : NULL;
    }
    return NULL;
}

static int skip_or_fail(const char *why) {
    if (getenv("GRANARY_E2E_REQUIRED") && !strcmp(getenv("GRANARY_E2E_REQUIRED"), "1")) {
        fprintf(stderr, "e2e: %s, and GRANARY_E2E_REQUIRED=1\n", why);
        return 1;
    }
    fprintf(stderr,
            "SKIP e2e.dashboard: %s. Install with: apt-get install -y chromium nodejs npm; "
            "(cd tests/e2e && npm ci)\n",
            why);
    return 77;
}

int main(void) {
    const char *chromium = getenv("GRANARY_CHROMIUM") ? getenv("GRANARY_CHROMIUM") : "/usr/bin/chromium";
    const char *src = getenv("GRANARY_SOURCE_DIR");
    char pw[1024];
    snprintf(pw, sizeof pw, "%s/tests/e2e/node_modules/playwright-core/package.json", src ? src : ".");
    const char *node = find_node();
    if (access(chromium, X_OK) != 0)
        return skip_or_fail("no Chromium at GRANARY_CHROMIUM or /usr/bin/chromium");
    if (!node) return skip_or_fail("no node in PATH");
    if (!src || access(pw, R_OK) != 0) return skip_or_fail("playwright-core is not installed in tests/e2e");
    if (gr_test_process_setup("test_dashboard.log", log_path, sizeof log_path) != 0) return 1;
    snprintf(shots, sizeof shots, "%s", gr_test_build_path("e2e"));
    mkdir(shots, 0755);
    if (setup(NULL) != 0) {
        gr_test_print_tail(log_path, 40);
        gr_h_kill_all(&cl);
        return 1;
    }
    drv_start(node, chromium);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_members_and_traffic),
        cmocka_unit_test(test_search_and_call),
        cmocka_unit_test(test_rolling_restart),
    };
    int failed = cmocka_run_group_tests_name("e2e.dashboard", tests, NULL, teardown);
    if (!failed) fprintf(stderr, "screenshots in %s\n", shots);
    return failed;
}
