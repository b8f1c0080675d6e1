/* tests/silo/silo_fixture.c - the shared part of the silo process tests
 * (silo_fixture.h). */
#include "silo_fixture.h"

char log_path[1024];
char cluster[64];

int new_cluster(void **st) {
    static int n;
    snprintf(cluster, sizeof cluster, "t%d-%d", (int)getpid(), ++n);
    return 0;
}

/* Start a silo hosting the Counter example on 127.0.0.1:port in this case's
 * cluster; `extra` is a NULL-terminated list of more flags (or NULL). */
int start_silo(silo_t *s, int port, const char *const *extra) {
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

int run_cmd(const char *const argv[], uint64_t timeout_ms) {
    pid_t p = gr_test_spawn(argv, log_path);
    return p < 0 ? -1 : gr_test_wait(p, timeout_ms);
}

/* Run a command and capture its stdout (and with_stderr, its stderr too)
 * into out (NUL-terminated). */
int run_capture_fds(const char *const argv[], char *out, size_t out_size, int with_stderr) {
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

int run_capture(const char *const argv[], char *out, size_t out_size) {
    return run_capture_fds(argv, out, out_size, 0);
}

/* ---- a client driving calls from the test ---- */

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

gr_client_t *client_to(uv_loop_t *loop, int port) { return client_with(loop, port, NULL); }

int call_once(int port, const char *secret, const char *key, const char *method, res_t *r) {
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

void run_load(int port, int nkeys, int incrs, load_t *load) {
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
