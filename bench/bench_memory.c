/* bench/bench_memory.c - memory per idle activation: activate N grains of a
 * class with a small state (8-byte keys, no state) in one process on the
 * memory provider, then divide the growth of the resident set by N.
 * Baseline, same run: the RSS growth of N malloc'd 8-byte keys alone (what
 * any directory of N grain ids costs at least).
 *   bench_memory [--grains N]   (default 1000000) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <granary/granary.h>

static long rss_kb(void) {
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f && fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0;
    if (f) fclose(f);
    return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static void ping(gr_grain_t *g, gr_msg_t *m, const uint8_t *a, size_t n) { gr_reply(m, NULL, 0); }
static const gr_method_t methods[] = {{"ping", ping}, {NULL, NULL}};
static const gr_class_t cls = {.name = "Idle", .methods = methods};

static uint64_t done;
static void on_done(void *ud, int status, const uint8_t *r, size_t n) { done++; }

int main(int argc, char **argv) {
    long n = 1000000;
    if (argc > 2 && !strcmp(argv[1], "--grains")) n = atol(argv[2]);
    if (n < 1000 || n > 10000000) return 2;
    uv_loop_t *loop = uv_default_loop();
    gr_storage_t *st;
    gr_storage_memory_new(loop, &st);
    gr_runtime_options_t o;
    gr_runtime_options_init(&o);
    o.idle_deactivate_ms = 3600000; /* stay active for the measurement */
    gr_runtime_t *rt;
    gr_runtime_new(loop, st, &o, &rt);
    gr_runtime_register(rt, &cls);
    /* Baseline first (and kept allocated), so neither measurement reuses
     * memory the other freed: N malloc'd 8-byte keys and their pointers. */
    long b0 = rss_kb();
    char **keys = malloc((size_t)n * sizeof *keys);
    for (long i = 0; i < n; i++) {
        keys[i] = malloc(8);
        memcpy(keys[i], "abcdefgh", 8);
    }
    long b1 = rss_kb();
    double base = (double)(b1 - b0) * 1024.0 / (double)n;
    long before = rss_kb();
    for (long i = 0; i < n; i++) {
        char key[16];
        snprintf(key, sizeof key, "%08lx", i);
        gr_ref_t ref = {"Idle", key, 8};
        gr_call(rt, &ref, "ping", NULL, 0, 0, on_done, NULL);
        /* At most 4096 calls in flight: the transient messages of a burst
         * of activations are not what an idle activation costs. */
        if ((i & 4095) == 4095)
            while (done < (uint64_t)i + 1)
                uv_run(loop, UV_RUN_NOWAIT);
    }
    while (done < (uint64_t)n)
        uv_run(loop, UV_RUN_NOWAIT);
    long after = rss_kb();
    size_t active = gr_runtime_activation_count(rt);
    double per = (double)(after - before) * 1024.0 / (double)active;
    printf("%-28s %10.0f bytes/activation  (%zu idle activations, RSS +%ld MiB)   baseline (malloc'd 8-byte "
           "key + pointer) %6.0f bytes   ratio %.2f\n",
           "memory per idle activation", per, active, (after - before) / 1024, base, per / base);
    for (long i = 0; i < n; i++)
        free(keys[i]);
    free(keys);
    return 0;
}
