/* examples/counter/counter_client.c - a C program that calls grains: it
 * increments Counter/KEY N times, pipelined, then reads the value back.
 *   counter_client [HOST:PORT] [KEY] [N] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <granary/granary.h>

typedef struct {
    gr_client_t *client;
    const char *key;
    int pending;
    int failed;
} app_t;

static void on_incr(void *ud, int status, const uint8_t *reply, size_t len) {
    app_t *app = ud;
    if (status != 0) {
        fprintf(stderr, "incr failed: %s: %.*s\n", gr_err_name(status), (int)len, (const char *)reply);
        app->failed++;
    }
    app->pending--;
}

static void on_get(void *ud, int status, const uint8_t *reply, size_t len) {
    app_t *app = ud;
    if (status == 0)
        printf("value: %.*s (served by %s)\n", (int)len, (const char *)reply, gr_client_silo(app->client));
    else
        fprintf(stderr, "get failed: %s\n", gr_err_name(status));
    gr_client_close(app->client, NULL, NULL);
}

static void after_incrs(uv_idle_t *idle) {
    app_t *app = idle->data;
    if (app->pending > 0) return;
    uv_close((uv_handle_t *)idle, NULL);
    gr_ref_t ref = {"Counter", app->key, strlen(app->key)};
    gr_client_call(app->client, &ref, "get", NULL, 0, 0, on_get, app);
}

int main(int argc, char **argv) {
    gr_client_options_t opts;
    gr_client_options_init(&opts);
    if (argc > 1) opts.silos = argv[1];
    const char *key = argc > 2 ? argv[2] : "example";
    int n = argc > 3 ? atoi(argv[3]) : 10;
    uv_loop_t *loop = uv_default_loop();
    app_t app = {0};
    app.key = key;
    if (gr_client_new(loop, &opts, &app.client) != 0) {
        fprintf(stderr, "bad silo address %s\n", opts.silos);
        return 2;
    }
    gr_ref_t ref = {"Counter", key, strlen(key)};
    for (int i = 0; i < n; i++) {
        if (gr_client_call(app.client, &ref, "incr", NULL, 0, 0, on_incr, &app) == 0) app.pending++;
    }
    uv_idle_t idle;
    uv_idle_init(loop, &idle);
    idle.data = &app;
    uv_idle_start(&idle, after_incrs);
    uv_run(loop, UV_RUN_DEFAULT);
    printf("%d incr calls, %d failed\n", n, app.failed);
    return app.failed ? 1 : 0;
}
