/* tests/cluster/test_membership.c - membership in PostgreSQL
 * (src/cluster/membership.c) with two members on one loop, no silo
 * around them: both join and see each other active, leases hold while
 * heartbeats flow, a status change reaches the other member's view, a
 * member that stops heartbeating is declared dead by the survivor within
 * a few leases, and a heartbeat under 25 ms is accepted. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "base/base.h"
#include "cluster/membership.h"
#include "granary/storage.h"
#include "support.h"

typedef struct {
    gr__membership_t *m;
    int joined, views, dead, fenced;
    gr__view_t last; /* members copied from the last view */
    gr__member_t members[8];
} mem_t;

static void on_view(void *ud, const gr__view_t *v) {
    mem_t *t = ud;
    t->views++;
    t->last.version = v->version;
    t->last.n = v->n < 8 ? v->n : 8;
    memcpy(t->members, v->members, t->last.n * sizeof *v->members);
    t->last.members = t->members;
}
static void on_fence(void *ud, int fenced, const char *why) { ((mem_t *)ud)->fenced = fenced; }
static void on_dead(void *ud) { ((mem_t *)ud)->dead = 1; }
static void on_joined(void *ud, int status) {
    assert_int_equal(status, 0);
    ((mem_t *)ud)->joined = 1;
}

static const gr__member_t *find(const mem_t *t, const char *id) {
    for (size_t i = 0; i < t->last.n; i++)
        if (!strcmp(t->members[i].id, id)) return &t->members[i];
    return NULL;
}

static char cluster[64];

static void start(uv_loop_t *loop, mem_t *t, const char *id, int port, uint32_t hb, uint32_t lease) {
    memset(t, 0, sizeof *t);
    gr__membership_opts_t o = {cluster, id, "127.0.0.1", port, (int64_t)gr_test_now_ms(), hb, lease};
    gr__membership_cbs_t cbs = {on_view, on_fence, on_dead, t};
    assert_int_equal(gr__membership_new(loop, gr_test_pg_url(), &o, &cbs, &t->m), 0);
    gr__membership_join(t->m, on_joined, t);
}

static int closed;
static void on_closed(void *ud) { closed++; }

/* Run the loop until pred() holds or ms pass. */
static int run_until_pred(uv_loop_t *loop, int (*pred)(void *), void *ud, uint64_t ms) {
    uint64_t deadline = gr_test_now_ms() + ms;
    while (!pred(ud) && gr_test_now_ms() < deadline)
        gr_test_run_for(loop, 20);
    return pred(ud);
}

typedef struct {
    mem_t *a, *b;
} pair_t;
static int both_see_both_active(void *ud) {
    pair_t *p = ud;
    const gr__member_t *x = find(p->a, "m-b"), *y = find(p->b, "m-a");
    return p->a->joined && p->b->joined && x && y && x->status == GR__MS_ACTIVE &&
           y->status == GR__MS_ACTIVE && find(p->a, "m-a") && find(p->b, "m-b");
}
static int a_sees_b_shutting_down(void *ud) {
    const gr__member_t *x = find(((pair_t *)ud)->a, "m-b");
    return x && x->status == GR__MS_SHUTTING_DOWN;
}
static int a_sees_b_gone(void *ud) { return find(((pair_t *)ud)->a, "m-b") == NULL; }

static void test_two_members(void **st) {
    snprintf(cluster, sizeof cluster, "unit-membership-%d", (int)getpid());
    uv_loop_t loop;
    uv_loop_init(&loop);
    mem_t a, b;
    start(&loop, &a, "m-a", 7001, 100, 600);
    start(&loop, &b, "m-b", 7002, 100, 600);
    pair_t p = {&a, &b};
    assert_true(run_until_pred(&loop, both_see_both_active, &p, 5000));
    assert_true(gr__membership_lease_ok(a.m));
    assert_true(gr__membership_lease_ok(b.m));
    assert_false(gr__membership_fenced(a.m));
    int64_t v1 = a.last.version;
    gr__membership_set_status(b.m, GR__MS_SHUTTING_DOWN, NULL, NULL);
    assert_true(run_until_pred(&loop, a_sees_b_shutting_down, &p, 3000));
    assert_true(a.last.version > v1);
    /* b stops heartbeating (its process "dies"): a declares it dead and
     * drops it from the view within a few leases. */
    closed = 0;
    uint64_t t0 = gr_test_now_ms();
    gr__membership_close(b.m, on_closed, NULL);
    assert_true(gr_test_run_until(&loop, &closed, 3000));
    assert_true(run_until_pred(&loop, a_sees_b_gone, &p, 5000));
    assert_true(gr_test_now_ms() - t0 < 5000);
    assert_false(a.dead);
    assert_true(gr__membership_lease_ok(a.m));
    char *status = gr_test_sql(gr_test_pg_url(),
                               "SELECT status FROM granary_silo WHERE silo_id = 'm-b' "
                               "AND cluster LIKE 'unit-membership-%' ORDER BY started_at DESC LIMIT 1");
    assert_non_null(status);
    assert_string_equal(status, "dead");
    free(status);
    closed = 0;
    gr__membership_close(a.m, on_closed, NULL);
    assert_true(gr_test_run_until(&loop, &closed, 3000));
    gr_test_loop_close(&loop);
}

static int joined(void *ud) { return ((mem_t *)ud)->joined; }

static void test_fast_heartbeat(void **st) {
    snprintf(cluster, sizeof cluster, "unit-membership-fast-%d", (int)getpid());
    uv_loop_t loop;
    uv_loop_init(&loop);
    mem_t a;
    start(&loop, &a, "m-fast", 7003, 20, 400); /* its pool's backoff cap would be 40 ms < 50 */
    assert_true(run_until_pred(&loop, joined, &a, 5000));
    closed = 0;
    gr__membership_close(a.m, on_closed, NULL);
    assert_true(gr_test_run_until(&loop, &closed, 3000));
    gr_test_loop_close(&loop);
}

int main(void) {
    if (!gr_test_pg_ready(1)) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_members),
        cmocka_unit_test(test_fast_heartbeat),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
