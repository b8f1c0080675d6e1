/* bench/bench_grains.c - grain classes for the cross-silo benchmark, built
 * as bench_grains.so for `silo --grains`: the example Counter, and
 * BenchDriver, a grain that calls Counter grains from inside a silo so the
 * cross-silo path is measured grain to grain (silo B -> silo A), without a
 * client process competing for the two cores.
 *
 * BenchDriver.run, argument "PREFIX KEYS CALLS WINDOW RATE SECONDS":
 *   calls Counter.get on PREFIX0 .. PREFIX<KEYS-1> round robin, at most CALLS
 *   calls and SECONDS seconds, with up to WINDOW calls in flight; RATE 0 runs
 *   flat out (a new call as each one completes), RATE > 0 sends RATE calls per
 *   second from a 1 ms timer (open loop: latency is what a caller at that
 *   load sees). Replies "calls=N errors=E seconds=S rate=R p50_us=.. p99_us=..
 *   p999_us=.. max_us=..".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "../examples/counter/counter.h"

#define DRIVER_MAX_SAMPLES (4u << 20)

typedef struct driver {
    gr_grain_t *g;
    gr_msg_t *msg; /* the run call, answered at the end */
    char prefix[64];
    unsigned keys, window, inflight;
    uint64_t max_calls, sent, done, errors, rate, next_key;
    uint64_t t_start, t_end_ns; /* uv_hrtime */
    uint64_t timer_id;
    int timer_on;
    uint32_t *lat_us; /* one sample per completed call, up to DRIVER_MAX_SAMPLES */
    uint64_t n_lat;
} driver_t;

typedef struct {
    driver_t *d;
    uint64_t t0;
} pending_t;

static void driver_issue(driver_t *d);
static void driver_pace(driver_t *d);

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static uint32_t pct(const uint32_t *v, uint64_t n, double p) {
    if (!n) return 0;
    uint64_t i = (uint64_t)(p * (double)(n - 1));
    return v[i];
}

static void driver_finish(driver_t *d) {
    if (d->timer_on) gr_timer_stop(d->g, d->timer_id);
    d->timer_on = 0;
    double secs = (double)(uv_hrtime() - d->t_start) / 1e9;
    qsort(d->lat_us, d->n_lat, sizeof *d->lat_us, cmp_u32);
    char out[256];
    int n = snprintf(out, sizeof out,
                     "calls=%llu errors=%llu seconds=%.2f rate=%.0f p50_us=%u p99_us=%u p999_us=%u max_us=%u",
                     (unsigned long long)d->done, (unsigned long long)d->errors, secs, (double)d->done / secs,
                     pct(d->lat_us, d->n_lat, 0.50), pct(d->lat_us, d->n_lat, 0.99),
                     pct(d->lat_us, d->n_lat, 0.999), d->n_lat ? d->lat_us[d->n_lat - 1] : 0);
    gr_msg_t *m = d->msg;
    gr_grain_t *g = d->g;
    free(d->lat_us);
    free(d);
    gr_grain_set_data(g, NULL, NULL);
    gr_reply(m, out, (size_t)n);
}

static int driver_over(const driver_t *d) { return d->sent >= d->max_calls || uv_hrtime() >= d->t_end_ns; }

static void driver_done(void *ud, int status, const uint8_t *r, size_t n) {
    pending_t *p = ud;
    driver_t *d = p->d;
    uint64_t us = (uv_hrtime() - p->t0) / 1000;
    free(p);
    d->inflight--;
    d->done++;
    if (status != 0) d->errors++;
    if (d->n_lat < DRIVER_MAX_SAMPLES) d->lat_us[d->n_lat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
    if (!d->rate && !driver_over(d)) driver_issue(d);
    if (d->rate) driver_pace(d); /* sends spread over completions, not only 1 ms ticks */
    if (d->inflight == 0 && (driver_over(d) || !d->rate)) driver_finish(d);
}

static void driver_issue(driver_t *d) {
    char key[96];
    int kl = snprintf(key, sizeof key, "%s%llu", d->prefix, (unsigned long long)(d->next_key++ % d->keys));
    gr_ref_t ref = {"Counter", key, (size_t)kl};
    pending_t *p = malloc(sizeof *p);
    if (!p) return;
    p->d = d;
    p->t0 = uv_hrtime();
    if (gr_grain_call(d->g, &ref, "get", NULL, 0, 10000, driver_done, p) != 0) {
        free(p);
        d->sent++; /* counted as a failed call, so the run still ends */
        d->done++;
        d->errors++;
        return;
    }
    d->sent++;
    d->inflight++;
}

/* Open loop: send what the rate says is due by now. */
static void driver_pace(driver_t *d) {
    uint64_t due = (uint64_t)((double)(uv_hrtime() - d->t_start) / 1e9 * (double)d->rate);
    while (d->sent < due && d->inflight < d->window && !driver_over(d))
        driver_issue(d);
}

/* The 1 ms timer keeps the pace when no completion arrives to do it. */
static void driver_tick(gr_grain_t *g, void *ud) {
    driver_t *d = ud;
    if (driver_over(d)) {
        if (d->timer_on) gr_timer_stop(g, d->timer_id);
        d->timer_on = 0;
        if (d->inflight == 0) driver_finish(d);
        return;
    }
    driver_pace(d);
}

static void driver_run(gr_grain_t *g, gr_msg_t *msg, const uint8_t *arg, size_t len) {
    char buf[256], prefix[64];
    unsigned keys, window;
    unsigned long long calls, rate;
    double seconds;
    if (len >= sizeof buf) {
        gr_reply_error(msg, "run: argument too long");
        return;
    }
    memcpy(buf, arg, len);
    buf[len] = '\0';
    if (sscanf(buf, "%63s %u %llu %u %llu %lf", prefix, &keys, &calls, &window, &rate, &seconds) != 6 ||
        keys == 0 || window == 0 || calls == 0 || seconds <= 0 || seconds > 600) {
        gr_reply_error(msg, "run: argument is PREFIX KEYS CALLS WINDOW RATE SECONDS");
        return;
    }
    driver_t *d = calloc(1, sizeof *d);
    if (d) d->lat_us = malloc(DRIVER_MAX_SAMPLES * sizeof *d->lat_us);
    if (!d || !d->lat_us) {
        if (d) free(d);
        gr_reply_error(msg, "out of memory");
        return;
    }
    d->g = g;
    d->msg = msg;
    snprintf(d->prefix, sizeof d->prefix, "%s", prefix);
    d->keys = keys;
    d->window = window;
    d->max_calls = calls;
    d->rate = rate;
    d->t_start = uv_hrtime();
    d->t_end_ns = d->t_start + (uint64_t)(seconds * 1e9);
    gr_grain_set_data(g, d, NULL);
    if (rate) {
        if (gr_timer_start(g, 1, 1, driver_tick, d, &d->timer_id) != 0) {
            free(d->lat_us);
            free(d);
            gr_reply_error(msg, "cannot start the rate timer");
            return;
        }
        d->timer_on = 1;
        return;
    }
    for (unsigned i = 0; i < window; i++)
        driver_issue(d);
    if (d->inflight == 0) driver_finish(d);
}

static const gr_method_t driver_methods[] = {{"run", driver_run}, {NULL, NULL}};
static const gr_class_t driver_class = {.name = "BenchDriver", .methods = driver_methods};

const gr_class_t *const *granary_grains(void);
const gr_class_t *const *granary_grains(void) {
    static const gr_class_t *const classes[] = {&counter_class, &checksum_class, &driver_class, NULL};
    return classes;
}
