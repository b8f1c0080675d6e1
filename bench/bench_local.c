/* bench/bench_local.c - the grain runtime alone, in one process, one core:
 * a grain calling a grain on the same silo with no persistence, W calls in
 * flight, for a bounded time. Baseline, measured in the same run: the
 * least a message-passing call can cost — allocate a message, copy the
 * argument in, call the handler through a pointer, free it — with no queue,
 * no lookup and no loop (loop-trip baselines swing by 100x in this sandbox).
 *   bench_local [--seconds S] [--window W] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <granary/granary.h>

static uint64_t done_calls, failed_calls;
static uint64_t deadline_ns;
static gr_runtime_t *rt;
static int window = 256;

static void ping(gr_grain_t *g, gr_msg_t *m, const uint8_t *a, size_t n) { gr_reply(m, "p", 1); }

/* Caller/k: forwards to Target/k and replies when it answers. */
static void relay_done(void *ud, int status, const uint8_t *r, size_t n) { gr_reply(ud, r, n); }
static void relay(gr_grain_t *g, gr_msg_t *m, const uint8_t *a, size_t n) {
    size_t kl;
    const uint8_t *key = gr_grain_key(g, &kl);
    gr_ref_t ref = {"Target", key, kl};
    gr_grain_call(g, &ref, "ping", NULL, 0, 0, relay_done, m);
}

static const gr_method_t target_methods[] = {{"ping", ping}, {NULL, NULL}};
static const gr_method_t caller_methods[] = {{"relay", relay}, {NULL, NULL}};
static const gr_class_t target = {.name = "Target", .methods = target_methods};
static const gr_class_t caller = {.name = "Caller", .methods = caller_methods};

static void issue(uint64_t i);
static void on_done(void *ud, int status, const uint8_t *r, size_t n) {
    done_calls++;
    if (status != 0) failed_calls++;
    if (uv_hrtime() < deadline_ns) issue((uint64_t)(uintptr_t)ud);
}
/* Keys are formatted once: the loop measures the runtime, not snprintf. */
static char (*keys)[16];
static size_t *key_lens;

static void issue(uint64_t i) {
    size_t k = (size_t)(i % (uint64_t)window);
    gr_ref_t ref = {"Caller", keys[k], key_lens[k]};
    gr_call(rt, &ref, "relay", NULL, 0, 0, on_done, (void *)(uintptr_t)i);
}

/* Baseline: malloc + memcpy + indirect call + free per call. */
typedef struct {
    void (*fn)(void *);
    char arg[16];
} base_msg_t;
static volatile uint64_t base_sink;
static void base_handler(void *m) { base_sink += (uint8_t)((base_msg_t *)m)->arg[0]; }

int main(int argc, char **argv) {
    double seconds = 2;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--seconds"))
            seconds = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--window"))
            window = atoi(argv[i + 1]);
    }
    if (seconds <= 0 || seconds > 600 || window < 1) return 2;
    keys = calloc((size_t)window, sizeof *keys);
    key_lens = calloc((size_t)window, sizeof *key_lens);
    if (!keys || !key_lens) return 1;
    for (int i = 0; i < window; i++)
        key_lens[i] = (size_t)snprintf(keys[i], sizeof keys[i], "k%d", i);
    uv_loop_t *loop = uv_default_loop();
    gr_storage_t *st;
    gr_runtime_options_t o;
    gr_runtime_options_init(&o);
    if (gr_storage_memory_new(loop, &st) != 0 || gr_runtime_new(loop, st, &o, &rt) != 0 ||
        gr_runtime_register(rt, &target) != 0 || gr_runtime_register(rt, &caller) != 0) {
        fprintf(stderr, "bench_local: setting up the runtime failed\n");
        return 1;
    }
    /* Warm up: activate every grain first so the run measures calls only. */
    deadline_ns = 0;
    for (int i = 0; i < window; i++)
        issue((uint64_t)i);
    uv_run(loop, UV_RUN_NOWAIT);
    for (int k = 0; k < 100; k++)
        uv_run(loop, UV_RUN_NOWAIT);
    done_calls = 0;
    uint64_t t0 = uv_hrtime();
    deadline_ns = t0 + (uint64_t)(seconds * 1e9);
    for (int i = 0; i < window; i++)
        issue((uint64_t)i);
    while (uv_hrtime() < deadline_ns)
        uv_run(loop, UV_RUN_NOWAIT);
    double el = (double)(uv_hrtime() - t0) / 1e9;
    /* Each relay is two grain calls (caller -> Caller, Caller -> Target). */
    double calls_s = 2.0 * (double)done_calls / el;
    uint64_t base_calls = 0, b0 = uv_hrtime();
    deadline_ns = b0 + (uint64_t)(seconds * 1e9);
    static const char arg[16] = "ping";
    while (uv_hrtime() < deadline_ns) {
        for (int i = 0; i < 4096; i++) {
            base_msg_t *m = malloc(sizeof *m);
            m->fn = base_handler;
            memcpy(m->arg, arg, sizeof arg);
            m->fn(m);
            free(m);
        }
        base_calls += 4096;
    }
    double base_s = (double)base_calls / ((double)(uv_hrtime() - b0) / 1e9);
    /* As a smoke test (CTest) it must fail when calls do not complete, not
     * only when it crashes. */
    if (done_calls == 0 || failed_calls) {
        fprintf(stderr, "bench_local: %llu calls completed, %llu failed\n", (unsigned long long)done_calls,
                (unsigned long long)failed_calls);
        return 1;
    }
    printf("%-28s %10.0f calls/s  %6.0f ns/call   baseline (malloc+copy+call+free) %10.0f /s   ratio %.2f  "
           "(window %d, %.1f s)\n",
           "local grain->grain call", calls_s, 1e9 / calls_s, base_s, calls_s / base_s, window, el);
    return 0;
}
