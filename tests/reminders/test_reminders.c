/* tests/reminders/test_reminders.c - durable reminders (src/reminders/)
 * against a real PostgreSQL with a runtime on the memory provider, no
 * silo around them: the control methods (add, list, remove) with their
 * errors, a periodic reminder firing until it is removed, a one-shot
 * reminder registered by a grain firing once and leaving no row, and a
 * silo that does not own a grain's range firing nothing of it. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "base/base.h"
#include "granary/storage.h"
#include "reminders/reminders.h"
#include "support.h"

static int fires_tick, fires_once;

static void on_reminder(gr_grain_t *g, gr_msg_t *m, const char *name) {
    if (!strcmp(name, "tick")) fires_tick++;
    if (!strcmp(name, "once")) fires_once++;
    gr_reply(m, NULL, 0);
}
static void armed(void *ud, int status, const uint8_t *r, size_t n) { *(int *)ud = status == 0 ? 1 : -1; }
static int arm_result;
static void m_arm(gr_grain_t *g, gr_msg_t *m, const uint8_t *a, size_t n) {
    arm_result = 0;
    int rc = gr_reminder_register(g, "once", 50, 0, armed, &arm_result);
    if (rc == 0)
        gr_reply(m, NULL, 0);
    else
        gr_reply_error(m, gr_strerror(rc));
}
static const gr_method_t alarm_methods[] = {{"arm", m_arm}, {NULL, NULL}};
static const gr_class_t alarm_class = {.name = "Alarm", .methods = alarm_methods, .on_reminder = on_reminder};
static void m_nop(gr_grain_t *g, gr_msg_t *m, const uint8_t *a, size_t n) { gr_reply(m, NULL, 0); }
static const gr_method_t plain_methods[] = {{"nop", m_nop}, {NULL, NULL}};
static const gr_class_t plain = {.name = "Plain", .methods = plain_methods};

static const char *owner_name = "self";
static const char *owner(void *ud, const char *cls, const uint8_t *key, size_t key_len) { return owner_name; }

typedef struct {
    uv_loop_t loop;
    gr_storage_t *storage;
    gr_runtime_t *rt;
    gr__reminders_t *rem;
} fx_t;

static char service[64];

static void fx_open(fx_t *f) {
    static const gr_class_t *const classes[] = {&alarm_class, &plain, NULL};
    gr_test_rt_open(&f->loop, &f->storage, &f->rt, "self", classes);
    gr__reminders_opts_t o;
    gr__reminders_opts_init(&o);
    o.service = service;
    o.poll_ms = 50;
    o.min_period_ms = 50;
    assert_int_equal(gr__reminders_new(&f->loop, gr_test_pg_url(), f->rt, "self", &o, owner, NULL, &f->rem),
                     0);
    gr__reminders_set_firing(f->rem, 1);
}

static int closed;
static void on_closed(void *ud) { closed++; }

static void fx_close(fx_t *f) {
    closed = 0;
    gr__reminders_close(f->rem, on_closed, NULL);
    gr_test_run_for(&f->loop, 100);
    assert_int_equal(closed, 1);
    gr_test_rt_close(&f->loop, f->storage, f->rt);
}

static int control(fx_t *f, const char *method, const char *grain, const char *arg, gr_test_reply_t *r) {
    memset(r, 0, sizeof *r);
    int rc = gr__reminders_control(f->rem, method, (const uint8_t *)grain, strlen(grain),
                                   (const uint8_t *)arg, arg ? strlen(arg) : 0, gr_test_on_reply, r);
    if (rc != 0) return rc;
    assert_true(gr_test_run_until(&f->loop, &r->done, 5000));
    return r->status;
}

static void test_control_and_periodic_firing(void **st) {
    snprintf(service, sizeof service, "unit-reminders-%d", (int)getpid());
    owner_name = "self";
    fx_t f;
    fx_open(&f);
    gr_test_reply_t r;
    assert_int_equal(control(&f, "reminder_add", "Plain/a", "tick 0 100", &r), GR_ENOMETHOD); /* no handler */
    assert_int_equal(control(&f, "reminder_add", "Nope/a", "tick 0 100", &r), GR_ENOCLASS);
    assert_int_equal(control(&f, "reminder_add", "Alarm/a", "tick", &r), GR_EINVAL);
    assert_int_equal(control(&f, "reminder_add", "no-slash", "tick 0 100", &r), GR_EINVAL);
    assert_int_equal(control(&f, "reminder_frob", "Alarm/a", "", &r), GR_ENOMETHOD);
    fires_tick = 0;
    assert_int_equal(control(&f, "reminder_add", "Alarm/a", "tick 0 100", &r), 0);
    assert_int_equal(control(&f, "reminder_list", "Alarm/a", NULL, &r), 0);
    assert_non_null(strstr(r.reply, "tick"));
    gr_test_run_for(&f.loop, 1200);
    assert_true(fires_tick >= 3); /* every 100 ms, polled every 50 ms */
    assert_int_equal(control(&f, "reminder_remove", "Alarm/a", "tick", &r), 0);
    gr_test_run_for(&f.loop, 200); /* a firing already in flight may still land */
    int after = fires_tick;
    gr_test_run_for(&f.loop, 600);
    assert_int_equal(fires_tick, after);
    assert_int_equal(control(&f, "reminder_list", "Alarm/a", NULL, &r), 0);
    assert_null(strstr(r.reply, "tick"));
    assert_int_equal(control(&f, "reminder_remove", "Alarm/a", "tick", &r), GR_ENOENT);
    gr__reminders_stats_t s;
    gr__reminders_get_stats(f.rem, &s);
    assert_true(s.fired >= 3);
    assert_int_equal(s.fire_failures, 0);
    fx_close(&f);
}

static void test_one_shot_from_a_grain(void **st) {
    snprintf(service, sizeof service, "unit-reminders-once-%d", (int)getpid());
    owner_name = "self";
    fx_t f;
    fx_open(&f);
    fires_once = 0;
    gr_test_reply_t r = {0};
    gr_ref_t ref = {"Alarm", "b", 1};
    assert_int_equal(gr_call(f.rt, &ref, "arm", NULL, 0, 5000, gr_test_on_reply, &r), 0);
    assert_true(gr_test_run_until(&f.loop, &r.done, 5000));
    assert_int_equal(r.status, 0);
    assert_true(gr_test_run_until(&f.loop, &arm_result, 5000));
    assert_int_equal(arm_result, 1); /* the row is written */
    gr_test_run_for(&f.loop, 800);
    assert_int_equal(fires_once, 1); /* period 0: exactly once (it was acknowledged) */
    gr_test_reply_t l;
    assert_int_equal(control(&f, "reminder_list", "Alarm/b", NULL, &l), 0);
    assert_null(strstr(l.reply, "once")); /* and its row is gone */
    fx_close(&f);
}

static void test_range_owned_elsewhere(void **st) {
    snprintf(service, sizeof service, "unit-reminders-other-%d", (int)getpid());
    owner_name = "another-silo";
    fx_t f;
    fx_open(&f);
    fires_tick = 0;
    gr_test_reply_t r;
    assert_int_equal(control(&f, "reminder_add", "Alarm/c", "tick 0 100", &r), 0);
    gr_test_run_for(&f.loop, 600);
    assert_int_equal(fires_tick, 0); /* that silo fires it, not this one */
    owner_name = "self";             /* the range moves here (a view change) */
    gr_test_run_for(&f.loop, 600);
    assert_true(fires_tick >= 1);
    assert_int_equal(control(&f, "reminder_remove", "Alarm/c", "tick", &r), 0);
    fx_close(&f);
}

int main(void) {
    if (!gr_test_pg_ready(1)) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_control_and_periodic_firing),
        cmocka_unit_test(test_one_shot_from_a_grain),
        cmocka_unit_test(test_range_owned_elsewhere),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
