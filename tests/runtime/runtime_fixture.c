/* tests/runtime/runtime_fixture.c - the grain classes and the fixture of
 * the runtime tests (runtime_fixture.h). */
#include "runtime_fixture.h"

/* ---- test grain classes ---- */

int activations, deactivations, busy_violations;

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

void tick(gr_grain_t *g, void *ud) {
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

const gr_method_t ring_methods[] = {{"call", m_call}, {"incr", m_incr},   {"get", m_get},
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
int upgrades;
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
const gr_class_t doc_v1 = {.name = "Doc", .methods = doc_methods, .state_version = 1};
const gr_class_t doc_v2 = {
    .name = "Doc", .methods = doc_methods, .state_version = 2, .upgrade_state = doc_upgrade};
const gr_class_t doc_v3 = {
    .name = "Doc", .methods = doc_methods, .state_version = 3, .upgrade_state = doc_upgrade_fails};

/* Reminders at the runtime level: on_reminder dispatch, and the API's
 * validation and hand-off to the silo's service (a recording fake here;
 * the real one is tested through silos on PostgreSQL). */
char reminded[64];
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
char fake_seen[256];
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
const gr__reminder_ops_t fake_ops = {fake_add, fake_remove, fake_list};

static int fail_activate(gr_grain_t *g) { return GR_EINVAL; }
static const gr_class_t broken_cls = {.name = "Broken", .methods = t_methods, .on_activate = fail_activate};

/* ---- fixture: one loop, one shared memory storage, two runtimes ---- */

int completions; /* completion order, for ordering assertions */

void on_done(void *ud, int status, const uint8_t *reply, size_t len) {
    res_t *r = ud;
    r->done++;
    r->order = ++completions;
    r->status = status;
    r->len = len;
    size_t n = len < sizeof r->reply - 1 ? len : sizeof r->reply - 1;
    if (n) memcpy(r->reply, reply, n);
    r->reply[n] = '\0';
}

gr_runtime_t *make_rt(fx_t *fx, const char *id, uint32_t max_queue) {
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

int setup(void **state) {
    fx_t *fx = calloc(1, sizeof *fx);
    uv_loop_init(&fx->loop);
    assert_int_equal(gr_storage_memory_new(&fx->loop, &fx->st), 0);
    fx->rt = make_rt(fx, "silo-a", 10000);
    fx->rt2 = make_rt(fx, "silo-b", 5);
    activations = deactivations = busy_violations = 0;
    *state = fx;
    return 0;
}

void closed(void *ud) { (*(int *)ud)++; }

int teardown(void **state) {
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

void call(fx_t *fx, gr_runtime_t *rt, const char *cls, const char *key, const char *method, const char *arg,
          uint32_t timeout, res_t *r) {
    memset(r, 0, sizeof *r);
    gr_ref_t ref = {cls, key, strlen(key)};
    assert_int_equal(gr_call(rt, &ref, method, arg, arg ? strlen(arg) : 0, timeout, on_done, r), 0);
    assert_int_equal(r->done, 0); /* never inside the call */
    assert_true(gr_test_run_until(&fx->loop, &r->done, 5000));
    assert_int_equal(r->done, 1);
}

static void on_sread(void *ud, int status, const uint8_t *data, size_t len, int64_t version, uint32_t format,
                     const char *d) {
    sread_t *s = ud;
    s->format = format;
    s->done = 1;
    s->status = status;
    s->version = version;
    s->len = len;
}

sread_t storage_row(fx_t *fx, const char *cls, const char *key) {
    sread_t s = {0};
    assert_int_equal(gr_storage_read(fx->st, cls, key, strlen(key), on_sread, &s), 0);
    assert_true(gr_test_run_until(&fx->loop, &s.done, 2000));
    return s;
}

void call_key(fx_t *fx, gr_runtime_t *rt, const char *cls, const char *key, const char *method,
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
