/* src/storage/pgpool.h - asynchronous PostgreSQL for the rest of Granary: a
 * pool of non-blocking libpq connections on a libuv loop that runs
 * parameterised queries in FIFO order, reconnects with backoff and fails
 * fast while the database is down. */
#ifndef GR_PERSISTENCE_PGPOOL_H
#define GR_PERSISTENCE_PGPOOL_H

#include <libpq-fe.h>
#include <uv.h>

#define GR__PG_MAX_PARAMS 16
#define GR__PG_MAX_STMTS 32

typedef struct gr__pgpool gr__pgpool_t;

typedef struct gr__pgpool_options {
    unsigned pool_size;        /* connections, 1..64 (default 4) */
    uint32_t op_timeout_ms;    /* max wait for a free connection (default 5000) */
    uint32_t reconnect_min_ms; /* backoff start (default 100) */
    uint32_t reconnect_max_ms; /* backoff cap (default 5000) */
    uint32_t query_timeout_ms; /* a query in flight longer than this breaks its
                                  connection: outcome unknown (default 30000, 0 = never) */
    int custom_plans;          /* set plan_cache_mode = force_custom_plan on every connection
                                  before its first query (default 0) */
} gr__pgpool_options_t;

void gr__pgpool_options_init(gr__pgpool_options_t *o);

/* Start connecting at once. conninfo is copied. */
int gr__pgpool_new(uv_loop_t *loop, const char *conninfo, const gr__pgpool_options_t *opts,
                   gr__pgpool_t **out);

/* Result of a query: status 0 with `res` (borrowed until the callback
 * returns; PGRES_TUPLES_OK or PGRES_COMMAND_OK), or GR_ESTORAGE /
 * GR_ECANCELED with `detail` (res NULL). Runs once, never inside the call. */
typedef void (*gr__pg_result_cb)(void *ud, int status, PGresult *res, const char *detail);

/* Queue a query. `sql` must be static (it is not copied); parameter values
 * are copied (formats[i] 1 = binary with lengths[i], 0 = text C string;
 * formats may be NULL for all text; a NULL value is SQL NULL). */
/* Check a libpq URL or key=value string without connecting (syntax, option
 * names, values such as the port). 0, or GR_ECONFIG with libpq's reason in
 * err. */
int gr__pg_conninfo_check(const char *conninfo, char *err, size_t err_size);

int gr__pgpool_query(gr__pgpool_t *pg, const char *sql, int nparams, const char *const *values,
                     const int *lengths, const int *formats, int result_format, gr__pg_result_cb cb,
                     void *ud);

/* gr__pgpool_query through a prepared statement: number `stmt` (1 ..
 * GR__PG_MAX_STMTS) is prepared from `sql` on each connection the first time
 * it runs there (parameter types from the casts in `sql`), then executed
 * without being parsed or planned again. A caller uses one number for one
 * `sql` for the pool's life. 0, GR_EINVAL, GR_ESHUTDOWN or GR_ENOMEM; a
 * failed PREPARE fails the query (GR_ESTORAGE, with the server's reason). */
int gr__pgpool_query_prepared(gr__pgpool_t *pg, unsigned stmt, const char *sql, int nparams,
                              const char *const *values, const int *lengths, const int *formats,
                              int result_format, gr__pg_result_cb cb, void *ud);

/* 0 while every connection has failed since the last success. */
int gr__pgpool_available(const gr__pgpool_t *pg);

/* Queued and in-flight queries complete with GR_ECANCELED; cb runs later. */
void gr__pgpool_close(gr__pgpool_t *pg, void (*cb)(void *), void *ud);

#endif
