/* examples/sessions/sessions.c - a session store: one grain per session id,
 * holding named fields (up to the state limit: large values are fine), that
 * expires after a time without use.
 *
 *   Session/ID put  "FIELD=VALUE"   set a field (VALUE may be ~1 MiB)
 *   Session/ID get  "FIELD"         its value, or the error "no such field"
 *   Session/ID keys                 the field names, one per line
 *   Session/ID touch                keep it alive; answers the ms left
 *   Session/ID end                  delete it now
 *
 * Expiry: every write (put, touch) stores the wall-clock time of the last
 * use with the fields; reads (get, keys) do not extend a session. Such a
 * session expires SESSION_TTL_MS after it (environment; default
 * 30 minutes) whether or not its grain stays active: while active, a timer
 * checks it (deactivating the grain once it is gone); when it activates
 * again (after idle deactivation, a restart or a move to another silo), an
 * expired session is deleted at once, and no call ever sees its fields. The class
 * idles grains out after a minute, so memory holds only sessions in use, and
 * its state_ttl_s lets the silos delete the rows of sessions that nobody
 * calls again.
 * Every answer is persisted before it leaves (GR_CLASS_PERSIST_BEFORE_REPLY).
 *
 * Built as sessions.so for `silo run --grains sessions.so`. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <granary/granary.h>

/* State: u64 last use (wall ms, big-endian), then fields as
 * u16 name length, name, u32 value length, value. */
#define SESSION_HEAD 8

static uint64_t wall_ms(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

static uint64_t ttl_ms(void) {
    const char *e = getenv("SESSION_TTL_MS");
    uint64_t v = e ? strtoull(e, NULL, 10) : 0;
    return v ? v : 30ull * 60 * 1000;
}

static uint64_t get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}
static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

/* Walk the fields: calls fn for each; stops when fn returns non-zero. */
typedef int (*field_fn)(void *ud, const uint8_t *name, size_t nl, const uint8_t *val, size_t vl);
static int each_field(const uint8_t *s, size_t len, field_fn fn, void *ud) {
    size_t o = SESSION_HEAD;
    while (len >= SESSION_HEAD && o + 6 <= len) {
        size_t nl = (size_t)s[o] << 8 | s[o + 1];
        if (o + 2 + nl + 4 > len) return -1;
        const uint8_t *name = s + o + 2;
        const uint8_t *p = name + nl;
        size_t vl = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
        if (o + 2 + nl + 4 + vl > len) return -1;
        int rc = fn(ud, name, nl, p + 4, vl);
        if (rc) return rc;
        o += 2 + nl + 4 + vl;
    }
    return 0;
}

static uint64_t last_use(gr_grain_t *g) {
    const uint8_t *s;
    size_t n;
    gr_state_get(g, &s, &n);
    return n >= SESSION_HEAD ? get_u64(s) : 0;
}

static int expired(gr_grain_t *g) {
    uint64_t last = last_use(g), now = wall_ms();
    /* A clock behind the one that wrote (another silo, an NTP step back)
     * must not read as "long ago". */
    return last && now > last && now - last >= ttl_ms();
}

/* The session's fields with `name` set to `val` (val NULL: only the time
 * refreshed), as new state. */
typedef struct {
    uint8_t *out;
    size_t len, cap;
    const uint8_t *skip;
    size_t skip_len;
} rebuild_t;

static int append(rebuild_t *b, const void *p, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *d = realloc(b->out, cap);
        if (!d) return -1;
        b->out = d;
        b->cap = cap;
    }
    memcpy(b->out + b->len, p, n);
    b->len += n;
    return 0;
}

static int append_field(rebuild_t *b, const uint8_t *name, size_t nl, const uint8_t *val, size_t vl) {
    uint8_t h[4] = {(uint8_t)(nl >> 8), (uint8_t)nl};
    if (append(b, h, 2) || append(b, name, nl)) return -1;
    uint8_t l[4] = {(uint8_t)(vl >> 24), (uint8_t)(vl >> 16), (uint8_t)(vl >> 8), (uint8_t)vl};
    return append(b, l, 4) || append(b, val, vl) ? -1 : 0;
}

static int keep_other(void *ud, const uint8_t *name, size_t nl, const uint8_t *val, size_t vl) {
    rebuild_t *b = ud;
    if (b->skip && nl == b->skip_len && !memcmp(name, b->skip, nl)) return 0;
    return append_field(b, name, nl, val, vl);
}

static int store(gr_grain_t *g, const uint8_t *name, size_t nl, const uint8_t *val, size_t vl) {
    const uint8_t *s;
    size_t n;
    gr_state_get(g, &s, &n);
    if (expired(g)) n = 0; /* a new session under the old id: nothing of the old one survives */
    rebuild_t b = {NULL, 0, 0, name, nl};
    uint8_t head[SESSION_HEAD];
    put_u64(head, wall_ms());
    int rc = append(&b, head, sizeof head);
    if (rc == 0) rc = each_field(s, n, keep_other, &b);
    if (rc == 0 && val) rc = append_field(&b, name, nl, val, vl);
    if (rc == 0) rc = gr_state_set(g, b.out, b.len);
    free(b.out);
    return rc;
}

static void reply_rc(gr_msg_t *m, int rc, const char *what) {
    if (rc == 0) {
        gr_reply(m, "ok", 2);
    } else {
        char msg[128];
        snprintf(msg, sizeof msg, "%s: %s", what, gr_strerror(rc));
        gr_reply_error(m, msg);
    }
}

static void m_put(gr_grain_t *g, gr_msg_t *m, const uint8_t *arg, size_t len) {
    const uint8_t *eq = len ? memchr(arg, '=', len) : NULL;
    if (!eq || eq == arg || (size_t)(eq - arg) > 255) {
        gr_reply_error(m, "put: expected FIELD=VALUE (FIELD 1..255 bytes)");
        return;
    }
    size_t nl = (size_t)(eq - arg);
    reply_rc(m, store(g, arg, nl, eq + 1, len - nl - 1), "put");
}

typedef struct {
    const uint8_t *want;
    size_t want_len;
    gr_msg_t *m;
    int found;
} find_t;

static int find_one(void *ud, const uint8_t *name, size_t nl, const uint8_t *val, size_t vl) {
    find_t *f = ud;
    if (nl != f->want_len || memcmp(name, f->want, nl)) return 0;
    f->found = 1;
    gr_reply(f->m, val, vl);
    return 1;
}

static void m_get(gr_grain_t *g, gr_msg_t *m, const uint8_t *arg, size_t len) {
    const uint8_t *s;
    size_t n;
    gr_state_get(g, &s, &n);
    if (expired(g)) n = 0; /* its timer has not run yet: already gone for readers */
    find_t f = {arg, len, m, 0};
    each_field(s, n, find_one, &f);
    if (!f.found) gr_reply_error(m, "no such field");
}

static int list_one(void *ud, const uint8_t *name, size_t nl, const uint8_t *val, size_t vl) {
    rebuild_t *b = ud;
    return append(b, name, nl) || append(b, "\n", 1);
}

static void m_keys(gr_grain_t *g, gr_msg_t *m, const uint8_t *arg, size_t len) {
    const uint8_t *s;
    size_t n;
    gr_state_get(g, &s, &n);
    if (expired(g)) n = 0;
    rebuild_t b = {0};
    each_field(s, n, list_one, &b);
    gr_reply(m, b.out, b.len);
    free(b.out);
}

static void m_touch(gr_grain_t *g, gr_msg_t *m, const uint8_t *arg, size_t len) {
    const uint8_t *s;
    size_t n;
    gr_state_get(g, &s, &n);
    int live = n >= SESSION_HEAD && !expired(g); /* nothing stored, or gone: nothing to keep */
    int rc = live ? store(g, NULL, 0, NULL, 0) : 0;
    if (rc != 0) {
        reply_rc(m, rc, "touch");
        return;
    }
    char buf[32];
    int k = snprintf(buf, sizeof buf, "%" PRIu64, live ? ttl_ms() : 0);
    gr_reply(m, buf, (size_t)k);
}

static void m_end(gr_grain_t *g, gr_msg_t *m, const uint8_t *arg, size_t len) {
    reply_rc(m, gr_state_clear(g), "end");
    gr_grain_deactivate_on_idle(g);
}

/* While active: drop the session once its time is up. */
static void check_expiry(gr_grain_t *g, void *ud) {
    if (!expired(g)) return;
    if (gr_state_clear(g) == 0) gr_state_write(g, NULL, NULL);
    gr_grain_deactivate_on_idle(g);
}

static int on_activate(gr_grain_t *g) {
    /* A session that expired while nobody used it (idle, a restart, a
     * move) is deleted by the first tick, at once (on_activate itself may
     * not change state: the grain is not active yet); a call that runs
     * before that tick sees it empty all the same (expired() everywhere). */
    uint64_t period = ttl_ms() / 4 ? ttl_ms() / 4 : 1;
    return gr_timer_start(g, 0, period, check_expiry, NULL, NULL) == 0 ? 0 : -1;
}

static const gr_method_t session_methods[] = {{"put", m_put},     {"get", m_get}, {"keys", m_keys},
                                              {"touch", m_touch}, {"end", m_end}, {NULL, NULL}};
static const char *const session_read_only[] = {"get", "keys", NULL};

/* Not const: granary_grains() sets state_ttl_s from SESSION_TTL_MS. */
gr_class_t session_class = {
    .name = "Session",
    .methods = session_methods,
    .on_activate = on_activate,
    .flags = GR_CLASS_PERSIST_BEFORE_REPLY,
    .idle_deactivate_ms = 60000,
    .read_only = session_read_only,
};

const gr_class_t *const *granary_grains(void);
const gr_class_t *const *granary_grains(void) {
    /* Rows of sessions nobody uses again would stay for ever: the silos'
     * TTL sweep deletes the ones not written for the TTL (docs/lifecycle.md),
     * exactly the expired ones, as every use that extends a session writes. */
    session_class.state_ttl_s = (uint32_t)((ttl_ms() + 999) / 1000);
    /* A stored reply keeps its grain's row while it is retained (10 min
     * by default): a session's replies need not outlive the session. */
    if (ttl_ms() < 600000) session_class.idempotency_retention_ms = (uint32_t)ttl_ms();
    static const gr_class_t *const classes[] = {&session_class, NULL};
    return classes;
}
