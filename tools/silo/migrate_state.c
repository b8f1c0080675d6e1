/* tools/silo/migrate_state.c - `silo migrate-state CLASS`: finds the class
 * (linked in, or in --grains FILE.so) and runs gr_storage_pg_upgrade_state()
 * with a progress line per batch on stdout. Public API only. */
#include <stdio.h>
#include <string.h>

#include "cli_internal.h"
#include "granary/silo.h"
#include "granary/storage.h"

static const gr_class_t *gr__find_class(const gr_class_t *const *classes, const char *name) {
    for (size_t i = 0; classes && classes[i]; i++)
        if (classes[i]->name && !strcmp(classes[i]->name, name)) return classes[i];
    return NULL;
}

static void gr__progress(void *ud, const gr_state_upgrade_progress_t *p) {
    (void)ud;
    uint64_t done = p->upgraded;
    uint64_t all = done + p->remaining;
    printf("migrate-state %s -> format %u: %llu upgraded, %llu skipped (active), %llu failed, %llu left "
           "(%.0f %%), %.0f rows/s%s%s\n",
           p->class_name, (unsigned)p->to_format, (unsigned long long)p->upgraded,
           (unsigned long long)p->skipped, (unsigned long long)p->failed, (unsigned long long)p->remaining,
           all ? 100.0 * (double)done / (double)all : 100.0, p->rows_per_s, p->resumed ? ", resumed" : "",
           p->finished ? ", finished" : "");
    fflush(stdout);
}

int gr__cmd_migrate_state(const char *database_url, const char *cluster, const char *grains,
                          const char *class_name, uint32_t batch, uint32_t wait_ms,
                          const gr_class_t *const *classes) {
    if (!class_name) {
        fprintf(stderr, "silo migrate-state: the CLASS to upgrade is required: silo migrate-state CLASS "
                        "--database URL --grains FILE.so\n");
        return 2;
    }
    if (!database_url) {
        fprintf(stderr, "silo migrate-state: --database URL (or GRANARY_DATABASE_URL) is required\n");
        return 2;
    }
    if (batch == 0 || batch > 10000) {
        fprintf(stderr, "silo migrate-state: --batch must be 1..10000\n");
        return 2;
    }
    const gr_class_t *cls = gr__find_class(classes, class_name);
    if (!cls && grains) {
        const gr_class_t *const *loaded = NULL;
        if (gr__grains_of("silo migrate-state", grains, &loaded) != 0) return 2;
        cls = gr__find_class(loaded, class_name);
    }
    if (!cls) {
        fprintf(stderr, "silo migrate-state: no class '%s'%s%s\n", class_name, grains ? " in " : " (give --grains)",
                grains ? grains : "");
        return 2;
    }
    gr_state_upgrade_options_t o;
    gr_state_upgrade_options_init(&o);
    if (cluster) o.cluster = cluster;
    o.batch = batch;
    o.wait_ms = wait_ms;
    o.progress = gr__progress;
    char err[1024];
    int rc = gr_storage_pg_upgrade_state(database_url, cls, &o, NULL, err, sizeof err);
    if (rc == GR_EINVAL) {
        fprintf(stderr, "silo migrate-state: %s\n", err);
        return 2;
    }
    if (rc != 0) {
        fprintf(stderr, "silo migrate-state: %s (%s)\n", err, gr_strerror(rc));
        return 1;
    }
    return 0;
}
