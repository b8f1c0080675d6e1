/* src/storage/pgpool.c - a small pool of libpq connections in non-blocking
 * mode, driven by a libuv loop through a uv_poll_t on each connection's
 * socket, running parameterised queries in FIFO order. No libpq call here
 * blocks: PQconnectStart/Poll, PQsendQueryParams, PQsendPrepare,
 * PQsendQueryPrepared, PQflush, PQconsumeInput, PQisBusy and PQgetResult only.
 * A prepared statement is prepared on a connection by the first query that
 * needs it there (one extra round trip per statement and connection, then
 * none); a pool with custom_plans first sets plan_cache_mode on each. Used by the storage provider and by
 * membership. Behaviour on failure: docs/storage.md.
 */
#include <assert.h>
#include <stdio.h>

#include "base/base.h"
#include "storage/pgpool.h"

typedef struct gr__pg_op {
    struct gr__pg_op *next;
    const char *sql; /* static */
    unsigned stmt;   /* 0: unnamed; 1..GR__PG_MAX_STMTS: prepared as "granary_<stmt>" */
    int reprepared;  /* prepared again once already (the server had lost it) */
    int deadlocks;   /* times chosen as a deadlock's victim and run again */
    int nparams;
    const char *values[GR__PG_MAX_PARAMS];
    int lengths[GR__PG_MAX_PARAMS];
    int formats[GR__PG_MAX_PARAMS];
    int result_format;
    gr__pg_result_cb cb;
    void *ud;
    uint64_t enqueued_ms;
    char *copy; /* one allocation holding every parameter value */
} gr__pg_op_t;

typedef enum { GR__CONN_DOWN, GR__CONN_CONNECTING, GR__CONN_IDLE, GR__CONN_BUSY } gr__conn_state_t;

typedef struct gr__pgpool gr__pg_t;

typedef struct gr__pg_conn {
    gr__pg_t *pg;
    PGconn *conn;
    uv_poll_t *poll; /* heap: replaced when libpq changes sockets, freed in its close cb */
    int fd;
    int events;
    gr__conn_state_t state;
    gr__pg_op_t *op;  /* in flight while BUSY */
    PGresult *result; /* first result of the op in flight */
    uv_timer_t timer; /* reconnect backoff, and connect deadline */
    uint32_t backoff_ms;
    uint64_t sent_ms;  /* when the op in flight was sent */
    uint32_t prepared; /* GR__STMT_BIT(k): statement k is prepared on this connection */
} gr__pg_conn_t;

#define GR__STMT_BIT(k) (1u << ((k)-1))

/* The op in flight waits for its statement's PREPARE (sent because the
 * statement was not prepared on this connection). */
static int gr__conn_preparing(const gr__pg_conn_t *c) {
    return c->op && c->op->stmt && !(c->prepared & GR__STMT_BIT(c->op->stmt));
}

struct gr__pgpool {
    uv_loop_t *loop;
    int closing;
    char *conninfo;
    gr__pgpool_options_t opts;
    gr__pg_conn_t *conns;
    unsigned n_conns;
    unsigned up; /* connections IDLE or BUSY */
    int down;    /* every connection failed since the last success: fail fast */
    gr__pg_op_t *head, *tail;
    uv_timer_t sweep; /* fails ops that waited too long, or while the database is down */
    uint64_t rng;
    char last_error[320];
    int handles_open;
    void (*close_cb)(void *);
    void *close_ud;
};

#define GR__PG_CONNECT_TIMEOUT_MS 5000u
#define GR__PG_SWEEP_MS 100u

static void gr__conn_connect(gr__pg_conn_t *c);
static void gr__conn_broken(gr__pg_conn_t *c, const char *why);
static void gr__pg_dispatch(gr__pg_t *pg);

static void gr__pg_set_error(gr__pg_t *pg, const char *msg) {
    /* libpq messages end in a newline; keep the line clean for logs. */
    snprintf(pg->last_error, sizeof pg->last_error, "%s", msg ? msg : "unknown error");
    size_t n = strlen(pg->last_error);
    while (n && (pg->last_error[n - 1] == '\n' || pg->last_error[n - 1] == ' '))
        pg->last_error[--n] = '\0';
}

/* ---- completing operations ---- */

static void gr__op_free(gr__pg_op_t *op) {
    gr__free(op->copy);
    gr__free(op);
}

static void gr__op_fail(gr__pg_op_t *op, int status, const char *detail) {
    op->cb(op->ud, status, NULL, detail);
    gr__op_free(op);
}

static void gr__op_complete(gr__pg_op_t *op, PGresult *res) {
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        char detail[400];
        /* Only the message's first line: libpq adds the statement's text and
         * a caret line, which say nothing to an operator. */
        const char *msg = res ? PQresultErrorMessage(res) : "no result";
        size_t ml = strcspn(msg, "\n");
        /* A table or column this binary needs is missing: the schema was
         * never migrated, or is older than the binary. Say what to do. */
        const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        int old_schema = state && (!strcmp(state, "42P01") || !strcmp(state, "42703"));
        snprintf(detail, sizeof detail, "postgres: %.*s%s", (int)(ml > 300 ? 300 : ml), msg,
                 old_schema ? " (the schema is missing or older than this binary: run `silo migrate "
                              "--database URL`)"
                            : "");
        gr__op_fail(op, GR_ESTORAGE, detail);
        return;
    }
    op->cb(op->ud, 0, res, NULL);
    gr__op_free(op);
}

/* ---- the socket watcher ---- */

static void gr__conn_on_poll(uv_poll_t *h, int status, int events);

/* Every handle's close callback ends here; the last one after
 * gr__pgpool_close() frees the provider. */
static void gr__pg_handle_gone(gr__pg_t *pg) {
    if (--pg->handles_open != 0 || !pg->closing) return;
    for (unsigned i = 0; i < pg->n_conns; i++)
        if (pg->conns[i].conn) PQfinish(pg->conns[i].conn);
    void (*cb)(void *) = pg->close_cb;
    void *ud = pg->close_ud;
    gr__free(pg->conns);
    gr__free(pg->conninfo);
    gr__free(pg);
    if (cb) cb(ud);
}

static void gr__poll_closed(uv_handle_t *h) {
    gr__pg_conn_t *c = h->data;
    gr__free(h);
    gr__pg_handle_gone(c->pg);
}

static void gr__conn_unwatch(gr__pg_conn_t *c) {
    if (!c->poll) return;
    uv_poll_stop(c->poll);
    uv_close((uv_handle_t *)c->poll, gr__poll_closed);
    c->poll = NULL;
    c->fd = -1;
    c->events = 0;
}

/* Watch the connection's current socket for `events`. libpq may switch
 * sockets while connecting, so the handle follows PQsocket(). */
static int gr__conn_watch(gr__pg_conn_t *c, int events) {
    int fd = PQsocket(c->conn);
    if (fd < 0) return GR_EIO;
    if (c->poll && c->fd != fd) gr__conn_unwatch(c);
    if (!c->poll) {
        c->poll = gr__malloc(sizeof *c->poll);
        if (!c->poll) return GR_ENOMEM;
        if (uv_poll_init(c->pg->loop, c->poll, fd) != 0) {
            gr__free(c->poll);
            c->poll = NULL;
            return GR_EIO;
        }
        c->poll->data = c;
        c->pg->handles_open++;
        c->fd = fd;
        c->events = 0;
    }
    if (c->events != events) {
        if (uv_poll_start(c->poll, events, gr__conn_on_poll) != 0) return GR_EIO;
        c->events = events;
    }
    return 0;
}

/* ---- connection life cycle ---- */

static uint32_t gr__jitter(gr__pg_t *pg, uint32_t ms) {
    /* xorshift: per-provider, no global rand() state. +-25% spreads the
     * reconnect storm of many silos after a database restart. */
    pg->rng ^= pg->rng << 13;
    pg->rng ^= pg->rng >> 7;
    pg->rng ^= pg->rng << 17;
    uint32_t spread = ms / 2 + 1;
    return ms - ms / 4 + (uint32_t)(pg->rng % spread);
}

static void gr__conn_retry_cb(uv_timer_t *t) {
    gr__pg_conn_t *c = t->data;
    if (c->state == GR__CONN_CONNECTING) {
        gr__conn_broken(c, "connect timed out");
        return;
    }
    gr__conn_connect(c);
}

static void gr__conn_schedule_retry(gr__pg_conn_t *c) {
    gr__pg_t *pg = c->pg;
    if (pg->closing) return;
    uint32_t d = c->backoff_ms ? c->backoff_ms : pg->opts.reconnect_min_ms;
    c->backoff_ms = d * 2 > pg->opts.reconnect_max_ms ? pg->opts.reconnect_max_ms : d * 2;
    uv_timer_start(&c->timer, gr__conn_retry_cb, gr__jitter(pg, d), 0);
}

/* An op that never ran goes back to the front of the queue. */
static void gr__op_requeue(gr__pg_t *pg, gr__pg_op_t *op) {
    op->next = pg->head;
    pg->head = op;
    if (!pg->tail) pg->tail = op;
}

static void gr__conn_broken(gr__pg_conn_t *c, const char *why) {
    gr__pg_t *pg = c->pg;
    char msg[300];
    snprintf(msg, sizeof msg, "%s", why);
    gr__pg_set_error(pg, msg);
    int was_up = c->state == GR__CONN_IDLE || c->state == GR__CONN_BUSY;
    /* One warning per outage, not one per reconnect attempt. */
    if (was_up)
        GR__LOG_WARN("postgres connection %u lost: %s", (unsigned)(c - pg->conns), pg->last_error);
    else if (!pg->down && pg->up == 0)
        GR__LOG_WARN("cannot connect to postgres: %s (retrying with backoff)", pg->last_error);
    else
        GR__LOG_DEBUG("postgres connection %u: %s", (unsigned)(c - pg->conns), pg->last_error);
    gr__conn_unwatch(c);
    if (c->result) {
        PQclear(c->result);
        c->result = NULL;
    }
    if (c->conn) {
        PQfinish(c->conn);
        c->conn = NULL;
    }
    c->state = GR__CONN_DOWN;
    int preparing = gr__conn_preparing(c);
    c->prepared = 0; /* statements live and die with their connection */
    uv_timer_stop(&c->timer);
    if (was_up) pg->up--;
    if (pg->up == 0) pg->down = 1;
    gr__pg_op_t *op = c->op;
    c->op = NULL;
    if (preparing) {
        /* Lost while only its PREPARE was out: the query never ran, so it
         * is not "outcome unknown"; another connection runs it. */
        gr__op_requeue(pg, op);
        gr__conn_schedule_retry(c);
        if (!pg->closing) gr__pg_dispatch(pg);
        return;
    }
    if (op) {
        /* The query may or may not have committed: say so. */
        char detail[400];
        snprintf(detail, sizeof detail, "postgres connection lost during the operation (outcome unknown): %s",
                 pg->last_error);
        gr__op_fail(op, GR_ESTORAGE, detail);
    }
    gr__conn_schedule_retry(c); /* no-op once the callback closed the provider */
}

static int gr__conn_send(gr__pg_conn_t *c, gr__pg_op_t *op);

static void gr__setup_done(void *ud, int status, PGresult *res, const char *detail) {
    (void)ud;
    (void)res;
    if (status != 0 && status != GR_ECANCELED) GR__LOG_WARN("postgres connection setup failed: %s", detail);
}

/* Sent first on every new connection of a pool with custom_plans. Prepared statements are planned on
 * each run with its parameters: a generic plan, chosen once while a table
 * is still small, kept a sequential scan when the table grew (seen: a write
 * batch of 32 grains scanning 10,000 rows, a fifth of the throughput), and
 * a generic plan forced with scans and hash joins disabled walked the whole
 * primary key instead. They still save the parse and analysis of every
 * batch. One statement: the extended protocol refuses several. */
static const char GR__SQL_CONN_SETUP[] = "SELECT set_config('plan_cache_mode', 'force_custom_plan', false)";

static void gr__conn_up(gr__pg_conn_t *c) {
    c->state = GR__CONN_IDLE;
    c->backoff_ms = 0;
    uv_timer_stop(&c->timer);
    c->pg->up++;
    if (c->pg->down) GR__LOG_INFO("postgres connection restored");
    c->pg->down = 0;
    gr__pg_op_t *setup = c->pg->opts.custom_plans ? gr__calloc(1, sizeof *setup) : NULL;
    if (setup) { /* without it (out of memory) the connection still works */
        setup->sql = GR__SQL_CONN_SETUP;
        setup->cb = gr__setup_done;
        setup->enqueued_ms = uv_now(c->pg->loop);
        if (gr__conn_send(c, setup) != 0) {
            if (!c->op) gr__op_free(setup);
            gr__conn_broken(c, PQerrorMessage(c->conn));
        }
        return; /* its completion makes the connection idle and dispatches */
    }
    /* Idle connections stay watched for readability so a server-side close
     * is noticed at once, not at the next query. */
    if (gr__conn_watch(c, UV_READABLE)) {
        gr__conn_broken(c, "cannot watch socket");
        return;
    }
    gr__pg_dispatch(c->pg);
}

static void gr__conn_continue_connect(gr__pg_conn_t *c) {
    PostgresPollingStatusType st = PQconnectPoll(c->conn);
    /* libpq may have closed the socket and opened another (often with the
     * same number, which the kernel already dropped from epoll): always
     * watch afresh while connecting. */
    gr__conn_unwatch(c);
    switch (st) {
    case PGRES_POLLING_READING:
        if (gr__conn_watch(c, UV_READABLE)) gr__conn_broken(c, "cannot watch socket");
        return;
    case PGRES_POLLING_WRITING:
        if (gr__conn_watch(c, UV_WRITABLE)) gr__conn_broken(c, "cannot watch socket");
        return;
    case PGRES_POLLING_OK:
        gr__conn_up(c);
        return;
    default:
        gr__conn_broken(c, PQerrorMessage(c->conn));
        return;
    }
}

static void gr__conn_connect(gr__pg_conn_t *c) {
    gr__pg_t *pg = c->pg;
    c->conn = PQconnectStart(pg->conninfo);
    if (!c->conn) {
        gr__pg_set_error(pg, "out of memory creating a connection");
        gr__conn_schedule_retry(c);
        return;
    }
    if (PQstatus(c->conn) == CONNECTION_BAD || PQsetnonblocking(c->conn, 1) != 0) {
        gr__conn_broken(c, PQerrorMessage(c->conn));
        return;
    }
    c->state = GR__CONN_CONNECTING;
    uv_timer_start(&c->timer, gr__conn_retry_cb, GR__PG_CONNECT_TIMEOUT_MS, 0);
    if (gr__conn_watch(c, UV_WRITABLE)) gr__conn_broken(c, "cannot watch socket");
}

/* ---- running queries ---- */

static int gr__conn_send(gr__pg_conn_t *c, gr__pg_op_t *op) {
    int ok;
    if (!op->stmt) {
        ok = PQsendQueryParams(c->conn, op->sql, op->nparams, NULL, op->values, op->lengths, op->formats,
                               op->result_format);
    } else {
        char name[24];
        snprintf(name, sizeof name, "granary_%u", op->stmt);
        if (c->prepared & GR__STMT_BIT(op->stmt))
            ok = PQsendQueryPrepared(c->conn, name, op->nparams, op->values, op->lengths, op->formats,
                                     op->result_format);
        else /* parameter types come from the statement's casts */
            ok = PQsendPrepare(c->conn, name, op->sql, op->nparams, NULL);
    }
    if (!ok) return GR_EIO;
    c->op = op;
    c->state = GR__CONN_BUSY;
    c->sent_ms = uv_now(c->pg->loop);
    int f = PQflush(c->conn);
    if (f < 0) return GR_EIO;
    return gr__conn_watch(c, f == 1 ? (UV_READABLE | UV_WRITABLE) : UV_READABLE);
}

/* Not sent (or not fully): nothing can have committed unless the query
 * reached the server, so it is reported as unknown only if it was sent
 * (gr__conn_broken); one never sent goes first to another connection. */
static void gr__conn_send_failed(gr__pg_conn_t *c, gr__pg_op_t *op) {
    if (c->op == NULL) gr__op_requeue(c->pg, op);
    gr__conn_broken(c, PQerrorMessage(c->conn));
}

static void gr__pg_dispatch(gr__pg_t *pg) {
    for (unsigned i = 0; i < pg->n_conns && pg->head; i++) {
        gr__pg_conn_t *c = &pg->conns[i];
        if (c->state != GR__CONN_IDLE) continue;
        gr__pg_op_t *op = pg->head;
        pg->head = op->next;
        if (!pg->head) pg->tail = NULL;
        op->next = NULL;
        if (gr__conn_send(c, op) != 0) gr__conn_send_failed(c, op);
    }
}

static void gr__conn_read(gr__pg_conn_t *c) {
    if (!PQconsumeInput(c->conn)) {
        gr__conn_broken(c, PQerrorMessage(c->conn));
        return;
    }
    /* Notices and notifications are not used; drop them. */
    PGnotify *n;
    while ((n = PQnotifies(c->conn)) != NULL)
        PQfreemem(n);
    if (c->state != GR__CONN_BUSY) {
        if (PQstatus(c->conn) == CONNECTION_BAD) gr__conn_broken(c, "server closed the connection");
        return;
    }
    while (!PQisBusy(c->conn)) {
        PGresult *res = PQgetResult(c->conn);
        if (!res) {
            int preparing = gr__conn_preparing(c);
            gr__pg_op_t *op = c->op;
            PGresult *first = c->result;
            c->op = NULL;
            c->result = NULL;
            c->state = GR__CONN_IDLE;
            const char *sqlstate = first ? PQresultErrorField(first, PG_DIAG_SQLSTATE) : NULL;
            int prepared_ok = preparing && first && PQresultStatus(first) == PGRES_COMMAND_OK;
            /* 26000: the server no longer has our statement (DEALLOCATE, a
             * pooler between us): it did not run; prepare it again, once (a
             * pooler that moves us between backends would loop for ever). */
            int vanished =
                !preparing && op->stmt && !op->reprepared && sqlstate && !strcmp(sqlstate, "26000");
            /* 40P01: the server chose this statement as a deadlock's victim
             * and rolled it back whole (one statement, one transaction), so
             * running it again is safe: a claim release and a silo's leave,
             * which both release claims, can deadlock at a drain. */
            int deadlocked = !preparing && sqlstate && !strcmp(sqlstate, "40P01") && op->deadlocks < 3;
            if (prepared_ok || vanished || deadlocked) {
                PQclear(first);
                if (prepared_ok) {
                    c->prepared |= GR__STMT_BIT(op->stmt);
                } else if (vanished) {
                    c->prepared &= ~GR__STMT_BIT(op->stmt);
                    op->reprepared = 1;
                } else {
                    op->deadlocks++;
                    GR__LOG_DEBUG("postgres: a statement lost a deadlock; running it again (%d)",
                                  op->deadlocks);
                }
                if (gr__conn_send(c, op) != 0) {
                    gr__conn_send_failed(c, op);
                    if (!c->pg->closing) gr__pg_dispatch(c->pg);
                }
                return;
            }
            gr__op_complete(op, first); /* a failed PREPARE fails its query with the reason */
            PQclear(first);
            if (c->pg->closing) return; /* the callback closed the provider */
            if (PQstatus(c->conn) == CONNECTION_BAD) {
                gr__conn_broken(c, "server closed the connection");
                return;
            }
            if (gr__conn_watch(c, UV_READABLE)) {
                gr__conn_broken(c, "cannot watch socket");
                return;
            }
            gr__pg_dispatch(c->pg);
            return;
        }
        if (c->result)
            PQclear(res); /* one statement per query: keep the first result */
        else
            c->result = res;
    }
}

static void gr__conn_on_poll(uv_poll_t *h, int status, int events) {
    gr__pg_conn_t *c = h->data;
    if (status < 0 && c->state == GR__CONN_CONNECTING) {
        /* A connect that failed shows up as a poll error (EBADF from libuv,
         * which an operator read as "bad file descriptor"); libpq reads the
         * socket's own error and says what happened ("Connection refused"). */
        gr__conn_continue_connect(c);
        return;
    }
    if (status < 0) {
        gr__conn_broken(c, uv_strerror(status));
        return;
    }
    if (c->state == GR__CONN_CONNECTING) {
        gr__conn_continue_connect(c);
        return;
    }
    if ((events & UV_WRITABLE) && c->state == GR__CONN_BUSY) {
        int f = PQflush(c->conn);
        if (f < 0) {
            gr__conn_broken(c, PQerrorMessage(c->conn));
            return;
        }
        if (f == 0 && gr__conn_watch(c, UV_READABLE)) {
            gr__conn_broken(c, "cannot watch socket");
            return;
        }
    }
    if (events & UV_READABLE) gr__conn_read(c);
}

/* ---- the queue ---- */

static void gr__pg_sweep_cb(uv_timer_t *t) {
    gr__pg_t *pg = t->data;
    uint64_t now = uv_now(pg->loop);
    /* Fail what cannot be served: everything while the database is down, and
     * anything that waited past op_timeout_ms behind busy connections. */
    gr__pg_op_t **pp = &pg->head, *keep_tail = NULL;
    gr__pg_op_t *failed = NULL, **ft = &failed;
    while (*pp) {
        gr__pg_op_t *op = *pp;
        if (pg->down || now - op->enqueued_ms >= pg->opts.op_timeout_ms) {
            *pp = op->next;
            op->next = NULL;
            *ft = op;
            ft = &op->next;
        } else {
            keep_tail = op;
            pp = &op->next;
        }
    }
    pg->tail = keep_tail;
    while (failed) {
        gr__pg_op_t *next = failed->next;
        char detail[400];
        if (pg->down)
            snprintf(detail, sizeof detail, "database unavailable: %s", pg->last_error);
        else
            snprintf(detail, sizeof detail, "no database connection free within %u ms",
                     (unsigned)pg->opts.op_timeout_ms);
        gr__op_fail(failed, GR_ESTORAGE, detail);
        failed = next;
    }
    /* A query that never completes is a connection that silently stopped
     * (a partition drops packets; no FIN, no RST arrives): without this its
     * caller would wait forever, e.g. a heartbeat that would tell a fenced
     * silo it was declared dead. */
    uint32_t qt = pg->opts.query_timeout_ms;
    for (unsigned i = 0; qt && i < pg->n_conns && !pg->closing; i++) {
        gr__pg_conn_t *c = &pg->conns[i];
        if (c->state == GR__CONN_BUSY && now - c->sent_ms >= qt) {
            char why[96];
            snprintf(why, sizeof why, "no reply to a query within %u ms", (unsigned)qt);
            gr__conn_broken(c, why);
        }
    }
}

static int gr__pg_enqueue(gr__pgpool_t *pg, unsigned stmt, const char *sql, int nparams,
                          const char *const *values, const int *lengths, const int *formats,
                          int result_format, gr__pg_result_cb cb, void *ud) {
    if (!pg || !sql || nparams < 0 || nparams > GR__PG_MAX_PARAMS || !cb || stmt > GR__PG_MAX_STMTS)
        return GR_EINVAL;
    if (pg->closing) return GR_ESHUTDOWN;
    gr__pg_op_t *op = gr__calloc(1, sizeof *op);
    if (!op) return GR_ENOMEM;
    /* Copy every value into one block: the caller's buffers are borrowed
     * only for the duration of this call. Text values (format 0) are
     * NUL-terminated C strings; binary ones use lengths[i]. */
    size_t total = 0, len[GR__PG_MAX_PARAMS];
    for (int i = 0; i < nparams; i++) {
        int bin = formats && formats[i];
        if (bin && values[i] && lengths[i] < 0) {
            gr__free(op);
            return GR_EINVAL;
        }
        len[i] = !values[i] ? 0 : bin ? (size_t)lengths[i] : strlen(values[i]) + 1;
        total += len[i] + 1;
    }
    op->copy = gr__malloc(total);
    if (!op->copy) {
        gr__free(op);
        return GR_ENOMEM;
    }
    char *p = op->copy;
    for (int i = 0; i < nparams; i++) {
        op->formats[i] = formats ? formats[i] : 0;
        op->lengths[i] = (int)len[i];
        if (!values[i]) {
            op->values[i] = NULL; /* SQL NULL */
            continue;
        }
        if (len[i]) memcpy(p, values[i], len[i]);
        p[len[i]] = '\0';
        op->values[i] = p; /* never NULL for a zero-length bytea */
        p += len[i] + 1;
    }
    op->sql = sql;
    op->stmt = stmt;
    op->nparams = nparams;
    op->result_format = result_format;
    op->cb = cb;
    op->ud = ud;
    op->enqueued_ms = uv_now(pg->loop);
    if (pg->tail)
        pg->tail->next = op;
    else
        pg->head = op;
    pg->tail = op;
    /* Sending happens here when a connection is idle: the result can only
     * arrive through the poll callback, so cb never runs inside this call. */
    gr__pg_dispatch(pg);
    return 0;
}

int gr__pgpool_query(gr__pgpool_t *pg, const char *sql, int nparams, const char *const *values,
                     const int *lengths, const int *formats, int result_format, gr__pg_result_cb cb,
                     void *ud) {
    return gr__pg_enqueue(pg, 0, sql, nparams, values, lengths, formats, result_format, cb, ud);
}

int gr__pgpool_query_prepared(gr__pgpool_t *pg, unsigned stmt, const char *sql, int nparams,
                              const char *const *values, const int *lengths, const int *formats,
                              int result_format, gr__pg_result_cb cb, void *ud) {
    if (stmt == 0) return GR_EINVAL;
    return gr__pg_enqueue(pg, stmt, sql, nparams, values, lengths, formats, result_format, cb, ud);
}

int gr__pgpool_available(const gr__pgpool_t *pg) { return !pg->down; }

static void gr__timer_closed(uv_handle_t *h) { gr__pg_handle_gone(h->data); }

void gr__pgpool_close(gr__pgpool_t *pg, void (*cb)(void *), void *ud) {
    assert(!pg->closing);
    pg->closing = 1;
    pg->close_cb = cb;
    pg->close_ud = ud;
    gr__pg_op_t *op = pg->head;
    pg->head = pg->tail = NULL;
    while (op) {
        gr__pg_op_t *next = op->next;
        gr__op_fail(op, GR_ECANCELED, "storage closed");
        op = next;
    }
    for (unsigned i = 0; i < pg->n_conns; i++) {
        gr__pg_conn_t *c = &pg->conns[i];
        if (c->op) {
            gr__pg_op_t *inflight = c->op;
            c->op = NULL;
            gr__op_fail(inflight, GR_ECANCELED, "storage closed (outcome unknown)");
        }
        if (c->result) {
            PQclear(c->result);
            c->result = NULL;
        }
        gr__conn_unwatch(c);
        c->timer.data = pg; /* the close callback only needs the provider */
        uv_close((uv_handle_t *)&c->timer, gr__timer_closed);
    }
    uv_close((uv_handle_t *)&pg->sweep, gr__timer_closed);
}

void gr__pgpool_options_init(gr__pgpool_options_t *o) {
    memset(o, 0, sizeof *o);
    o->pool_size = 4;
    o->op_timeout_ms = 5000;
    o->reconnect_min_ms = 100;
    o->reconnect_max_ms = 5000;
    o->query_timeout_ms = 30000;
}

int gr__pgpool_new(uv_loop_t *loop, const char *conninfo, const gr__pgpool_options_t *opts,
                   gr__pgpool_t **out) {
    if (!loop || !opts || !out || !conninfo || opts->pool_size == 0 || opts->pool_size > 64 ||
        opts->reconnect_min_ms == 0 || opts->reconnect_max_ms < opts->reconnect_min_ms ||
        opts->op_timeout_ms == 0)
        return GR_EINVAL;
    gr__pg_t *pg = gr__calloc(1, sizeof *pg);
    if (!pg) return GR_ENOMEM;
    pg->opts = *opts;
    pg->conninfo = gr__strdup(conninfo);
    pg->conns = gr__calloc(opts->pool_size, sizeof *pg->conns);
    if (!pg->conninfo || !pg->conns) {
        gr__free(pg->conninfo);
        gr__free(pg->conns);
        gr__free(pg);
        return GR_ENOMEM;
    }
    pg->loop = loop;
    pg->n_conns = opts->pool_size;
    pg->rng = (uint64_t)(uintptr_t)pg ^ uv_hrtime();
    if (!pg->rng) pg->rng = 88172645463325252ull;
    uv_timer_init(loop, &pg->sweep);
    pg->sweep.data = pg;
    pg->handles_open = 1;
    uv_timer_start(&pg->sweep, gr__pg_sweep_cb, GR__PG_SWEEP_MS, GR__PG_SWEEP_MS);
    uv_unref((uv_handle_t *)&pg->sweep); /* housekeeping must not keep a loop alive */
    for (unsigned i = 0; i < pg->n_conns; i++) {
        gr__pg_conn_t *c = &pg->conns[i];
        c->pg = pg;
        c->fd = -1;
        uv_timer_init(loop, &c->timer);
        c->timer.data = c;
        pg->handles_open++;
        gr__conn_connect(c);
    }
    *out = pg;
    return 0;
}

int gr__pg_conninfo_check(const char *conninfo, char *err, size_t err_size) {
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &msg);
    if (opts) {
        PQconninfoFree(opts);
        /* The values (a port that is not a number, an unknown sslmode) are
         * checked when a connection starts: start one and look at once,
         * before any network result can arrive (a refused or unreachable
         * server is not a configuration error: the pool retries those). */
        PGconn *c = PQconnectStart(conninfo);
        int bad = !c || (PQstatus(c) == CONNECTION_BAD && !strncmp(PQerrorMessage(c), GR__LIT("invalid ")));
        if (bad && err && err_size) {
            const char *why = c ? PQerrorMessage(c) : "out of memory";
            snprintf(err, err_size, "%.*s", (int)strcspn(why, "\n"), why);
        }
        if (c) PQfinish(c);
        return bad ? GR_ECONFIG : 0;
    }
    const char *why = msg ? msg : "out of memory";
    size_t n = strcspn(why, "\n");
    if (err && err_size) snprintf(err, err_size, "%.*s", (int)n, why);
    if (msg) PQfreemem(msg);
    return GR_ECONFIG;
}
