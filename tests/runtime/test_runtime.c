/* tests/runtime/test_runtime.c - the grain runtime on the memory provider:
 * activation, single activation per id, turn order, async replies,
 * persist-before-reply, conflicts between two runtimes (two silos), timers,
 * idle deactivation, timeouts, overload, grain-to-grain calls, drain. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/base.h"
#include "runtime/runtime.h"
#include "granary/grain.h"
#include "support.h"

/* ---- test grain classes ---- */

static int activations, deactivations, busy_violations;

typedef struct {
    gr_grain_t *g;
    gr_msg_t *m;
} later_t;

typedef struct {
    int busy;
    later_t later; /* the call a timer will answer (one at a time: turns do not overlap) */
    int ticks;
    int seen[256];
    int nseen;
} tdata_t;

static int t_on_activate(gr_grain_t *g) {
    activations++;
    gr_grain_set_data(g, calloc(1, sizeof(tdata_t)), free);
    return 0;
}

static void t_on_deactivate(gr_grain_t *g) { deactivations++; }

static int64_t state_int(gr_grain_t *g) {
    const uint8_t *d;
    size_t n;
    gr_state_get(g, &d, &n);
    char buf[32] = {0};
    if (n && n < sizeof buf) memcpy(buf, d, n);
    return strtoll(buf, NULL, 10);
}

static void set_int(gr_grain_t *g, int64_t v) {
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%" PRId64, v);
    gr_state_set(g, buf, (size_t)n);
}

static void reply_int(gr_msg_t *m, int64_t v) {
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%" PRId64, v);
    gr_reply(m, buf, (size_t)n);
}

static void m_incr(gr_grain_t *g, gr_msg_t *m, const uint8_t *a, size_t n) {
    set_int(g, state_int(g) + 1);
    reply_int(m, state_int(g));
}

static void m_get(gr_grain_t *g, gr_msg_t *m, const uint8_t *a, size_t n) { reply_int(m, state_int(g)); }

/* Records the argument order, and checks no two turns overlap. */
static void m_record(gr_grain_t *g, gr_msg_t *m, const uint8_t *a, size_t n) {
    tdata_t *d = gr_grain_data(g);
    if (d->busy) busy_violations++;
    if (d->nseen < 256) d->seen[d->nseen++] = atoi((const char *)a);
    gr_reply(m, a, n);
}

/* Replies with the recorded argument sequence, comma-separated. */
static void m_dump(gr_grain_t *g, gr_msg_t *m, const uint8_t *a, size_t n) {
    tdata_t *d = gr_grain_data(g);
    char buf[2048];
    size_t o = 0;
    buf[0] = '\0';
    for (int i = 0; i < d->nseen && o + 8 < sizeof buf; i++)
        o += (size_t)snprintf(buf + o, sizeof buf - o, "%s%d", i ? "," : "", d->seen[i]);
    gr_reply(m, buf, o);
}

static void later_fire(gr_grain_t *g, void *ud);

/* Replies 5 ms later from a timer: the grain stays busy meanwhile. */
static void m_slow(gr_grain_t *g, gr_msg_t *m, const uint8_t *a, size_t n) {
    tdata_t *d = gr_grain_data(g);
    if (d->busy) busy_violations++;
    d->busy = 1;
    d->later.m = m;
    assert_int_equal(gr_timer_start(g, 5, 0, later_fire, &d->later, NULL), 0);
}

static void later_fire(gr_grain_t *g, void *ud) {
    later_t *l = ud;
    tdata_t *d = gr_grain_data(g);
    d->busy = 0;
    gr_reply(l->m, "late", 4);
}

static void m_never(gr_grain_t *g, gr_msg_t *m, const uint8_t *a, size_t n) {
    /* Replies only after 200 ms: callers with shorter timeouts give up. */
    tdata_t *d = gr_grain_data(g);
    d->later.m = m;
    gr_timer_start(g, 200, 0, later_fire, &d->later, NULL);
}

static void m_fail(gr_grain_t *g, gr_msg_t *m, const uint8_t *a, size_t n) {
    gr_reply_error(m, "no such thing");
}

static void tick(gr_grain_t *g, void *ud) {
    tdata_t *d = gr_grain_data(g);
    d->ticks++;
}

static void m_start_timer(gr_grain_t *g, gr_msg_t *m, const uint8_t *a, size_t n) {
    gr_timer_start(g, 10, 10, tick, NULL, NULL);
    gr_reply(m, NULL, 0);
}

static void m_ticks(gr_grain_t *g, gr_msg_t *m, const uint8_t *a, size_t n) {
    tdata_t *d = gr_grain_data(g);
    reply_int(m, d->ticks);
}

static void m_where(gr_grain_t *g, gr_msg_t *m, const uint8_t *a, size_t n) {
    gr_reply(m, gr_grain_silo(g), strlen(gr_grain_silo(g)));
}

static void m_reset(gr_grain_t *g, gr_msg_t *m, const uint8_t *a, size_t n) {
    assert_int_equal(gr_state_clear(g), 0);
    assert_int_equal(state_int(g), 0);
    gr_reply(m, "0", 1);
}

static void m_version(gr_grain_t *g, gr_msg_t *m, const uint8_t *a, size_t n) {
    reply_int(m, gr_state_version(g));
}

static void m_remaining(gr_grain_t *g, gr_msg_t *m, const uint8_t *a, size_t n) {
    reply_int(m, gr_msg_remaining_ms(m));
}

static void m_bye(gr_grain_t *g, gr_msg_t *m, const uint8_t *a, size_t n) {
    gr_grain_deactivate_on_idle(g);
    gr_reply(m, NULL, 0);
}

/* Relay: calls Counter/<arg> incr and replies with its answer. */
static void relay_done(void *ud, int status, const uint8_t *reply, size_t len) {
    gr_msg_t *m = ud;
    if (status == 0)
        gr_reply(m, reply, len);
    else
        gr_reply_error(m, gr_err_name(status));
}

static void m_relay(gr_grain_t *g, gr_msg_t *m, const uint8_t *a, size_t n) {
    gr_ref_t ref = {"Counter", a, n};
    int rc = gr_grain_call(g, &ref, "incr", NULL, 0, 1000, relay_done, m);
    if (rc != 0) gr_reply_error(m, gr_err_name(rc));
}

static const gr_method_t t_methods[] = {
    {"incr", m_incr},
    {"get", m_get},
    {"record", m_record},
    {"slow", m_slow},
    {"never", m_never},
    {"fail", m_fail},
    {"timer", m_start_timer},
    {"ticks", m_ticks},
    {"where", m_where},
    {"bye", m_bye},
    {"dump", m_dump},
    {"reset", m_reset},
    {"version", m_version},
    {"remaining", m_remaining},
    {NULL, NULL},
};

/* Persist-before-reply counter. */
static const gr_class_t counter_cls = {.name = "Counter",
                                       .methods = t_methods,
                                       .on_activate = t_on_activate,
                                       .on_deactivate = t_on_deactivate,
                                       .flags = GR_CLASS_PERSIST_BEFORE_REPLY};
/* Persisted and reentrant, remembering 3 keys for 300 ms: idempotency keys. */
static const gr_class_t keyed_cls = {.name = "Keyed",
                                     .methods = t_methods,
                                     .on_activate = t_on_activate,
                                     .on_deactivate = t_on_deactivate,
                                     .flags = GR_CLASS_PERSIST_BEFORE_REPLY | GR_CLASS_REENTRANT,
                                     .idempotency_keys = 3,
                                     .idempotency_retention_ms = 300};
/* Same methods, no persist-before-reply, short idle age. */
static const gr_class_t lazy_cls = {.name = "Lazy",
                                    .methods = t_methods,
                                    .on_activate = t_on_activate,
                                    .on_deactivate = t_on_deactivate,
                                    .idle_deactivate_ms = 60};

/* Calls to it that pass no timeout get 50 ms. */
static const gr_class_t quick_cls = {
    .name = "Quick", .methods = t_methods, .on_activate = t_on_activate, .call_timeout_ms = 50};

static const gr_method_t relay_methods[] = {{"relay", m_relay}, {NULL, NULL}};
static const gr_class_t relay_cls = {.name = "Relay", .methods = relay_methods};

/* call "CLASS KEY METHOD [ARG]": calls that grain, replies with its reply
 * (or "GR_E...: text" as an application error). */
static void call_done(void *ud, int status, const uint8_t *reply, size_t len) {
    gr_msg_t *m = ud;
    if (status == 0) {
        gr_reply(m, reply, len);
        return;
    }
    char buf[1200];
    snprintf(buf, sizeof buf, "%s: %.*s", gr_err_name(status), (int)len, (const char *)reply);
    gr_reply_error(m, buf);
}

static void m_call(gr_grain_t *g, gr_msg_t *m, const uint8_t *a, size_t n) {
    char buf[512], cls[64], key[64], method[64];
    snprintf(buf, sizeof buf, "%.*s", (int)n, (const char *)a);
    int used = 0;
    if (sscanf(buf, "%63s %63s %63s %n", cls, key, method, &used) < 3) {
        gr_reply_error(m, "bad argument");
        return;
    }
    const char *rest = buf + used;
    gr_ref_t ref = {cls, key, strlen(key)};
    int rc = gr_grain_call(g, &ref, method, rest, strlen(rest), 2000, call_done, m);
    if (rc != 0) gr_reply_error(m, gr_err_name(rc));
}

static const gr_method_t ring_methods[] = {{"call", m_call}, {"incr", m_incr},   {"get", m_get},
                                           {"slow", m_slow}, {"never", m_never}, {NULL, NULL}};
static const char *const ring_interleave[] = {"get", NULL};
/* Non-reentrant, with "get" interleaving. */
static const gr_class_t ring_cls = {
    .name = "Ring", .methods = ring_methods, .on_activate = t_on_activate, .interleave = ring_interleave};
/* Reentrant: every call may start while another waits. */
static const gr_class_t rring_cls = {
    .name = "RRing", .methods = ring_methods, .on_activate = t_on_activate, .flags = GR_CLASS_REENTRANT};

static void m_set(gr_grain_t *g, gr_msg_t *m, const uint8_t *a, size_t n) {
    reply_int(m, gr_state_set(g, "x", 1));
}

static const gr_method_t worker_methods[] = {
    {"slow", m_slow}, {"set", m_set}, {"where", m_where}, {NULL, NULL}};
/* At most 3 activations per key per runtime. */
static const gr_class_t worker_cls = {.name = "Worker",
                                      .methods = worker_methods,
                                      .on_activate = t_on_activate,
                                      .on_deactivate = t_on_deactivate,
                                      .flags = GR_CLASS_STATELESS_WORKER,
                                      .idle_deactivate_ms = 100,
                                      .max_workers = 3};

/* Doc: state is text. Version 1 stores it as is; version 2 prefixes "v2:"
 * and upgrades older rows; version 3's upgrade always fails. */
static int upgrades;
static void m_doc_set(gr_grain_t *g, gr_msg_t *m, const uint8_t *a, size_t n) {
    gr_state_set(g, a, n);
    gr_state_write(g, NULL, NULL);
    gr_reply(m, NULL, 0);
}
static void m_doc_get(gr_grain_t *g, gr_msg_t *m, const uint8_t *a, size_t n) {
    const uint8_t *d;
    size_t len;
    gr_state_get(g, &d, &len);
    gr_reply(m, d, len);
}
static int doc_upgrade(gr_grain_t *g, const uint8_t *old, size_t len, uint32_t old_version) {
    upgrades++;
    assert_int_equal(old_version, 1);
    char buf[256];
    int n = snprintf(buf, sizeof buf, "v2:%.*s", (int)len, (const char *)old);
    return gr_state_set(g, buf, (size_t)n);
}
static int doc_upgrade_fails(gr_grain_t *g, const uint8_t *old, size_t len, uint32_t old_version) {
    return GR_EINVAL;
}
static const gr_method_t doc_methods[] = {
    {"set", m_doc_set}, {"get", m_doc_get}, {"bye", m_bye}, {NULL, NULL}};
static const gr_class_t doc_v1 = {.name = "Doc", .methods = doc_methods, .state_version = 1};
static const gr_class_t doc_v2 = {
    .name = "Doc", .methods = doc_methods, .state_version = 2, .upgrade_state = doc_upgrade};
static const gr_class_t doc_v3 = {
    .name = "Doc", .methods = doc_methods, .state_version = 3, .upgrade_state = doc_upgrade_fails};

/* Reminders at the runtime level: on_reminder dispatch, and the API's
 * validation and hand-off to the silo's service (a recording fake here;
 * the real one is tested through silos on PostgreSQL). */
static char reminded[64];
static void r_on_reminder(gr_grain_t *g, gr_msg_t *m, const char *name) {
    snprintf(reminded, sizeof reminded, "%s", name);
    m_incr(g, m, NULL, 0);
}
static void m_remind(gr_grain_t *g, gr_msg_t *m, const uint8_t *a, size_t n) {
    char name[64];
    snprintf(name, sizeof name, "%.*s", (int)n, (const char *)a);
    reply_int(m, gr_reminder_register(g, name, 10, 0, NULL, NULL));
}
static const gr_method_t rem_methods[] = {{"remind", m_remind}, {"get", m_get}, {NULL, NULL}};
static const gr_class_t rem_cls = {.name = "Rem", .methods = rem_methods, .on_reminder = r_on_reminder};
static char fake_seen[256];
static int fake_add(void *ud, const char *cls, const uint8_t *key, size_t key_len, const char *name,
                    uint64_t due_ms, uint64_t period_ms, gr_call_cb cb, void *cb_ud) {
    snprintf(fake_seen, sizeof fake_seen, "%s/%.*s %s %llu %llu", cls, (int)key_len, (const char *)key, name,
             (unsigned long long)due_ms, (unsigned long long)period_ms);
    return 0;
}
static int fake_remove(void *ud, const char *cls, const uint8_t *key, size_t key_len, const char *name,
                       gr_call_cb cb, void *cb_ud) {
    return GR_ENOENT;
}
static int fake_list(void *ud, const char *cls, const uint8_t *key, size_t key_len, gr_call_cb cb,
                     void *cb_ud) {
    return GR_ENOENT;
}
static const gr__reminder_ops_t fake_ops = {fake_add, fake_remove, fake_list};

static int fail_activate(gr_grain_t *g) { return GR_EINVAL; }
static const gr_class_t broken_cls = {.name = "Broken", .methods = t_methods, .on_activate = fail_activate};

/* ---- fixture: one loop, one shared memory storage, two runtimes ---- */

typedef struct {
    uv_loop_t loop;
    gr_storage_t *st;
    gr_runtime_t *rt, *rt2;
} fx_t;

typedef struct {
    int done;
    int status;
    char reply[2048];
    size_t len;
    int order;
} res_t;

static int completions; /* completion order, for ordering assertions */

static void on_done(void *ud, int status, const uint8_t *reply, size_t len) {
    res_t *r = ud;
    r->done++;
    r->order = ++completions;
    r->status = status;
    r->len = len;
    size_t n = len < sizeof r->reply - 1 ? len : sizeof r->reply - 1;
    if (n) memcpy(r->reply, reply, n);
    r->reply[n] = '\0';
}

static gr_runtime_t *make_rt(fx_t *fx, const char *id, uint32_t max_queue) {
    gr_runtime_options_t o;
    gr_runtime_options_init(&o);
    o.silo_id = id;
    o.max_queue_per_grain = max_queue;
    gr_runtime_t *rt;
    assert_int_equal(gr_runtime_new(&fx->loop, fx->st, &o, &rt), 0);
    assert_int_equal(gr_runtime_register(rt, &counter_cls), 0);
    assert_int_equal(gr_runtime_register(rt, &lazy_cls), 0);
    assert_int_equal(gr_runtime_register(rt, &relay_cls), 0);
    assert_int_equal(gr_runtime_register(rt, &broken_cls), 0);
    assert_int_equal(gr_runtime_register(rt, &quick_cls), 0);
    assert_int_equal(gr_runtime_register(rt, &ring_cls), 0);
    assert_int_equal(gr_runtime_register(rt, &rring_cls), 0);
    assert_int_equal(gr_runtime_register(rt, &worker_cls), 0);
    assert_int_equal(gr_runtime_register(rt, &rem_cls), 0);
    assert_int_equal(gr_runtime_register(rt, &keyed_cls), 0);
    return rt;
}

static int setup(void **state) {
    fx_t *fx = calloc(1, sizeof *fx);
    uv_loop_init(&fx->loop);
    assert_int_equal(gr_storage_memory_new(&fx->loop, &fx->st), 0);
    fx->rt = make_rt(fx, "silo-a", 10000);
    fx->rt2 = make_rt(fx, "silo-b", 5);
    activations = deactivations = busy_violations = 0;
    *state = fx;
    return 0;
}

static void closed(void *ud) { (*(int *)ud)++; }

static int teardown(void **state) {
    fx_t *fx = *state;
    int done = 0;
    gr_runtime_close(fx->rt, closed, &done);
    gr_runtime_close(fx->rt2, closed, &done);
    while (done < 2 && gr_test_run_until(&fx->loop, &done, 2000) && done < 2)
        gr_test_run_for(&fx->loop, 10);
    assert_int_equal(done, 2);
    done = 0;
    gr_storage_close(fx->st, closed, &done);
    assert_true(gr_test_run_until(&fx->loop, &done, 2000));
    gr_test_loop_close(&fx->loop);
    free(fx);
    return 0;
}

static void call(fx_t *fx, gr_runtime_t *rt, const char *cls, const char *key, const char *method,
                 const char *arg, uint32_t timeout, res_t *r) {
    memset(r, 0, sizeof *r);
    gr_ref_t ref = {cls, key, strlen(key)};
    assert_int_equal(gr_call(rt, &ref, method, arg, arg ? strlen(arg) : 0, timeout, on_done, r), 0);
    assert_int_equal(r->done, 0); /* never inside the call */
    assert_true(gr_test_run_until(&fx->loop, &r->done, 5000));
    assert_int_equal(r->done, 1);
}

typedef struct {
    int done, status;
    int64_t version;
    uint32_t format;
    size_t len;
} sread_t;

static void on_sread(void *ud, int status, const uint8_t *data, size_t len, int64_t version, uint32_t format,
                     const char *d) {
    sread_t *s = ud;
    s->format = format;
    s->done = 1;
    s->status = status;
    s->version = version;
    s->len = len;
}

static sread_t storage_row(fx_t *fx, const char *cls, const char *key) {
    sread_t s = {0};
    assert_int_equal(gr_storage_read(fx->st, cls, key, strlen(key), on_sread, &s), 0);
    assert_true(gr_test_run_until(&fx->loop, &s.done, 2000));
    return s;
}

static void call_key(fx_t *fx, gr_runtime_t *rt, const char *cls, const char *key, const char *method,
                     const char *idem, res_t *r) {
    memset(r, 0, sizeof *r);
    gr_ref_t ref = {cls, key, strlen(key)};
    gr_call_options_t o;
    gr_call_options_init(&o);
    o.idempotency_key = idem;
    o.idempotency_key_len = strlen(idem);
    assert_int_equal(gr_call_ex(rt, &ref, method, NULL, 0, &o, on_done, r), 0);
    assert_true(gr_test_run_until(&fx->loop, &r->done, 5000));
}

/* ---- cases ---- */

static void test_activation_once_per_id(void **state) {
    fx_t *fx = *state;
    res_t r;
    call(fx, fx->rt, "Counter", "a", "incr", NULL, 0, &r);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.reply, "1");
    call(fx, fx->rt, "Counter", "a", "incr", NULL, 0, &r);
    assert_string_equal(r.reply, "2");
    assert_int_equal(activations, 1);
    assert_int_equal(gr_runtime_activation_count(fx->rt), 1);
    call(fx, fx->rt, "Counter", "b", "get", NULL, 0, &r);
    assert_string_equal(r.reply, "0");
    assert_int_equal(activations, 2);
    /* Many concurrent first calls to one id still make one activation. */
    res_t rs[50];
    memset(rs, 0, sizeof rs);
    gr_ref_t ref = {"Counter", "c", 1};
    for (int i = 0; i < 50; i++)
        assert_int_equal(gr_call(fx->rt, &ref, "incr", NULL, 0, 0, on_done, &rs[i]), 0);
    gr_test_run_for(&fx->loop, 200);
    for (int i = 0; i < 50; i++) {
        assert_int_equal(rs[i].done, 1);
        assert_int_equal(rs[i].status, 0);
    }
    assert_int_equal(activations, 3);
    call(fx, fx->rt, "Counter", "c", "get", NULL, 0, &r);
    assert_string_equal(r.reply, "50");
}

static void test_turn_order_and_no_overlap(void **state) {
    fx_t *fx = *state;
    res_t rs[100];
    memset(rs, 0, sizeof rs);
    gr_ref_t ref = {"Counter", "order", 5}; /* Lazy would go idle mid-test */
    char args[100][8];
    for (int i = 0; i < 100; i++) {
        snprintf(args[i], sizeof args[i], "%d", i);
        /* Interleave slow (async-reply) turns: the next must wait for them. */
        const char *m = i % 10 == 0 ? "slow" : "record";
        assert_int_equal(gr_call(fx->rt, &ref, m, args[i], strlen(args[i]) + 1, 0, on_done, &rs[i]), 0);
    }
    gr_test_run_for(&fx->loop, 500);
    for (int i = 0; i < 100; i++)
        assert_int_equal(rs[i].done, 1);
    assert_int_equal(busy_violations, 0);
    /* The recorded sequence is the submission order (slow ones skipped). */
    char expect[1024];
    size_t o = 0;
    for (int i = 0; i < 100; i++)
        if (i % 10) o += (size_t)snprintf(expect + o, sizeof expect - o, "%s%d", o ? "," : "", i);
    res_t *big = calloc(1, sizeof *big);
    gr_ref_t ref2 = {"Counter", "order", 5};
    assert_int_equal(gr_call(fx->rt, &ref2, "dump", NULL, 0, 0, on_done, big), 0);
    assert_true(gr_test_run_until(&fx->loop, &big->done, 2000));
    assert_int_equal(big->status, 0);
    assert_string_equal(big->reply, expect);
    free(big);
}

static void test_async_reply_keeps_grain_busy(void **state) {
    fx_t *fx = *state;
    res_t a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    gr_ref_t ref = {"Lazy", "busy", 4};
    assert_int_equal(gr_call(fx->rt, &ref, "slow", NULL, 0, 0, on_done, &a), 0);
    assert_int_equal(gr_call(fx->rt, &ref, "get", NULL, 0, 0, on_done, &b), 0);
    assert_true(gr_test_run_until(&fx->loop, &b.done, 2000));
    /* The second call waited behind the slow turn: it finished after it,
     * whatever the machine's timing. */
    assert_int_equal(a.done, 1);
    assert_true(a.order < b.order);
    assert_string_equal(a.reply, "late");
}

static void test_persist_before_reply(void **state) {
    fx_t *fx = *state;
    res_t r;
    call(fx, fx->rt, "Counter", "p", "incr", NULL, 0, &r);
    call(fx, fx->rt, "Counter", "p", "incr", NULL, 0, &r);
    assert_string_equal(r.reply, "2");
    /* A second runtime (another silo) sees the acknowledged value: it was
     * in storage before the reply left. */
    call(fx, fx->rt2, "Counter", "p", "get", NULL, 0, &r);
    assert_string_equal(r.reply, "2");
    gr__runtime_stats_t s;
    gr__runtime_get_stats(fx->rt, &s);
    assert_int_equal(s.storage_writes, 2);
}

/* Promise 1: two activations of one grain on two silos: the stale one's
 * write conflicts, it answers with an error and reloads, never overwriting. */
static void test_conflict_between_silos(void **state) {
    fx_t *fx = *state;
    res_t r;
    call(fx, fx->rt, "Counter", "x", "get", NULL, 0, &r);  /* A activates at v0 */
    call(fx, fx->rt2, "Counter", "x", "get", NULL, 0, &r); /* B activates at v0 */
    call(fx, fx->rt, "Counter", "x", "incr", NULL, 0, &r); /* A commits v1 */
    assert_int_equal(r.status, 0);
    assert_string_equal(r.reply, "1");
    call(fx, fx->rt2, "Counter", "x", "incr", NULL, 0, &r); /* B is stale */
    assert_int_equal(r.status, GR_ECONFLICT);
    gr_test_run_for(&fx->loop, 20);
    assert_int_equal(gr_runtime_activation_count(fx->rt2), 0); /* B deactivated */
    call(fx, fx->rt2, "Counter", "x", "incr", NULL, 0, &r);    /* B reloads: 1 + 1 */
    assert_int_equal(r.status, 0);
    assert_string_equal(r.reply, "2");
    call(fx, fx->rt, "Counter", "x", "incr", NULL, 0, &r); /* now A is stale */
    assert_int_equal(r.status, GR_ECONFLICT);
    call(fx, fx->rt, "Counter", "x", "get", NULL, 0, &r);
    assert_string_equal(r.reply, "2");
}

/* Calls queued behind a conflicting write go to a fresh activation. */
static void test_conflict_forwards_queue(void **state) {
    fx_t *fx = *state;
    res_t r;
    call(fx, fx->rt, "Counter", "q", "get", NULL, 0, &r);
    call(fx, fx->rt2, "Counter", "q", "incr", NULL, 0, &r); /* B commits v1 */
    res_t rs[4];
    memset(rs, 0, sizeof rs);
    gr_ref_t ref = {"Counter", "q", 1};
    for (int i = 0; i < 4; i++)
        assert_int_equal(gr_call(fx->rt, &ref, "incr", NULL, 0, 0, on_done, &rs[i]), 0);
    gr_test_run_for(&fx->loop, 100);
    for (int i = 0; i < 4; i++)
        assert_int_equal(rs[i].done, 1); /* a status of 0 must be an answer, not "never ran" */
    assert_int_equal(rs[0].status, GR_ECONFLICT);
    for (int i = 1; i < 4; i++)
        assert_int_equal(rs[i].status, 0);
    assert_string_equal(rs[3].reply, "4");
}

static void test_unknown_class_method_and_app_error(void **state) {
    fx_t *fx = *state;
    res_t r;
    call(fx, fx->rt, "Nope", "k", "get", NULL, 0, &r);
    assert_int_equal(r.status, GR_ENOCLASS);
    assert_non_null(strstr(r.reply, "Nope"));
    call(fx, fx->rt, "Counter", "k", "nope", NULL, 0, &r);
    assert_int_equal(r.status, GR_ENOMETHOD);
    assert_non_null(strstr(r.reply, "nope"));
    call(fx, fx->rt, "Counter", "k", "fail", NULL, 0, &r);
    assert_int_equal(r.status, GR_EAPP);
    assert_string_equal(r.reply, "no such thing");
    call(fx, fx->rt, "Broken", "k", "get", NULL, 0, &r);
    assert_int_equal(r.status, GR_EACTIVATE);
    assert_int_equal(gr_runtime_activation_count(fx->rt), 1); /* only Counter/k */
    gr_ref_t ref = {"Counter", "k", 1};
    static uint8_t bigkey[GR_KEY_MAX + 1];
    gr_ref_t big = {"Counter", bigkey, sizeof bigkey};
    assert_int_equal(gr_call(fx->rt, &big, "get", NULL, 0, 0, on_done, &r), GR_ETOOBIG);
    assert_int_equal(gr_call(fx->rt, &ref, "", NULL, 0, 0, on_done, &r), GR_EINVAL);
    assert_int_equal(gr_call(fx->rt, &ref, "get", NULL, 0, 0, NULL, &r), GR_EINVAL);
}

static void test_grain_calls_grain(void **state) {
    fx_t *fx = *state;
    res_t r;
    call(fx, fx->rt, "Relay", "r", "relay", "target", 0, &r);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.reply, "1");
    call(fx, fx->rt, "Counter", "target", "get", NULL, 0, &r);
    assert_string_equal(r.reply, "1");
}

static void test_timeout_and_late_reply(void **state) {
    fx_t *fx = *state;
    res_t r;
    call(fx, fx->rt, "Lazy", "t", "never", NULL, 50, &r);
    assert_int_equal(r.status, GR_ETIMEDOUT);
    gr_test_run_for(&fx->loop, 300);
    gr__runtime_stats_t s;
    gr__runtime_get_stats(fx->rt, &s);
    assert_int_equal(s.late_replies, 1);
}

/* Timeout defaults: a call passing 0 gets the class's call_timeout_ms (50 ms
 * for Quick) or the runtime's (30 s); the handler sees what is left. */
static void test_class_timeout_and_remaining(void **state) {
    fx_t *fx = *state;
    res_t r;
    uv_update_time(&fx->loop);
    uint64_t t0 = uv_now(&fx->loop);
    call(fx, fx->rt, "Quick", "q", "never", NULL, 0, &r);
    assert_int_equal(r.status, GR_ETIMEDOUT);
    uv_update_time(&fx->loop);
    assert_true(uv_now(&fx->loop) - t0 < 1000); /* 50 ms, not the 30 s default */
    call(fx, fx->rt, "Quick", "q2", "remaining", NULL, 0, &r);
    assert_true(atoi(r.reply) > 0 && atoi(r.reply) <= 50);
    call(fx, fx->rt, "Quick", "q2", "remaining", NULL, 5000, &r); /* an explicit one wins */
    assert_true(atoi(r.reply) > 50 && atoi(r.reply) <= 5000);
    call(fx, fx->rt, "Counter", "q3", "remaining", NULL, 0, &r);
    assert_true(atoi(r.reply) > 29000 && atoi(r.reply) <= 30000);
    /* The timed-out call's reply arrives later: dropped and counted. */
    gr_test_run_for(&fx->loop, 300);
    gr__runtime_stats_t s;
    gr__runtime_get_stats(fx->rt, &s);
    assert_int_equal(s.late_replies, 1);
}

/* A -> B -> A on a non-reentrant grain fails at once with GR_EDEADLOCK
 * (not after the 2 s timeout), naming the cycle; through an interleaving
 * method, or on a reentrant class, the same cycle completes. */
static void test_call_cycles(void **state) {
    fx_t *fx = *state;
    res_t r;
    uv_update_time(&fx->loop);
    uint64_t t0 = uv_now(&fx->loop);
    call(fx, fx->rt, "Ring", "a", "call", "Ring b call Ring a incr", 0, &r);
    uv_update_time(&fx->loop);
    assert_int_equal(r.status, GR_EAPP); /* a relays b's error text */
    assert_non_null(strstr(r.reply, "GR_EAPP: GR_EDEADLOCK: call cycle Ring/a -> Ring/b -> Ring/a"));
    assert_true(uv_now(&fx->loop) - t0 < 1000);
    /* A direct self-call is the shortest cycle. */
    call(fx, fx->rt, "Ring", "s", "call", "Ring s incr", 0, &r);
    assert_non_null(strstr(r.reply, "GR_EDEADLOCK: call cycle Ring/s -> Ring/s"));
    /* "get" interleaves: the cycle is fine. */
    call(fx, fx->rt, "Ring", "a", "incr", NULL, 0, &r);
    call(fx, fx->rt, "Ring", "a", "call", "Ring b call Ring a get", 0, &r);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.reply, "1");
    /* A reentrant class accepts the cycle for any method. */
    call(fx, fx->rt, "RRing", "a", "call", "RRing b call RRing a incr", 0, &r);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.reply, "1");
    /* A chain that never comes back is no cycle: a -> c -> d works. */
    call(fx, fx->rt, "Ring", "a", "call", "Ring c call Ring d get", 0, &r);
    assert_int_equal(r.status, 0);
    gr__runtime_stats_t st;
    gr__runtime_get_stats(fx->rt, &st);
    assert_int_equal(st.deadlocks, 2);
}

/* While a non-reentrant grain waits, an interleaving call runs and an
 * ordinary one waits its turn. */
static void test_interleave_while_busy(void **state) {
    fx_t *fx = *state;
    res_t slow, get, incr;
    memset(&slow, 0, sizeof slow);
    memset(&get, 0, sizeof get);
    memset(&incr, 0, sizeof incr);
    gr_ref_t ref = {"Ring", "busy", 4};
    completions = 0;
    assert_int_equal(gr_call(fx->rt, &ref, "slow", NULL, 0, 0, on_done, &slow), 0);
    assert_int_equal(gr_call(fx->rt, &ref, "incr", NULL, 0, 0, on_done, &incr), 0);
    assert_int_equal(gr_call(fx->rt, &ref, "get", NULL, 0, 0, on_done, &get), 0);
    gr_test_run_for(&fx->loop, 100);
    assert_int_equal(slow.status, 0);
    assert_int_equal(incr.status, 0);
    assert_int_equal(get.status, 0);
    /* Only the head of the queue may start: get, queued behind incr, waits
     * for it (FIFO is kept), and incr waits for slow. */
    assert_true(slow.order < incr.order);
    assert_true(incr.order < get.order);
    /* With the grain busy (a call that answers after 200 ms: a wide margin on
     * a slow sanitizer build) and only an interleaving call queued, it runs
     * at once and answers first. */
    memset(&slow, 0, sizeof slow);
    memset(&get, 0, sizeof get);
    assert_int_equal(gr_call(fx->rt, &ref, "never", NULL, 0, 0, on_done, &slow), 0);
    gr_test_run_for(&fx->loop, 1);
    assert_int_equal(gr_call(fx->rt, &ref, "get", NULL, 0, 0, on_done, &get), 0);
    assert_true(gr_test_run_until(&fx->loop, &get.done, 2000));
    assert_int_equal(slow.done, 0);
    assert_true(gr_test_run_until(&fx->loop, &slow.done, 2000));
    assert_true(get.order < slow.order);
    assert_string_equal(get.reply, "1");
    assert_int_equal(busy_violations, 0);
    /* A bad interleave list is refused at registration. */
    static const char *const bad[] = {"nope", NULL};
    static const gr_class_t bad_cls = {.name = "Bad", .methods = ring_methods, .interleave = bad};
    assert_int_equal(gr_runtime_register(fx->rt, &bad_cls), GR_EINVAL);
    /* So are a bad read-only list and an unknown placement. */
    static const gr_class_t bad_ro = {.name = "BadRo", .methods = ring_methods, .read_only = bad};
    assert_int_equal(gr_runtime_register(fx->rt, &bad_ro), GR_EINVAL);
    static const gr_class_t bad_place = {.name = "BadPlace", .methods = ring_methods, .placement = 3};
    assert_int_equal(gr_runtime_register(fx->rt, &bad_place), GR_EINVAL);
    static const gr_class_t hashed = {.name = "Hashed", .methods = ring_methods, .placement = GR_PLACE_HASH};
    assert_int_equal(gr_runtime_register(fx->rt, &hashed), 0);
}

/* Stateless workers: concurrent calls to one key spread over up to
 * max_workers activations (3), which never touch storage and refuse state. */
static void test_stateless_workers(void **state) {
    fx_t *fx = *state;
    gr__runtime_stats_t before, after;
    gr__runtime_get_stats(fx->rt, &before);
    res_t rs[10];
    memset(rs, 0, sizeof rs);
    gr_ref_t ref = {"Worker", "w", 1};
    for (int i = 0; i < 10; i++)
        assert_int_equal(gr_call(fx->rt, &ref, "slow", NULL, 0, 0, on_done, &rs[i]), 0);
    uv_update_time(&fx->loop);
    uint64_t t0 = uv_now(&fx->loop);
    int done = 0;
    while (done < 10 && uv_now(&fx->loop) - t0 < 2000) {
        gr_test_run_for(&fx->loop, 1);
        done = 0;
        for (int i = 0; i < 10; i++)
            done += rs[i].done;
    }
    for (int i = 0; i < 10; i++) {
        assert_int_equal(rs[i].status, 0);
        assert_string_equal(rs[i].reply, "late");
    }
    assert_int_equal(activations, 3);     /* capped at max_workers */
    assert_int_equal(busy_violations, 0); /* each activation still one turn at a time */
    assert_int_equal(gr_runtime_activation_count(fx->rt), 3);
    gr__runtime_get_stats(fx->rt, &after);
    assert_int_equal(after.storage_reads, before.storage_reads);
    assert_int_equal(after.storage_writes, before.storage_writes);
    /* A single call at a time reuses the idle first worker. */
    res_t r;
    call(fx, fx->rt, "Worker", "w", "where", NULL, 0, &r);
    assert_int_equal(activations, 3);
    call(fx, fx->rt, "Worker", "w", "set", NULL, 0, &r);
    assert_int_equal(atoi(r.reply), GR_ESTATE);
    /* Another runtime (silo) serves the same key with its own workers. */
    call(fx, fx->rt2, "Worker", "w", "where", NULL, 0, &r);
    assert_string_equal(r.reply, "silo-b");
    /* Idle workers deactivate like any grain. */
    gr_test_run_for(&fx->loop, 400);
    assert_int_equal(gr_runtime_activation_count(fx->rt), 0);
    assert_int_equal(deactivations, 4);
}

/* State versioning across a rolling deploy: silo A runs Doc v1, silo B Doc
 * v2. B upgrades what A wrote; once B wrote format 2, A refuses to activate
 * the grain (retryable GR_ESTATEVERSION) and the newer row stays untouched. */
static void test_state_versions(void **state) {
    fx_t *fx = *state;
    assert_int_equal(gr_runtime_register(fx->rt, &doc_v1), 0);
    assert_int_equal(gr_runtime_register(fx->rt2, &doc_v2), 0);
    upgrades = 0;
    res_t r;
    call(fx, fx->rt, "Doc", "d", "set", "hello", 0, &r);
    gr_test_run_for(&fx->loop, 10);
    assert_int_equal(storage_row(fx, "Doc", "d").format, 1);
    call(fx, fx->rt, "Doc", "d", "bye", NULL, 0, &r);
    call(fx, fx->rt2, "Doc", "d", "get", NULL, 0, &r);
    assert_string_equal(r.reply, "v2:hello");
    assert_int_equal(upgrades, 1);
    call(fx, fx->rt2, "Doc", "d", "bye", NULL, 0, &r); /* the upgraded state is saved */
    gr_test_run_for(&fx->loop, 20);
    sread_t row = storage_row(fx, "Doc", "d");
    assert_int_equal(row.format, 2);
    assert_int_equal(row.version, 2);
    /* The old silo must not activate (nor ever overwrite) newer state. */
    gr_test_run_for(&fx->loop, 20);
    call(fx, fx->rt, "Doc", "d", "get", NULL, 0, &r);
    assert_int_equal(r.status, GR_ESTATEVERSION);
    assert_non_null(strstr(r.reply, "format 2, newer than this silo's Doc (state_version 1)"));
    assert_true(gr_err_retryable(GR_ESTATEVERSION));
    call(fx, fx->rt, "Doc", "d", "set", "old code", 0, &r);
    assert_int_equal(r.status, GR_ESTATEVERSION);
    row = storage_row(fx, "Doc", "d");
    assert_int_equal(row.version, 2);
    assert_int_equal(row.format, 2);
    /* The new silo still serves it, without upgrading again. */
    call(fx, fx->rt2, "Doc", "d", "get", NULL, 0, &r);
    assert_string_equal(r.reply, "v2:hello");
    assert_int_equal(upgrades, 1);
    gr__runtime_stats_t s;
    gr__runtime_get_stats(fx->rt, &s);
    assert_int_equal(s.state_too_new, 2);
}

/* An upgrade that fails fails the activation and writes nothing. */
static void test_state_upgrade_failure(void **state) {
    fx_t *fx = *state;
    assert_int_equal(gr_runtime_register(fx->rt, &doc_v1), 0);
    assert_int_equal(gr_runtime_register(fx->rt2, &doc_v3), 0);
    res_t r;
    call(fx, fx->rt, "Doc", "u", "set", "x", 0, &r);
    call(fx, fx->rt, "Doc", "u", "bye", NULL, 0, &r);
    gr_test_run_for(&fx->loop, 20);
    call(fx, fx->rt2, "Doc", "u", "get", NULL, 0, &r);
    assert_int_equal(r.status, GR_EACTIVATE);
    assert_non_null(strstr(r.reply, "upgrading the state from format 1 to 3 failed"));
    gr_test_run_for(&fx->loop, 20);
    sread_t row = storage_row(fx, "Doc", "u");
    assert_int_equal(row.version, 1);
    assert_int_equal(row.format, 1);
}

static void test_reminder_dispatch(void **state) {
    fx_t *fx = *state;
    res_t r;
    /* No reminder service (no silo with PostgreSQL): a clear GR_ESTATE. */
    call(fx, fx->rt, "Rem", "a", "remind", "tick", 0, &r);
    assert_int_equal(atoi(r.reply), GR_ESTATE);
    /* With one, the grain's class and key and the arguments reach it. */
    gr__runtime_set_reminders(fx->rt, &fake_ops, NULL);
    call(fx, fx->rt, "Rem", "a", "remind", "tick", 0, &r);
    assert_string_equal(r.reply, "0");
    assert_string_equal(fake_seen, "Rem/a tick 10 0");
    call(fx, fx->rt, "Rem", "a", "remind", "bad name", 0, &r); /* names have no spaces */
    assert_int_equal(atoi(r.reply), GR_EINVAL);
    /* A firing is a turn that runs on_reminder; its reply is the ack. */
    reminded[0] = '\0';
    call(fx, fx->rt, "Rem", "b", GR__REMINDER_METHOD, "tick", 0, &r);
    assert_int_equal(r.status, 0);
    assert_string_equal(reminded, "tick");
    call(fx, fx->rt, "Rem", "b", "get", NULL, 0, &r);
    assert_string_equal(r.reply, "1");
    /* A class without on_reminder: the firing fails clearly. */
    call(fx, fx->rt, "Counter", "c", GR__REMINDER_METHOD, "tick", 0, &r);
    assert_int_equal(r.status, GR_ENOMETHOD);
    gr__runtime_set_reminders(fx->rt, NULL, NULL);
}

static void test_timers(void **state) {
    fx_t *fx = *state;
    res_t r;
    call(fx, fx->rt, "Counter", "tm", "timer", NULL, 0, &r);
    assert_int_equal(r.status, 0); /* the timer started */
    gr_test_run_for(&fx->loop, 120);
    call(fx, fx->rt, "Counter", "tm", "ticks", NULL, 0, &r);
    assert_int_equal(r.status, 0);
    int ticks = atoi(r.reply);
    assert_true(ticks >= 5);
    assert_true(ticks <= 13);
}

static void test_idle_deactivation_saves_state(void **state) {
    fx_t *fx = *state;
    res_t r;
    /* Lazy does not persist before reply: the change is only in memory. */
    call(fx, fx->rt, "Lazy", "idle", "incr", NULL, 0, &r);
    call(fx, fx->rt, "Lazy", "idle", "timer", NULL, 0, &r); /* timers do not keep it alive */
    assert_int_equal(gr_runtime_activation_count(fx->rt), 1);
    gr_test_run_for(&fx->loop, 300);
    assert_int_equal(gr_runtime_activation_count(fx->rt), 0);
    assert_int_equal(deactivations, 1);
    /* Reactivation (on the other runtime, even) reads the saved value. */
    call(fx, fx->rt2, "Lazy", "idle", "get", NULL, 0, &r);
    assert_string_equal(r.reply, "1");
    /* Explicit deactivation. */
    call(fx, fx->rt, "Counter", "bye", "bye", NULL, 0, &r);
    gr_test_run_for(&fx->loop, 20);
    assert_int_equal(gr_runtime_activation_count(fx->rt), 0);
}

static void test_mailbox_limit(void **state) {
    fx_t *fx = *state;
    /* rt2 allows 5 queued messages per grain. */
    res_t rs[20];
    memset(rs, 0, sizeof rs);
    gr_ref_t ref = {"Lazy", "full", 4};
    for (int i = 0; i < 20; i++)
        assert_int_equal(gr_call(fx->rt2, &ref, "slow", NULL, 0, 0, on_done, &rs[i]), 0);
    gr_test_run_for(&fx->loop, 400);
    int ok = 0, over = 0;
    for (int i = 0; i < 20; i++) {
        assert_int_equal(rs[i].done, 1);
        ok += rs[i].status == 0;
        over += rs[i].status == GR_EOVERLOAD;
    }
    assert_int_equal(ok + over, 20);
    assert_true(over >= 10);
    assert_true(ok >= 5);
}

static void drained(gr_runtime_t *rt, void *ud) { (*(int *)ud)++; }

static void test_drain_saves_everything(void **state) {
    fx_t *fx = *state;
    res_t r;
    for (int i = 0; i < 20; i++) {
        char key[8];
        snprintf(key, sizeof key, "d%d", i);
        call(fx, fx->rt, "Lazy", key, "incr", NULL, 0, &r);
    }
    assert_int_equal(gr_runtime_activation_count(fx->rt), 20);
    int done = 0;
    assert_int_equal(gr_runtime_drain(fx->rt, drained, &done), 0);
    assert_int_equal(done, 0);
    assert_int_equal(gr_runtime_drain(fx->rt, drained, &done), GR_ESTATE);
    gr_ref_t ref = {"Lazy", "new", 3};
    assert_int_equal(gr_call(fx->rt, &ref, "get", NULL, 0, 0, on_done, &r), GR_ESHUTDOWN);
    assert_true(gr_test_run_until(&fx->loop, &done, 2000));
    assert_int_equal(gr_runtime_activation_count(fx->rt), 0);
    for (int i = 0; i < 20; i++) {
        char key[8];
        snprintf(key, sizeof key, "d%d", i);
        call(fx, fx->rt2, "Lazy", key, "get", NULL, 0, &r);
        assert_string_equal(r.reply, "1");
    }
}

static void test_close_cancels_pending(void **state) {
    fx_t *fx = *state;
    res_t r;
    memset(&r, 0, sizeof r);
    gr_ref_t ref = {"Lazy", "pending", 7};
    assert_int_equal(gr_call(fx->rt, &ref, "never", NULL, 0, 0, on_done, &r), 0);
    gr_test_run_for(&fx->loop, 10);
    int done = 0;
    gr_runtime_close(fx->rt, closed, &done);
    assert_int_equal(r.done, 1);
    assert_int_equal(r.status, GR_ECANCELED);
    assert_true(gr_test_run_until(&fx->loop, &done, 2000));
    fx->rt = make_rt(fx, "silo-a2", 100); /* for the teardown */
}

/* gr_state_clear deletes the row (version-checked) before the reply of a
 * persist-before-reply class; the next write inserts a fresh row; a stale
 * activation's clear conflicts instead of deleting newer state. */
static void test_clear_state(void **state) {
    fx_t *fx = *state;
    res_t r;
    for (int i = 0; i < 3; i++)
        call(fx, fx->rt, "Counter", "c", "incr", NULL, 0, &r);
    sread_t s = storage_row(fx, "Counter", "c");
    assert_int_equal(s.version, 3);
    call(fx, fx->rt, "Counter", "c", "reset", NULL, 0, &r);
    assert_int_equal(r.status, 0);
    s = storage_row(fx, "Counter", "c");
    assert_int_equal(s.status, 0);
    assert_int_equal(s.version, 0); /* no row */
    assert_int_equal(s.len, 0);
    call(fx, fx->rt, "Counter", "c", "version", NULL, 0, &r);
    assert_string_equal(r.reply, "0");
    call(fx, fx->rt, "Counter", "c", "incr", NULL, 0, &r);
    assert_string_equal(r.reply, "1");
    assert_int_equal(storage_row(fx, "Counter", "c").version, 1);
    /* Clearing a grain that was never stored does no I/O and succeeds. */
    gr__runtime_stats_t before, after;
    gr__runtime_get_stats(fx->rt, &before);
    call(fx, fx->rt, "Counter", "never-stored", "reset", NULL, 0, &r);
    assert_int_equal(r.status, 0);
    gr__runtime_get_stats(fx->rt, &after);
    assert_int_equal(after.storage_writes, before.storage_writes);
    /* A stale activation (rt2 loaded v1, rt wrote v2) must not delete. */
    call(fx, fx->rt2, "Counter", "c", "get", NULL, 0, &r);
    call(fx, fx->rt, "Counter", "c", "incr", NULL, 0, &r);
    call(fx, fx->rt2, "Counter", "c", "reset", NULL, 0, &r);
    assert_int_equal(r.status, GR_ECONFLICT);
    assert_int_equal(storage_row(fx, "Counter", "c").version, 2);
    /* Lazy (no persist-before-reply): the deletion happens on deactivation. */
    call(fx, fx->rt, "Lazy", "l", "incr", NULL, 0, &r);
    call(fx, fx->rt, "Lazy", "l", "bye", NULL, 0, &r); /* saves v1 */
    gr_test_run_for(&fx->loop, 20);
    assert_int_equal(storage_row(fx, "Lazy", "l").version, 1);
    call(fx, fx->rt, "Lazy", "l", "reset", NULL, 0, &r);
    assert_int_equal(storage_row(fx, "Lazy", "l").version, 1); /* not yet */
    call(fx, fx->rt, "Lazy", "l", "bye", NULL, 0, &r);
    gr_test_run_for(&fx->loop, 20);
    assert_int_equal(storage_row(fx, "Lazy", "l").version, 0);
}

static void test_where(void **state) {
    fx_t *fx = *state;
    res_t r;
    call(fx, fx->rt2, "Counter", "w", "where", NULL, 0, &r);
    assert_string_equal(r.reply, "silo-b");
}

/* Idempotency keys (docs/exactly-once.md): a repeat gets the first reply
 * without running, on this silo or another (the log is stored with the
 * state in the same write), concurrent repeats wait for the first, the
 * count and age bounds hold, and a class that does not persist keeps its
 * log in the activation only. */
static void test_idempotency_keys(void **state) {
    fx_t *fx = *state;
    res_t r, r2;
    call_key(fx, fx->rt, "Counter", "k", "incr", "op-1", &r);
    assert_string_equal(r.reply, "1");
    call_key(fx, fx->rt, "Counter", "k", "incr", "op-1", &r);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.reply, "1"); /* the stored reply: the handler did not run */
    call(fx, fx->rt, "Counter", "k", "get", NULL, 0, &r);
    assert_string_equal(r.reply, "1");
    call_key(fx, fx->rt, "Counter", "k", "incr", "op-2", &r);
    assert_string_equal(r.reply, "2");
    gr__runtime_stats_t st;
    gr__runtime_get_stats(fx->rt, &st);
    assert_int_equal(st.idem_replays, 1);
    /* Stored with the state: another silo's activation answers from it. */
    sread_t row = storage_row(fx, "Counter", "k");
    assert_true(row.format & 0x40000000u);
    call_key(fx, fx->rt2, "Counter", "k", "incr", "op-1", &r);
    assert_string_equal(r.reply, "1");
    call_key(fx, fx->rt2, "Counter", "k", "incr", "op-2", &r);
    assert_string_equal(r.reply, "2");
    call(fx, fx->rt2, "Counter", "k", "get", NULL, 0, &r);
    assert_string_equal(r.reply, "2");
    /* Application errors are answers too. */
    call_key(fx, fx->rt, "Counter", "e", "fail", "op-f", &r);
    assert_int_equal(r.status, GR_EAPP);
    call_key(fx, fx->rt, "Counter", "e", "fail", "op-f", &r2);
    assert_int_equal(r2.status, GR_EAPP);
    assert_string_equal(r2.reply, r.reply);

    /* Two calls with one key at once on a reentrant class: the second waits
     * for the first (it would otherwise run beside it) and gets its reply. */
    gr_ref_t ref = {"Keyed", "w", 1};
    gr_call_options_t o;
    gr_call_options_init(&o);
    o.idempotency_key = "slow-1";
    o.idempotency_key_len = 6;
    memset(&r, 0, sizeof r);
    memset(&r2, 0, sizeof r2);
    assert_int_equal(gr_call_ex(fx->rt, &ref, "slow", NULL, 0, &o, on_done, &r), 0);
    assert_int_equal(gr_call_ex(fx->rt, &ref, "slow", NULL, 0, &o, on_done, &r2), 0);
    assert_true(gr_test_run_until(&fx->loop, &r.done, 5000));
    assert_true(gr_test_run_until(&fx->loop, &r2.done, 5000));
    assert_int_equal(r.status, 0);
    assert_int_equal(r2.status, 0);
    assert_string_equal(r2.reply, "late");
    gr__runtime_get_stats(fx->rt, &st);
    assert_int_equal(st.idem_waits, 1);
    assert_int_equal(busy_violations, 0); /* slow never ran twice at once */

    /* Bounds: 3 keys, then the oldest goes; 300 ms, then every key goes. */
    const char *ks[] = {"a", "b", "c", "d"};
    for (int i = 0; i < 4; i++)
        call_key(fx, fx->rt, "Keyed", "n", "incr", ks[i], &r);
    assert_string_equal(r.reply, "4");
    call_key(fx, fx->rt, "Keyed", "n", "incr", "d", &r);
    assert_string_equal(r.reply, "4"); /* remembered */
    call_key(fx, fx->rt, "Keyed", "n", "incr", "a", &r);
    assert_string_equal(r.reply, "5"); /* forgotten (count bound, at the write of "d"): runs again */
    gr_test_run_for(&fx->loop, 350);
    call_key(fx, fx->rt, "Keyed", "n", "incr", "d", &r); /* the write of this prunes by age... */
    assert_string_equal(r.reply, "6");                   /* ...and "d" was older than 300 ms */

    /* Not persisted before reply: the log is written with the state when
     * the state is (here at deactivation), never apart from it. */
    call_key(fx, fx->rt, "Lazy", "m", "incr", "op-1", &r);
    call_key(fx, fx->rt, "Lazy", "m", "incr", "op-1", &r2);
    assert_string_equal(r.reply, "1");
    assert_string_equal(r2.reply, "1");
    int before = deactivations;
    gr_test_run_for(&fx->loop, 300); /* idle (60 ms): deactivated, state and log saved together */
    assert_int_equal(deactivations, before + 1);
    call_key(fx, fx->rt, "Lazy", "m", "incr", "op-1", &r);
    assert_string_equal(r.reply, "1");
    call_key(fx, fx->rt, "Lazy", "m", "incr", "op-2", &r);
    assert_string_equal(r.reply, "2");

    /* A keyed call that clears the state: its reply is stored with the
     * clear (the row is written empty rather than deleted), so another
     * silo answers the repeat from storage. */
    call_key(fx, fx->rt, "Counter", "cl", "incr", "c-1", &r);
    call_key(fx, fx->rt, "Counter", "cl", "reset", "c-2", &r);
    assert_string_equal(r.reply, "0");
    gr__runtime_get_stats(fx->rt2, &st);
    uint64_t replays = st.idem_replays;
    call_key(fx, fx->rt2, "Counter", "cl", "reset", "c-2", &r);
    assert_int_equal(r.status, 0);
    gr__runtime_get_stats(fx->rt2, &st);
    assert_int_equal(st.idem_replays, replays + 1);
    call_key(fx, fx->rt2, "Counter", "cl", "incr", "c-1", &r);
    assert_string_equal(r.reply, "1"); /* the first incr's own answer */
    call(fx, fx->rt2, "Counter", "cl", "get", NULL, 0, &r);
    assert_string_equal(r.reply, "0");

    /* Keys over the limit are refused before anything runs. */
    char big[GR_IDEM_KEY_MAX + 2];
    memset(big, 'k', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    gr_ref_t kref = {"Counter", "k", 1};
    o.idempotency_key = big;
    o.idempotency_key_len = GR_IDEM_KEY_MAX + 1;
    assert_int_equal(gr_call_ex(fx->rt, &kref, "incr", NULL, 0, &o, on_done, &r), GR_ETOOBIG);
}

int main(void) {
    gr_log_setup(GR_LOG_LEVEL_ERROR, GR_LOG_FORMAT_TEXT, "test");
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_activation_once_per_id),
        T(test_turn_order_and_no_overlap),
        T(test_async_reply_keeps_grain_busy),
        T(test_persist_before_reply),
        T(test_conflict_between_silos),
        T(test_conflict_forwards_queue),
        T(test_unknown_class_method_and_app_error),
        T(test_grain_calls_grain),
        T(test_timeout_and_late_reply),
        T(test_timers),
        T(test_idle_deactivation_saves_state),
        T(test_mailbox_limit),
        T(test_drain_saves_everything),
        T(test_close_cancels_pending),
        T(test_where),
        T(test_clear_state),
        T(test_class_timeout_and_remaining),
        T(test_call_cycles),
        T(test_interleave_while_busy),
        T(test_stateless_workers),
        T(test_state_versions),
        T(test_state_upgrade_failure),
        T(test_reminder_dispatch),
        T(test_idempotency_keys),
    };
    return cmocka_run_group_tests_name("grains.runtime", tests, NULL, NULL);
}
