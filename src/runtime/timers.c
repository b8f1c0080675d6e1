/* src/runtime/timers.c - grain timers (one uv_timer per timer, ticks run as
 * turns) and the reminder facade over the silo's reminder service. */
#include "runtime/runtime_internal.h"

/* ---- timers ---- */

static void gr__timer_closed(uv_handle_t *h) {
    gr__timer_t *t = h->data;
    gr_runtime_t *rt = GR__G_RT(t->grain);
    gr_grain_t *g = t->grain;
    gr__free(t);
    g->refs--;
    gr__grain_release(g);
    (void)rt;
}

void gr__timer_remove(gr_grain_t *g, gr__timer_t *t) {
    gr__timer_t **pp = &g->ext->timers; /* a timer exists: so does ext */
    while (*pp != t)
        pp = &(*pp)->next;
    *pp = t->next;
    if (t->queued) g->ticks_pending--;
    uv_timer_stop(&t->handle);
    uv_close((uv_handle_t *)&t->handle, gr__timer_closed);
}

void gr__timers_stop_all(gr_grain_t *g) {
    while (GR__G_TIMERS(g))
        gr__timer_remove(g, g->ext->timers);
}

static void gr__timer_fire(uv_timer_t *h) {
    gr__timer_t *t = h->data;
    gr_grain_t *g = t->grain;
    if (t->queued || g->status != GR__G_ACTIVE) return;
    t->queued = 1;
    g->ticks_pending++;
    gr__grain_schedule(g);
}

int gr_timer_start(gr_grain_t *g, uint64_t due_ms, uint64_t period_ms, gr_timer_fn fn, void *ud,
                   uint64_t *id) {
    if (!g || !fn) return GR_EINVAL;
    if (g->status != GR__G_ACTIVE) return GR_ESTATE;
    gr__timer_t *t = gr__grain_ext(g) ? gr__calloc(1, sizeof *t) : NULL;
    if (!t) return GR_ENOMEM;
    t->grain = g;
    t->id = ++GR__G_RT(g)->next_timer_id;
    t->fn = fn;
    t->ud = ud;
    t->one_shot = period_ms == 0;
    uv_timer_init(GR__G_RT(g)->loop, &t->handle);
    t->handle.data = t;
    uv_timer_start(&t->handle, gr__timer_fire, due_ms, period_ms);
    g->refs++; /* released in the handle's close callback */
    t->next = g->ext->timers;
    g->ext->timers = t;
    if (id) *id = t->id;
    return 0;
}

int gr_timer_stop(gr_grain_t *g, uint64_t id) {
    if (!g) return GR_EINVAL;
    gr__timer_t *t = gr__timer_find(g, id);
    if (!t) return GR_ENOENT;
    gr__timer_remove(g, t);
    return 0;
}

/* ---- cluster hooks (runtime/runtime.h) ---- */

void gr__runtime_set_reminders(gr_runtime_t *rt, const gr__reminder_ops_t *ops, void *ud) {
    rt->reminders = ops;
    rt->reminders_ud = ud;
}

int gr_reminder_register(gr_grain_t *g, const char *name, uint64_t due_ms, uint64_t period_ms, gr_call_cb cb,
                         void *ud) {
    if (!g || !gr__valid_reminder_name(name)) return GR_EINVAL;
    gr_runtime_t *rt = GR__G_RT(g);
    if (!rt->reminders) return GR_ESTATE;
    return rt->reminders->add(rt->reminders_ud, GR__G_CLS(g)->name, GR__G_KEY(g), g->key_len, name, due_ms,
                              period_ms, cb, ud);
}

int gr_reminder_unregister(gr_grain_t *g, const char *name, gr_call_cb cb, void *ud) {
    if (!g || !gr__valid_reminder_name(name)) return GR_EINVAL;
    gr_runtime_t *rt = GR__G_RT(g);
    if (!rt->reminders) return GR_ESTATE;
    return rt->reminders->remove(rt->reminders_ud, GR__G_CLS(g)->name, GR__G_KEY(g), g->key_len, name, cb,
                                 ud);
}

int gr_reminder_list(gr_grain_t *g, gr_call_cb cb, void *ud) {
    if (!g || !cb) return GR_EINVAL;
    gr_runtime_t *rt = GR__G_RT(g);
    if (!rt->reminders) return GR_ESTATE;
    return rt->reminders->list(rt->reminders_ud, GR__G_CLS(g)->name, GR__G_KEY(g), g->key_len, cb, ud);
}
