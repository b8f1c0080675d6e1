#define _GNU_SOURCE 1 /* memmem, strcasestr */
/* tests/cluster/test_cluster_http.c - real silo processes on a real
 * PostgreSQL, through the HTTP grain-call API (docs/http-api.md) and with
 * mutual TLS on every link (docs/security.md). The rest of the cluster
 * tests: test_cluster.c. */
#include "cluster_fixture.h"

/* ---- the HTTP grain-call API (docs/http-api.md) ---- */

/* Send raw bytes on a fresh connection to 127.0.0.1:port (or fd >= 0), then
 * read `n` answers; each one's status, its body in bodies[i] (cut at 255). */
static int http_exchange(int port, int fd, const char *reqs, size_t len, int n, int *status,
                         char (*bodies)[256]) {
    if (fd < 0) fd = gr_test_raw_connect(port);
    gr_test_send_all(fd, reqs, len);
    static char buf[1 << 21];
    size_t have = 0;
    for (int i = 0; i < n; i++) {
        size_t head_end;
        for (;;) {
            char *e = have ? memmem(buf, have, "\r\n\r\n", 4) : NULL;
            if (e) {
                head_end = (size_t)(e - buf) + 4;
                break;
            }
            ssize_t k = read(fd, buf + have, sizeof buf - have);
            if (k <= 0) return i;
            have += (size_t)k;
        }
        buf[head_end - 1] = '\0';
        status[i] = -1;
        sscanf(buf, "HTTP/1.1 %d", &status[i]);
        const char *clh = strcasestr(buf, "\r\nContent-Length: ");
        size_t blen = clh ? strtoul(clh + 18, NULL, 10) : 0;
        while (have < head_end + blen) {
            ssize_t k = read(fd, buf + have, sizeof buf - have);
            if (k <= 0) return i;
            have += (size_t)k;
        }
        size_t c = blen < 255 ? blen : 255;
        memcpy(bodies[i], buf + head_end, c);
        bodies[i][c] = '\0';
        memmove(buf, buf + head_end + blen, have - head_end - blen);
        have -= head_end + blen;
    }
    return n;
}

static int http_post(int port, const char *path, const char *headers, const char *body, char *out) {
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0k\r\n%sContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n%s",
                     path, headers, strlen(body), body);
    int st[1];
    char b[1][256];
    int got = http_exchange(port, -1, req, (size_t)n, 1, st, b);
    if (out) snprintf(out, 256, "%s", got ? b[0] : "");
    return got ? st[0] : -1;
}

/* curl's view of a cluster: any silo takes any grain (HashCounter grains
 * live on their ring owner, so calls through one silo are forwarded),
 * keep-alive and pipelined requests are answered in order, Idempotency-Key
 * is honoured over HTTP, errors carry the documented statuses, the token is
 * required, and the body limit is the wire's. */
static void test_http_api(void **st) {
    int hp[2];
    char http[2][32];
    static const char *extra[2][5];
    for (int i = 0; i < 2; i++) {
        hp[i] = gr_test_free_port();
        snprintf(http[i], sizeof http[i], "127.0.0.1:%d", hp[i]);
        extra[i][0] = "--http";
        extra[i][1] = http[i];
        extra[i][2] = "--http-token";
        extra[i][3] = "t0k";
        extra[i][4] = NULL;
        silos[i].extra = extra[i];
    }
    uv_loop_t loop;
    start_two_silos(&loop);
    char body[256], path[128];
    /* Every key through silo 1: about half live on silo 0. */
    for (int k = 0; k < 16; k++) {
        snprintf(path, sizeof path, "/v1/grains/HashCounter/h-%d/incr", k);
        int stc = 0;
        for (int a = 0; a < 50 && (stc = http_post(hp[1], path, "", "", body)) == 503; a++)
            usleep(50000);
        if (stc != 200) fail_msg("%s through silo 1: %d %s", path, stc, body);
        assert_string_equal(body, "1");
    }
    /* The same through silo 0: the same grains, wherever they live. */
    assert_int_equal(http_post(hp[0], "/v1/grains/HashCounter/h-3/incr", "", "", body), 200);
    assert_string_equal(body, "2");
    /* Idempotency-Key: the repeat is answered, not run. */
    assert_int_equal(http_post(hp[1], "/v1/grains/Counter/idem/incr", "Idempotency-Key: op-1\r\n", "", body),
                     200);
    assert_string_equal(body, "1");
    assert_int_equal(http_post(hp[0], "/v1/grains/Counter/idem/incr", "Idempotency-Key: op-1\r\n", "", body),
                     200);
    assert_string_equal(body, "1");
    /* Errors. */
    assert_int_equal(http_post(hp[0], "/v1/grains/NoSuch/x/incr", "", "", body), 404);
    assert_non_null(strstr(body, "\"error\":\"GR_ENOCLASS\""));
    assert_int_equal(http_post(hp[0], "/v1/grains/Counter/x/nosuch", "", "", body), 404);
    assert_non_null(strstr(body, "GR_ENOMETHOD"));
    assert_int_equal(http_post(hp[0], "/v1/grains/Counter/x/incr", "Granary-Timeout-Ms: abc\r\n", "", body),
                     400);
    assert_int_equal(
        http_post(hp[0], "/v1/grains/Counter/x/sleep", "Granary-Timeout-Ms: 100\r\n", "2000", body), 504);
    char req[512];
    int n = snprintf(req, sizeof req, "POST /v1/grains/Counter/x/incr HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    int sts[60];
    char(*bodies)[256] = calloc(60, 256);
    assert_int_equal(http_exchange(hp[0], -1, req, (size_t)n, 1, sts, bodies), 1);
    assert_int_equal(sts[0], 401); /* no token */
    /* Keep-alive: 20 requests one after the other on one connection, then
     * 40 pipelined in one write: all answered, in order. */
    int fd = gr_test_raw_connect(hp[0]);
    for (int i = 0; i < 20; i++) {
        n = snprintf(req, sizeof req,
                     "POST /v1/grains/Counter/ka/incr HTTP/1.1\r\nAuthorization: Bearer t0k\r\n"
                     "Content-Length: 0\r\n\r\n");
        assert_int_equal(http_exchange(hp[0], fd, req, (size_t)n, 1, sts, bodies), 1);
        assert_int_equal(sts[0], 200);
        assert_int_equal(atoi(bodies[0]), i + 1);
    }
    gr__buf_t pipe;
    gr__buf_init(&pipe);
    for (int i = 0; i < 40; i++)
        gr__buf_printf(&pipe, "POST /v1/grains/Counter/ka/incr HTTP/1.1\r\nAuthorization: Bearer t0k\r\n"
                              "Content-Length: 0\r\n\r\n");
    assert_int_equal(http_exchange(hp[0], fd, (const char *)pipe.data, pipe.len, 40, sts, bodies), 40);
    for (int i = 0; i < 40; i++) {
        assert_int_equal(sts[i], 200);
        assert_int_equal(atoi(bodies[i]), 21 + i);
    }
    gr__buf_free(&pipe);
    close(fd);
    /* A 1 MiB argument is taken; one byte more is refused from the header. */
    static char big[GR_ARG_MAX + 1];
    memset(big, 'a', sizeof big - 1);
    gr__buf_t b;
    gr__buf_init(&b);
    gr__buf_printf(&b,
                   "POST /v1/grains/HashCounter/big/get HTTP/1.1\r\nAuthorization: Bearer t0k\r\n"
                   "Content-Length: %u\r\nConnection: close\r\n\r\n",
                   GR_ARG_MAX);
    gr__buf_append(&b, big, GR_ARG_MAX);
    assert_int_equal(http_exchange(hp[1], -1, (const char *)b.data, b.len, 1, sts, bodies), 1);
    assert_int_equal(sts[0], 200);
    b.len = 0;
    gr__buf_printf(&b,
                   "POST /v1/grains/Counter/big/get HTTP/1.1\r\nAuthorization: Bearer t0k\r\n"
                   "Content-Length: %u\r\n\r\n",
                   GR__HTTP_MAX_BODY + 1);
    assert_int_equal(http_exchange(hp[1], -1, (const char *)b.data, b.len, 1, sts, bodies), 1);
    assert_int_equal(sts[0], 413);
    gr__buf_free(&b);
    free(bodies);
    gr_test_loop_close(&loop);
    silos[0].extra = silos[1].extra = NULL;
}

/* Three silos with mutual TLS everywhere (clients and silo-to-silo, peers
 * checked for their certificate's name): calls in flight from 1 to 4096 on
 * the forwarded path, 1 MiB arguments forwarded, then a rolling restart of
 * every silo under the checked load; a plaintext client and one without a
 * certificate get nothing. */
static void test_mtls_cluster(void **st) {
    if (gr_h_make_certs(cl.tls_dir, sizeof cl.tls_dir) != 0) fail_msg("cannot make certificates");
    for (int i = 0; i < 3; i++)
        start_silo(i, NULL);
    uv_loop_t loop;
    uv_loop_init(&loop);
    wait_active_on(&loop, 3);
    gr_test_run_for(&loop, 400); /* every silo's view has all three */
    char list[128], err[320];
    gr_h_silo_list(&cl, 0, 3, list, sizeof list);
    gr_client_t *c = gr_h_client(&cl, &loop, list);
    assert_non_null(c);
    if (gr_h_burst_sweep(&loop, c, "HashCounter", "tlsburst", err, sizeof err) != 0)
        fail_msg("under mTLS: %s", err);
    static uint8_t arg[GR_ARG_MAX];
    memset(arg, 'a', sizeof arg);
    res_t r;
    for (int v = 0; v < 8; v++) { /* some of them live on the other silos */
        char key[16];
        snprintf(key, sizeof key, "tlsarg-%d", v);
        gr_ref_t ref = {"HashCounter", key, strlen(key)};
        uint64_t end = now_ms() + 5000;
        do {
            memset(&r, 0, sizeof r);
            assert_int_equal(gr_client_call(c, &ref, "get", arg, sizeof arg, 5000, on_res, &r), 0);
            gr_test_run_until(&loop, &r.done, 10000);
        } while (r.status != 0 && gr_err_retryable(r.status) && now_ms() < end);
        if (r.status != 0) fail_msg("1 MiB argument %s: %s %s", key, gr_err_name(r.status), r.reply);
    }
    /* Plaintext, and TLS without a client certificate: refused. */
    char a0[32];
    snprintf(a0, sizeof a0, "127.0.0.1:%d", silos[0].port);
    gr_client_t *plain = client_for(&loop, a0, "s3cret");
    assert_int_not_equal(call_sync(&loop, plain, "tls-x", "incr", NULL, &r), 0);
    gr_client_options_t o;
    gr_client_options_init(&o);
    char ca[600];
    snprintf(ca, sizeof ca, "%s/ca.crt", cl.tls_dir);
    o.silos = a0;
    o.cluster = cl.name;
    o.secret = "s3cret";
    o.tls_ca = ca;
    gr_client_t *nocert;
    assert_int_equal(gr_client_new(&loop, &o, &nocert), 0);
    int st_nocert = call_sync(&loop, nocert, "tls-x", "incr", NULL, &r);
    print_message("without a client certificate: %s %s\n", gr_err_name(st_nocert), r.reply);
    assert_true(st_nocert == GR_EAUTH || st_nocert == GR_ECONN);
    gr_client_close(plain, NULL, NULL);
    gr_client_close(nocert, NULL, NULL);
    gr_client_close(c, NULL, NULL);
    /* A rolling restart of all three under the checked load. */
    gr_h_load_t *l = load_start(&loop, 3);
    for (int i = 0; i < 3; i++) {
        gr_test_run_for(&loop, 800);
        assert_int_equal(sigterm_and_wait(&loop, i, NULL), 0);
        start_silo(i, NULL);
        wait_active_on(&loop, 3);
    }
    gr_test_run_for(&loop, 800);
    load_finish(l, "rolling restart under mTLS");
    gr_test_loop_close(&loop);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", cl.tls_dir);
    if (system(cmd) != 0) print_message("could not remove %s\n", cl.tls_dir);
}

int main(void) {
    if (gr_test_process_setup("test_cluster_http.log", log_path, sizeof log_path) != 0) return 1;
    /* GR_TEST_FILTER=test_key* runs only the cases whose name matches. */
    if (getenv("GR_TEST_FILTER")) cmocka_set_test_filter(getenv("GR_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_mtls_cluster, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_http_api, new_cluster, kill_all),
    };
    return cmocka_run_group_tests_name("cluster.http", tests, NULL, NULL);
}
