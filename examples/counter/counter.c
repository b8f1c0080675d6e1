/* examples/counter/counter.c - the counter from the seed thread: a grain
 * whose every acknowledged increment is in PostgreSQL before the reply. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "counter.h"

/* State: the value in decimal, then for incr_once the most recent operation
 * ids, one per line ("42\nop-a\nop-b"). */
#define COUNTER_RECENT_OPS 64
#define COUNTER_OP_MAX 64

static int64_t counter_value(gr_grain_t *g) {
    const uint8_t *data;
    size_t len;
    char buf[32];
    gr_state_get(g, &data, &len);
    size_t n = 0;
    while (n < len && n < sizeof buf - 1 && data[n] != '\n') n++;
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
    while (pos < slen && data[pos] != '\n') pos++;
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

/* incr_once OPID: add 1 unless this operation id was applied recently, so a
 * client may retry an operation whose reply it lost without counting it
 * twice. Replies the value either way. */
static void counter_incr_once(gr_grain_t *g, gr_msg_t *msg, const uint8_t *arg, size_t len) {
    if (len == 0 || len > COUNTER_OP_MAX || memchr(arg, '\n', len)) {
        gr_reply_error(msg, "incr_once: argument must be an operation id of 1..64 bytes without newlines");
        return;
    }
    const uint8_t *data;
    size_t slen;
    gr_state_get(g, &data, &slen);
    /* Walk the remembered ids (after the first line). */
    size_t pos = 0;
    while (pos < slen && data[pos] != '\n') pos++;
    int count = 0;
    for (size_t i = pos + 1; i <= slen && pos < slen;) {
        size_t j = i;
        while (j < slen && data[j] != '\n') j++;
        if (j - i == len && memcmp(data + i, arg, len) == 0) {
            counter_reply_value(msg, counter_value(g)); /* already applied */
            return;
        }
        count++;
        i = j + 1;
        if (j >= slen) break;
    }
    int64_t v = counter_value(g) + 1;
    /* New state: value, this id, then the previous ids minus the oldest. */
    char *out = malloc(32 + 1 + len + (slen > pos ? slen - pos : 0) + 1);
    if (!out) {
        gr_reply_error(msg, "out of memory");
        return;
    }
    int n = snprintf(out, 32, "%" PRId64, v);
    size_t o = (size_t)n;
    out[o++] = '\n';
    memcpy(out + o, arg, len);
    o += len;
    size_t keep_from = pos, kept = 0;
    for (size_t i = pos + 1; i < slen && kept + 1 < COUNTER_RECENT_OPS; kept++) {
        size_t j = i;
        while (j < slen && data[j] != '\n') j++;
        i = j + 1;
        keep_from = j;
    }
    if (slen > pos && keep_from > pos) {
        memcpy(out + o, data + pos, keep_from - pos);
        o += keep_from - pos;
    }
    (void)count;
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

static const gr_method_t counter_methods[] = {
    {"incr", counter_incr},
    {"incr_once", counter_incr_once},
    {"get", counter_get},
    {"where", counter_where},
    {"sleep", counter_sleep},
    {NULL, NULL},
};

const gr_class_t counter_class = {
    .name = "Counter",
    .methods = counter_methods,
    .flags = GR_CLASS_PERSIST_BEFORE_REPLY,
};

#ifdef GR_COUNTER_MODULE
/* Entry point of counter.so for `silo --grains counter.so`. */
const gr_class_t *const *granary_grains(void);
const gr_class_t *const *granary_grains(void) {
    static const gr_class_t *const classes[] = {&counter_class, NULL};
    return classes;
}
#endif
