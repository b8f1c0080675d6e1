/* src/storage/pg_internal.h - what the PostgreSQL provider's files share:
 * a queued write, the array parameter encoders (pg_arrays.c), the pieces of
 * the batch statements, and the reply-log statements and helpers of
 * pg_replies.c. */
#ifndef GR_PERSISTENCE_PG_INTERNAL_H
#define GR_PERSISTENCE_PG_INTERNAL_H

#include "storage/pgpool.h"
#include "storage/provider.h"

typedef struct gr__wop gr__wop_t;

/* A write waiting for (or riding in) a group-commit batch. `id` is
 * class '\0' key in one allocation; cls and key point into it. */
struct gr__wop {
    gr__wop_t *next;
    UT_hash_handle hh; /* in gr__pgs_t.busy while batched */
    gr_storage_write_cb cb;
    void *ud;
    const char *cls;
    const uint8_t *key;
    size_t key_len;
    uint8_t *id;
    size_t id_len;
    uint8_t *data;
    size_t len;
    uint32_t format;
    int64_t expected;
    /* Reply-log changes committed with this write (storage/replies.h). */
    uint8_t *adds, *dels;
    size_t adds_len, dels_len;
    uint32_t retention_ms;
};

/* Append one element of a text-format array literal: bytes as "\\x..",
 * a string quoted. 0 or GR_ENOMEM. */
int gr__hex_elem(gr__buf_t *b, const uint8_t *p, size_t n);
int gr__text_elem(gr__buf_t *b, const char *t);

/* A bigint column of a binary-format result: its value, or -1 when it is
 * not 8 bytes (NULL, or not what the statement should return). */
static inline int64_t gr__pg_i64(const PGresult *res, int row, int col) {
    if (PQgetlength(res, row, col) != 8) return -1;
    return (int64_t)gr__get_u64((const uint8_t *)PQgetvalue(res, row, col));
}

/* Array parameters in PostgreSQL's binary format (pg_arrays.c): one
 * dimension, no NULLs. gr__arr_begin writes the header for n elements of
 * type `oid`; then exactly n elements follow, each by one of gr__arr_bytes
 * (bytea, text), gr__arr_i64 (bigint) or gr__arr_i32 (int). Each returns 0
 * or GR_ENOMEM. Binary arrays spare the server parsing text literals (and
 * the silo writing hex): a batch's parameters are most of its bytes. */
#define GR__OID_BYTEA 17u
#define GR__OID_INT8 20u
#define GR__OID_INT4 23u
#define GR__OID_TEXT 25u
int gr__arr_begin(gr__buf_t *b, uint32_t oid, size_t n);
int gr__arr_bytes(gr__buf_t *b, const void *p, size_t n);
int gr__arr_i64(gr__buf_t *b, int64_t v);
int gr__arr_i32(gr__buf_t *b, int32_t v);

/* The pieces of the batched writes (postgres.c, pg_replies.c): $1..$4 and
 * $6 parallel arrays (key, class, state, expected version, format) as rows
 * v(k, c, st, ev, f, ord), $5 the service; the update of a stored row at its
 * expected version, returning (ord, new version). */
#define GR__SQL_BATCH_ROWS                                                                                   \
    "unnest($1::bytea[], $2::text[], $3::bytea[], $4::bigint[], $6::int[]) "                                 \
    "WITH ORDINALITY AS v(k, c, st, ev, f, ord)"
#define GR__SQL_BATCH_UPDATE_SET                                                                             \
    "UPDATE granary_grain_state t SET state = v.st, version = t.version + 1, state_format = v.f, "           \
    "updated_at = now() "
#define GR__SQL_BATCH_UPDATE_MATCH                                                                           \
    "t.grain_key = v.k AND t.grain_class = v.c AND t.service = $5 AND t.version = v.ev "                     \
    "RETURNING v.ord, t.version"

/* The CTEs of the batched write, shared by its two forms; upd and ins
 * return the writes that committed. */
#define GR__SQL_BATCH_WRITE_CTES                                                                             \
    "WITH v AS (SELECT * FROM " GR__SQL_BATCH_ROWS "), "                                                     \
    "     upd AS (" GR__SQL_BATCH_UPDATE_SET "FROM v WHERE v.ev > 0 AND " GR__SQL_BATCH_UPDATE_MATCH "), "   \
    "     ins AS (INSERT INTO granary_grain_state (grain_key, grain_class, service, state, version, "        \
    "state_format, updated_at) "                                                                             \
    "             SELECT v.k, v.c, $5, v.st, 1, v.f, now() FROM v WHERE v.ev = 0 "                           \
    "             ON CONFLICT DO NOTHING RETURNING grain_key, grain_class, version) "

/* The batched write when some write of the batch carries reply-log changes:
 * the plain batch's $1..$6, then $7..$12 the entries to add (batch
 * ordinal, key, status, reply, at_ms, expires_ms; added only for the grain
 * writes that commit) and $13..$15 the keys to forget (grain key, class,
 * idempotency key). */
extern const char gr__sql_batch_write_replies[];
#define GR__PGR_NPARAMS 9
/* The extra parameters ($7..$15, text arrays) of a batch, in bufs, which
 * the caller frees. 0 or GR_ENOMEM. */
int gr__pgr_params(gr__wop_t *const *ops, size_t n, gr__buf_t bufs[GR__PGR_NPARAMS]);
/* The column a read or claim statement adds for the grain's live reply
 * entries (bytea, NULL without any), as SQL over v(k, c) and service $3. */
#define GR__SQL_REPLIES_COLUMN                                                                               \
    "(SELECT string_agg(set_byte('\\x00'::bytea, 0, length(r.idem_key)) || r.idem_key || int8send(r.at_ms) " \
    "|| int4send(r.status) || int4send(length(r.reply)) || r.reply, ''::bytea ORDER BY r.at_ms) "            \
    "FROM granary_reply r WHERE r.grain_key = v.k AND r.grain_class = v.c AND r.service = $3 "               \
    "AND r.expires_ms > (extract(epoch FROM now()) * 1000)::bigint)"
/* Answer a read with state (maybe none: version 0) and the reply entries
 * of a row (len 0: none): state || entries || trailer, flagged, when there
 * are entries; the state alone otherwise. */
void gr__pgr_answer(gr_storage_read_cb cb, void *ud, const uint8_t *state, size_t state_len, int64_t version,
                    uint32_t format, const uint8_t *entries, size_t entries_len);
/* Expired reply rows, deleted at most this many at a time through the
 * expires_ms index, by a statement each provider sends at most every
 * GR__PGR_SWEEP_MS with its writes. */
#define GR__PGR_SWEEP_MS 30000u
extern const char gr__sql_replies_sweep[];

/* Claim transfers (pg_transfer.c, storage/claim.h): a queue that sends
 * them as batch statements, numbered `stmt` among the pool's prepared
 * ones. Every transfer of one queue goes to the same receiving silo
 * (GR_EINVAL otherwise). close cancels what was never sent (GR_ECANCELED)
 * and frees the queue once its statement in flight, if any, completes. */
typedef struct gr__pgt gr__pgt_t;
int gr__pgt_new(gr__pgpool_t *pool, const char *service, unsigned stmt, gr__pgt_t **out);
int gr__pgt_queue(gr__pgt_t *t, const char *cls, const void *key, size_t key_len, const char *from,
                  int64_t from_token, const char *owner, int64_t token, gr__transfer_cb cb, void *ud);
void gr__pgt_close(gr__pgt_t *t);

#endif
