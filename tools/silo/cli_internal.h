/* tools/silo/cli_internal.h - the `silo` commands that live outside cli.c. */
#ifndef GR_TOOLS_SILO_CLI_INTERNAL_H
#define GR_TOOLS_SILO_CLI_INTERNAL_H

#include "granary/grain.h"

/* Load the grain classes of shared object `path`: its granary_grains()
 * result (may be NULL) in *out, the library kept loaded for the life of
 * the process. 0, or GR_ECONFIG after saying why on stderr as
 * "PROG: --grains PATH: ...". */
int gr__grains_of(const char *prog, const char *path, const gr_class_t *const **out);

/* `silo migrate-state CLASS` (migrate_state.c, docs/lifecycle.md): the
 * class from `classes` (linked in) or from the --grains shared object.
 * Returns the exit status: 0 every row at the new format, 1 rows left
 * (active throughout, or refused by upgrade_state) or the database failed,
 * 2 usage (no CLASS, no --database, an unknown class, one without
 * upgrade_state). */
int gr__cmd_migrate_state(const char *database_url, const char *cluster, const char *grains,
                          const char *class_name, uint32_t batch, uint32_t wait_ms,
                          const gr_class_t *const *classes);

#endif
