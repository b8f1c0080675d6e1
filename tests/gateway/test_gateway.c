/* tests/gateway/test_gateway.c - the client gateway (src/gateway/gateway.c)
 * in one process: a gateway on a runtime with memory storage, and C
 * clients on the same loop over loopback TCP. Handshakes accepted and
 * refused by reason (cluster, client secret, silo secret for the silo
 * role), `$` classes refused without a system_call and passed with the
 * peer's role when there is one, 4096 calls pipelined on one connection
 * (under the default cap and over a cap of 64), and the connection cap. */
#include <stdio.h>

#include "base/base.h"
#include "client/client_internal.h"
#include "gateway/gateway.h"
#include "wire/frame.h"
#include "granary/client.h"
#include "granary/grain.h"
#include "granary/storage.h"
#include "support.h"

static void m_echo(gr_grain_t *g, gr_msg_t *m, const uint8_t *a, size_t n) { gr_reply(m, a, n); }
static const gr_method_t methods[] = {{"echo", m_echo}, {NULL, NULL}};
static const gr_class_t echo_class = {.name = "Echo", .methods = methods};

static int sys_calls, sys_from_silo;
static void sys_call(void *ud, const char *cls, const char *method, const char *from_silo, const uint8_t *key,
                     size_t key_len, const uint8_t *arg, size_t arg_len, gr_call_cb done, void *done_ud) {
    sys_calls++;
    sys_from_silo = from_silo != NULL;
    done(done_ud, 0, GR__LIT("sys"));
}

typedef struct {
    uv_loop_t loop;
    gr_storage_t *storage;
    gr_runtime_t *rt;
    gr__gateway_t *gw;
    char addr[64];
} fx_t;

static void fx_open(fx_t *f, gr__gateway_opts_t *o) {
    static const gr_class_t *const classes[] = {&echo_class, NULL};
    gr_test_rt_open(&f->loop, &f->storage, &f->rt, NULL, classes);
    assert_int_equal(gr__gateway_new(&f->loop, f->rt, o, &f->gw), 0);
    char err[256];
    int port = gr_test_free_port();
    assert_int_equal(gr__gateway_listen(f->gw, "127.0.0.1", port, err, sizeof err), 0);
    snprintf(f->addr, sizeof f->addr, "127.0.0.1:%d", gr__gateway_port(f->gw));
}

static int closed;
static void on_closed(void *ud) { closed++; }

static void fx_close(fx_t *f) {
    closed = 0;
    gr__gateway_close(f->gw, on_closed, NULL);
    gr_test_run_for(&f->loop, 50);
    assert_int_equal(closed, 1);
    gr_test_rt_close(&f->loop, f->storage, f->rt);
}

static void opts_init(gr__gateway_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->cluster = "default";
    o->silo_id = "gw-test";
    o->max_connections = 16;
    o->max_inflight_per_conn = 64;
    o->max_frame_bytes = GR_FRAME_MAX_DEFAULT;
    o->handshake_timeout_ms = 2000;
}

static gr_client_t *client(fx_t *f, const char *cluster, const char *secret) {
    gr_client_options_t co;
    gr_client_options_init(&co);
    co.silos = f->addr;
    co.cluster = cluster;
    co.secret = secret;
    gr_client_t *c;
    assert_int_equal(gr_client_new(&f->loop, &co, &c), 0);
    return c;
}

static int call(fx_t *f, gr_client_t *c, const char *cls, gr_test_reply_t *r) {
    memset(r, 0, sizeof *r);
    gr_ref_t ref = {cls, "k", 1};
    assert_int_equal(gr_client_call(c, &ref, "echo", "hi", 2, 2000, gr_test_on_reply, r), 0);
    assert_true(gr_test_run_until(&f->loop, &r->done, 3000));
    return r->status;
}

static void close_client(fx_t *f, gr_client_t *c) {
    closed = 0;
    gr_client_close(c, on_closed, NULL);
    assert_true(gr_test_run_until(&f->loop, &closed, 2000));
}

static void test_handshakes(void **st) {
    gr__gateway_opts_t o;
    opts_init(&o);
    o.secret = "client-secret";
    o.silo_secret = "silo-secret";
    fx_t f;
    fx_open(&f, &o);
    gr_test_reply_t r;
    gr_client_t *ok = client(&f, "default", "client-secret");
    assert_int_equal(call(&f, ok, "Echo", &r), 0);
    assert_memory_equal(r.reply, "hi", 2);
    assert_string_equal(gr_client_silo(ok), "gw-test");
    close_client(&f, ok);

    gr_client_t *wrong_cluster = client(&f, "other", "client-secret");
    assert_int_equal(call(&f, wrong_cluster, "Echo", &r), GR_EAUTH);
    close_client(&f, wrong_cluster);
    gr_client_t *wrong_secret = client(&f, "default", "guess");
    assert_int_equal(call(&f, wrong_secret, "Echo", &r), GR_EAUTH);
    close_client(&f, wrong_secret);
    /* The silo role needs the silo secret: a client that knows only the
     * client secret cannot claim it. */
    gr_client_t *fake_silo = client(&f, "default", "client-secret");
    gr__client_set_role(fake_silo, GR__ROLE_SILO);
    assert_int_equal(call(&f, fake_silo, "Echo", &r), GR_EAUTH);
    close_client(&f, fake_silo);

    gr__gateway_stats_t s;
    gr__gateway_get_stats(f.gw, &s);
    assert_int_equal(s.refused_by[GR__REFUSE_CLUSTER], 1);
    assert_int_equal(s.refused_by[GR__REFUSE_CLIENT_SECRET], 1);
    assert_int_equal(s.refused_by[GR__REFUSE_SILO_SECRET], 1);
    assert_int_equal(s.handshakes_refused, 3);
    fx_close(&f);
}

static void test_system_classes(void **st) {
    gr__gateway_opts_t o;
    opts_init(&o);
    fx_t f;
    fx_open(&f, &o);
    gr_test_reply_t r;
    gr_client_t *c = client(&f, "default", NULL);
    assert_int_equal(call(&f, c, "$dir", &r), GR_ENOCLASS); /* no system_call: refused */
    close_client(&f, c);
    fx_close(&f);

    opts_init(&o);
    o.system_call = sys_call;
    fx_open(&f, &o);
    sys_calls = 0;
    c = client(&f, "default", NULL);
    assert_int_equal(call(&f, c, "$dir", &r), 0);
    assert_memory_equal(r.reply, "sys", 3);
    assert_int_equal(sys_calls, 1);
    assert_int_equal(sys_from_silo, 0); /* a client, not a silo */
    close_client(&f, c);
    gr_client_t *silo = client(&f, "default", NULL); /* no secrets: the silo role is open */
    gr__client_set_role(silo, GR__ROLE_SILO);
    assert_int_equal(call(&f, silo, "$dir", &r), 0);
    assert_int_equal(sys_from_silo, 1);
    close_client(&f, silo);
    fx_close(&f);
}

/* 4096 calls pipelined on one connection: under the default cap every one
 * succeeds; with a cap of 64 each call still ends, the ones over the cap
 * with the retryable GR_EOVERLOAD (docs/configuration.md, --max-inflight),
 * counted, and none is lost or answered twice. */
static void pipeline(uint32_t cap, int *ok_out, int *overloaded_out) {
    gr__gateway_opts_t o;
    opts_init(&o);
    o.max_inflight_per_conn = cap;
    fx_t f;
    fx_open(&f, &o);
    gr_client_t *c = client(&f, "default", NULL);
    enum { N = 4096 };
    static gr_test_reply_t r[N];
    static char keys[N][8];
    memset(r, 0, sizeof r);
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "%d", i % 97);
        gr_ref_t ref = {"Echo", keys[i], strlen(keys[i])};
        assert_int_equal(
            gr_client_call(c, &ref, "echo", keys[i], strlen(keys[i]), 10000, gr_test_on_reply, &r[i]), 0);
    }
    uint64_t deadline = gr_test_now_ms() + 10000;
    int done = 0;
    while (done < N && gr_test_now_ms() < deadline) {
        uv_run(&f.loop, UV_RUN_ONCE);
        done = 0;
        for (int i = 0; i < N; i++)
            done += r[i].done;
    }
    assert_int_equal(done, N);
    int ok = 0, over = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].done, 1); /* exactly once */
        if (r[i].status == GR_EOVERLOAD) {
            over++;
            continue;
        }
        assert_int_equal(r[i].status, 0);
        assert_int_equal(r[i].len, strlen(keys[i]));
        assert_memory_equal(r[i].reply, keys[i], r[i].len);
        ok++;
    }
    gr__gateway_stats_t s;
    gr__gateway_get_stats(f.gw, &s);
    assert_int_equal(s.overloaded, (uint64_t)over);
    assert_int_equal(s.inflight, 0);
    close_client(&f, c);
    fx_close(&f);
    *ok_out = ok;
    *overloaded_out = over;
}

static void test_4096_in_flight(void **st) {
    int ok, over;
    pipeline(10000, &ok, &over);
    assert_int_equal(ok, 4096);
    assert_int_equal(over, 0);
    pipeline(64, &ok, &over);
    assert_true(ok >= 64);
    assert_true(over > 0);
    assert_int_equal(ok + over, 4096);
}

static void test_connection_cap(void **st) {
    gr__gateway_opts_t o;
    opts_init(&o);
    o.max_connections = 2;
    fx_t f;
    fx_open(&f, &o);
    gr_test_reply_t r;
    gr_client_t *a = client(&f, "default", NULL), *b = client(&f, "default", NULL);
    assert_int_equal(call(&f, a, "Echo", &r), 0);
    assert_int_equal(call(&f, b, "Echo", &r), 0);
    gr_client_t *third = client(&f, "default", NULL);
    int st3 = call(&f, third, "Echo", &r);
    assert_true(st3 != 0 && gr_err_retryable(st3)); /* refused, and another silo may take it */
    gr__gateway_stats_t s;
    gr__gateway_get_stats(f.gw, &s);
    assert_true(s.connections_refused >= 1);
    close_client(&f, third);
    close_client(&f, a);
    gr_client_t *after = client(&f, "default", NULL); /* a slot is free again */
    assert_int_equal(call(&f, after, "Echo", &r), 0);
    close_client(&f, after);
    close_client(&f, b);
    fx_close(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshakes),
        cmocka_unit_test(test_system_classes),
        cmocka_unit_test(test_4096_in_flight),
        cmocka_unit_test(test_connection_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
