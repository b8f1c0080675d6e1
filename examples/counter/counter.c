/* examples/counter/counter.c - the counter from the seed thread: a grain
 * whose every acknowledged increment is in PostgreSQL before the reply. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "counter.h"

/* State: the value in decimal, then for incr_once one line per recent
 * client with the highest operation number applied ("42\nw3 17\nw1 9"). */
#define COUNTER_RECENT_OPS 64
#define COUNTER_OP_MAX 64

static int64_t counter_value(gr_grain_t *g) {
    const uint8_t *data;
    size_t len;
    char buf[32];
    gr_state_get(g, &data, &len);
    size_t n = 0;
    while (n < len && n < sizeof buf - 1 && data[n] != '\n')
        n++;
    if (n) memcpy(buf, data, n);
    buf[n] = '\0';
    return strtoll(buf, NULL, 10);
}

static void counter_reply_value(gr_msg_t *msg, int64_t v) {
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%" PRId64, v);
    gr_reply(msg, buf, (size_t)n);
}

static void counter_incr(gr_grain_t *g, gr_msg_t *msg, const uint8_t *arg, size_t len) {
    int64_t by = 1;
    if (len) {
        char buf[32];
        char *end;
        if (len >= sizeof buf) {
            gr_reply_error(msg, "incr: argument must be a whole number");
            return;
        }
        memcpy(buf, arg, len);
        buf[len] = '\0';
        by = strtoll(buf, &end, 10);
        if (*end) {
            gr_reply_error(msg, "incr: argument must be a whole number");
            return;
        }
    }
    /* Plain incr keeps the remembered operation ids of incr_once. */
    int64_t v = counter_value(g) + by;
    const uint8_t *data;
    size_t slen, pos = 0;
    gr_state_get(g, &data, &slen);
    while (pos < slen && data[pos] != '\n')
        pos++;
    char *out = malloc(32 + slen - pos + 1);
    if (!out) {
        gr_reply_error(msg, "out of memory");
        return;
    }
    int n = snprintf(out, 32, "%" PRId64, v);
    if (slen > pos) memcpy(out + n, data + pos, slen - pos);
    gr_state_set(g, out, (size_t)n + slen - pos);
    free(out);
    char buf[32];
    n = snprintf(buf, sizeof buf, "%" PRId64, v);
    /* The class persists before reply: this reply leaves after the commit. */
    gr_reply(msg, buf, (size_t)n);
}

/* incr_once CLIENT-SEQ: add 1 unless this client's operation SEQ (or a
 * later one) was applied already, so a client that retries an operation
 * whose reply it lost never counts it twice, however long the outage. A
 * client numbers its operations upwards and waits for each reply before the
 * next (per counter). The state remembers the highest SEQ per client for the
 * COUNTER_RECENT_OPS most recent clients. Replies the value either way. */
static void counter_incr_once(gr_grain_t *g, gr_msg_t *msg, const uint8_t *arg, size_t len) {
    char op[COUNTER_OP_MAX + 1];
    const char *dash = NULL;
    if (len && len <= COUNTER_OP_MAX) {
        memcpy(op, arg, len);
        op[len] = '\0';
        dash = strrchr(op, '-');
    }
    char *end = NULL;
    unsigned long long seq = dash && dash != op ? strtoull(dash + 1, &end, 10) : 0;
    if (!dash || dash == op || !end || *end || end == dash + 1 || memchr(op, '\n', len) ||
        memchr(op, ' ', len)) {
        gr_reply_error(msg, "incr_once: argument must be CLIENT-SEQ (1..64 bytes, no spaces)");
        return;
    }
    size_t clen = (size_t)(dash - op);
    const uint8_t *data;
    size_t slen;
    gr_state_get(g, &data, &slen);
    /* Lines after the value: "CLIENT SEQ", most recent first. */
    size_t pos = 0;
    while (pos < slen && data[pos] != '\n')
        pos++;
    size_t mine_from = 0, mine_to = 0; /* this client's line, to drop when rewriting */
    for (size_t i = pos + 1; i < slen;) {
        size_t j = i;
        while (j < slen && data[j] != '\n')
            j++;
        if (j - i > clen && data[i + clen] == ' ' && memcmp(data + i, op, clen) == 0) {
            char num[24] = {0};
            size_t nl = j - i - clen - 1 < sizeof num - 1 ? j - i - clen - 1 : sizeof num - 1;
            memcpy(num, data + i + clen + 1, nl);
            if (strtoull(num, NULL, 10) >= seq) {
                counter_reply_value(msg, counter_value(g)); /* applied already */
                return;
            }
            mine_from = i - 1;
            mine_to = j;
        }
        i = j + 1;
    }
    int64_t v = counter_value(g) + 1;
    /* New state: value, this client's line, then the other lines (minus its
     * old one), keeping COUNTER_RECENT_OPS clients. */
    char *out = malloc(32 + 1 + len + 1 + slen + 1);
    if (!out) {
        gr_reply_error(msg, "out of memory");
        return;
    }
    size_t o = (size_t)snprintf(out, 32, "%" PRId64, v);
    o += (size_t)sprintf(out + o, "\n%.*s %llu", (int)clen, op, seq);
    int kept = 1;
    for (size_t i = pos + 1; i < slen && kept < COUNTER_RECENT_OPS;) {
        size_t j = i;
        while (j < slen && data[j] != '\n')
            j++;
        if (!(mine_to && i - 1 == mine_from)) {
            out[o++] = '\n';
            memcpy(out + o, data + i, j - i);
            o += j - i;
            kept++;
        }
        i = j + 1;
    }
    gr_state_set(g, out, o);
    free(out);
    counter_reply_value(msg, v);
}

static void counter_get(gr_grain_t *g, gr_msg_t *msg, const uint8_t *arg, size_t len) {
    counter_reply_value(msg, counter_value(g));
}

static void counter_where(gr_grain_t *g, gr_msg_t *msg, const uint8_t *arg, size_t len) {
    const char *silo = gr_grain_silo(g);
    gr_reply(msg, silo, strlen(silo));
}

/* sleep MS: reply "slept" after MS milliseconds (at most 60000), keeping the
 * grain busy meanwhile; for tests of timeouts and graceful drain. */
static void counter_wake(gr_grain_t *g, void *ud) { gr_reply(ud, "slept", 5); }

static void counter_sleep(gr_grain_t *g, gr_msg_t *msg, const uint8_t *arg, size_t len) {
    char buf[16] = "0";
    if (len && len < sizeof buf) {
        memcpy(buf, arg, len);
        buf[len] = '\0';
    }
    long ms = strtol(buf, NULL, 10);
    if (ms < 0 || ms > 60000 || gr_timer_start(g, (uint64_t)ms, 0, counter_wake, msg, NULL) != 0)
        gr_reply_error(msg, "sleep: argument must be 0..60000 milliseconds");
}

/* reset: delete the counter's row (persisted before the reply: "0"). */
static void counter_reset(gr_grain_t *g, gr_msg_t *msg, const uint8_t *arg, size_t len) {
    if (gr_state_clear(g) != 0) {
        gr_reply_error(msg, "reset: grain is not active");
        return;
    }
    gr_reply(msg, "0", 1);
}

/* deactivate: reply, then deactivate this activation once it is idle. */
static void counter_deactivate(gr_grain_t *g, gr_msg_t *msg, const uint8_t *arg, size_t len) {
    gr_grain_deactivate_on_idle(g);
    gr_reply(msg, "ok", 2);
}

/* relay "KEY METHOD [ARG]": calls Counter/KEY METHOD ARG and replies with
 * its reply, or with "GR_E...: text" as an application error; grain-to-grain
 * calls (and call cycles) across silos in tests and the demo. */
static void counter_relay_done(void *ud, int status, const uint8_t *reply, size_t len) {
    gr_msg_t *msg = ud;
    if (status == 0) {
        gr_reply(msg, reply, len);
        return;
    }
    char buf[1024];
    snprintf(buf, sizeof buf, "%s: %.*s", gr_err_name(status), (int)(len < 900 ? len : 900), (const char *)reply);
    gr_reply_error(msg, buf);
}

static void counter_relay(gr_grain_t *g, gr_msg_t *msg, const uint8_t *arg, size_t len) {
    char buf[512], key[128], method[129];
    int used = 0;
    snprintf(buf, sizeof buf, "%.*s", (int)(len < sizeof buf - 1 ? len : sizeof buf - 1), (const char *)arg);
    if (sscanf(buf, "%127s %128s %n", key, method, &used) < 2) {
        gr_reply_error(msg, "relay: argument is KEY METHOD [ARG]");
        return;
    }
    const char *rest = buf + used;
    gr_ref_t ref = {"Counter", key, strlen(key)};
    int rc = gr_grain_call(g, &ref, method, rest, strlen(rest), gr_msg_remaining_ms(msg), counter_relay_done, msg);
    if (rc != 0) gr_reply_error(msg, gr_strerror(rc));
}

/* Reminders: "remind NAME DUE_MS PERIOD_MS" registers one (replies once it
 * is stored), "forget NAME" deletes it, "reminders" lists them. Each firing
 * adds 1 to the counter, committed before the acknowledgement. */
static void counter_reminder_done(void *ud, int status, const uint8_t *reply, size_t len) {
    gr_msg_t *msg = ud;
    if (status == 0)
        gr_reply(msg, reply ? reply : (const uint8_t *)"ok", reply ? len : 2);
    else
        counter_relay_done(ud, status, reply, len);
}

static void counter_remind(gr_grain_t *g, gr_msg_t *msg, const uint8_t *arg, size_t len) {
    char buf[256], name[129];
    unsigned long long due, period;
    snprintf(buf, sizeof buf, "%.*s", (int)(len < sizeof buf - 1 ? len : sizeof buf - 1), (const char *)arg);
    if (sscanf(buf, "%128s %llu %llu", name, &due, &period) != 3) {
        gr_reply_error(msg, "remind: argument is NAME DUE_MS PERIOD_MS");
        return;
    }
    int rc = gr_reminder_register(g, name, due, period, counter_reminder_done, msg);
    if (rc != 0) gr_reply_error(msg, rc == GR_EINVAL ? "remind: invalid name or period (too short?)" : gr_strerror(rc));
}

static void counter_forget(gr_grain_t *g, gr_msg_t *msg, const uint8_t *arg, size_t len) {
    char name[129];
    snprintf(name, sizeof name, "%.*s", (int)(len < sizeof name - 1 ? len : sizeof name - 1), (const char *)arg);
    int rc = gr_reminder_unregister(g, name, counter_reminder_done, msg);
    if (rc != 0) gr_reply_error(msg, gr_strerror(rc));
}

static void counter_reminders(gr_grain_t *g, gr_msg_t *msg, const uint8_t *arg, size_t len) {
    int rc = gr_reminder_list(g, counter_reminder_done, msg);
    if (rc != 0) gr_reply_error(msg, gr_strerror(rc));
}

static void counter_on_reminder(gr_grain_t *g, gr_msg_t *msg, const char *name) {
    counter_incr(g, msg, NULL, 0); /* persisted before the acknowledgement */
}

static const gr_method_t counter_methods[] = {
    {"incr", counter_incr},   {"incr_once", counter_incr_once}, {"get", counter_get},
    {"where", counter_where}, {"sleep", counter_sleep},         {"reset", counter_reset},
    {"deactivate", counter_deactivate}, {"relay", counter_relay}, {"remind", counter_remind},
    {"forget", counter_forget}, {"reminders", counter_reminders}, {NULL, NULL},
};

/* "where" reads nothing a turn in progress could be changing. "get" must
 * not interleave: during a persist-before-reply write it would report a
 * value that is not committed yet. */
static const char *const counter_interleave[] = {"where", NULL};
/* What the dashboard may call: these change nothing. */
static const char *const counter_read_only[] = {"get", "where", "reminders", NULL};

#ifndef COUNTER_STATE_VERSION
#define COUNTER_STATE_VERSION 1
#endif

/* Formats 0 (before versioning) and 1 are the same text: the upgrade keeps
 * the bytes, and the next write stores them as the current format. A real
 * format change converts here. */
static int counter_upgrade(gr_grain_t *g, const uint8_t *old, size_t len, uint32_t old_version) {
    (void)old_version;
    return gr_state_set(g, old, len);
}

/* Counter, and the same class placed by hash and at random
 * (gr_class_t.placement): those spread their grains over the cluster
 * whichever silo the calls enter. One definition, three names. */
#define COUNTER_CLASS(class_name, where)                                                                     \
    {                                                                                                        \
        .name = class_name, .methods = counter_methods, .flags = GR_CLASS_PERSIST_BEFORE_REPLY,              \
        .interleave = counter_interleave, .read_only = counter_read_only,                                    \
        .state_version = COUNTER_STATE_VERSION, .upgrade_state = counter_upgrade,                            \
        .on_reminder = counter_on_reminder, .placement = where,                                              \
    }
const gr_class_t counter_class = COUNTER_CLASS("Counter", GR_PLACE_LOCAL);
const gr_class_t hash_counter_class = COUNTER_CLASS("HashCounter", GR_PLACE_HASH);
const gr_class_t random_counter_class = COUNTER_CLASS("RandomCounter", GR_PLACE_RANDOM);

/* Checksum: a stateless worker. `sum` replies the FNV-1a 64 hash of its
 * argument in hex; `where` the silo that served it. Any silo serves it
 * locally, with up to 8 activations per key per silo. */
static void checksum_sum(gr_grain_t *g, gr_msg_t *msg, const uint8_t *arg, size_t len) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) {
        h ^= arg[i];
        h *= 1099511628211ull;
    }
    char buf[17];
    snprintf(buf, sizeof buf, "%016" PRIx64, h);
    gr_reply(msg, buf, 16);
}

static const gr_method_t checksum_methods[] = {{"sum", checksum_sum}, {"where", counter_where}, {NULL, NULL}};
static const char *const checksum_read_only[] = {"sum", "where", NULL};

const gr_class_t checksum_class = {
    .name = "Checksum",
    .methods = checksum_methods,
    .flags = GR_CLASS_STATELESS_WORKER,
    .max_workers = 8,
    .read_only = checksum_read_only,
};

#ifdef GR_COUNTER_MODULE
/* Entry point of counter.so for `silo --grains counter.so`. */
const gr_class_t *const *granary_grains(void);
const gr_class_t *const *granary_grains(void) {
    static const gr_class_t *const classes[] = {&counter_class, &hash_counter_class, &random_counter_class,
                                                &checksum_class, NULL};
    return classes;
}
#endif
