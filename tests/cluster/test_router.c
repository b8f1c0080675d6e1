/* tests/cluster/test_router.c - the router and the directory protocol
 * (src/cluster/router.c, registry.c) in one process, without PostgreSQL: a
 * runtime whose calls are routed by views handed in by hand. Calls before
 * the first view wait for it; a grain this silo owns registers in its own
 * partition and runs here; `$dir` requests from peers register, look up,
 * unregister and claim, refusing silos that are not live members (forged
 * ids); a view change drops the partition entries of dead silos; a grain
 * owned by an unreachable peer fails with a retryable error, not a hang. */
#include <stdio.h>

#include "base/base.h"
#include "cluster/router.h"
#include "granary/grain.h"
#include "granary/storage.h"
#include "support.h"

static void m_echo(gr_grain_t *g, gr_msg_t *m, const uint8_t *a, size_t n) { gr_reply(m, a, n); }
static const gr_method_t methods[] = {{"echo", m_echo}, {NULL, NULL}};
static const gr_class_t echo_class = {.name = "Echo", .methods = methods};

typedef struct {
    uv_loop_t loop;
    gr_storage_t *storage;
    gr_runtime_t *rt;
    gr__router_t *router;
} fx_t;

static void fx_open(fx_t *f) {
    static const gr_class_t *const classes[] = {&echo_class, NULL};
    gr_test_rt_open(&f->loop, &f->storage, &f->rt, "A", classes);
    assert_int_equal(gr__router_new(&f->loop, f->rt, "A", "default", NULL, &f->router), 0);
}

static int closed;
static void on_closed(void *ud) { closed++; }

static void fx_close(fx_t *f) {
    closed = 0;
    gr__router_close(f->router, on_closed, NULL);
    gr_test_run_for(&f->loop, 50);
    assert_int_equal(closed, 1);
    gr_test_rt_close(&f->loop, f->storage, f->rt);
}

static void set_view(fx_t *f, int64_t version, const gr__member_t *members, size_t n) {
    gr__view_t v = {version, (gr__member_t *)members, n};
    gr__router_set_view(f->router, &v);
}

static gr__member_t member(const char *id, int port, gr__member_status_t st) {
    gr__member_t m;
    memset(&m, 0, sizeof m);
    snprintf(m.id, sizeof m.id, "%s", id);
    snprintf(m.address, sizeof m.address, "127.0.0.1");
    m.port = port;
    m.status = st;
    m.lease_ms = 1200;
    return m;
}

static void dir(fx_t *f, const char *method, const char *cls, const char *key, const char *silo,
                gr_test_reply_t *r) {
    uint8_t id[300];
    size_t cl = strlen(cls), kl = strlen(key);
    memcpy(id, cls, cl);
    id[cl] = 0;
    memcpy(id + cl + 1, key, kl);
    memset(r, 0, sizeof *r);
    gr__router_system_call(f->router, method, id, cl + 1 + kl, (const uint8_t *)silo, strlen(silo),
                           gr_test_on_reply, r);
    assert_true(gr_test_run_until(&f->loop, &r->done, 2000));
}

static void test_calls_wait_for_the_first_view(void **st) {
    fx_t f;
    fx_open(&f);
    gr_test_reply_t r = {0};
    gr_ref_t ref = {"Echo", "a", 1};
    assert_int_equal(gr_call(f.rt, &ref, "echo", "hi", 2, 2000, gr_test_on_reply, &r), 0);
    gr_test_run_for(&f.loop, 100);
    assert_false(r.done); /* no view: nowhere to place it yet */
    gr__member_t a = member("A", 7000, GR__MS_ACTIVE);
    set_view(&f, 1, &a, 1);
    assert_true(gr_test_run_until(&f.loop, &r.done, 2000));
    assert_int_equal(r.status, 0);
    assert_memory_equal(r.reply, "hi", 2);
    assert_string_equal(gr__router_owner(f.router, "Echo", (const uint8_t *)"a", 1), "A");
    gr__router_stats_t s;
    gr__router_get_stats(f.router, &s);
    assert_int_equal(s.partition_entries, 1); /* registered in its own partition */
    assert_int_equal(s.forwarded, 0);
    gr_test_reply_t l;
    dir(&f, "lookup", "Echo", "a", "B", &l); /* any peer may ask */
    assert_int_equal(l.status, 0);
    assert_int_equal(l.len, 1);
    assert_memory_equal(l.reply, "A", 1);
    fx_close(&f);
}

static void test_directory_requests(void **st) {
    fx_t f;
    fx_open(&f);
    gr__member_t ms[2] = {member("A", 7000, GR__MS_ACTIVE), member("B", 7001, GR__MS_ACTIVE)};
    set_view(&f, 1, ms, 2);
    gr_test_reply_t r;
    dir(&f, "register", "Echo", "x", "B", &r);
    assert_int_equal(r.status, 0);
    assert_memory_equal(r.reply, "B", 1);
    dir(&f, "register", "Echo", "x", "A", &r); /* B holds it and is alive: B wins */
    assert_int_equal(r.status, 0);
    assert_memory_equal(r.reply, "B", 1);
    dir(&f, "register", "Echo", "y", "forged", &r); /* not a member: refused, nothing stored */
    assert_int_equal(r.status, GR_ENOTHERE);
    dir(&f, "claimed", "Echo", "y", "forged", &r);
    assert_int_equal(r.status, GR_ENOTHERE);
    dir(&f, "lookup", "Echo", "y", "A", &r);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.len, 0);
    dir(&f, "claimed", "Echo", "x", "A", &r); /* the claim holder replaces the entry */
    assert_int_equal(r.status, 0);
    dir(&f, "lookup", "Echo", "x", "B", &r);
    assert_memory_equal(r.reply, "A", 1);
    dir(&f, "unregister", "Echo", "x", "B", &r); /* not the holder: no effect */
    dir(&f, "lookup", "Echo", "x", "B", &r);
    assert_memory_equal(r.reply, "A", 1);
    dir(&f, "register", "Echo", "z", "B", &r);
    dir(&f, "frobnicate", "Echo", "z", "B", &r);
    assert_int_equal(r.status, GR_ENOMETHOD);
    memset(&r, 0, sizeof r);
    gr__router_system_call(f.router, "register", (const uint8_t *)"Echo\0z", 6, NULL, 0, gr_test_on_reply,
                           &r);
    assert_true(gr_test_run_until(&f.loop, &r.done, 2000));
    assert_int_equal(r.status, GR_EINVAL); /* no silo id */
    gr__router_stats_t s;
    gr__router_get_stats(f.router, &s);
    assert_int_equal(s.partition_entries, 2); /* x (A) and z (B) */
    /* B dies: its entries go with the next view; a lookup no longer names it. */
    gr__member_t only_a = member("A", 7000, GR__MS_ACTIVE);
    set_view(&f, 2, &only_a, 1);
    gr_test_run_for(&f.loop, 50);
    gr__router_get_stats(f.router, &s);
    assert_int_equal(s.partition_entries, 1);
    dir(&f, "lookup", "Echo", "z", "A", &r);
    assert_int_equal(r.len, 0);
    fx_close(&f);
}

/* Find a key whose ring owner is `owner` in the current view. */
static int key_owned_by(fx_t *f, const char *owner, char *key, size_t size) {
    for (int i = 0; i < 1000; i++) {
        snprintf(key, size, "k%d", i);
        const char *o = gr__router_owner(f->router, "Echo", (const uint8_t *)key, strlen(key));
        if (o && !strcmp(o, owner)) return 1;
    }
    return 0;
}

static void test_unreachable_owner_fails_retryably(void **st) {
    fx_t f;
    fx_open(&f);
    int dead_port = gr_test_free_port(); /* nothing listens there */
    gr__member_t ms[2] = {member("A", 7000, GR__MS_ACTIVE), member("B", dead_port, GR__MS_ACTIVE)};
    set_view(&f, 1, ms, 2);
    char key[32];
    assert_true(key_owned_by(&f, "B", key, sizeof key));
    gr_test_reply_t r = {0};
    gr_ref_t ref = {"Echo", key, strlen(key)};
    uint64_t t0 = gr_test_now_ms();
    assert_int_equal(gr_call(f.rt, &ref, "echo", "x", 1, 10000, gr_test_on_reply, &r), 0);
    assert_true(gr_test_run_until(&f.loop, &r.done, 8000));
    assert_true(r.status != 0 && gr_err_retryable(r.status));
    assert_true(gr_test_now_ms() - t0 < 8000); /* well before the call's own timeout */
    /* A grain this silo owns still works meanwhile. */
    assert_true(key_owned_by(&f, "A", key, sizeof key));
    gr_test_reply_t r2 = {0};
    gr_ref_t ref2 = {"Echo", key, strlen(key)};
    assert_int_equal(gr_call(f.rt, &ref2, "echo", "y", 1, 2000, gr_test_on_reply, &r2), 0);
    assert_true(gr_test_run_until(&f.loop, &r2.done, 2000));
    assert_int_equal(r2.status, 0);
    fx_close(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_calls_wait_for_the_first_view),
        cmocka_unit_test(test_directory_requests),
        cmocka_unit_test(test_unreachable_owner_fails_retryably),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
