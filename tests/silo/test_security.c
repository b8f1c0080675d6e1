/* tests/silo/test_security.c - the attacks of issue 13 against real silo
 * processes over real sockets: a client claiming the silo role, forged
 * directory entries, unauthenticated memory and connection slots, partial
 * frames held open, one connection queueing unbounded request bytes, idle
 * HTTP connections starving the probes, the HTTP token, a second process
 * with a live silo's id, reminders for a class that does not exist.
 * Each one is refused with bounded memory and a clear error. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "client/client_internal.h"
#include "base/base.h"
#include "granary/client.h"
#include "harness.h"
#include "support.h"
#include "wire/frame.h"

static char log_path[1024];
static gr_h_cluster_t cl;

static int new_cluster(void **st) {
    static int n;
    char name[64];
    snprintf(name, sizeof name, "sec%d-%d", (int)getpid(), ++n);
    gr_h_cluster_init(&cl, name, gr_test_pg_url(), log_path);
    return 0;
}

static int kill_all(void **st) {
    gr_h_kill_all(&cl);
    return 0;
}

static void start(int i, const char *const *extra) {
    cl.silos[i].extra = extra;
    assert_int_equal(gr_h_start_silo(&cl, i, NULL), 0);
}

/* A raw connection that has said HELLO with this role and secret; returns
 * the status of the answer (0 for HELLO_OK, the GOAWAY's otherwise). */
static int raw_hello(int port, uint8_t role, const char *secret, int *fd_out) {
    int fd = gr_test_raw_connect(port);
    gr__buf_t b;
    gr__buf_init(&b);
    gr__frame_encode_hello(&b, GR_PROTOCOL_VERSION, role, cl.name, secret, strlen(secret), "attacker");
    gr_test_send_all(fd, b.data, b.len);
    gr__buf_free(&b);
    int closed;
    /* HELLO_OK and GOAWAY both end the handshake; read whichever comes. */
    uint8_t hdr[GR_FRAME_HEADER_SIZE];
    size_t got = 0;
    while (got < sizeof hdr) {
        ssize_t k = read(fd, hdr + got, sizeof hdr - got);
        if (k <= 0) break;
        got += (size_t)k;
    }
    int st = -1;
    if (got == sizeof hdr && hdr[6] == GR__FRAME_HELLO_OK) {
        uint8_t rest[512];
        size_t need = gr__get_u32(hdr) - (GR_FRAME_HEADER_SIZE - 4);
        if (need <= sizeof rest) {
            size_t r = 0;
            while (r < need) {
                ssize_t k = read(fd, rest + r, need - r);
                if (k <= 0) break;
                r += (size_t)k;
            }
        }
        st = 0;
    } else if (got == sizeof hdr && hdr[6] == GR__FRAME_GOAWAY) {
        uint8_t s4[4];
        if (read(fd, s4, 4) == 4) st = (int32_t)gr__get_u32(s4);
    }
    (void)closed;
    if (fd_out)
        *fd_out = fd;
    else
        close(fd);
    return st;
}

static int raw_request(int fd, uint64_t id, const char *cls, const void *key, size_t kl, const char *method,
                       const char *arg) {
    gr__buf_t b;
    gr__buf_init(&b);
    gr__frame_encode_request(&b, GR__FRAME_REQUEST, id, 2000, cls, key, kl, method, arg,
                             arg ? strlen(arg) : 0);
    gr_test_send_all(fd, b.data, b.len);
    gr__buf_free(&b);
    int closed;
    return gr_test_read_until(fd, GR__FRAME_RESPONSE, &closed);
}

/* The silo role needs the silo secret; a client with the client secret
 * gets HELLO_OK as a client but no `$dir`; a proven silo cannot register a
 * silo that is not in the view. (Before: role=silo with the client secret
 * could unregister a grain and so start a second activation.) */
static void test_silo_role_needs_silo_secret(void **st) {
    /* The harness starts every silo with --silo-secret s1lo-s3cret. */
    start(0, NULL);
    start(1, NULL);
    assert_int_equal(gr_h_wait_active(&cl, NULL, 2, 10000), 0);
    int port = cl.silos[0].port;
    assert_int_equal(raw_hello(port, GR__ROLE_SILO, "s3cret", NULL), GR_EAUTH);
    int fd;
    assert_int_equal(raw_hello(port, GR__ROLE_CLIENT, "s3cret", &fd), 0);
    assert_int_equal(raw_request(fd, 1, "$dir", "Counter\0k", 9, "register", "127.0.0.1:1-1"), GR_ENOCLASS);
    close(fd);
    assert_int_equal(raw_hello(port, GR__ROLE_SILO, "s1lo-s3cret", &fd), 0);
    assert_int_equal(raw_request(fd, 2, "$dir", "Counter\0k", 9, "register", "127.0.0.1:1-forged"),
                     GR_ENOTHERE);
    assert_int_equal(raw_request(fd, 3, "$dir", "Counter\0k", 9, "claimed", "127.0.0.1:1-forged"),
                     GR_ENOTHERE);
    close(fd);
    /* The cluster itself (silo links with the silo secret) still works. */
    char list[128];
    gr_h_silo_list(&cl, 0, 2, list, sizeof list);
    uv_loop_t loop;
    uv_loop_init(&loop);
    gr_client_t *c = gr_h_client(&cl, &loop, list);
    gr_test_reply_t r = {0};
    gr_ref_t ref = {"HashCounter", "role", 4};
    for (int i = 0; i < 8; i++) { /* hash placement: some land on the other silo */
        char key[16];
        snprintf(key, sizeof key, "role-%d", i);
        ref.key = key;
        ref.key_len = strlen(key);
        uint64_t end = gr_h_now_ms() + 5000; /* views settle for a tick after both are active */
        do {
            memset(&r, 0, sizeof r);
            assert_int_equal(gr_client_call(c, &ref, "incr", NULL, 0, 5000, gr_test_on_reply, &r), 0);
            gr_test_run_until(&loop, &r.done, 8000);
        } while (r.status != 0 && gr_err_retryable(r.status) && gr_h_now_ms() < end);
        if (r.status != 0) fail_msg("%s: %s %s", key, gr_err_name(r.status), r.reply);
    }
    gr_client_close(c, NULL, NULL);
    gr_test_run_for(&loop, 20);
    gr_test_loop_close(&loop);
}

/* Before HELLO: one small HELLO (a header announcing more is refused at
 * once), a cap of their own, and they never take the slots of real clients
 * (before: 4,100 silent sockets locked clients out). */
static void test_preauth_bounded(void **st) {
    static const char *const extra[] = {
        "--max-preauth-connections", "16", "--max-connections", "8", "--handshake-timeout-ms", "3000", NULL};
    start(0, extra);
    int port = cl.silos[0].port;
    int fd = gr_test_raw_connect(port);
    uint8_t hdr[16] = {0, 0, 0x10, 0x0c, 0x47, 0x52, GR__FRAME_HELLO}; /* a 4 KiB HELLO */
    gr_test_send_all(fd, hdr, sizeof hdr);
    int closed;
    assert_int_equal(gr_test_read_until(fd, GR__FRAME_GOAWAY, &closed), GR_ETOOBIG);
    close(fd);
    int idle[40];
    for (int i = 0; i < 40; i++)
        idle[i] = gr_test_raw_connect(port);
    usleep(200000);
    /* A real client still gets in (the 16 waiting slots are full). */
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    uv_loop_t loop;
    uv_loop_init(&loop);
    gr_client_t *c = gr_h_client(&cl, &loop, addr);
    gr_test_reply_t r = {0};
    gr_ref_t ref = {"Counter", "preauth", 7};
    uint64_t end = gr_h_now_ms() + 8000;
    do {
        memset(&r, 0, sizeof r);
        assert_int_equal(gr_client_call(c, &ref, "incr", NULL, 0, 3000, gr_test_on_reply, &r), 0);
        gr_test_run_until(&loop, &r.done, 5000);
    } while (r.status != 0 && gr_err_retryable(r.status) && gr_h_now_ms() < end);
    assert_int_equal(r.status, 0);
    for (int i = 0; i < 40; i++)
        close(idle[i]);
    gr_client_close(c, NULL, NULL);
    gr_test_run_for(&loop, 20);
    gr_test_loop_close(&loop);
}

/* A frame that stays incomplete closes its connection after
 * --frame-timeout-ms (before: 300 partial 1 MiB frames held for 15 s+). */
static void test_partial_frame_deadline(void **st) {
    static const char *const extra[] = {"--frame-timeout-ms", "500", NULL};
    start(0, extra);
    int fd;
    assert_int_equal(raw_hello(cl.silos[0].port, GR__ROLE_CLIENT, "s3cret", &fd), 0);
    uint8_t part[32] = {0, 1, 0x86, 0xac, 0x47, 0x52, GR__FRAME_REQUEST}; /* announces ~100 kB */
    gr_test_send_all(fd, part, sizeof part);
    uint64_t t0 = gr_h_now_ms();
    assert_true(gr_test_peer_closed(fd));
    uint64_t took = gr_h_now_ms() - t0;
    close(fd);
    print_message("partial frame closed after %llu ms\n", (unsigned long long)took);
    assert_true(took < 3000);
}

/* One connection queues large arguments behind a slow call: the silo stops
 * reading it at --max-conn-bytes, so what it holds stays bounded (before:
 * 1,000 one-MiB arguments took 1 GB), and every call is answered after. */
static long metric(int http_port, const char *name) {
    static char body[1 << 16];
    if (gr_test_http_get(http_port, "/metrics", body, sizeof body) != 200) return -1;
    char line[160];
    snprintf(line, sizeof line, "\n%s ", name); /* the sample, not its # HELP line */
    const char *p = strstr(body, line);
    return p ? atol(p + strlen(line)) : -1;
}

static void test_connection_memory_budget(void **st) {
    int hp = gr_test_free_port();
    char http[32];
    snprintf(http, sizeof http, "127.0.0.1:%d", hp);
    const char *const extra[] = {"--max-conn-bytes", "2228224", "--http", http, NULL};
    start(0, extra);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", cl.silos[0].port);
    uv_loop_t loop;
    uv_loop_init(&loop);
    gr_client_t *c = gr_h_client(&cl, &loop, addr);
    gr_test_reply_t slow = {0}, r[12];
    memset(r, 0, sizeof r);
    gr_ref_t ref = {"Counter", "budget", 6};
    assert_int_equal(gr_client_call(c, &ref, "sleep", "1500", 4, 20000, gr_test_on_reply, &slow), 0);
    static uint8_t big[1 << 20];
    memset(big, 'x', sizeof big);
    for (int i = 0; i < 12; i++)
        assert_int_equal(gr_client_call(c, &ref, "get", big, sizeof big, 20000, gr_test_on_reply, &r[i]), 0);
    long peak = 0;
    for (int k = 0; k < 10; k++) {
        gr_test_run_for(&loop, 100);
        long v = metric(hp, "granary_request_bytes_buffered");
        if (v > peak) peak = v;
    }
    print_message("request bytes buffered at most %ld while the slow call ran\n", peak);
    assert_true(peak > 0);
    assert_true(peak <= 2228224 + 1114112); /* the budget, plus the frame that crossed it */
    assert_true(gr_test_run_until(&loop, &slow.done, 10000));
    for (int i = 0; i < 12; i++) {
        assert_true(gr_test_run_until(&loop, &r[i].done, 10000));
        assert_int_equal(r[i].status, 0);
    }
    gr_client_close(c, NULL, NULL);
    gr_test_run_for(&loop, 20);
    gr_test_loop_close(&loop);
}

/* One-way requests hold the same budget as calls while they wait to run
 * (before: they were not counted at all, so a one-way flood was unbounded). */
static void test_oneway_in_memory_budget(void **st) {
    int hp = gr_test_free_port();
    char http[32];
    snprintf(http, sizeof http, "127.0.0.1:%d", hp);
    const char *const extra[] = {"--max-conn-bytes", "2228224", "--http", http, NULL};
    start(0, extra);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", cl.silos[0].port);
    uv_loop_t loop;
    uv_loop_init(&loop);
    gr_client_t *c = gr_h_client(&cl, &loop, addr);
    gr_test_reply_t slow = {0}, after = {0};
    gr_ref_t ref = {"Counter", "oneway-budget", 13};
    assert_int_equal(gr_client_call(c, &ref, "sleep", "1500", 4, 20000, gr_test_on_reply, &slow), 0);
    static uint8_t big[1 << 20];
    memset(big, 'x', sizeof big);
    for (int i = 0; i < 12; i++)
        assert_int_equal(
            gr__client_call_flags(c, &ref, "get", big, sizeof big, 20000, GR__FRAME_ONEWAY, 0, NULL, NULL),
            0);
    long peak = 0;
    for (int k = 0; k < 10; k++) {
        gr_test_run_for(&loop, 100);
        long v = metric(hp, "granary_request_bytes_buffered");
        if (v > peak) peak = v;
    }
    print_message("request bytes buffered at most %ld with 12 one-way 1 MiB requests queued\n", peak);
    assert_true(peak > (1L << 20));         /* counted */
    assert_true(peak <= 2228224 + 1114112); /* and bounded by the budget */
    assert_true(gr_test_run_until(&loop, &slow.done, 10000));
    assert_int_equal(slow.status, 0);
    assert_int_equal(gr_client_call(c, &ref, "incr", NULL, 0, 20000, gr_test_on_reply, &after), 0);
    assert_true(gr_test_run_until(&loop, &after.done, 15000)); /* the one-ways ran, then this */
    assert_int_equal(after.status, 0);
    assert_int_equal(metric(hp, "granary_request_bytes_buffered"), 0);
    gr_client_close(c, NULL, NULL);
    gr_test_run_for(&loop, 20);
    gr_test_loop_close(&loop);
}

/* Rotating the secrets with no refused handshake: each silo accepts a
 * second client secret and a second silo secret (never sending them), so a
 * silo still on the old secrets and one already on the new ones link both
 * ways, and clients with either client secret get in; anything else is
 * still refused, and an accepted silo secret a client holds is a
 * configuration error. */
static void test_secret_rotation(void **st) {
    static const char *const old_side[] = {"--accept-silo-secret", "n3w-silo", "--accept-secret",
                                           "n3w-client", NULL};
    static const char *const new_side[] = {"--silo-secret",   "n3w-silo", "--accept-silo-secret",
                                           "s1lo-s3cret",     "--secret", "n3w-client",
                                           "--accept-secret", "s3cret",   NULL};
    start(0, old_side);
    start(1, new_side);
    assert_int_equal(gr_h_wait_active(&cl, NULL, 2, 10000), 0);
    for (int i = 0; i < 2; i++) {
        int port = cl.silos[i].port;
        assert_int_equal(raw_hello(port, GR__ROLE_CLIENT, "s3cret", NULL), 0);
        assert_int_equal(raw_hello(port, GR__ROLE_CLIENT, "n3w-client", NULL), 0);
        assert_int_equal(raw_hello(port, GR__ROLE_CLIENT, "other", NULL), GR_EAUTH);
        assert_int_equal(raw_hello(port, GR__ROLE_SILO, "s1lo-s3cret", NULL), 0);
        assert_int_equal(raw_hello(port, GR__ROLE_SILO, "n3w-silo", NULL), 0);
        assert_int_equal(raw_hello(port, GR__ROLE_SILO, "n3w-client", NULL), GR_EAUTH);
        assert_int_equal(raw_hello(port, GR__ROLE_SILO, "s3cret", NULL), GR_EAUTH);
    }
    /* Forwarded calls both ways: HashCounter grains live on their ring owner. */
    uv_loop_t loop;
    uv_loop_init(&loop);
    for (int via = 0; via < 2; via++) {
        char addr[64];
        snprintf(addr, sizeof addr, "127.0.0.1:%d", cl.silos[via].port);
        gr_client_t *c = gr_h_client(&cl, &loop, addr);
        for (int i = 0; i < 8; i++) {
            char key[24];
            snprintf(key, sizeof key, "rot-%d-%d", via, i);
            gr_ref_t ref = {"HashCounter", key, strlen(key)};
            gr_test_reply_t r;
            uint64_t end = gr_h_now_ms() + 5000;
            do {
                memset(&r, 0, sizeof r);
                assert_int_equal(gr_client_call(c, &ref, "incr", NULL, 0, 3000, gr_test_on_reply, &r), 0);
                gr_test_run_until(&loop, &r.done, 6000);
            } while (r.status != 0 && gr_err_retryable(r.status) && gr_h_now_ms() < end);
            if (r.status != 0) fail_msg("via silo %d, %s: %s %s", via, key, gr_err_name(r.status), r.reply);
        }
        gr_client_close(c, NULL, NULL);
    }
    gr_test_run_for(&loop, 20);
    gr_test_loop_close(&loop);
    assert_int_equal(gr_h_count_active(&cl), 2); /* nobody was refused into leaving */
    /* A silo secret that clients hold cannot be accepted. */
    static const char *const bad[] = {"--accept-silo-secret", "s3cret", NULL};
    cl.silos[2].extra = bad;
    gr_h_start_silo(&cl, 2, NULL);
    assert_int_equal(gr_test_wait(cl.silos[2].pid, 5000), 2);
    cl.silos[2].pid = 0;
}

/* GET with extra header lines; returns the status, the whole answer in resp. */
static int http_get(int port, const char *path, const char *headers, char *resp, size_t size) {
    int fd = gr_test_raw_connect(port);
    char req[1024];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%sConnection: close\r\n\r\n",
                     path, headers);
    gr_test_send_all(fd, req, (size_t)n);
    size_t len = 0;
    ssize_t k;
    while (len < size - 1 && (k = read(fd, resp + len, size - 1 - len)) > 0)
        len += (size_t)k;
    close(fd);
    resp[len] = '\0';
    int status = -1;
    return sscanf(resp, "HTTP/1.%*d %d", &status) == 1 ? status : -1;
}

/* Two silos whose silo secrets differ (a misconfigured pod): each refuses
 * the other's handshake. Neither reports ready (/readyz says who refuses
 * and what to check), and a client's call that needs the other silo gets a
 * retryable error, not the GR_EAUTH that would blame its own credentials. */
static void test_secret_quarrel_not_ready(void **st) {
    int hp[2] = {gr_test_free_port(), gr_test_free_port()};
    char http[2][32];
    for (int i = 0; i < 2; i++)
        snprintf(http[i], sizeof http[i], "127.0.0.1:%d", hp[i]);
    const char *const extra0[] = {"--http", http[0], NULL};
    const char *const extra1[] = {"--http", http[1], "--silo-secret", "an0ther-s1lo", NULL};
    start(0, extra0);
    start(1, extra1);
    assert_int_equal(gr_h_wait_active(&cl, NULL, 2, 10000), 0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    int saw_eauth = 0, failed = 0;
    for (int via = 0; via < 2; via++) {
        char addr[64];
        snprintf(addr, sizeof addr, "127.0.0.1:%d", cl.silos[via].port);
        gr_client_t *c = gr_h_client(&cl, &loop, addr);
        for (int i = 0; i < 16; i++) { /* HashCounter: about half live on the other silo */
            char key[24];
            snprintf(key, sizeof key, "q-%d-%d", via, i);
            gr_ref_t ref = {"HashCounter", key, strlen(key)};
            gr_test_reply_t r = {0};
            assert_int_equal(gr_client_call(c, &ref, "incr", NULL, 0, 3000, gr_test_on_reply, &r), 0);
            assert_true(gr_test_run_until(&loop, &r.done, 6000));
            if (r.status == GR_EAUTH) saw_eauth++;
            if (r.status != 0) {
                failed++;
                assert_true(gr_err_retryable(r.status));
            }
        }
        gr_client_close(c, NULL, NULL);
    }
    gr_test_run_for(&loop, 20);
    gr_test_loop_close(&loop);
    assert_int_equal(saw_eauth, 0);
    assert_true(failed > 0); /* the quarrel is real: calls that needed the other silo failed */
    static char resp[8192];
    for (int i = 0; i < 2; i++) {
        assert_int_equal(http_get(hp[i], "/readyz", "", resp, sizeof resp), 503);
        if (!strstr(resp, "refuses this silo's handshake")) fail_msg("silo %d /readyz: %s", i, resp);
    }
}

/* Probes answer with every HTTP slot held by idle sockets (before: 64 idle
 * connections silenced /healthz for 15 s); the dashboard and /api/ need the
 * token; answers carry nosniff; /api/call is never open to anonymous callers
 * on a cluster with a secret. */
static void test_http_probes_and_token(void **st) {
    int hp = gr_test_free_port(), hp2 = gr_test_free_port();
    char http[32], http2[32];
    snprintf(http, sizeof http, "127.0.0.1:%d", hp);
    snprintf(http2, sizeof http2, "127.0.0.1:%d", hp2);
    const char *const extra[] = {"--http", http, "--http-token", "t0ken", NULL};
    const char *const extra2[] = {"--http", http2, NULL};
    start(0, extra);
    start(1, extra2);
    int idle[80];
    for (int i = 0; i < 80; i++)
        idle[i] = gr_test_raw_connect(hp);
    usleep(100000);
    static char resp[1 << 16];
    uint64_t t0 = gr_h_now_ms();
    assert_int_equal(http_get(hp, "/healthz", "", resp, sizeof resp), 200);
    uint64_t took = gr_h_now_ms() - t0;
    print_message("/healthz with 80 idle HTTP connections open: %llu ms\n", (unsigned long long)took);
    assert_true(took < 2000);
    assert_non_null(strstr(resp, "X-Content-Type-Options: nosniff"));
    for (int i = 0; i < 80; i++)
        close(idle[i]);
    int ready = http_get(hp, "/readyz", "", resp, sizeof resp);
    assert_true(ready == 200 || ready == 503);
    assert_int_equal(http_get(hp, "/metrics", "", resp, sizeof resp), 200);
    assert_int_equal(http_get(hp, "/api/silo", "", resp, sizeof resp), 401);
    assert_int_equal(http_get(hp, "/", "", resp, sizeof resp), 401);
    assert_int_equal(http_get(hp, "/api/silo", "Authorization: Bearer wrong\r\n", resp, sizeof resp), 401);
    assert_int_equal(http_get(hp, "/api/silo", "Authorization: Bearer t0ken\r\n", resp, sizeof resp), 200);
    assert_int_equal(http_get(hp, "/?token=t0ken", "", resp, sizeof resp), 200);
    assert_non_null(strstr(resp, "Set-Cookie: granary_token=t0ken; HttpOnly; SameSite=Strict"));
    assert_int_equal(http_get(hp, "/api/silo", "Cookie: a=b; granary_token=t0ken\r\n", resp, sizeof resp),
                     200);
    /* No token, but the cluster has a secret: no grain calls over HTTP. */
    assert_int_equal(http_get(hp2, "/api/call?grain=Counter/x&method=get", "", resp, sizeof resp), 403);
    assert_int_equal(http_get(hp2, "/api/silo", "", resp, sizeof resp), 200);
}

/* The HTTP port against the review's attacks (issue 16): thousands of
 * pipelined requests answered at once (no recursion: the silo lives), a
 * peer that pipelines and never reads (bounded memory), sockets dribbling
 * half a request (the probes still get in), and a half-close (the answer
 * still comes). */
static void test_http_pipelining_attacks(void **st) {
    int hp = gr_test_free_port();
    char http[32];
    snprintf(http, sizeof http, "127.0.0.1:%d", hp);
    const char *const extra[] = {"--http", http, "--http-token", "t0ken", NULL};
    start(0, extra);
    static const char one[] = "GET /v1/grains/Counter/x HTTP/1.1\r\n\r\n"; /* 401: no token */
    enum { N = 4000 };
    gr__buf_t b;
    gr__buf_init(&b);
    for (int i = 0; i < N; i++)
        gr__buf_append(&b, one, sizeof one - 1);
    int fd = gr_test_raw_connect(hp);
    gr_test_send_all(fd, b.data, b.len);
    gr__buf_free(&b);
    static char buf[8 << 20]; /* all the answers (about 250 bytes each) */
    size_t seen = 0, have = 0, next = 0;
    static const char status[] = "HTTP/1.1 401";
    while (seen < N && have < sizeof buf - 1) {
        ssize_t k = read(fd, buf + have, sizeof buf - 1 - have);
        if (k <= 0) break;
        have += (size_t)k;
        buf[have] = '\0';
        /* Count each status once: search on from after the last one found. */
        for (char *p; (p = strstr(buf + next, status)) != NULL; next = (size_t)(p - buf) + sizeof status - 1)
            seen++;
    }
    close(fd);
    print_message("%zu of %d pipelined requests answered\n", seen, N);
    assert_int_equal(seen, N);
    assert_int_equal(gr_test_wait(cl.silos[0].pid, 0), -1);
    /* Pipelining large answers and never reading them. */
    gr__buf_init(&b);
    for (int i = 0; i < 3000; i++)
        gr__buf_printf(&b, "GET /metrics HTTP/1.1\r\n\r\n");
    int lazy = gr_test_raw_connect(hp);
    gr_test_send_all(lazy, b.data, b.len);
    gr__buf_free(&b);
    usleep(500000);
    long rss = metric(hp, "process_resident_memory_bytes");
    print_message("resident memory with a peer not reading 3000 pipelined /metrics answers: %ld bytes\n",
                  rss);
    assert_true(rss > 0 && rss < 120L * 1024 * 1024);
    close(lazy);
    /* 70 sockets each holding half a request: a probe still gets in. */
    int dribble[70];
    for (int i = 0; i < 70; i++) {
        dribble[i] = gr_test_raw_connect(hp);
        gr_test_send_all(dribble[i], "GET /healthz HTTP/1.1\r\nX-Slow: ", 31);
    }
    usleep(100000);
    static char resp[4096];
    assert_int_equal(http_get(hp, "/healthz", "", resp, sizeof resp), 200);
    for (int i = 0; i < 70; i++)
        close(dribble[i]);
    /* A half-close after the request: the answer is still written. */
    fd = gr_test_raw_connect(hp);
    static const char req[] = "GET /healthz HTTP/1.1\r\n\r\n";
    gr_test_send_all(fd, req, sizeof req - 1);
    shutdown(fd, SHUT_WR);
    size_t len = 0;
    ssize_t k;
    while (len < sizeof resp - 1 && (k = read(fd, resp + len, sizeof resp - 1 - len)) > 0)
        len += (size_t)k;
    resp[len] = '\0';
    close(fd);
    assert_non_null(strstr(resp, "HTTP/1.1 200"));
}

/* A second process with a live silo's id is refused (exit 2) and never
 * evicts it (before: it joined as active and the real one was declared
 * dead and exited 3). */
static void test_duplicate_silo_id(void **st) {
    static const char *const extra[] = {"--silo-id", "dup-id-1", NULL};
    start(0, extra);
    assert_int_equal(gr_h_wait_active(&cl, NULL, 1, 10000), 0);
    /* It may exit before its port can be seen open: only its exit counts. */
    cl.silos[1].extra = extra;
    gr_h_start_silo(&cl, 1, NULL);
    int st1 = gr_test_wait(cl.silos[1].pid, 10000);
    assert_int_equal(st1, 2);
    cl.silos[1].pid = 0;
    usleep(1500000);                                        /* more than a lease */
    assert_int_equal(gr_test_wait(cl.silos[0].pid, 0), -1); /* still running */
    assert_int_equal(gr_h_count_active(&cl), 1);
}

/* A reminder for a class that does not exist (or cannot receive reminders)
 * is refused with a clear error (before: accepted, then failing every poll
 * without a word). */
static void test_reminder_unknown_class(void **st) {
    start(0, NULL);
    assert_int_equal(gr_h_wait_active(&cl, NULL, 1, 10000), 0);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", cl.silos[0].port);
    uv_loop_t loop;
    uv_loop_init(&loop);
    gr_client_t *c = gr_h_client(&cl, &loop, addr);
    gr_test_reply_t r = {0};
    gr_ref_t ref = {"$silo", "NoSuchClass/x", 13};
    assert_int_equal(
        gr_client_call(c, &ref, "reminder_add", "tick 1000 1000", 14, 5000, gr_test_on_reply, &r), 0);
    gr_test_run_until(&loop, &r.done, 8000);
    assert_int_equal(r.status, GR_ENOCLASS);
    assert_non_null(strstr(r.reply, "no grain class 'NoSuchClass'"));
    memset(&r, 0, sizeof r);
    gr_ref_t ok = {"$silo", "Counter/x", 9};
    assert_int_equal(gr_client_call(c, &ok, "reminder_add", "tick 1000 1000", 14, 5000, gr_test_on_reply, &r),
                     0);
    gr_test_run_until(&loop, &r.done, 8000);
    assert_int_equal(r.status, 0);
    gr_client_close(c, NULL, NULL);
    gr_test_run_for(&loop, 20);
    gr_test_loop_close(&loop);
}

/* ---- TLS (issue 13, item 1) ---- */

static char certs[512]; /* made once per run by tests/support/make_certs.sh */

static const char *cert_path(const char *name) {
    static char p[8][700];
    static int k;
    k = (k + 1) % 8;
    snprintf(p[k], sizeof p[k], "%s/%s", certs, name);
    return p[k];
}

static void need_certs(void) {
    if (!certs[0] && gr_h_make_certs(certs, sizeof certs) != 0) fail_msg("cannot make certificates");
}

/* One call through a fresh TLS client; its status (reply in r). */
static int tls_call(int port, const char *ca, const char *cert, const char *key, const char *method,
                    gr_test_reply_t *r) {
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    gr_client_options_t o;
    gr_client_options_init(&o);
    o.silos = addr;
    o.cluster = cl.name;
    o.secret = cl.secret;
    o.tls_ca = ca;
    o.tls_cert = cert;
    o.tls_key = key;
    uv_loop_t loop;
    uv_loop_init(&loop);
    gr_client_t *c;
    assert_int_equal(gr_client_new(&loop, &o, &c), 0);
    memset(r, 0, sizeof *r);
    gr_ref_t ref = {"Counter", "tls", 3};
    assert_int_equal(gr_client_call(c, &ref, method, NULL, 0, 3000, gr_test_on_reply, r), 0);
    gr_test_run_until(&loop, &r->done, 6000);
    gr_client_close(c, NULL, NULL);
    gr_test_run_for(&loop, 20);
    gr_test_loop_close(&loop);
    return r->status;
}

/* A blocking TLS connection with OpenSSL itself (the attacker's side), with
 * the client certificate: 0 and *ssl_out, or -1 if the handshake failed. */
static int raw_tls(int port, SSL_CTX *ctx, SSL **ssl_out, int *fd_out) {
    int fd = gr_test_raw_connect(port);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) {
        SSL_free(ssl);
        close(fd);
        return -1;
    }
    *ssl_out = ssl;
    *fd_out = fd;
    return 0;
}

static SSL_CTX *attacker_ctx(const char *cert, const char *key) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(ctx);
    if (cert) {
        assert_int_equal(SSL_CTX_use_certificate_chain_file(ctx, cert_path(cert)), 1);
        assert_int_equal(SSL_CTX_use_PrivateKey_file(ctx, cert_path(key), SSL_FILETYPE_PEM), 1);
    }
    return ctx;
}

/* Mutual TLS on a real silo: a client certificate from the CA gets in;
 * plaintext, no certificate, a rogue CA's certificate and a wrong server
 * CA are refused with GR_EAUTH (or a closed connection) and counted under
 * reason "tls"; then the HELLO decoder is fuzzed inside TLS (random and
 * almost-valid frames from a client with a good certificate) and the silo
 * stays up, bounded, and answers. */
static void test_tls_refusals_and_fuzz(void **st) {
    need_certs();
    int hp = gr_test_free_port();
    char http[32];
    snprintf(http, sizeof http, "127.0.0.1:%d", hp);
    const char *const extra[] = {"--tls-cert",
                                 cert_path("silo.crt"),
                                 "--tls-key",
                                 cert_path("silo.key"),
                                 "--tls-ca",
                                 cert_path("ca.crt"),
                                 "--tls-client-auth",
                                 "--http",
                                 http,
                                 "--handshake-timeout-ms",
                                 "1000",
                                 NULL};
    start(0, extra);
    int port = cl.silos[0].port;
    gr_test_reply_t r;
    assert_int_equal(
        tls_call(port, cert_path("ca.crt"), cert_path("client.crt"), cert_path("client.key"), "incr", &r), 0);
    assert_int_equal(tls_call(port, cert_path("ca.crt"), NULL, NULL, "get", &r), GR_EAUTH);
    print_message("no client certificate: %s\n", r.reply);
    assert_int_equal(tls_call(port, cert_path("ca.crt"), cert_path("rogue-client.crt"),
                              cert_path("rogue-client.key"), "get", &r),
                     GR_EAUTH);
    print_message("rogue CA's certificate: %s\n", r.reply);
    assert_int_equal(
        tls_call(port, cert_path("ca2.crt"), cert_path("client.crt"), cert_path("client.key"), "get", &r),
        GR_EAUTH);
    assert_non_null(strstr(r.reply, "certificate refused"));
    /* Plaintext HELLO: the silo answers nothing a plaintext client can read. */
    assert_true(raw_hello(port, GR__ROLE_CLIENT, "s3cret", NULL) < 0);
    usleep(100000);
    long refused = metric(hp, "granary_handshakes_refused_by_reason_total{reason=\"tls\"}");
    print_message("refused for TLS so far: %ld\n", refused);
    assert_true(refused >= 3);
    assert_true(metric(hp, "granary_tls_certificate_expiry_seconds") > 29L * 86400);

    /* Fuzz inside TLS. */
    SSL_CTX *ctx = attacker_ctx("client.crt", "client.key");
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    int sessions = 0;
    for (int i = 0; i < 200; i++) {
        SSL *ssl = NULL;
        int fd = -1;
        if (raw_tls(port, ctx, &ssl, &fd) != 0) fail_msg("TLS session %d did not open", i);
        sessions++;
        uint8_t junk[1500];
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        size_t n = 1 + (size_t)(seed % sizeof junk);
        for (size_t k = 0; k < n; k++) {
            seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
            junk[k] = (uint8_t)seed;
        }
        if (i % 2 == 0 && n >= 16) { /* a HELLO header with garbage fields */
            gr__buf_t b;
            gr__buf_init(&b);
            gr__frame_encode_hello(&b, GR_PROTOCOL_VERSION, (uint8_t)(i % 3), cl.name, "s3cret", 6, "fuzz");
            size_t keep = b.len < n ? b.len : n;
            memcpy(junk, b.data, keep > 12 ? 12 : keep);
            if (i % 4 == 0) memcpy(junk, b.data, keep), junk[keep / 2] ^= (uint8_t)(1u << (i % 8));
            gr__buf_free(&b);
        }
        SSL_write(ssl, junk, (int)n);
        char sink[256];
        struct timeval tv = {0, 300000};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        while (SSL_read(ssl, sink, sizeof sink) > 0) {
        }
        SSL_free(ssl);
        close(fd);
    }
    SSL_CTX_free(ctx);
    print_message("%d fuzzed TLS sessions\n", sessions);
    assert_int_equal(gr_test_wait(cl.silos[0].pid, 0), -1); /* still running */
    assert_true(metric(hp, "process_resident_memory_bytes") < 200L * 1024 * 1024);
    assert_int_equal(
        tls_call(port, cert_path("ca.crt"), cert_path("client.crt"), cert_path("client.key"), "get", &r), 0);
    assert_string_equal(r.reply, "1");
}

static void copy_file(const char *from, const char *to) {
    char cmd[1600];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", from, to);
    assert_int_equal(system(cmd), 0);
}

/* cert-manager rotates the files in place and the silo gets SIGHUP: new
 * connections see the new certificate, the open one keeps working, and a
 * reload of broken files keeps the last good ones (counted in /metrics). */
static void test_tls_reload_on_sighup(void **st) {
    need_certs();
    char crt[700], key[700], ca[700];
    snprintf(crt, sizeof crt, "%s/live.crt", certs);
    snprintf(key, sizeof key, "%s/live.key", certs);
    snprintf(ca, sizeof ca, "%s/live-ca.crt", certs);
    copy_file(cert_path("silo.crt"), crt);
    copy_file(cert_path("silo.key"), key);
    copy_file(cert_path("ca.crt"), ca);
    int hp = gr_test_free_port();
    char http[32];
    snprintf(http, sizeof http, "127.0.0.1:%d", hp);
    const char *const extra[] = {"--tls-cert",        crt,      "--tls-key", key, "--tls-ca", ca,
                                 "--tls-client-auth", "--http", http,        NULL};
    start(0, extra);
    int port = cl.silos[0].port;
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    /* The connection that stays open across the reload. */
    gr_client_options_t o;
    gr_client_options_init(&o);
    o.silos = addr;
    o.cluster = cl.name;
    o.secret = cl.secret;
    o.tls_ca = cert_path("ca.crt");
    o.tls_cert = cert_path("client.crt");
    o.tls_key = cert_path("client.key");
    uv_loop_t loop;
    uv_loop_init(&loop);
    gr_client_t *c;
    assert_int_equal(gr_client_new(&loop, &o, &c), 0);
    gr_test_reply_t r = {0};
    gr_ref_t ref = {"Counter", "reload", 6};
    assert_int_equal(gr_client_call(c, &ref, "incr", NULL, 0, 3000, gr_test_on_reply, &r), 0);
    assert_true(gr_test_run_until(&loop, &r.done, 6000));
    assert_int_equal(r.status, 0);
    /* Rotate: a certificate from CA 2, and clients of either CA trusted. */
    copy_file(cert_path("silo2.crt"), crt);
    copy_file(cert_path("silo2.key"), key);
    copy_file(cert_path("both-ca.crt"), ca);
    kill(cl.silos[0].pid, SIGHUP);
    uint64_t end = gr_h_now_ms() + 5000;
    while (metric(hp, "granary_tls_reloads_total{result=\"ok\"}") != 1 && gr_h_now_ms() < end)
        usleep(50000);
    assert_int_equal(metric(hp, "granary_tls_reloads_total{result=\"ok\"}"), 1);
    memset(&r, 0, sizeof r);
    assert_int_equal(gr_client_call(c, &ref, "incr", NULL, 0, 3000, gr_test_on_reply, &r), 0);
    assert_true(gr_test_run_until(&loop, &r.done, 6000));
    assert_int_equal(r.status, 0); /* the open session was not dropped */
    assert_string_equal(r.reply, "2");
    gr_test_reply_t r2;
    assert_int_equal(
        tls_call(port, cert_path("ca.crt"), cert_path("client.crt"), cert_path("client.key"), "get", &r2),
        GR_EAUTH); /* new sessions get the new certificate, which CA 1 did not sign */
    assert_int_equal(
        tls_call(port, cert_path("ca2.crt"), cert_path("client2.crt"), cert_path("client2.key"), "get", &r2),
        0);
    assert_int_equal(
        tls_call(port, cert_path("ca2.crt"), cert_path("client.crt"), cert_path("client.key"), "get", &r2),
        0); /* old client certificates still trusted through the bundle */
    /* Broken files: the reload fails, the last good configuration stays. */
    FILE *f = fopen(key, "w");
    assert_non_null(f);
    fputs("not a key\n", f);
    fclose(f);
    kill(cl.silos[0].pid, SIGHUP);
    end = gr_h_now_ms() + 5000;
    while (metric(hp, "granary_tls_reloads_total{result=\"failed\"}") != 1 && gr_h_now_ms() < end)
        usleep(50000);
    assert_int_equal(metric(hp, "granary_tls_reloads_total{result=\"failed\"}"), 1);
    assert_int_equal(
        tls_call(port, cert_path("ca2.crt"), cert_path("client2.crt"), cert_path("client2.key"), "get", &r2),
        0);
    assert_string_equal(r2.reply, "0"); /* Counter/tls, never incremented here */
    gr_client_close(c, NULL, NULL);
    gr_test_run_for(&loop, 20);
    gr_test_loop_close(&loop);
}

int main(void) {
    if (gr_test_process_setup("test_security.log", log_path, sizeof log_path) != 0) return 1;
    if (getenv("GR_TEST_FILTER")) cmocka_set_test_filter(getenv("GR_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_silo_role_needs_silo_secret, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_preauth_bounded, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_partial_frame_deadline, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_connection_memory_budget, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_http_probes_and_token, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_duplicate_silo_id, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_http_pipelining_attacks, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_reminder_unknown_class, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_oneway_in_memory_budget, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_secret_rotation, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_secret_quarrel_not_ready, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_tls_refusals_and_fuzz, new_cluster, kill_all),
        cmocka_unit_test_setup_teardown(test_tls_reload_on_sighup, new_cluster, kill_all),
    };
    int rc = cmocka_run_group_tests_name("silo.security", tests, NULL, NULL);
    if (certs[0]) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", certs);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", certs);
    }
    if (rc) gr_test_print_tail(log_path, 60);
    return rc;
}
