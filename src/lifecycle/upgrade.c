/* src/lifecycle/upgrade.c - `silo migrate-state CLASS`: every stored row of
 * a class at an older format, through the class's upgrade_state, online
 * and resumable (docs/lifecycle.md). Blocking: one libpq connection, pages
 * in key order, each row rewritten by storage/lifecycle.h's statement
 * (version-checked, only while the grain is active nowhere). The upgrade
 * runs on a scratch activation of a private runtime (memory storage, a
 * loop that only ever closes it), so it sees exactly what an activation's
 * upgrade would. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "granary/storage.h"
#include "runtime/runtime.h"
#include "storage/lifecycle.h"

void gr_state_upgrade_options_init(gr_state_upgrade_options_t *o) {
    memset(o, 0, sizeof *o);
    o->cluster = "default";
    o->batch = 500;
    o->wait_ms = 60000;
}

typedef struct gr__upg {
    PGconn *c;
    gr_runtime_t *rt;
    const gr_class_t *cls;
    const gr_state_upgrade_options_t *o;
    gr__pgl_progress_t p;
    gr_state_upgrade_progress_t pub;
    uint64_t t0, upgraded0;
    char *err;
    size_t err_size;
} gr__upg_t;

static void gr__upg_report(gr__upg_t *u, int finished) {
    u->pub.class_name = u->cls->name;
    u->pub.to_format = u->p.to_format;
    u->pub.upgraded = u->p.upgraded;
    u->pub.skipped = u->p.skipped;
    u->pub.failed = u->p.failed;
    u->pub.remaining = u->p.remaining;
    uint64_t ms = gr__now_ms() - u->t0;
    u->pub.rows_per_s = ms ? (double)(u->p.upgraded - u->upgraded0) * 1000.0 / (double)ms : 0;
    u->pub.finished = finished;
    if (u->o->progress) u->o->progress(u->o->progress_ud, &u->pub);
}

/* One batch: upgrade the page's rows in memory, write them, move the
 * cursor. *last: the page was the pass's last. */
static int gr__upg_batch(gr__upg_t *u, int *last, uint64_t *held_out) {
    PGresult *res = NULL;
    gr__pgl_row_t *rows = NULL;
    size_t n = 0;
    int rc = gr__pgl_upgrade_page(u->c, u->o->cluster, u->cls->name, u->p.to_format,
                                  u->p.has_cursor ? u->p.cursor : NULL, u->p.cursor_len, u->o->batch, &res, &rows,
                                  &n, u->err, u->err_size);
    if (rc == GR_ENOMEM) snprintf(u->err, u->err_size, "out of memory reading a page of %s", u->cls->name);
    if (rc != 0) return rc;
    *last = n == 0; /* a page may be cut short by its bytes: only an empty one ends the pass */
    uint8_t **states = n ? gr__calloc(n, sizeof *states) : NULL;
    size_t *lens = n ? gr__calloc(n, sizeof *lens) : NULL;
    gr__pgl_row_t *ok = n ? gr__calloc(n, sizeof *ok) : NULL;
    size_t m = 0;
    if (n && (!states || !lens || !ok)) rc = GR_ENOMEM;
    for (size_t i = 0; i < n && rc == 0; i++) {
        int r = gr__runtime_upgrade(u->rt, u->cls, rows[i].key, rows[i].key_len, rows[i].state,
                                    rows[i].state_len, rows[i].format, &states[m], &lens[m]);
        if (r == GR_EACTIVATE) {
            u->p.failed++;
            fprintf(stderr, "migrate-state %s: upgrade_state refused a row (key of %zu bytes, format %u): left as "
                            "it was\n",
                    u->cls->name, rows[i].key_len, (unsigned)rows[i].format);
            continue;
        }
        if (r == GR_EINVAL) { /* a row over the key or state limit: not this class's to read */
            u->p.failed++;
            fprintf(stderr, "migrate-state %s: a row (key of %zu bytes, %zu bytes of state) is over the limits: left "
                            "as it was\n",
                    u->cls->name, rows[i].key_len, rows[i].state_len);
            continue;
        }
        if (r != 0) {
            rc = r;
            break;
        }
        ok[m++] = rows[i];
    }
    uint64_t written = 0, held = 0;
    if (rc == 0)
        rc = gr__pgl_upgrade_write(u->c, u->o->cluster, u->cls->name, u->p.to_format, ok,
                                   (const uint8_t *const *)states, lens, m, &written, &held, u->err, u->err_size);
    if (rc == 0) {
        u->p.upgraded += written;
        u->p.skipped += held;
        u->p.remaining -= written < u->p.remaining ? written : u->p.remaining;
        /* Rows neither written nor held moved on between the page and the
         * write (a silo wrote them): still old ones are seen next pass. */
        *held_out += m - written;
        if (n) {
            u->p.has_cursor = 1;
            u->p.cursor_len = rows[n - 1].key_len;
            memcpy(u->p.cursor, rows[n - 1].key, rows[n - 1].key_len);
        }
    } else if (rc == GR_ENOMEM) {
        snprintf(u->err, u->err_size, "out of memory upgrading a batch of %s", u->cls->name);
    }
    for (size_t i = 0; i < m; i++)
        gr__free(states ? states[i] : NULL);
    gr__free(states);
    gr__free(lens);
    gr__free(ok);
    gr__free(rows);
    PQclear(res);
    return rc;
}

static int gr__upg_run(gr__upg_t *u) {
    int found = 0;
    int rc = gr__pgl_progress_load(u->c, u->o->cluster, u->cls->name, &u->p, &found, u->err, u->err_size);
    if (rc != 0) return rc;
    if (found && !u->p.finished && u->p.to_format == u->cls->state_version) {
        u->pub.resumed = 1;
    } else {
        memset(&u->p, 0, sizeof u->p);
        u->p.to_format = u->cls->state_version;
    }
    u->upgraded0 = u->p.upgraded;
    if ((rc = gr__pgl_upgrade_count(u->c, u->o->cluster, u->cls->name, u->p.to_format, &u->p.remaining, u->err,
                                    u->err_size)) != 0)
        return rc;
    gr__upg_report(u, 0);
    uint64_t deadline = 0; /* set when the first whole pass ends: retries get all of wait_ms */
    /* A resumed run went past the keys before its cursor in an earlier
     * process: rows there may have been passed over, or written at the old
     * format since (a silo of the old class during a rolling deploy). */
    int whole = !u->p.has_cursor;
    for (;;) {
        /* A pass from the cursor to the last key; rows passed over go to
         * the next pass, which starts from the first key again. */
        uint64_t passed_over = 0;
        int last = 0;
        while (!last) {
            if ((rc = gr__upg_batch(u, &last, &passed_over)) != 0) return rc;
            if ((rc = gr__pgl_progress_save(u->c, u->o->cluster, u->cls->name, &u->p, u->err, u->err_size)) != 0)
                return rc;
            gr__upg_report(u, 0);
        }
        u->p.has_cursor = 0;
        u->p.cursor_len = 0;
        if ((rc = gr__pgl_upgrade_count(u->c, u->o->cluster, u->cls->name, u->p.to_format, &u->p.remaining,
                                        u->err, u->err_size)) != 0)
            return rc;
        /* Done when what is left is what upgrade_state refused: those stay
         * old until the class can read them. */
        if (u->p.remaining == 0 || (whole && passed_over == 0)) break;
        if (whole && !deadline) deadline = gr__now_ms() + u->o->wait_ms;
        if (whole && gr__now_ms() >= deadline) break;
        if (whole) usleep(200 * 1000);
        whole = 1;
        u->p.failed = 0; /* a whole pass meets every refused and every active row again */
        u->p.skipped = 0;
    }
    uint64_t failed_left = u->p.failed;
    u->p.finished = 1;
    if ((rc = gr__pgl_progress_save(u->c, u->o->cluster, u->cls->name, &u->p, u->err, u->err_size)) != 0)
        return rc;
    gr__upg_report(u, 1);
    if (u->p.remaining == 0) return 0;
    if (failed_left) {
        snprintf(u->err, u->err_size, "%llu rows of %s: upgrade_state refused them (left as they were)",
                 (unsigned long long)u->p.failed, u->cls->name);
        return GR_EACTIVATE;
    }
    snprintf(u->err, u->err_size,
             "%llu rows of %s are still at an older format: their grains stayed active (they are upgraded in "
             "memory and stored at their next write); run it again",
             (unsigned long long)u->p.remaining, u->cls->name);
    return GR_ETIMEDOUT;
}

static void gr__upg_closed(void *ud) { *(int *)ud = 1; }

int gr_storage_pg_upgrade_state(const char *conninfo, const gr_class_t *cls, const gr_state_upgrade_options_t *opts,
                                gr_state_upgrade_progress_t *out, char *err, size_t err_size) {
    gr_state_upgrade_options_t defaults;
    gr_state_upgrade_options_init(&defaults);
    const gr_state_upgrade_options_t *o = opts ? opts : &defaults;
    if (err_size) err[0] = 0;
    if (!conninfo || !cls || !cls->name || !o->cluster || o->batch == 0 || o->batch > 10000) {
        snprintf(err, err_size, "invalid arguments");
        return GR_EINVAL;
    }
    if (!cls->upgrade_state || cls->state_version == 0 || (cls->flags & GR_CLASS_STATELESS_WORKER)) {
        snprintf(err, err_size, "class %s has no upgrade_state and state_version to upgrade with", cls->name);
        return GR_EINVAL;
    }
    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0) return GR_ENOMEM;
    gr_storage_t *mem = NULL;
    gr__upg_t u;
    memset(&u, 0, sizeof u);
    u.cls = cls;
    u.o = o;
    u.err = err;
    u.err_size = err_size;
    u.t0 = gr__now_ms();
    int rc = gr_storage_memory_new(&loop, &mem);
    gr_runtime_options_t ro;
    gr_runtime_options_init(&ro);
    ro.silo_id = "migrate-state";
    if (rc == 0) rc = gr_runtime_new(&loop, mem, &ro, &u.rt);
    if (rc == 0) rc = gr_runtime_register(u.rt, cls);
    if (rc != 0) {
        snprintf(err, err_size, "cannot set up class %s: %s", cls->name, gr_strerror(rc));
    } else {
        u.c = PQconnectdb(conninfo);
        if (PQstatus(u.c) != CONNECTION_OK) {
            snprintf(err, err_size, "%s", PQerrorMessage(u.c));
            size_t l = strlen(err);
            while (l && err[l - 1] == '\n')
                err[--l] = 0;
            rc = GR_ESTORAGE;
        } else {
            rc = gr__upg_run(&u);
        }
        PQfinish(u.c);
    }
    if (out) *out = u.pub;
    int closed = 0;
    if (u.rt) gr_runtime_close(u.rt, gr__upg_closed, &closed);
    while (u.rt && !closed && uv_run(&loop, UV_RUN_ONCE))
        ;
    closed = 0;
    if (mem) gr_storage_close(mem, gr__upg_closed, &closed);
    while (mem && !closed && uv_run(&loop, UV_RUN_ONCE))
        ;
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return rc;
}
