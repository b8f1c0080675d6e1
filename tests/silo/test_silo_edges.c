/* tests/silo/test_silo_edges.c - the real `silo` binary at its edges:
 * hostile input (garbage, oversized frames, wrong secret or version, slow
 * and silent peers), a client that never reads, the documented limits, the
 * HTTP probes, metrics and dashboard. The rest: test_silo.c. */
#include "silo_fixture.h"

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
    snprintf(log_path, sizeof log_path, "%s", gr_test_build_path("test_silo_edges.log"));
    unlink(log_path);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_hostile_input, new_cluster),
        cmocka_unit_test_setup(test_client_that_never_reads, new_cluster),
        cmocka_unit_test_setup(test_http_probes_and_metrics, new_cluster),
        cmocka_unit_test_setup(test_dashboard_http, new_cluster),
        cmocka_unit_test_setup(test_limits, new_cluster),
    };
    return cmocka_run_group_tests_name("silo.edges", tests, NULL, NULL);
}
