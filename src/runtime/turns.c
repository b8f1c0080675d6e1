/* src/runtime/turns.c - turns: mailboxes, the run list and the pump that
 * drains it, one turn of a grain (a call, a timer tick), interleaving. */
#include "runtime/runtime_internal.h"

/* End the turn of m (replied, or its held reply released). */
void gr__turn_end(gr_grain_t *g, gr_msg_t *m) {
    if (g->current == m) {
        g->current = NULL;
        return;
    }
    if (!m->interleaved || !g->ext) return;
    for (gr_msg_t **pp = &g->ext->interleaved; *pp; pp = &(*pp)->next) {
        if (*pp == m) {
            *pp = m->next;
            m->next = NULL;
            g->ext->n_interleaved--;
            return;
        }
    }
}

/* Undo gr__turn_end (the reply could not be sent after all). */
void gr__turn_restore(gr_grain_t *g, gr_msg_t *m) {
    if (!m->interleaved) {
        g->current = m;
        return;
    }
    m->next = g->ext->interleaved;
    g->ext->interleaved = m;
    g->ext->n_interleaved++;
}

void gr__mailbox_push(gr_grain_t *g, gr_msg_t *m) {
    m->next = NULL;
    m->grain = g;
    if (g->mb_tail)
        g->mb_tail->next = m;
    else
        g->mb_head = m;
    g->mb_tail = m;
    g->mb_len++;
}

gr_msg_t *gr__mailbox_pop(gr_grain_t *g) {
    gr_msg_t *m = g->mb_head;
    if (!m) return NULL;
    g->mb_head = m->next;
    if (!g->mb_head) g->mb_tail = NULL;
    g->mb_len--;
    m->next = NULL;
    return m;
}

/* ---- turns ---- */

void gr__grain_schedule(gr_grain_t *g) {
    if (g->scheduled || g->status == GR__G_DEAD) return;
    g->scheduled = 1;
    g->run_next = NULL;
    gr_runtime_t *rt = GR__G_RT(g);
    if (rt->run_tail)
        rt->run_tail->run_next = g;
    else
        rt->run_head = g;
    rt->run_tail = g;
    gr__pump_start(rt);
}

const gr_method_t *gr__find_method(const gr_class_t *cls, const char *name) {
    for (const gr_method_t *m = cls->methods; m->name; m++)
        if (strcmp(m->name, name) == 0) return m;
    return NULL;
}

gr__timer_t *gr__timer_find(gr_grain_t *g, uint64_t id) {
    for (gr__timer_t *t = GR__G_TIMERS(g); t; t = t->next)
        if (t->id == id) return t;
    return NULL;
}

/* Run one due timer tick. Ticks are turns of their own: they never run
 * inside a handler, but they do interleave with a call that is waiting for
 * an asynchronous reply (as Orleans timers do); otherwise a handler that
 * replies from a timer could never finish. */
static void gr__grain_tick(gr_grain_t *g) {
    gr__timer_t *t = GR__G_TIMERS(g);
    while (t && !t->queued)
        t = t->next;
    if (!t) {
        g->ticks_pending = 0;
        return;
    }
    t->queued = 0;
    g->ticks_pending--;
    uint64_t id = t->id;
    /* A timer is a turn too: without the lease, this activation may have a
     * successor elsewhere, and the tick's effects (calls, writes) must not
     * happen here. A periodic timer tries again at its next period. */
    if (!gr__may_answer(g)) {
        t = gr__timer_find(g, id);
        if (t && t->one_shot) gr__timer_remove(g, t);
        return;
    }
    t->fn(g, t->ud);
    t = gr__timer_find(g, id); /* the tick may have stopped it */
    if (t && t->one_shot) gr__timer_remove(g, t);
}

/* Whether the call at the head of the mailbox may interleave. Its method
 * is resolved here if submission could not (the class was not local). */
/* A keyed message reaches its grain: 1 if it was dealt with here (the
 * stored reply, or parked behind the running call with the same key), 0 if
 * it runs (as a new entry of the log). */
static int gr__idem_intercept(gr_grain_t *g, gr_msg_t *m) {
    gr_runtime_t *rt = GR__G_RT(g);
    if (!gr__grain_ext(g)) {
        gr__msg_fail(rt, m, GR_ENOMEM, "out of memory");
        return 1;
    }
    gr__idem_log_t *log = &g->ext->idem;
    gr__idem_entry_t *e = gr__idem_find(log, m->idem, m->idem_len);
    if (e && e->state == GR__IDEM_DONE && !e->waiting) {
        /* Past the class's retention a key is forgotten, whether or not a
         * write has pruned it yet: the retention is what is promised. */
        uint64_t now = gr__idem_now_ms();
        if (now > e->at_ms && now - e->at_ms > gr__idem_retention(GR__G_CLS(g))) {
            gr__idem_remove(log, e);
            e = NULL;
        }
    }
    if (!e) {
        if (gr__idem_begin(log, m->idem, m->idem_len, &e) != 0) {
            gr__msg_fail(rt, m, GR_ENOMEM, "out of memory");
            return 1;
        }
        e->owner = m;
        m->idem_entry = e;
        return 0;
    }
    if (e->state == GR__IDEM_DONE) {
        rt->stats.idem_replays++;
        if (gr__msg_complete_copy(rt, m, e->status, e->reply, e->reply_len) != 0)
            gr__msg_fail(rt, m, GR_ENOMEM, "out of memory");
        return 1;
    }
    rt->stats.idem_waits++;
    m->next = e->waiting;
    e->waiting = m;
    return 1;
}

static int gr__head_interleaves(gr_grain_t *g) {
    gr_msg_t *head = g->mb_head;
    if (!head) return 0;
    if (!head->method) head->method = gr__find_method(GR__G_CLS(g), head->method_name);
    return gr__can_interleave(g, head);
}

/* Run at most one turn of a grain. */
static void gr__grain_turn(gr_grain_t *g) {
    gr_runtime_t *rt = GR__G_RT(g);
    if (g->status == GR__G_LOADING && GR__G_WORKER(g)) {
        gr__grain_storage_read_cb(g, 0, NULL, 0, 0, 0, NULL); /* stateless: loaded at once */
        return;
    }
    if (g->status != GR__G_ACTIVE) return;
    if (g->ticks_pending) {
        gr__grain_tick(g);
        gr__grain_schedule(g);
        return;
    }
    /* Draining in a cluster: stop after the current turn even if calls keep
     * queueing (a hot grain would otherwise never let the drain end); the
     * queue is routed to the grain's next silo when the activation ends or
     * has moved there. An activation waiting in the migration queue serves
     * on until its turn to move comes (migrate.c). */
    if (rt->draining && rt->router && g->mig != GR__MIG_QUEUED) {
        if (gr__grain_busy(g)) return;
        if (g->mig == GR__MIG_PENDING && g->deactivate_requested != 2)
            gr__migrate_start(g);
        else
            gr__grain_deactivate(g, g->deactivate_requested != 2);
        return;
    }
    if (g->deactivate_requested == 2) {
        /* Its state in memory is not to be kept (a write that failed or
         * could not be made, a lost directory conflict): nothing more runs
         * here; queued calls move to the next activation when it ends. */
        if (!gr__grain_busy(g)) gr__grain_deactivate(g, 0);
        return;
    }
    gr_msg_t *head = g->mb_head;
    if (!head) {
        if (!gr__grain_busy(g) && (g->deactivate_requested || (rt->draining && g->mig != GR__MIG_QUEUED)))
            gr__grain_deactivate(g, g->deactivate_requested != 2);
        return;
    }
    int inter = gr__head_interleaves(g);
    /* An ordinary call waits for every turn in progress; an interleaving
     * one only runs beside others (it never waits behind them). */
    if (!inter && gr__grain_busy(g)) return;
    if (inter && !gr__grain_ext(g)) {
        gr_msg_t *m = gr__mailbox_pop(g);
        gr__msg_fail(rt, m, GR_ENOMEM, "out of memory");
        gr__grain_schedule(g);
        return;
    }
    gr_msg_t *m = gr__mailbox_pop(g);
    gr__grain_touch(g);
    if (!gr__may_answer(g)) {
        gr__msg_fail(rt, m, GR_ENOTHERE, GR__NO_LEASE);
    } else if (m->deadline <= uv_now(rt->loop)) {
        /* The caller gave up already: running the handler would only
         * produce a reply nobody reads. */
        gr__msg_fail(rt, m, GR_ETIMEDOUT, "deadline passed while queued");
    } else if (m->idem_len && gr__idem_intercept(g, m)) {
        /* Answered from the reply log, or parked behind the call that runs with its key. */
    } else {
        if (!m->method) m->method = gr__find_method(GR__G_CLS(g), m->method_name);
        if (!m->method && !strcmp(m->method_name, GR__REMINDER_METHOD) && GR__G_CLS(g)->on_reminder) {
            /* A reminder fires: a turn like any call; its reply is the ack. */
            char name[GR_METHOD_NAME_MAX + 1];
            size_t n = m->arg_len < sizeof name - 1 ? m->arg_len : sizeof name - 1;
            memcpy(name, m->arg, n);
            name[n] = '\0';
            g->current = m;
            GR__G_CLS(g)->on_reminder(g, m, name);
        } else if (!m->method) {
            char detail[GR_METHOD_NAME_MAX + GR_CLASS_NAME_MAX + 64];
            snprintf(detail, sizeof detail, "class %s has no method '%s'", GR__G_CLS(g)->name,
                     m->method_name);
            gr__msg_fail(rt, m, GR_ENOMETHOD, detail);
        } else {
            if (inter) {
                m->interleaved = 1;
                m->next = g->ext->interleaved;
                g->ext->interleaved = m;
                g->ext->n_interleaved++;
            } else {
                g->current = m;
            }
            m->ran = 1;
            m->method->fn(g, m, m->arg, m->arg_len);
        }
    }
    /* Run again if the next call can start now (or, idle, to deactivate). */
    if (g->status == GR__G_ACTIVE && (!gr__grain_busy(g) || gr__head_interleaves(g))) gr__grain_schedule(g);
}

/* One turn of g. User code runs in it (a handler, a tick, on_reminder) and
 * may end the activation under the turn's feet (a write the provider
 * refuses at once fails the activation): the turn holds a reference, so g
 * is freed only after it is done with it. */
static void gr__grain_run(gr_grain_t *g) {
    g->refs++;
    g->in_turn++;
    gr__grain_turn(g);
    g->in_turn--;
    g->refs--;
    if (g->status == GR__G_DEAD) gr__grain_release(g);
}

static void gr__pump_cb(uv_idle_t *h) {
    gr_runtime_t *rt = h->data;
    gr__migrate_pump_due(rt);
    /* A bounded batch per loop iteration keeps sockets and timers served
     * under a flood of local calls. */
    for (int budget = 4096; budget > 0; budget--) {
        if (rt->done_head) {
            gr__call_t *c = rt->done_head;
            rt->done_head = c->done_next;
            if (!rt->done_head) rt->done_tail = NULL;
            /* A grain's own call: its code runs now, so it is not evicted
             * under it (the record's ref keeps its memory until release). */
            if (c->held) c->held->in_turn++;
            c->cb(c->ud, c->status, c->reply, c->reply_len);
            if (c->held) c->held->in_turn--;
            gr__call_release(rt, c);
            continue;
        }
        gr_grain_t *g = rt->run_head;
        if (!g) break;
        rt->run_head = g->run_next;
        if (!rt->run_head) rt->run_tail = NULL;
        g->scheduled = 0;
        if (g->status == GR__G_DEAD)
            gr__grain_release(g);
        else
            gr__grain_run(g);
    }
    if (!rt->done_head && !rt->run_head) {
        uv_idle_stop(&rt->pump);
        rt->pump_on = 0;
        gr__maybe_drained(rt);
    }
}

void gr__pump_start(gr_runtime_t *rt) {
    if (rt->pump_on || rt->closing) return;
    rt->pump_on = 1;
    uv_idle_start(&rt->pump, gr__pump_cb);
}
