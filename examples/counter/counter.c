/* examples/counter/counter.c - the counter from the seed thread: a grain
 * whose every acknowledged increment is in PostgreSQL before the reply. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "counter.h"

static int64_t counter_value(gr_grain_t *g) {
    const uint8_t *data;
    size_t len;
    char buf[32];
    gr_state_get(g, &data, &len);
    if (len == 0 || len >= sizeof buf) return 0;
    memcpy(buf, data, len);
    buf[len] = '\0';
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
    int64_t v = counter_value(g) + by;
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%" PRId64, v);
    gr_state_set(g, buf, (size_t)n);
    /* The class persists before reply: this reply leaves after the commit. */
    gr_reply(msg, buf, (size_t)n);
}

static void counter_get(gr_grain_t *g, gr_msg_t *msg, const uint8_t *arg, size_t len) {
    counter_reply_value(msg, counter_value(g));
}

static void counter_where(gr_grain_t *g, gr_msg_t *msg, const uint8_t *arg, size_t len) {
    const char *silo = gr_grain_silo(g);
    gr_reply(msg, silo, strlen(silo));
}

static const gr_method_t counter_methods[] = {
    {"incr", counter_incr},
    {"get", counter_get},
    {"where", counter_where},
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
