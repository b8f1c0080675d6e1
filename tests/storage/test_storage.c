/* tests/storage/test_storage.c - one set of cases run against both
 * providers (argv[1]: memory or postgres): the version semantics must be
 * identical, because the grain runtime relies on them for single activation. */
#include <stdio.h>
#include <unistd.h>

#include "base/base.h"
#include "granary/storage.h"
#include "storage/claim.h"
#include "granary/storage.h"
#include "storage/replies.h"
#include "support.h"

static int use_pg;
static int case_no;

typedef struct {
    uv_loop_t loop;
    gr_storage_t *st;
} fx_t;

typedef struct {
    int done;
    int status;
    int64_t version;
    uint32_t format;
    gr__buf_t data;
    char detail[512];
} res_t;

static void on_read(void *ud, int status, const uint8_t *data, size_t len, int64_t version, uint32_t format,
                    const char *detail) {
    res_t *r = ud;
    r->format = format;
    r->status = status;
    r->version = version;
    r->data.len = 0;
    gr__buf_append(&r->data, data, len);
    snprintf(r->detail, sizeof r->detail, "%s", detail ? detail : "");
    r->done++;
}

static void on_write(void *ud, int status, int64_t version, const char *detail) {
    res_t *r = ud;
    r->status = status;
    r->version = version;
    snprintf(r->detail, sizeof r->detail, "%s", detail ? detail : "");
    r->done++;
}

static void setup_provider(fx_t *fx) {
    if (use_pg) {
        gr_storage_pg_options_t o;
        gr_storage_pg_options_init(&o);
        o.conninfo = gr_test_pg_url();
        char service[64];
        /* A fresh service name per case isolates cases sharing one database. */
        snprintf(service, sizeof service, "test-%d-%d", (int)getpid(), ++case_no);
        o.service = service;
        assert_int_equal(gr_storage_pg_new(&fx->loop, &o, &fx->st), 0);
    } else {
        assert_int_equal(gr_storage_memory_new(&fx->loop, &fx->st), 0);
    }
}

static int setup(void **state) {
    fx_t *fx = calloc(1, sizeof *fx);
    uv_loop_init(&fx->loop);
    setup_provider(fx);
    *state = fx;
    return 0;
}

static void closed(void *ud) { *(int *)ud = 1; }

static int teardown(void **state) {
    fx_t *fx = *state;
    int done = 0;
    gr_storage_close(fx->st, closed, &done);
    assert_true(gr_test_run_until(&fx->loop, &done, 5000));
    gr_test_loop_close(&fx->loop);
    free(fx);
    return 0;
}

/* Reset a result but keep its data buffer (freed once, at the end of a case). */
static void reset(res_t *r) {
    gr__buf_t keep = r->data;
    memset(r, 0, sizeof *r);
    r->data = keep;
    r->data.len = 0;
}

static void do_read(fx_t *fx, const char *cls, const void *key, size_t kl, res_t *r) {
    reset(r);
    assert_int_equal(gr_storage_read(fx->st, cls, key, kl, on_read, r), 0);
    assert_int_equal(r->done, 0); /* never completes inside the call */
    assert_true(gr_test_run_until(&fx->loop, &r->done, 10000));
}

static uint32_t fmt; /* state format do_write writes with */

static void do_write(fx_t *fx, const char *cls, const void *key, size_t kl, const void *d, size_t len,
                     int64_t expected, res_t *r) {
    reset(r);
    assert_int_equal(gr_storage_write(fx->st, cls, key, kl, d, len, fmt, expected, on_write, r), 0);
    assert_int_equal(r->done, 0);
    assert_true(gr_test_run_until(&fx->loop, &r->done, 10000));
}

/* ---- reply logs (storage/replies.h) ---- */

static size_t put_entry(uint8_t *out, const char *k, uint64_t at, int32_t st, const char *reply) {
    size_t kl = strlen(k), rl = strlen(reply);
    out[0] = (uint8_t)kl;
    memcpy(out + 1, k, kl);
    gr__put_u64(out + 1 + kl, at);
    gr__put_u32(out + 1 + kl + 8, (uint32_t)st);
    gr__put_u32(out + 1 + kl + 12, (uint32_t)rl);
    memcpy(out + 1 + kl + 16, reply, rl);
    return 1 + kl + 16 + rl;
}

static void do_write_r(fx_t *fx, const char *key, const char *d, int64_t expected, const uint8_t *adds,
                       size_t al, const uint8_t *dels, size_t dl, res_t *r) {
    reset(r);
    assert_int_equal(gr__storage_write_replies(fx->st, "Counter", key, strlen(key), d, strlen(d), 0, expected,
                                               adds, al, dels, dl, 60000, on_write, r),
                     0);
    assert_true(gr_test_run_until(&fx->loop, &r->done, 10000));
}

/* The keys of the entries a read returned after `state` ("" when none), in order. */
static void read_entries(fx_t *fx, const char *key, const char *state, char *keys, size_t size) {
    res_t r = {0};
    do_read(fx, "Counter", key, strlen(key), &r);
    assert_int_equal(r.status, 0);
    keys[0] = '\0';
    if (!(r.format & GR__REPLIES_FLAG)) {
        assert_int_equal(r.data.len, strlen(state));
        gr__buf_free(&r.data);
        return;
    }
    assert_true(r.data.len >= GR__REPLIES_TRAILER);
    assert_int_equal(gr__get_u32(r.data.data + r.data.len - 4), GR__REPLIES_MAGIC);
    size_t n = gr__get_u32(r.data.data + r.data.len - 8);
    size_t sl = r.data.len - GR__REPLIES_TRAILER - n;
    assert_int_equal(sl, strlen(state));
    assert_memory_equal(r.data.data, state, sl);
    for (size_t off = 0; off < n;) {
        const uint8_t *e = r.data.data + sl + off;
        size_t k = gr__replies_entry_size(e, n - off);
        assert_true(k != (size_t)-1 && k > 0);
        snprintf(keys + strlen(keys), size - strlen(keys), "%s%.*s", keys[0] ? "," : "", (int)e[0], e + 1);
        off += k;
    }
    gr__buf_free(&r.data);
}

/* Entries are added and forgotten by the write that commits, only by it
 * (a conflicting write changes nothing), come back after the state in age
 * order, expire by themselves, and outlive a clear of the state. */
static void test_reply_log(void **state) {
    fx_t *fx = *state;
    res_t r = {0};
    char keys[256];
    uint64_t now = gr__wall_ms();
    uint8_t adds[512], dels[64];
    size_t al = put_entry(adds, "A", now, 0, "1");
    al += put_entry(adds + al, "B", now + 1, GR_EAPP, "no");
    do_write_r(fx, "r", "v1", 0, adds, al, NULL, 0, &r);
    assert_int_equal(r.status, 0);
    read_entries(fx, "r", "v1", keys, sizeof keys);
    assert_string_equal(keys, "A,B");
    al = put_entry(adds, "C", now + 2, 0, "3");
    do_write_r(fx, "r", "v2", 5, adds, al, NULL, 0, &r);
    assert_int_equal(r.status, GR_ECONFLICT);
    read_entries(fx, "r", "v1", keys, sizeof keys);
    assert_string_equal(keys, "A,B");
    dels[0] = 1;
    dels[1] = 'A';
    do_write_r(fx, "r", "v2", 1, adds, al, dels, 2, &r);
    assert_int_equal(r.status, 0);
    read_entries(fx, "r", "v2", keys, sizeof keys);
    assert_string_equal(keys, "B,C");
    al = put_entry(adds, "D", now - 120000, 0, "old"); /* past its 60 s retention already */
    do_write_r(fx, "r", "v3", 2, adds, al, NULL, 0, &r);
    assert_int_equal(r.status, 0);
    read_entries(fx, "r", "v3", keys, sizeof keys);
    assert_string_equal(keys, "B,C");
    reset(&r);
    assert_int_equal(gr_storage_clear(fx->st, "Counter", "r", 1, 3, on_write, &r), 0);
    assert_true(gr_test_run_until(&fx->loop, &r.done, 10000));
    assert_int_equal(r.status, 0);
    read_entries(fx, "r", "", keys, sizeof keys);
    assert_string_equal(keys, "B,C");
    /* Malformed changes are refused before anything is sent. */
    adds[0] = 0;
    assert_int_equal(gr__storage_write_replies(fx->st, "Counter", "r", 1, "x", 1, 0, 0, adds, 5, NULL, 0,
                                               60000, on_write, &r),
                     GR_EPROTO);
    gr__buf_free(&r.data);
}

static void test_read_missing(void **state) {
    fx_t *fx = *state;
    res_t r = {0};
    do_read(fx, "Counter", "nobody", 6, &r);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.version, 0);
    assert_int_equal(r.data.len, 0);
    gr__buf_free(&r.data);
}

static void test_write_then_read(void **state) {
    fx_t *fx = *state;
    res_t r = {0};
    do_write(fx, "Counter", "a", 1, "one", 3, 0, &r);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.version, 1);
    do_write(fx, "Counter", "a", 1, "two", 3, 1, &r);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.version, 2);
    do_read(fx, "Counter", "a", 1, &r);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.version, 2);
    assert_int_equal(r.data.len, 3);
    assert_memory_equal(r.data.data, "two", 3);
    /* Same key, other class: a different grain. */
    do_read(fx, "Other", "a", 1, &r);
    assert_int_equal(r.version, 0);
    /* Empty state is a valid state, distinct from no row. */
    do_write(fx, "Counter", "empty", 5, NULL, 0, 0, &r);
    assert_int_equal(r.status, 0);
    do_read(fx, "Counter", "empty", 5, &r);
    assert_int_equal(r.version, 1);
    assert_int_equal(r.data.len, 0);
    gr__buf_free(&r.data);
}

static void test_version_conflicts(void **state) {
    fx_t *fx = *state;
    res_t r = {0};
    do_write(fx, "Counter", "c", 1, "x", 1, 0, &r);
    assert_int_equal(r.status, 0);
    /* A second first-writer loses. */
    do_write(fx, "Counter", "c", 1, "y", 1, 0, &r);
    assert_int_equal(r.status, GR_ECONFLICT);
    /* A stale writer loses. */
    do_write(fx, "Counter", "c", 1, "z", 1, 1, &r);
    assert_int_equal(r.status, 0);
    do_write(fx, "Counter", "c", 1, "w", 1, 1, &r);
    assert_int_equal(r.status, GR_ECONFLICT);
    /* A writer from the future loses too. */
    do_write(fx, "Counter", "c", 1, "w", 1, 7, &r);
    assert_int_equal(r.status, GR_ECONFLICT);
    do_read(fx, "Counter", "c", 1, &r);
    assert_int_equal(r.version, 2);
    assert_memory_equal(r.data.data, "z", 1);
    gr__buf_free(&r.data);
}

static void test_clear(void **state) {
    fx_t *fx = *state;
    res_t r = {0};
    do_write(fx, "Counter", "d", 1, "x", 1, 0, &r);
    reset(&r);
    assert_int_equal(gr_storage_clear(fx->st, "Counter", "d", 1, 5, on_write, &r), 0);
    gr_test_run_until(&fx->loop, &r.done, 10000);
    assert_int_equal(r.status, GR_ECONFLICT);
    reset(&r);
    assert_int_equal(gr_storage_clear(fx->st, "Counter", "d", 1, 0, on_write, &r), 0);
    gr_test_run_until(&fx->loop, &r.done, 10000);
    assert_int_equal(r.status, GR_ECONFLICT); /* a row exists: "expected absent" fails */
    reset(&r);
    assert_int_equal(gr_storage_clear(fx->st, "Counter", "d", 1, 1, on_write, &r), 0);
    gr_test_run_until(&fx->loop, &r.done, 10000);
    assert_int_equal(r.status, 0);
    do_read(fx, "Counter", "d", 1, &r);
    assert_int_equal(r.version, 0);
    /* After a clear the grain starts again at version 1. */
    do_write(fx, "Counter", "d", 1, "again", 5, 0, &r);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.version, 1);
    gr__buf_free(&r.data);
}

static void test_hostile_keys(void **state) {
    fx_t *fx = *state;
    res_t r = {0};
    const uint8_t nul_key[] = {'a', 0, 'b', '\'', '"', ';', '\\', 0xff};
    do_write(fx, "Counter", nul_key, sizeof nul_key, "1", 1, 0, &r);
    assert_int_equal(r.status, 0);
    do_read(fx, "Counter", nul_key, sizeof nul_key, &r);
    assert_int_equal(r.version, 1);
    /* A prefix up to the NUL is a different grain. */
    do_read(fx, "Counter", "a", 1, &r);
    assert_int_equal(r.version, 0);
    static uint8_t big[GR_KEY_MAX + 1];
    memset(big, 'k', sizeof big);
    do_write(fx, "Counter", big, GR_KEY_MAX, "1", 1, 0, &r);
    assert_int_equal(r.status, 0);
    assert_int_equal(gr_storage_read(fx->st, "Counter", big, GR_KEY_MAX + 1, on_read, &r), GR_ETOOBIG);
    assert_int_equal(gr_storage_read(fx->st, "bad/class", "k", 1, on_read, &r), GR_EINVAL);
    assert_int_equal(gr_storage_read(fx->st, "Counter", NULL, 3, on_read, &r), GR_EINVAL);
    /* The empty key is a key. */
    do_write(fx, "Counter", "", 0, "e", 1, 0, &r);
    assert_int_equal(r.status, 0);
    gr__buf_free(&r.data);
}

static void test_large_state(void **state) {
    fx_t *fx = *state;
    size_t n = 1024 * 1024;
    uint8_t *blob = malloc(n);
    for (size_t i = 0; i < n; i++)
        blob[i] = (uint8_t)(i * 31u);
    res_t r = {0};
    do_write(fx, "Blob", "big", 3, blob, n, 0, &r);
    assert_int_equal(r.status, 0);
    do_read(fx, "Blob", "big", 3, &r);
    assert_int_equal(r.data.len, n);
    assert_memory_equal(r.data.data, blob, n);
    free(blob);
    gr__buf_free(&r.data);
}

/* Many writers racing with the same expected version: exactly one wins. */
static void test_concurrent_writers(void **state) {
    fx_t *fx = *state;
    res_t r = {0};
    do_write(fx, "Counter", "race", 4, "0", 1, 0, &r);
    enum { N = 40 };
    res_t rs[N];
    int done_all = 0;
    memset(rs, 0, sizeof rs);
    for (int i = 0; i < N; i++)
        assert_int_equal(gr_storage_write(fx->st, "Counter", "race", 4, "w", 1, 0, 1, on_write, &rs[i]), 0);
    for (int spin = 0; spin < 1000 && !done_all; spin++) {
        gr_test_run_for(&fx->loop, 10);
        done_all = 1;
        for (int i = 0; i < N; i++)
            done_all &= rs[i].done == 1;
    }
    assert_true(done_all);
    int wins = 0, conflicts = 0;
    for (int i = 0; i < N; i++) {
        if (rs[i].status == 0) wins++;
        if (rs[i].status == GR_ECONFLICT) conflicts++;
    }
    assert_int_equal(wins, 1);
    assert_int_equal(conflicts, N - 1);
    /* Racing first writers (INSERT ... ON CONFLICT): one wins as well. */
    memset(rs, 0, sizeof rs);
    for (int i = 0; i < N; i++)
        assert_int_equal(gr_storage_write(fx->st, "Counter", "race0", 5, "w", 1, 0, 0, on_write, &rs[i]), 0);
    done_all = 0;
    for (int spin = 0; spin < 1000 && !done_all; spin++) {
        gr_test_run_for(&fx->loop, 10);
        done_all = 1;
        for (int i = 0; i < N; i++)
            done_all &= rs[i].done == 1;
    }
    assert_true(done_all);
    wins = 0;
    for (int i = 0; i < N; i++)
        wins += rs[i].status == 0;
    assert_int_equal(wins, 1);
    gr__buf_free(&r.data);
}

/* The state format (the class's state version) is stored with each write
 * and returned by reads; a missing row reads as format 0. */
static void test_state_format(void **state) {
    fx_t *fx = *state;
    res_t r = {0};
    do_read(fx, "Counter", "f", 1, &r);
    assert_int_equal(r.format, 0);
    fmt = 3;
    do_write(fx, "Counter", "f", 1, "a", 1, 0, &r);
    assert_int_equal(r.status, 0);
    do_read(fx, "Counter", "f", 1, &r);
    assert_int_equal(r.format, 3);
    assert_int_equal(r.version, 1);
    fmt = 5;
    do_write(fx, "Counter", "f", 1, "b", 1, 1, &r);
    do_read(fx, "Counter", "f", 1, &r);
    assert_int_equal(r.format, 5);
    assert_int_equal(r.version, 2);
    fmt = 0;
    assert_int_equal(
        gr_storage_write(fx->st, "Counter", "f", 1, "c", 1, (uint32_t)INT32_MAX + 1u, 2, on_write, &r),
        GR_EINVAL);
    gr__buf_free(&r.data);
}

/* Closing with operations queued completes each exactly once. */
static void test_close_cancels(void **state) {
    fx_t *fx = *state;
    res_t r[10];
    memset(r, 0, sizeof r);
    for (int i = 0; i < 10; i++)
        assert_int_equal(gr_storage_read(fx->st, "Counter", "q", 1, on_read, &r[i]), 0);
    int done = 0;
    gr_storage_close(fx->st, closed, &done);
    assert_true(gr_test_run_until(&fx->loop, &done, 5000));
    for (int i = 0; i < 10; i++) {
        assert_int_equal(r[i].done, 1);
        assert_true(r[i].status == 0 || r[i].status == GR_ECANCELED);
        gr__buf_free(&r[i].data);
    }
    /* Re-create for the teardown. */
    if (use_pg) {
        gr_storage_pg_options_t o;
        gr_storage_pg_options_init(&o);
        o.conninfo = gr_test_pg_url();
        assert_int_equal(gr_storage_pg_new(&fx->loop, &o, &fx->st), 0);
    } else {
        assert_int_equal(gr_storage_memory_new(&fx->loop, &fx->st), 0);
    }
}

/* PostgreSQL only: a database that is not there gives a clear, fast error. */
static void test_dead_database(void **state) {
    fx_t *fx = *state;
    gr_storage_t *dead;
    gr_storage_pg_options_t o;
    gr_storage_pg_options_init(&o);
    char url[128];
    snprintf(url, sizeof url, "postgresql://granary@127.0.0.1:%d/granary?connect_timeout=2",
             gr_test_free_port());
    o.conninfo = url;
    o.reconnect_min_ms = 50;
    assert_int_equal(gr_storage_pg_new(&fx->loop, &o, &dead), 0);
    res_t r = {0};
    memset(&r, 0, sizeof r);
    uint64_t t0 = uv_now(&fx->loop);
    assert_int_equal(gr_storage_read(dead, "Counter", "x", 1, on_read, &r), 0);
    assert_true(gr_test_run_until(&fx->loop, &r.done, 8000));
    uv_update_time(&fx->loop);
    assert_int_equal(r.status, GR_ESTORAGE);
    assert_non_null(strstr(r.detail, "database unavailable"));
    /* libpq's own words, not the poll's "bad file descriptor" (issue 17). */
    if (!strstr(r.detail, "refused"))
        fail_msg("detail does not say the connection was refused: %s", r.detail);
    assert_true(uv_now(&fx->loop) - t0 < 3000);
    int done = 0;
    gr_storage_close(dead, closed, &done);
    assert_true(gr_test_run_until(&fx->loop, &done, 5000));
    gr__buf_free(&r.data);
}

/* PostgreSQL only: a connection that silently stops carrying bytes (a
 * partition drops packets, no FIN or RST arrives) fails the query in flight
 * after query_timeout_ms with an "outcome unknown" error instead of leaving
 * its caller waiting forever; once the network heals, the provider
 * reconnects and serves again. */
static void test_stalled_connection(void **state) {
    fx_t *fx = *state;
    const char *url = gr_test_pg_url();
    gr_test_proxy_t *px = gr_test_proxy_start(&fx->loop, atoi(strrchr(url, ':') + 1));
    char via[160];
    snprintf(via, sizeof via, "postgresql://granary@127.0.0.1:%d/granary", gr_test_proxy_port(px));
    gr_storage_t *st;
    gr_storage_pg_options_t o;
    gr_storage_pg_options_init(&o);
    o.conninfo = via;
    o.pool_size = 1;
    o.query_timeout_ms = 400;
    o.reconnect_min_ms = 50;
    o.reconnect_max_ms = 200;
    char service[64];
    snprintf(service, sizeof service, "stall-%d", (int)getpid());
    o.service = service;
    assert_int_equal(gr_storage_pg_new(&fx->loop, &o, &st), 0);
    res_t r = {0};
    reset(&r);
    assert_int_equal(gr_storage_write(st, "Counter", "s", 1, "1", 1, 0, 0, on_write, &r), 0);
    assert_true(gr_test_run_until(&fx->loop, &r.done, 10000));
    assert_int_equal(r.status, 0);

    gr_test_proxy_stall(px, 1);
    reset(&r);
    uv_update_time(&fx->loop);
    uint64_t t0 = uv_now(&fx->loop);
    assert_int_equal(gr_storage_read(st, "Counter", "s", 1, on_read, &r), 0);
    assert_true(gr_test_run_until(&fx->loop, &r.done, 5000));
    uv_update_time(&fx->loop);
    uint64_t took = uv_now(&fx->loop) - t0;
    assert_int_equal(r.status, GR_ESTORAGE);
    assert_non_null(strstr(r.detail, "no reply to a query within 400 ms"));
    assert_true(took >= 350 && took < 2000);

    /* Healed: the next read succeeds on a fresh connection. */
    gr_test_proxy_stall(px, 0);
    uint64_t t1 = uv_now(&fx->loop);
    int ok = 0;
    while (!ok && uv_now(&fx->loop) - t1 < 10000) {
        reset(&r);
        assert_int_equal(gr_storage_read(st, "Counter", "s", 1, on_read, &r), 0);
        assert_true(gr_test_run_until(&fx->loop, &r.done, 10000));
        ok = r.status == 0;
        if (!ok) gr_test_run_for(&fx->loop, 50);
        uv_update_time(&fx->loop);
    }
    assert_true(ok);
    assert_int_equal(r.version, 1);
    assert_memory_equal(r.data.data, "1", 1);
    int done = 0;
    gr_storage_close(st, closed, &done);
    assert_true(gr_test_run_until(&fx->loop, &done, 5000));
    gr_test_proxy_close(px);
    gr__buf_free(&r.data);
}

/* The batchers at their boundaries (issue 12: a full batch of 256 lost the
 * queue's tail, so write 257 and later never completed). N writes are queued
 * at once: every 7th op is another write of one hot grain, which must stay in
 * order (expected version = writes before it); the rest are distinct grains.
 * Then N reads queued at once must each answer exactly once with the right
 * bytes and version. */
typedef struct {
    int done, status;
    int64_t version;
    size_t len;
    char data[16];
} qop_t;

static void q_on_write(void *ud, int status, int64_t version, const char *detail) {
    qop_t *o = ud;
    (void)detail;
    o->done++;
    o->status = status;
    o->version = version;
}

static void q_on_read(void *ud, int status, const uint8_t *data, size_t len, int64_t version, uint32_t format,
                      const char *detail) {
    qop_t *o = ud;
    (void)format, (void)detail;
    o->done++;
    o->status = status;
    o->version = version;
    o->len = len;
    memcpy(o->data, data, len < sizeof o->data ? len : sizeof o->data);
}

static int q_all_done(const qop_t *ops, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!ops[i].done) return 0;
    return 1;
}

static void queue_at(fx_t *fx, size_t n) {
    qop_t *w = calloc(n ? n : 1, sizeof *w), *r = calloc(n ? n : 1, sizeof *r);
    int64_t hot_writes = 0;
    char key[32], val[16];
    for (size_t i = 0; i < n; i++) {
        int hot = i % 7 == 3;
        size_t kl =
            hot ? (size_t)snprintf(key, sizeof key, "hot") : (size_t)snprintf(key, sizeof key, "k%zu", i);
        size_t vl = (size_t)snprintf(val, sizeof val, "v%zu", i);
        int64_t expected = hot ? hot_writes++ : 0;
        assert_int_equal(gr_storage_write(fx->st, "Q", key, kl, val, vl, 0, expected, q_on_write, &w[i]), 0);
    }
    int ok = 1;
    uint64_t end = gr_test_now_ms() + 60000;
    while (!q_all_done(w, n) && gr_test_now_ms() < end)
        gr_test_run_for(&fx->loop, 5);
    int64_t hot_seen = 0;
    for (size_t i = 0; i < n && ok; i++) {
        int hot = i % 7 == 3;
        if (w[i].done != 1 || w[i].status != 0) {
            fprintf(stderr, "queue of %zu: write %zu done %d status %s\n", n, i, w[i].done,
                    gr_err_name(w[i].status));
            ok = 0;
        } else if (w[i].version != (hot ? ++hot_seen : 1)) {
            fprintf(stderr, "queue of %zu: write %zu got version %lld\n", n, i, (long long)w[i].version);
            ok = 0;
        }
    }
    assert_true(ok);
    for (size_t i = 0; i < n; i++) {
        int hot = i % 7 == 3;
        size_t kl =
            hot ? (size_t)snprintf(key, sizeof key, "hot") : (size_t)snprintf(key, sizeof key, "k%zu", i);
        assert_int_equal(gr_storage_read(fx->st, "Q", key, kl, q_on_read, &r[i]), 0);
    }
    while (!q_all_done(r, n) && gr_test_now_ms() < end)
        gr_test_run_for(&fx->loop, 5);
    size_t last_hot = 0;
    for (size_t i = 0; i < n; i++)
        if (i % 7 == 3) last_hot = i;
    for (size_t i = 0; i < n && ok; i++) {
        int hot = i % 7 == 3;
        size_t want = hot ? last_hot : i;
        size_t vl = (size_t)snprintf(val, sizeof val, "v%zu", want);
        if (r[i].done != 1 || r[i].status != 0 || r[i].version != (hot ? hot_writes : 1) || r[i].len != vl ||
            memcmp(r[i].data, val, vl) != 0) {
            fprintf(stderr, "queue of %zu: read %zu done %d status %s version %lld len %zu\n", n, i,
                    r[i].done, gr_err_name(r[i].status), (long long)r[i].version, r[i].len);
            ok = 0;
        }
    }
    assert_true(ok);
    free(w);
    free(r);
}

static void test_queue_boundaries(void **state) {
    static const size_t sizes[] = {0, 1, 255, 256, 257, 300, 10000};
    fx_t *fx = *state;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        queue_at(fx, sizes[i]);
        /* A new provider (a new service name under PostgreSQL) per size:
         * the next size writes the same keys afresh. */
        int done = 0;
        gr_storage_close(fx->st, closed, &done);
        assert_true(gr_test_run_until(&fx->loop, &done, 5000));
        setup_provider(fx);
    }
}

/* Activation claims (PostgreSQL only; docs/directory.md "Single
 * activation"): granted when free or ours, refused with the holder while
 * the holder is alive or dead but within its lease, taken over after that;
 * released only by the activation (token) that holds it. */
static void do_claim(fx_t *fx, const char *key, const char *owner, int64_t token, res_t *r) {
    reset(r);
    assert_int_equal(gr__storage_claim(fx->st, "C", key, strlen(key), owner, token, on_read, r), 0);
    assert_int_equal(r->done, 0);
    assert_true(gr_test_run_until(&fx->loop, &r->done, 10000));
}

static char *claim_holder(const char *key) {
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT coalesce((SELECT silo_id || ' ' || token FROM granary_activation WHERE grain_key = '%s' "
             "AND grain_class = 'C' AND service = 'test-%d-%d'), 'none')",
             key, (int)getpid(), case_no);
    return gr_test_sql(gr_test_pg_url(), sql);
}

static void wait_holder(const char *key, const char *want) {
    char *h = NULL;
    for (int i = 0; i < 200; i++) {
        free(h);
        h = claim_holder(key);
        if (h && !strcmp(h, want)) break;
        usleep(20000);
    }
    assert_string_equal(h, want);
    free(h);
}

/* The silo's membership row, in the cluster named like this case's service
 * (claims look holders up in their own cluster only). */
static void silo_row(const char *id, const char *status, int age_ms) {
    char sql[512];
    snprintf(
        sql, sizeof sql,
        "INSERT INTO granary_silo (cluster, silo_id, address, port, generation, status, heartbeat_at, "
        "lease_ms) VALUES ('test-%d-%d', '%s', '127.0.0.1', 1, 1, '%s', now() - interval '%d milliseconds', "
        "1000) ON CONFLICT (cluster, silo_id) DO UPDATE SET status = excluded.status, "
        "heartbeat_at = excluded.heartbeat_at",
        (int)getpid(), case_no, id, status, age_ms);
    free(gr_test_sql(gr_test_pg_url(), sql));
}

static void test_claims(void **state) {
    fx_t *fx = *state;
    res_t r = {0};
    char a[64], b[64];
    snprintf(a, sizeof a, "silo-a-%d", (int)getpid());
    snprintf(b, sizeof b, "silo-b-%d", (int)getpid());
    silo_row(a, "active", 0);
    silo_row(b, "active", 0);
    do_claim(fx, "g", a, 1, &r); /* free: granted, no state yet */
    assert_int_equal(r.status, 0);
    assert_int_equal(r.version, 0);
    do_claim(fx, "g", b, 1, &r); /* held by a live silo */
    assert_int_equal(r.status, GR_ENOTHERE);
    assert_string_equal(r.detail, a);
    do_claim(fx, "g", a, 2, &r); /* ours again: a new activation, a new token */
    assert_int_equal(r.status, 0);
    char want[96];
    snprintf(want, sizeof want, "%s 2", a);
    wait_holder("g", want);
    assert_int_equal(gr__storage_release(fx->st, "C", "g", 1, a, 1), 0); /* an older activation's token */
    gr_test_run_for(&fx->loop, 200);
    wait_holder("g", want);
    silo_row(a, "dead", 0); /* dead, but its lease has not run out */
    do_claim(fx, "g", b, 1, &r);
    assert_int_equal(r.status, GR_ENOTHERE);
    assert_string_equal(r.detail, a);
    silo_row(a, "active", 5000); /* silent for 5 leases but not declared dead */
    do_claim(fx, "g", b, 1, &r);
    assert_int_equal(r.status, GR_ENOTHERE);
    silo_row(a, "dead", 1500); /* dead and silent past its lease: taken over */
    do_claim(fx, "g", b, 7, &r);
    assert_int_equal(r.status, 0);
    snprintf(want, sizeof want, "%s 7", b);
    wait_holder("g", want);
    /* The claim reads the state in the same statement. */
    res_t w = {0};
    do_write(fx, "C", "g", 1, "state", 5, 0, &w);
    assert_int_equal(w.status, 0);
    do_claim(fx, "g", b, 8, &r);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.version, 1);
    assert_memory_equal(r.data.data, "state", 5);
    /* Released by its holder (the row stays, with no silo): anyone may claim
     * it, and that claim reads the state again in a statement of its own
     * (it must see every write the releasing holder made). */
    assert_int_equal(gr__storage_release(fx->st, "C", "g", 1, b, 8), 0);
    wait_holder("g", " 0");
    do_claim(fx, "g", a, 3, &r);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.done, 1);
    assert_int_equal(r.version, 1);
    assert_memory_equal(r.data.data, "state", 5);
    /* A grain twice in one batch, and many grains: each answered once. */
    res_t many[40];
    memset(many, 0, sizeof many);
    for (int i = 0; i < 40; i++) {
        char k[16];
        snprintf(k, sizeof k, "m%d", i % 20);
        assert_int_equal(gr__storage_claim(fx->st, "C", k, strlen(k), b, 100 + i, on_read, &many[i]), 0);
    }
    for (int i = 0; i < 40; i++) {
        assert_true(gr_test_run_until(&fx->loop, &many[i].done, 10000));
        assert_int_equal(many[i].done, 1);
        assert_int_equal(many[i].status, 0);
        gr__buf_free(&many[i].data);
    }
    gr__buf_free(&r.data);
    gr__buf_free(&w.data);
}

int main(int argc, char **argv) {
    use_pg = argc > 1 && !strcmp(argv[1], "postgres");
    if (use_pg) {
        const char *url = gr_test_pg_url();
        if (!url) {
            fprintf(stderr, "no test database: run under ctest (the pg fixture starts one)\n");
            return 1;
        }
        char err[512];
        if (gr_storage_pg_migrate(url, NULL, err, sizeof err) != 0) {
            fprintf(stderr, "migrate: %s\n", err);
            return 1;
        }
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_read_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_then_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_version_conflicts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clear, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_state, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_writers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_cancels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_state_format, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_boundaries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reply_log, setup, teardown),
    };
    const struct CMUnitTest pg_only[] = {
        cmocka_unit_test_setup_teardown(test_dead_database, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stalled_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claims, setup, teardown),
    };
    int rc = cmocka_run_group_tests_name(
        use_pg ? "persistence.storage.postgres" : "persistence.storage.memory", tests, NULL, NULL);
    if (use_pg)
        rc |= cmocka_run_group_tests_name("persistence.storage.postgres.failures", pg_only, NULL, NULL);
    return rc;
}
