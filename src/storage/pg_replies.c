/* src/storage/pg_replies.c - the reply log of keyed calls in PostgreSQL
 * (sql/005_replies.sql, storage/replies.h): entries written by the
 * batched state write itself, read back with the state, swept by age. */
#include <inttypes.h>
#include <stdio.h>

#include "storage/pg_internal.h"
#include "storage/replies.h"

/* The plain batched write (postgres.c), with `done` naming the writes that
 * committed: entries are added and keys forgotten only for those, in the
 * same statement (a conflicting write of a stale activation must not touch
 * the log of the activation that owns the grain now). The keys to forget
 * are filtered first and then deleted by (grain, key), so the planner looks
 * each one up in the primary key (joined through `done` directly, it
 * scanned each grain's rows: 503 calls/s at the 1000-key bound).
 * A key of a grain appears at most once in a batch (one write per grain per
 * batch, one entry per key, and a key evicted and answered again is added,
 * not also deleted), so ON CONFLICT never meets a row twice. */
const char gr__sql_batch_write_replies[] = GR__SQL_BATCH_WRITE_CTES
    ", "
    "     done AS (SELECT ord, version FROM upd "
    "              UNION ALL SELECT v.ord, ins.version FROM ins JOIN v ON v.k = ins.grain_key AND "
    "v.c = ins.grain_class), "
    "     radd AS (INSERT INTO granary_reply (grain_key, grain_class, service, idem_key, status, reply, "
    "at_ms, "
    "expires_ms) "
    "              SELECT v.k, v.c, $5, r.ik, r.st, r.rep, r.at, r.ex "
    "              FROM unnest($7::bigint[], $8::bytea[], $9::int[], $10::bytea[], $11::bigint[], "
    "$12::bigint[]) "
    "              AS r(o, ik, st, rep, at, ex) JOIN done ON done.ord = r.o JOIN v ON v.ord = r.o "
    "              ON CONFLICT (grain_key, grain_class, service, idem_key) DO UPDATE SET status = "
    "excluded.status, reply = excluded.reply, at_ms = excluded.at_ms, expires_ms = excluded.expires_ms), "
    "     rdel AS (DELETE FROM granary_reply d USING (SELECT x.k, x.c, x.ik FROM unnest($13::bytea[], "
    "              $14::text[], $15::bytea[]) AS x(k, c, ik) WHERE EXISTS (SELECT 1 FROM done JOIN v ON "
    "              v.ord = done.ord WHERE v.k = x.k AND v.c = x.c)) z "
    "              WHERE d.grain_key = z.k AND d.grain_class = z.c AND d.service = $5 AND d.idem_key = z.ik) "
    "SELECT ord, version FROM done";

const char gr__sql_replies_sweep[] =
    "DELETE FROM granary_reply WHERE ctid = ANY(ARRAY(SELECT ctid FROM granary_reply "
    "WHERE expires_ms < (extract(epoch FROM now()) * 1000)::bigint LIMIT 10000))";

int gr__pgr_params(gr__wop_t *const *ops, size_t n, gr__buf_t bufs[9]) {
    for (int i = 0; i < 9; i++)
        gr__buf_init(&bufs[i]);
    int rc = 0;
    size_t added = 0, deleted = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const gr__wop_t *w = ops[i];
        for (size_t off = 0; rc == 0 && off < w->adds_len;) {
            const uint8_t *e = w->adds + off;
            size_t kl = e[0];
            uint64_t at = gr__get_u64(e + 1 + kl);
            int32_t st = (int32_t)gr__get_u32(e + 1 + kl + 8);
            uint32_t rl = gr__get_u32(e + 1 + kl + 12);
            const char *sep = added++ ? "," : "{";
            rc |= gr__buf_printf(&bufs[0], "%s%zu", sep, i + 1);
            rc |= gr__buf_append(&bufs[1], sep, 1) | gr__hex_elem(&bufs[1], e + 1, kl);
            rc |= gr__buf_printf(&bufs[2], "%s%" PRId32, sep, st);
            rc |= gr__buf_append(&bufs[3], sep, 1) | gr__hex_elem(&bufs[3], e + 1 + kl + 16, rl);
            rc |= gr__buf_printf(&bufs[4], "%s%" PRIu64, sep, at);
            rc |= gr__buf_printf(&bufs[5], "%s%" PRIu64, sep, at + w->retention_ms);
            off += 1 + kl + 16 + rl;
        }
        for (size_t off = 0; rc == 0 && off < w->dels_len;) {
            size_t kl = w->dels[off];
            const char *sep = deleted++ ? "," : "{";
            rc |= gr__buf_append(&bufs[6], sep, 1) | gr__hex_elem(&bufs[6], w->key, w->key_len);
            rc |= gr__buf_append(&bufs[7], sep, 1) | gr__text_elem(&bufs[7], w->cls);
            rc |= gr__buf_append(&bufs[8], sep, 1) | gr__hex_elem(&bufs[8], w->dels + off + 1, kl);
            off += 1 + kl;
        }
    }
    for (int i = 0; i < 9 && rc == 0; i++) {
        int empty = i < 6 ? !added : !deleted;
        rc = empty ? gr__buf_append(&bufs[i], "{}", 3) : gr__buf_append(&bufs[i], "}", 2);
    }
    return rc;
}

void gr__pgr_answer(gr_storage_read_cb cb, void *ud, const uint8_t *state, size_t state_len, int64_t version,
                    uint32_t format, const uint8_t *entries, size_t entries_len) {
    if (!entries_len) {
        cb(ud, 0, state_len ? state : NULL, state_len, version, format, NULL);
        return;
    }
    gr__buf_t b;
    gr__buf_init(&b);
    uint8_t t[GR__REPLIES_TRAILER];
    gr__put_u32(t, (uint32_t)entries_len);
    gr__put_u32(t + 4, GR__REPLIES_MAGIC);
    if (gr__buf_reserve(&b, state_len + entries_len + sizeof t) != 0) {
        cb(ud, GR_ESTORAGE, NULL, 0, 0, 0, "out of memory reading the reply log");
        return;
    }
    if (state_len) gr__buf_append(&b, state, state_len);
    gr__buf_append(&b, entries, entries_len);
    gr__buf_append(&b, t, sizeof t);
    cb(ud, 0, b.data, b.len, version, format | GR__REPLIES_FLAG, NULL);
    gr__buf_free(&b);
}
