/* src/runtime/activations.c - activations: the idle (LRU) list, creating an
 * activation and loading its state (with its claim in cluster mode),
 * finishing and freeing one, deactivation and the idle sweep. */
#include "runtime/runtime_internal.h"

/* ---- activations ---- */

static void gr__lru_unlink(gr_runtime_t *rt, gr_grain_t *g) {
    if (g->lru_prev)
        g->lru_prev->lru_next = g->lru_next;
    else if (rt->lru_head == g)
        rt->lru_head = g->lru_next;
    if (g->lru_next)
        g->lru_next->lru_prev = g->lru_prev;
    else if (rt->lru_tail == g)
        rt->lru_tail = g->lru_prev;
    g->lru_prev = g->lru_next = NULL;
}

/* Mark activity: the grain moves to the young end of the idle list. */
void gr__grain_touch(gr_grain_t *g) {
    gr_runtime_t *rt = GR__G_RT(g);
    g->last_active = (uint32_t)uv_now(rt->loop);
    if (rt->lru_tail == g) return;
    gr__lru_unlink(rt, g);
    g->lru_prev = rt->lru_tail;
    if (rt->lru_tail)
        rt->lru_tail->lru_next = g;
    else
        rt->lru_head = g;
    rt->lru_tail = g;
}

int gr__grain_alloc(gr_runtime_t *rt, const gr_class_t *cls, const uint8_t *id, size_t id_len, size_t class_len,
                    gr_grain_t **out) {
    int admitted = gr__admit(rt); /* the memory bounds: evict, or refuse */
    if (admitted != 0) return admitted;
    gr_grain_t *g = gr__calloc(1, sizeof *g + id_len);
    if (!g) return GR_ENOMEM;
    memcpy(g->id, id, id_len);
    HASH_FIND_STR(rt->classes, cls->name, g->ce);
    g->id_len = (uint16_t)id_len;
    g->key_len = (uint16_t)(id_len - class_len - 1);
    g->status = GR__G_LOADING;
    HASH_ADD_KEYPTR(hh, rt->grains, g->id, g->id_len, g);
    if (gr__hash_oom()) {
        gr__free(g);
        return GR_ENOMEM;
    }
    g->io_t0 = gr__us32();
    g->ce->active++;
    rt->n_grains++;
    rt->stats.activations++;
    gr__grain_touch(g);
    *out = g;
    return 0;
}

void gr__grain_unalloc(gr_grain_t *g) {
    gr_runtime_t *rt = GR__G_RT(g);
    HASH_DEL(rt->grains, g);
    gr__lru_unlink(rt, g);
    g->ce->active--;
    rt->n_grains--;
    rt->stats.activations--;
    gr__free(g);
}

/* Create an activation in LOADING state and start reading its state. */
int gr__grain_new(gr_runtime_t *rt, const gr_class_t *cls, const uint8_t *id, size_t id_len, size_t class_len,
                  gr_grain_t **out) {
    gr_grain_t *g = NULL;
    int rc = gr__grain_alloc(rt, cls, id, id_len, class_len, &g);
    if (rc != 0) return rc;
    if (GR__G_WORKER(g)) {
        /* No state to load: the pump completes the "load" (user code such
         * as on_activate never runs inside the call that caused it). */
        gr__grain_schedule(g);
    } else {
        if (gr__claims_on(g)) {
            g->token = ++rt->next_token;
            rc = gr__storage_claim(rt->storage, cls->name, GR__G_KEY(g), g->key_len, rt->silo_id, g->token,
                                   gr__grain_storage_read_cb, g);
        } else {
            rc = gr_storage_read(rt->storage, cls->name, GR__G_KEY(g), g->key_len, gr__grain_storage_read_cb,
                                 g);
        }
        if (rc != 0) {
            gr__grain_unalloc(g);
            return rc == GR_ENOMEM ? GR_ENOMEM : GR_ESTORAGE;
        }
        rt->stats.storage_reads++;
    }
    g->refs++;
    *out = g;
    return 0;
}

/* Remove the activation from the table; its struct lives on while storage
 * operations still hold it (refs). Queued messages go to a fresh activation,
 * which reloads state: this is how a stale or failed activation forwards its
 * queue. */
void gr__grain_finish(gr_grain_t *g) {
    gr_runtime_t *rt = GR__G_RT(g);
    assert(g->status != GR__G_DEAD);
    g->status = GR__G_DEAD;
    HASH_DEL(rt->grains, g);
    rt->n_grains--;
    if (g->evicted) {
        g->evicted = 0;
        rt->n_evicting--;
    }
    g->ce->active--;
    rt->stats.deactivations++;
    gr__lru_unlink(rt, g);
    int worker = GR__G_WORKER(g) != 0;
    /* Give the claim back so another silo can activate the grain at once.
     * Not while our lease is in doubt: the database is likely out of reach,
     * and the claim stays ours (we may activate the grain again; others are
     * sent here) until we are declared dead. */
    if (g->claimed && gr__may_answer(g))
        gr__storage_release(rt->storage, GR__G_CLS(g)->name, GR__G_KEY(g), g->key_len, rt->silo_id, g->token);
    g->claimed = 0;
    if (rt->on_gone && !rt->closing && !worker)
        rt->on_gone(rt->router_ud, GR__G_CLS(g)->name, GR__G_KEY(g), g->key_len);
    if (g->ext && g->ext->data_free) g->ext->data_free(g->ext->data);
    if (g->ext) g->ext->data = NULL, g->ext->data_free = NULL;
    if (g->ext) gr__idem_drop(rt, g);
    gr_msg_t *queued = g->mb_head;
    g->mb_head = g->mb_tail = NULL;
    g->mb_len = 0;
    if (queued && worker && !rt->closing && !rt->draining) {
        /* Another worker of the same key on this silo takes them. */
        while (queued) {
            gr_msg_t *n = queued->next;
            queued->next = NULL;
            queued->grain = NULL;
            gr__worker_enqueue(rt, g->ce, GR__G_KEY(g), g->key_len, queued);
            queued = n;
        }
    } else if (queued) {
        if (rt->router && !rt->closing && !worker) {
            /* Cluster mode: the directory decides where they run now. */
            while (queued) {
                gr_msg_t *n = queued->next;
                queued->next = NULL;
                queued->grain = NULL; /* this activation is about to go */
                if (gr__msg_set_route(queued, GR__G_CLS(g), g->id, g->id_len, strlen(GR__G_CLS(g)->name)) ==
                    0)
                    rt->router(rt->router_ud, queued);
                else
                    gr__msg_fail(rt, queued, GR_ENOMEM, "out of memory rerouting a call");
                queued = n;
            }
        } else if (rt->closing || rt->draining) {
            while (queued) {
                gr_msg_t *n = queued->next;
                gr__msg_fail(rt, queued, GR_ESHUTDOWN, "silo is shutting down");
                queued = n;
            }
        } else {
            gr_grain_t *ng = NULL;
            int rc = gr__grain_new(rt, GR__G_CLS(g), g->id, g->id_len, strlen(GR__G_CLS(g)->name), &ng);
            while (queued) {
                gr_msg_t *n = queued->next;
                if (rc != 0)
                    gr__msg_fail(rt, queued, rc, "reactivating the grain failed");
                else
                    gr__mailbox_push(ng, queued);
                queued = n;
            }
        }
    }
    rt->held_grains++;
    gr__grain_release(g);
    gr__maybe_drained(rt);
}

void gr__grain_release(gr_grain_t *g) {
    if (g->refs > 0 || g->status != GR__G_DEAD || g->scheduled) return;
    gr_runtime_t *rt = GR__G_RT(g);
    gr__free(g->state);
    gr__free(g->ext);
    gr__free(g);
    rt->held_grains--;
    gr__maybe_closed(rt);
}

/* Fail every queued message and drop the activation (load or activate failed). */
static void gr__grain_fail_all(gr_grain_t *g, int status, const char *detail) {
    gr_runtime_t *rt = GR__G_RT(g);
    gr_msg_t *m;
    while ((m = gr__mailbox_pop(g)) != NULL)
        gr__msg_fail(rt, m, status, detail);
    g->status = GR__G_DEACTIVATING;
    gr__grain_finish(g);
}

/* Another silo holds the grain's claim: this activation never starts. Its
 * queued calls go to the router, which sends them to the holder (after the
 * activation is gone, so the directory has forgotten us first). */
static void gr__grain_held_elsewhere(gr_grain_t *g, const char *holder) {
    gr_runtime_t *rt = GR__G_RT(g);
    gr_msg_t *queued = g->mb_head;
    g->mb_head = g->mb_tail = NULL;
    g->mb_len = 0;
    gr__log(GR_LOG_LEVEL_DEBUG, GR__G_CLS(g)->name, GR__G_KEY(g), g->key_len,
            "claimed by %s: sending its calls there", holder[0] ? holder : "(unknown)");
    char who[128];
    snprintf(who, sizeof who, "%s", holder);
    const gr_class_t *cls = GR__G_CLS(g);
    uint8_t idbuf[GR_CLASS_NAME_MAX + 1 + GR_KEY_MAX];
    size_t id_len = g->id_len;
    memcpy(idbuf, g->id, id_len);
    g->status = GR__G_DEACTIVATING;
    gr__grain_finish(g); /* may free g */
    while (queued) {
        gr_msg_t *n = queued->next;
        queued->next = NULL;
        queued->grain = NULL;
        if (!rt->cluster.held_elsewhere || rt->closing)
            gr__msg_fail(rt, queued, GR_ENOTHERE, "the grain is active on another silo");
        else if (gr__msg_set_route(queued, cls, idbuf, id_len, strlen(cls->name)) != 0)
            gr__msg_fail(rt, queued, GR_ENOMEM, "out of memory rerouting a call");
        else
            rt->cluster.held_elsewhere(rt->cluster.ud, queued, who);
        queued = n;
    }
}

void gr__grain_storage_read_cb(void *ud, int status, const uint8_t *data, size_t len, int64_t version,
                               uint32_t format, const char *detail) {
    gr_grain_t *g = ud;
    g->refs--;
    gr_runtime_t *rt = GR__G_RT(g);
    if (!GR__G_WORKER(g)) gr__hist_observe(&rt->read_latency, gr__since_us32_ns(g->io_t0));
    if (g->status == GR__G_DEAD) { /* the runtime closed meanwhile */
        gr__grain_release(g);
        return;
    }
    if (status == GR_ENOTHERE && gr__claims_on(g)) {
        rt->stats.claims_refused++;
        gr__grain_held_elsewhere(g, detail ? detail : "");
        return;
    }
    if (status != 0) {
        rt->stats.storage_errors++;
        char msg[512];
        snprintf(msg, sizeof msg, "loading state failed: %s", detail ? detail : gr_strerror(status));
        gr__log(GR_LOG_LEVEL_WARN, GR__G_CLS(g)->name, GR__G_KEY(g), g->key_len, "%s", msg);
        gr__grain_fail_all(g, status == GR_ECANCELED ? GR_ESHUTDOWN : GR_ESTORAGE, msg);
        return;
    }
    /* Granted: from here every way out of this activation gives it back. */
    if (gr__claims_on(g)) g->claimed = 1;
    gr__grain_loaded(g, data, len, version, format, 0, NULL, 0);
}

int gr__grain_loaded(gr_grain_t *g, const uint8_t *data, size_t len, int64_t version, uint32_t format,
                     int migrated, const uint8_t *extra, size_t extra_len) {
    gr_runtime_t *rt = GR__G_RT(g);
    if (!gr__may_answer(g)) {
        /* Granted, but the lease ran out meanwhile (fenced, paused): this
         * activation must not start. The claim stays ours (it is released
         * only with a lease), and so we can activate the grain again later. */
        gr__grain_fail_all(g, GR_ENOTHERE, GR__NO_LEASE);
        return GR_ENOTHERE;
    }
    const gr_class_t *cls = GR__G_CLS(g);
    if (format & GR__IDEM_FORMAT_FLAG) {
        /* The grain's reply log follows its state bytes (storage/replies.h). */
        size_t state_len = len;
        int rc = gr__grain_ext(g) ? gr__idem_decode(&g->ext->idem, data, len, &state_len, gr__idem_now_ms(),
                                                    gr__idem_retention(cls))
                                  : GR_ENOMEM;
        if (rc != 0) {
            char msg[160];
            snprintf(msg, sizeof msg, "loading state failed: %s",
                     rc == GR_ENOMEM ? "out of memory" : "the stored reply log does not add up");
            gr__log(GR_LOG_LEVEL_WARN, cls->name, GR__G_KEY(g), g->key_len, "%s", msg);
            gr__grain_fail_all(g, rc == GR_ENOMEM ? GR_ENOMEM : GR_ESTORAGE, msg);
            return rc == GR_ENOMEM ? GR_ENOMEM : GR_ESTORAGE;
        }
        len = state_len;
        format &= ~GR__IDEM_FORMAT_FLAG;
    }
    if (version > 0 && format > cls->state_version) {
        /* Written by a newer version of the class (a rolling deploy in
         * progress): this silo cannot read it and must never overwrite it.
         * Retryable: a silo running the newer class can host the grain. */
        char msg[256];
        snprintf(msg, sizeof msg,
                 "stored state has format %u, newer than this silo's %s (state_version %u): not activating "
                 "here; a silo with the newer class can host it",
                 (unsigned)format, cls->name, (unsigned)cls->state_version);
        gr__log(GR_LOG_LEVEL_WARN, cls->name, GR__G_KEY(g), g->key_len, "%s", msg);
        rt->stats.state_too_new++;
        gr__grain_fail_all(g, GR_ESTATEVERSION, msg);
        return GR_ESTATEVERSION;
    }
    if (len) {
        g->state = gr__memdup(data, len);
        if (!g->state) {
            gr__grain_fail_all(g, GR_ENOMEM, "out of memory loading state");
            return GR_ENOMEM;
        }
    }
    g->state_len = (uint32_t)len;
    g->version = version;
    g->status = GR__G_ACTIVE;
    if (g->claimed && rt->cluster.claimed)
        rt->cluster.claimed(rt->cluster.ud, cls->name, GR__G_KEY(g), g->key_len);
    if (version > 0 && format < cls->state_version && cls->upgrade_state) {
        /* The upgrade sees the old bytes and sets the new ones (dirty: the
         * next write stores them with the new format). */
        int rc = cls->upgrade_state(g, data, len, format);
        if (rc != 0) {
            char msg[200];
            snprintf(msg, sizeof msg, "upgrading the state from format %u to %u failed: %s", (unsigned)format,
                     (unsigned)cls->state_version, gr_strerror(rc));
            gr__log(GR_LOG_LEVEL_WARN, cls->name, GR__G_KEY(g), g->key_len, "%s", msg);
            g->dirty = 0; /* nothing of it may be written */
            gr__grain_fail_all(g, GR_EACTIVATE, msg);
            return GR_EACTIVATE;
        }
        rt->stats.state_upgrades++;
    }
    if (migrated && cls->on_migrate_in) {
        int rc = cls->on_migrate_in(g, extra, extra_len);
        if (rc != 0) {
            char msg[160];
            snprintf(msg, sizeof msg, "on_migrate_in failed: %s", gr_strerror(rc));
            gr__log(GR_LOG_LEVEL_WARN, cls->name, GR__G_KEY(g), g->key_len, "%s", msg);
            gr__grain_fail_all(g, GR_EACTIVATE, msg);
            return GR_EACTIVATE;
        }
    }
    if (GR__G_CLS(g)->on_activate) {
        int rc = GR__G_CLS(g)->on_activate(g);
        if (rc != 0) {
            char msg[160];
            snprintf(msg, sizeof msg, "on_activate failed: %s", gr_strerror(rc));
            gr__log(GR_LOG_LEVEL_WARN, GR__G_CLS(g)->name, GR__G_KEY(g), g->key_len, "%s", msg);
            gr__grain_fail_all(g, GR_EACTIVATE, msg);
            return GR_EACTIVATE;
        }
    }
    gr__grain_schedule(g);
    return 0;
}

/* ---- deactivation ---- */

static void gr__deactivate_write_cb(gr_grain_t *g, int status, void *ud) {
    (void)status;
    (void)ud;
    /* On failure the write path already logged it and finishes the grain. */
    if (g->status == GR__G_DEACTIVATING && status == 0) gr__grain_finish(g);
}

void gr__grain_deactivate(gr_grain_t *g, int save) {
    gr_runtime_t *rt = GR__G_RT(g);
    if (g->status != GR__G_ACTIVE) return;
    g->status = GR__G_DEACTIVATING;
    gr__timers_stop_all(g);
    while (g->owned) {
        gr__call_t *c = g->owned;
        gr__call_unlink(rt, c);
        gr__call_fail_soon(rt, c, GR_ECANCELED, "calling grain was deactivated");
    }
    if (save && GR__G_CLS(g)->on_deactivate) GR__G_CLS(g)->on_deactivate(g);
    if (save && (g->dirty || g->writing)) {
        if (gr__write_request(g, gr__deactivate_write_cb, NULL, NULL) == 0) return;
        gr__log(GR_LOG_LEVEL_ERROR, GR__G_CLS(g)->name, GR__G_KEY(g), g->key_len,
                "out of memory saving state at deactivation; unsaved changes are lost");
    }
    gr__grain_finish(g);
}

/* An activation that may be deactivated now without waiting for anything:
 * active, no turn in progress, nothing queued, written, not on the run list.
 * (The idle sweep and the memory bounds both ask this.) */
static int gr__grain_quiet(const gr_grain_t *g) {
    return g->status == GR__G_ACTIVE && !gr__grain_busy(g) && !g->mb_head && !g->writing && !g->scheduled;
}

/* ---- memory bounds ---- */

/* Over the soft bound of the activation count (90 %: evict more), not
 * counting those already leaving (evicted, saving their state)? */
static int gr__over_count(const gr_runtime_t *rt) {
    uint32_t max = rt->opts.max_activations;
    return max && rt->n_grains - rt->n_evicting >= max - max / 10;
}
/* Over the soft bound of resident memory (90 %)? */
static int gr__over_memory(const gr_runtime_t *rt) {
    uint64_t mem = rt->opts.memory_limit;
    return mem && rt->stats.rss >= mem - mem / 10;
}
/* How many to evict at once: 5 %. (Larger batches — a fifth at the bound —
 * kept resident memory nearer the limit but made one write batch of that
 * many dirty states, which held the storage long enough for other calls to
 * time out on a loaded machine.) */
static size_t gr__batch(const gr_runtime_t *rt) { return rt->n_grains / 20 + 1; }

/* At a hard bound: no new activation. */
static int gr__at_bound(const gr_runtime_t *rt) {
    return (rt->opts.max_activations && rt->n_grains >= rt->opts.max_activations) ||
           (rt->opts.memory_limit && rt->stats.rss >= rt->opts.memory_limit);
}

/* Deactivate up to n of the least recently used idle activations (their
 * dirty state is written first, as at idle deactivation), looking at a
 * bounded number of them: busy ones are skipped, never waited for. */
static void gr__evict(gr_runtime_t *rt, size_t n) {
    size_t done = 0, looked = 0;
    /* Not nested: an on_deactivate that calls a grain would come back here
     * through gr__admit and could free the `next` this loop holds. */
    if (rt->evicting) return;
    rt->evicting = 1;
    rt->evict_ms = uv_now(rt->loop);
    for (gr_grain_t *g = rt->lru_head, *next; g && done < n && looked < 4 * n + 64; g = next, looked++) {
        next = g->lru_next;
        /* Never one whose code is running (a tick making the very call being
         * admitted) or that waits for answers to its own calls. */
        if (!gr__grain_quiet(g) || g->in_turn || g->owned) continue;
        g->refs++; /* deactivation may end and free it at once */
        gr__grain_deactivate(g, 1);
        if (g->status == GR__G_DEACTIVATING) { /* saving its state first */
            g->evicted = 1;
            rt->n_evicting++;
        }
        g->refs--;
        if (g->status == GR__G_DEAD) gr__grain_release(g);
        rt->stats.evicted++;
        done++;
    }
    rt->evicting = 0;
}

int gr__admit(gr_runtime_t *rt) {
    /* A batch (5 %) at a time. By count: whenever the activations not
     * already leaving pass 90 % (those evicted leave when their write
     * commits; counting them again would evict twice). By memory: at most
     * once per sample (100 ms), as a batch per admission would empty the
     * cache on one stale figure. */
    if (gr__over_count(rt) ||
        (gr__over_memory(rt) && (!rt->evict_ms || uv_now(rt->loop) - rt->evict_ms >= 100)))
        gr__evict(rt, gr__batch(rt));
    if (!gr__at_bound(rt)) return 0;
    rt->stats.refused++;
    return GR_EOVERLOAD;
}

void gr__memory_sample_cb(uv_timer_t *t) {
    gr_runtime_t *rt = t->data;
    rt->stats.rss = gr__rss_bytes();
    if (!gr__over_memory(rt)) return;
    /* Memory freed since the last sample (grains whose eviction's write has
     * committed, write batches) may still be held by the allocator: give it
     * back first, and evict only if that was not enough. Trimming right
     * after evicting returned nothing: the evicted grains are freed later,
     * when their writes commit. */
    uint64_t now = uv_now(rt->loop);
    if (!rt->trim_ms || now - rt->trim_ms >= 1000) { /* it walks the heap: once a second at most */
        rt->trim_ms = now;
        gr__release_memory();
        rt->stats.rss = gr__rss_bytes();
        if (!gr__over_memory(rt)) return;
    }
    if (!rt->evict_ms || now - rt->evict_ms >= 100) gr__evict(rt, gr__batch(rt));
}

void gr__idle_sweep_cb(uv_timer_t *t) {
    gr_runtime_t *rt = t->data;
    uint64_t now = uv_now(rt->loop);
    if (rt->evicting) return;
    rt->evicting = 1; /* on_deactivate may call grains: no eviction nested in this walk */
    gr_grain_t *g = rt->lru_head;
    while (g) {
        gr_grain_t *next = g->lru_next;
        uint32_t age =
            GR__G_CLS(g)->idle_deactivate_ms ? GR__G_CLS(g)->idle_deactivate_ms : rt->opts.idle_deactivate_ms;
        /* The list is ordered by last activity; past the shortest age in use
         * nothing younger can be due, but classes differ, so only stop on the
         * global minimum (1 s granularity at most). */
        uint32_t idle = (uint32_t)now - g->last_active;
        if (idle < rt->min_idle_ms) break;
        if (idle >= age && gr__grain_quiet(g)) gr__grain_deactivate(g, 1);
        g = next;
    }
    rt->evicting = 0;
}

static void gr__grain_drop(gr_grain_t *g) {
    if (g->status == GR__G_ACTIVE && !gr__grain_busy(g) && !g->writing)
        gr__grain_deactivate(g, 0);
    else if (g->status == GR__G_ACTIVE || g->status == GR__G_LOADING || g->status == GR__G_MIGRATING) {
        /* After the turn in progress, without saving; a migration in
         * progress ends as it ends, but a refusal does not let it serve on. */
        g->deactivate_requested = 2;
        gr__grain_schedule(g);
    }
}

int gr__runtime_hosts(gr_runtime_t *rt, const char *cls, const uint8_t *key, size_t key_len) {
    uint8_t idbuf[GR_CLASS_NAME_MAX + 1 + GR_KEY_MAX];
    size_t cl = strlen(cls);
    if (cl > GR_CLASS_NAME_MAX || key_len > GR_KEY_MAX) return 0;
    memcpy(idbuf, cls, cl + 1);
    if (key_len) memcpy(idbuf + cl + 1, key, key_len);
    gr_grain_t *g = NULL;
    HASH_FIND(hh, rt->grains, idbuf, cl + 1 + key_len, g);
    return g && (g->status == GR__G_ACTIVE || g->status == GR__G_LOADING || g->status == GR__G_MIGRATING);
}

void gr__runtime_drop(gr_runtime_t *rt, const char *cls, const uint8_t *key, size_t key_len) {
    uint8_t idbuf[GR_CLASS_NAME_MAX + 1 + GR_KEY_MAX];
    size_t cl = strlen(cls);
    if (cl > GR_CLASS_NAME_MAX || key_len > GR_KEY_MAX) return;
    memcpy(idbuf, cls, cl + 1);
    if (key_len) memcpy(idbuf + cl + 1, key, key_len);
    gr_grain_t *g = NULL;
    HASH_FIND(hh, rt->grains, idbuf, cl + 1 + key_len, g);
    if (g) gr__grain_drop(g);
}

void gr__runtime_drop_all(gr_runtime_t *rt) {
    gr_grain_t *g, *tmp;
    HASH_ITER(hh, rt->grains, g, tmp) gr__grain_drop(g);
}
