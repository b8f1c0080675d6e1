/* src/runtime/migrate.c - live migration (docs/migration.md): an activation
 * handed to another silo with its state bytes, version and reply log, so
 * that silo serves it without reading storage. Both sides live here: the
 * source freezes the activation after its last turn, writes dirty state,
 * encodes it and gives it to the cluster hook; the target transfers the
 * claim in storage (only from that exact activation) and starts the
 * activation from the bytes. A drain queues every activation and moves a
 * bounded number at a time; rebalancing moves a few chosen ones.
 *
 * Why nothing is served twice: the source answers nothing for the grain
 * from the moment it freezes it; the target answers only after the claim
 * transfer committed, and the transfer matches only the source's own claim
 * (silo and token), so it fails if the claim was released or taken over
 * meanwhile. When the outcome is unknown (the link or the database broke
 * mid-way) the source drops its activation without serving or saving, and
 * releases by token (a no-op if the claim moved): whoever holds the claim
 * serves, and calls find it through the claim as after any failure. */
#include "runtime/runtime_internal.h"

/* Payload of a `$mig in` call, big-endian:
 *   u8 version (1), u8 0, u16 source silo id length, the id,
 *   u32 source token, i64 state version, u32 format (bit 30: a reply log
 *   follows the state, as storage returns it), u32 data length, data,
 *   u32 extra length (on_migrate_out's bytes), extra. */
#define GR__MIG_VERSION 1
#define GR__MIG_HEAD 4u
#define GR__MIG_FIXED (4u + 8u + 4u + 4u + 4u)

int gr__migrate_refused(int status, const uint8_t *reply, size_t len) {
    return status != 0 && len >= sizeof GR__MIG_REFUSAL - 1 &&
           memcmp(reply, GR__MIG_REFUSAL, sizeof GR__MIG_REFUSAL - 1) == 0;
}

/* ---- the source ---- */

/* May g move at all (class, kind, what it waits for)? */
static int gr__movable(const gr_grain_t *g) {
    const gr_class_t *cls = GR__G_CLS(g);
    return !GR__G_WORKER(g) && !(cls->flags & GR_CLASS_NO_MIGRATE) && g->claimed && !g->owned &&
           g->deactivate_requested != 2;
}

/* Append every settled entry of the reply log in storage's layout
 * (storage/replies.h), then the trailer. Nothing if the log is empty. */
static int gr__encode_log(gr_grain_t *g, gr__buf_t *b) {
    if (!g->ext || !g->ext->idem.n) return 0;
    size_t start = b->len;
    for (gr__idem_entry_t *e = g->ext->idem.oldest; e; e = e->newer) {
        if (e->state != GR__IDEM_DONE) continue;
        uint8_t h[1 + 8 + 4 + 4];
        h[0] = e->key_len;
        if (gr__buf_append(b, h, 1) || gr__buf_append(b, e->key, e->key_len)) return GR_ENOMEM;
        gr__put_u64(h, e->at_ms);
        gr__put_u32(h + 8, (uint32_t)e->status);
        gr__put_u32(h + 12, e->reply_len);
        if (gr__buf_append(b, h, 16) || gr__buf_append(b, e->reply, e->reply_len)) return GR_ENOMEM;
    }
    uint8_t t[GR__REPLIES_TRAILER];
    gr__put_u32(t, (uint32_t)(b->len - start));
    gr__put_u32(t + 4, GR__REPLIES_MAGIC);
    return gr__buf_append(b, t, sizeof t);
}

static int gr__encode(gr_grain_t *g, const uint8_t *extra, size_t extra_len, gr__buf_t *b) {
    gr_runtime_t *rt = GR__G_RT(g);
    size_t sl = strlen(rt->silo_id);
    uint8_t h[GR__MIG_FIXED];
    h[0] = GR__MIG_VERSION;
    h[1] = 0;
    gr__put_u16(h + 2, (uint16_t)sl);
    if (gr__buf_append(b, h, GR__MIG_HEAD) || gr__buf_append(b, rt->silo_id, sl)) return GR_ENOMEM;
    size_t at = b->len; /* the fixed fields, filled once the data's length is known */
    if (gr__buf_append(b, h, 4 + 8 + 4 + 4) || gr__buf_append(b, g->state, g->state_len)) return GR_ENOMEM;
    size_t log_at = b->len;
    if (gr__encode_log(g, b)) return GR_ENOMEM;
    uint32_t format = GR__G_CLS(g)->state_version | (b->len > log_at ? GR__IDEM_FORMAT_FLAG : 0);
    gr__put_u32(b->data + at, g->token);
    gr__put_u64(b->data + at + 4, (uint64_t)g->version);
    gr__put_u32(b->data + at + 12, format);
    gr__put_u32(b->data + at + 16, (uint32_t)(b->len - at - 20));
    uint8_t el[4];
    gr__put_u32(el, (uint32_t)extra_len);
    if (gr__buf_append(b, el, 4) || gr__buf_append(b, extra, extra_len)) return GR_ENOMEM;
    return b->len > GR_ARG_MAX ? GR_ETOOBIG : 0;
}

static void gr__migrate_pump(gr_runtime_t *rt);

/* The activation stays here (the target refused before anything moved):
 * a drain deactivates it as it would have without migration (saving what
 * on_deactivate changes), rebalancing lets it serve on. */
static void gr__stay(gr_grain_t *g) {
    gr_runtime_t *rt = GR__G_RT(g);
    g->status = GR__G_ACTIVE;
    g->mig = GR__MIG_NONE;
    if (g->deactivate_requested == 2)
        gr__grain_deactivate(g, 0); /* dropped meanwhile (gr__grain_drop): not to be kept */
    else if (rt->draining)
        gr__grain_deactivate(g, 1);
    else
        gr__grain_schedule(g);
}

static void gr__sent_cb(void *ud, int status, const uint8_t *reply, size_t len) {
    gr_grain_t *g = ud;
    gr_runtime_t *rt = GR__G_RT(g);
    rt->mig_in_flight--;
    g->refs--;
    if (g->status != GR__G_MIGRATING) { /* the runtime closed meanwhile */
        gr__grain_release(g);
        return;
    }
    g->mig = GR__MIG_NONE;
    if (status == 0) {
        /* The claim is the target's: nothing to give back. Queued calls go
         * to the router, whose cache points at the target now. */
        rt->stats.migrated_out++;
        g->claimed = 0;
        gr__timers_stop_all(g);
        g->status = GR__G_DEACTIVATING;
        gr__grain_finish(g);
    } else if (gr__migrate_refused(status, reply, len)) {
        rt->stats.migrate_refused++;
        gr__log(GR_LOG_LEVEL_DEBUG, GR__G_CLS(g)->name, GR__G_KEY(g), g->key_len, "migration refused: %s",
                gr_err_name(status));
        gr__stay(g);
    } else {
        /* Outcome unknown, or the target holds the claim and could not
         * start: never serve again here. The release matches only our own
         * claim, so it frees the grain if the transfer did not happen. */
        rt->stats.migrate_failed++;
        gr__log(GR_LOG_LEVEL_WARN, GR__G_CLS(g)->name, GR__G_KEY(g), g->key_len,
                "migration failed (%s): dropping the activation here without saving; it is loaded where "
                "its next call goes",
                gr_err_name(status));
        gr__timers_stop_all(g);
        g->status = GR__G_DEACTIVATING;
        gr__grain_finish(g);
    }
    gr__migrate_pump(rt);
    gr__maybe_drained(rt);
}

/* Frozen and written: hand it over to `target` (NULL: the silo that would
 * host it next). A failure to send starts nothing: the caller's loop (or
 * the next completion) moves the queue on, never a recursion. */
static void gr__send(gr_grain_t *g, const char *target) {
    gr_runtime_t *rt = GR__G_RT(g);
    const gr_class_t *cls = GR__G_CLS(g);
    uint8_t *extra = NULL;
    size_t extra_len = 0;
    int rc = 0;
    if (cls->on_migrate_out) {
        extra = gr__malloc(GR_MIGRATE_EXTRA_MAX);
        if (!extra) rc = GR_ENOMEM;
        g->in_turn++; /* user code: nothing may evict or free g under it */
        if (rc == 0 && (cls->on_migrate_out(g, extra, GR_MIGRATE_EXTRA_MAX, &extra_len) != 0 ||
                        extra_len > GR_MIGRATE_EXTRA_MAX))
            rc = GR_EINVAL; /* the class declines for this activation */
        g->in_turn--;
    }
    gr__buf_t b;
    gr__buf_init(&b);
    if (rc == 0) rc = gr__encode(g, extra, extra_len, &b);
    gr__free(extra);
    if (rc == 0) {
        g->refs++;
        rt->mig_in_flight++;
        rc = rt->cluster.migrate(rt->cluster.ud, cls->name, GR__G_KEY(g), g->key_len, target, b.data, b.len,
                                 gr__sent_cb, g);
        if (rc != 0) {
            g->refs--;
            rt->mig_in_flight--;
        }
    }
    gr__buf_free(&b);
    if (rc != 0) { /* nothing was sent */
        rt->stats.migrate_refused++;
        gr__stay(g);
    }
}

static void gr__written_cb(gr_grain_t *g, int status, void *ud) {
    gr_runtime_t *rt = GR__G_RT(g);
    (void)ud;
    if (g->status != GR__G_MIGRATING) return; /* closed meanwhile */
    if (status != 0) {
        /* The write path drops the activation (its state is unknown): it
         * must find it ACTIVE to do so. */
        rt->mig_in_flight--;
        g->status = GR__G_ACTIVE;
        g->mig = GR__MIG_NONE;
        gr__migrate_pump(rt);
        return;
    }
    rt->mig_in_flight--; /* gr__send counts it again */
    gr__send(g, NULL);     /* only a drain writes first (rebalancing moves clean ones) */
    gr__migrate_pump(rt);
}

void gr__migrate_start(gr_grain_t *g) {
    gr_runtime_t *rt = GR__G_RT(g);
    if (g->status != GR__G_ACTIVE || !gr__movable(g) || !rt->cluster.migrate) {
        g->mig = GR__MIG_NONE;
        if (rt->draining && g->status == GR__G_ACTIVE) gr__grain_deactivate(g, g->deactivate_requested != 2);
        return;
    }
    /* Frozen: no turn or tick starts here again unless the target refuses. */
    g->status = GR__G_MIGRATING;
    g->mig = GR__MIG_SENDING;
    if (g->dirty || g->writing) {
        /* The target gets what storage has: write first (a write-behind
         * class's changes are not lost if the target dies). */
        rt->mig_in_flight++;
        if (gr__write_request(g, gr__written_cb, NULL, NULL) == 0) return;
        rt->mig_in_flight--;
        gr__stay(g);
        return;
    }
    gr__send(g, NULL);
}

static void gr__migrate_pump(gr_runtime_t *rt) {
    /* A move that fails at once ends inside this loop (and may complete
     * others): one loop at a time, the outer one goes on. */
    if (rt->mig_pumping) return;
    rt->mig_pumping = 1;
    /* Past the budget (a share of the drain timeout), what has not started
     * deactivates as without migration: its state is written in time even
     * when targets are slow or gone. */
    int late = rt->mig_deadline && uv_now(rt->loop) >= rt->mig_deadline;
    while (rt->mq && rt->mq_pos < rt->mq_len && (late || rt->mig_in_flight < GR__MIG_IN_FLIGHT)) {
        gr_grain_t *g = rt->mq[rt->mq_pos];
        rt->mq[rt->mq_pos++] = NULL;
        g->refs--;
        if (g->status == GR__G_DEAD) {
            gr__grain_release(g);
            continue;
        }
        if (g->mig != GR__MIG_QUEUED) continue;
        if (late) {
            rt->stats.migrate_refused++;
            g->mig = GR__MIG_NONE;
            gr__grain_schedule(g); /* the drain's branch of the turn deactivates it */
            continue;
        }
        if (g->status == GR__G_ACTIVE && !gr__grain_busy(g) && !g->in_turn) {
            gr__migrate_start(g);
        } else {
            /* Busy or still loading: it moves when its turn ends (turns.c). */
            g->mig = GR__MIG_PENDING;
            gr__grain_schedule(g);
        }
    }
    if (rt->mq && rt->mq_pos >= rt->mq_len) {
        gr__free(rt->mq);
        rt->mq = NULL;
        rt->mq_len = rt->mq_pos = 0;
    }
    rt->mig_pumping = 0;
}

void gr__migrate_pump_due(gr_runtime_t *rt) {
    if (rt->mq && !rt->closing) gr__migrate_pump(rt);
}

void gr__migrate_drain(gr_runtime_t *rt) {
    if (rt->mq || !rt->n_grains) return;
    rt->mq = gr__calloc(rt->n_grains, sizeof *rt->mq);
    if (!rt->mq) return; /* everything deactivates instead */
    gr_grain_t *g, *tmp;
    HASH_ITER(hh, rt->grains, g, tmp) {
        if ((g->status != GR__G_ACTIVE && g->status != GR__G_LOADING) || GR__G_WORKER(g) ||
            (GR__G_CLS(g)->flags & GR_CLASS_NO_MIGRATE) || g->mig != GR__MIG_NONE)
            continue;
        g->refs++;
        g->mig = GR__MIG_QUEUED;
        rt->mq[rt->mq_len++] = g;
    }
    rt->mig_deadline = rt->mig_budget_ms ? uv_now(rt->loop) + rt->mig_budget_ms : 0;
    /* Started by the pump (gr__migrate_pump_due), not here: on_migrate_out
     * and the drain's own completion never run inside gr_runtime_drain. */
    gr__pump_start(rt);
}

void gr__migrate_queue_free(gr_runtime_t *rt) {
    gr_grain_t **q = rt->mq;
    size_t pos = rt->mq_pos, len = rt->mq_len;
    rt->mq = NULL;
    rt->mq_len = rt->mq_pos = 0;
    for (size_t i = pos; q && i < len; i++) {
        gr_grain_t *g = q[i];
        g->refs--;
        g->mig = GR__MIG_NONE;
        if (g->status == GR__G_DEAD) gr__grain_release(g);
    }
    gr__free(q);
}

size_t gr__runtime_migrate_some(gr_runtime_t *rt, const char *target, size_t n, uint32_t window_ms,
                                int busiest_first) {
    if (!rt->cluster.migrate || rt->draining || rt->closing) return 0;
    uint32_t now_s = (uint32_t)(uv_now(rt->loop) / 1000);
    uint32_t window_s = (window_ms + 999) / 1000;
    size_t started = 0, looked = 0;
    gr_grain_t *g = busiest_first ? rt->lru_tail : rt->lru_head;
    while (g && started < n && looked < 4 * n + 64 && rt->mig_in_flight < GR__MIG_IN_FLIGHT) {
        gr_grain_t *next = busiest_first ? g->lru_prev : g->lru_next;
        if (next) next->refs++; /* on_migrate_out may end it: kept until we step to it */
        looked++;
        /* Clean ones only: a move never waits for a write. */
        if (g->status == GR__G_ACTIVE && g->mig == GR__MIG_NONE && !gr__grain_busy(g) && !g->mb_head &&
            !g->in_turn && !g->scheduled && !g->dirty && !g->writing && gr__movable(g) &&
            !(g->moved_at && now_s - g->moved_at < window_s)) {
            g->refs++; /* a refusal may end it at once */
            g->status = GR__G_MIGRATING;
            g->mig = GR__MIG_SENDING;
            gr__send(g, target);
            g->refs--;
            if (g->status == GR__G_DEAD) gr__grain_release(g);
            started++;
        }
        g = next;
        if (!g) break;
        g->refs--;
        if (g->status == GR__G_DEAD) { /* ended under us: the LRU walk stops here */
            gr__grain_release(g);
            break;
        }
    }
    return started;
}

unsigned gr__runtime_migrations_in_flight(const gr_runtime_t *rt) { return rt->mig_in_flight; }

size_t gr__runtime_movable_count(const gr_runtime_t *rt) {
    size_t n = 0;
    const gr__class_entry_t *e, *tmp;
    HASH_ITER(hh, rt->classes, e, tmp) {
        if (!(e->cls->flags & (GR_CLASS_STATELESS_WORKER | GR_CLASS_NO_MIGRATE))) n += e->active;
    }
    return n;
}

/* ---- the target ---- */

struct gr__mig_in {
    struct gr__mig_in *prev, *next; /* rt->mig_ins: answered at close */
    gr_grain_t *g;
    gr_call_cb done; /* NULL once answered */
    void *ud;
    int64_t version;
    uint32_t format;
    uint8_t *data, *extra; /* into buf */
    size_t data_len, extra_len;
    uint8_t buf[];
};

static void gr__reply(gr_call_cb done, void *ud, int status, const char *why) {
    done(ud, status, (const uint8_t *)why, strlen(why));
}

/* A refusal: nothing moved, and the reply says so in a way no link or
 * local failure can (docs/migration.md): the source may serve on. */
static void gr__refuse(gr_call_cb done, void *ud, int status, const char *why) {
    char msg[256];
    int n = snprintf(msg, sizeof msg, GR__MIG_REFUSAL "%s", why);
    done(ud, status, (const uint8_t *)msg, n < (int)sizeof msg ? (size_t)n : sizeof msg - 1);
}

static void gr__in_unlink(gr_runtime_t *rt, gr__mig_in_t *op) {
    if (op->prev)
        op->prev->next = op->next;
    else
        rt->mig_ins = op->next;
    if (op->next) op->next->prev = op->prev;
    op->prev = op->next = NULL;
}

void gr__migrate_in_cancel_all(gr_runtime_t *rt) {
    /* The transfers complete later, into grains the close has ended; the
     * callers (gateway requests) must hear now, while they exist. */
    for (gr__mig_in_t *op = rt->mig_ins; op; op = op->next) {
        gr_call_cb done = op->done;
        op->done = NULL;
        if (done) gr__reply(done, op->ud, GR_ECANCELED, "the receiving silo closed");
    }
}

static void gr__transferred_cb(void *ud, int status, const char *detail) {
    gr__mig_in_t *op = ud;
    gr_grain_t *g = op->g;
    gr_runtime_t *rt = GR__G_RT(g);
    gr_call_cb done = op->done;
    void *dud = op->ud;
    gr__in_unlink(rt, op);
    g->refs--;
    if (g->status == GR__G_DEAD) { /* closed: the transfer may have committed */
        if (done) gr__reply(done, dud, GR_ECANCELED, "the receiving silo closed");
        gr__grain_release(g);
        gr__free(op);
        return;
    }
    if (status == 0) {
        g->claimed = 1;
        g->moved_at = (uint32_t)(uv_now(rt->loop) / 1000);
        if (!g->moved_at) g->moved_at = 1;
        int rc = gr__grain_loaded(g, op->data, op->data_len, op->version, op->format, 1, op->extra,
                                  op->extra_len);
        if (rc == 0) {
            rt->stats.migrated_in++;
            gr__reply(done, dud, 0, "ok");
        } else {
            /* It was ours and is gone again (released): the next call loads it. */
            gr__reply(done, dud, rc == GR_ENOTHERE ? GR_ENOTHERE : GR_EACTIVATE,
                      "the activation could not start on the receiving silo");
        }
        gr__free(op);
        return;
    }
    /* Not ours, or not known to be. Calls that queued here meanwhile go to
     * the router, which activates the grain wherever the directory says
     * (here too, through an ordinary claim). */
    if (status == GR_ECANCELED) {
        g->status = GR__G_DEACTIVATING;
        gr__grain_finish(g);
        gr__refuse(done, dud, GR_ESTORAGE, detail ? detail : "the claim transfer was never sent");
    } else if (status == GR_ENOTHERE) {
        g->status = GR__G_DEACTIVATING;
        gr__grain_finish(g);
        gr__reply(done, dud, GR_ENOTHERE, detail ? detail : "the source no longer holds the claim");
    } else {
        /* Unknown: it may be ours. Releasing by our token is safe either way. */
        g->claimed = 1;
        g->status = GR__G_DEACTIVATING;
        gr__grain_finish(g);
        gr__reply(done, dud, GR_ESTORAGE, detail ? detail : "claim transfer failed");
    }
    gr__free(op);
}

/* Check and start a take-over: 0 (done runs when the transfer completes,
 * possibly before this returns), or a refusal status with *why (nothing
 * moved, done not run). */
static int gr__in_start(gr_runtime_t *rt, const char *peer, const char *cls_name, const uint8_t *key,
                        size_t key_len, const uint8_t *p, size_t len, gr_call_cb done, void *ud,
                        const char **why) {
    if (rt->closing || rt->draining) return (*why = "silo is shutting down", GR_ESHUTDOWN);
    if (!rt->cluster.lease_ok || !rt->cluster.lease_ok(rt->cluster.ud))
        return (*why = "this silo has no membership lease", GR_ESHUTDOWN);
    const gr_class_t *cls = gr_runtime_find_class(rt, cls_name);
    if (!cls) return (*why = "class not registered on this silo", GR_ENOCLASS);
    if (cls->flags & (GR_CLASS_STATELESS_WORKER | GR_CLASS_NO_MIGRATE))
        return (*why = "class does not migrate", GR_EINVAL);
    if (key_len > GR_KEY_MAX) return (*why = "key too long", GR_ETOOBIG);
    /* Parse: every length against the bytes present. */
    if (len < GR__MIG_HEAD || p[0] != GR__MIG_VERSION) return (*why = "bad payload", GR_EPROTO);
    size_t sl = gr__get_u16(p + 2), at = GR__MIG_HEAD;
    if (sl == 0 || sl > 255 || len - at < sl + 20) return (*why = "bad payload", GR_EPROTO);
    char from[256];
    memcpy(from, p + at, sl);
    from[sl] = '\0';
    /* A silo hands over only its own activations: the source named must be
     * the silo this link's handshake named (docs/security.md). */
    if (!peer || strlen(from) != sl || strcmp(from, peer) != 0)
        return (*why = "the source silo is not the peer that sent it", GR_EAUTH);
    at += sl;
    uint32_t from_token = gr__get_u32(p + at);
    int64_t version = (int64_t)gr__get_u64(p + at + 4);
    uint32_t format = gr__get_u32(p + at + 12);
    size_t dl = gr__get_u32(p + at + 16);
    at += 20;
    if (version < 0 || len - at < dl || len - at - dl < 4) return (*why = "bad payload", GR_EPROTO);
    size_t el = gr__get_u32(p + at + dl);
    if (len - at - dl - 4 != el || el > GR_MIGRATE_EXTRA_MAX) return (*why = "bad payload", GR_EPROTO);
    if (version > 0 && (format & ~GR__IDEM_FORMAT_FLAG) > cls->state_version)
        return (*why = "state newer than this silo's class", GR_ESTATEVERSION);
    uint8_t idbuf[GR_CLASS_NAME_MAX + 1 + GR_KEY_MAX];
    size_t cl = strlen(cls->name);
    memcpy(idbuf, cls->name, cl + 1);
    if (key_len) memcpy(idbuf + cl + 1, key, key_len);
    gr_grain_t *g = NULL;
    HASH_FIND(hh, rt->grains, idbuf, cl + 1 + key_len, g);
    if (g) return (*why = "the grain has an activation here already", GR_EEXIST);
    gr__mig_in_t *op = gr__calloc(1, sizeof *op + dl + el + 1);
    if (!op) return (*why = "out of memory", GR_ENOMEM);
    int rc = gr__grain_alloc(rt, cls, idbuf, cl + 1 + key_len, cl, &g);
    if (rc != 0) {
        gr__free(op);
        *why = rc == GR_EOVERLOAD ? "at the memory bounds" : "out of memory";
        return rc;
    }
    op->g = g;
    op->done = done;
    op->ud = ud;
    op->version = version;
    op->format = format;
    op->data = op->buf;
    op->data_len = dl;
    op->extra = op->buf + dl;
    op->extra_len = el;
    memcpy(op->buf, p + at, dl);
    memcpy(op->buf + dl, p + at + dl + 4, el);
    g->token = ++rt->next_token;
    /* Held and listed before the call: its completion may run inside it. */
    g->refs++;
    op->next = rt->mig_ins;
    if (op->next) op->next->prev = op;
    rt->mig_ins = op;
    rc = gr__storage_transfer(rt->storage, cls->name, key, key_len, from, from_token, rt->silo_id, g->token,
                              gr__transferred_cb, op);
    if (rc != 0) { /* nothing moved, and the callback never runs */
        gr__in_unlink(rt, op);
        g->refs--;
        gr__grain_unalloc(g);
        gr__free(op);
        *why = "cannot transfer the claim";
        return rc == GR_ENOMEM ? GR_ENOMEM : GR_EINVAL;
    }
    return 0;
}

void gr__runtime_migrate_in(gr_runtime_t *rt, const char *peer, const char *cls, const uint8_t *key,
                            size_t key_len, const uint8_t *payload, size_t len, gr_call_cb done, void *ud) {
    const char *why = "";
    int rc = gr__in_start(rt, peer, cls, key, key_len, payload, len, done, ud, &why);
    if (rc != 0) gr__refuse(done, ud, rc, why);
}
