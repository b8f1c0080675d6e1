/* src/storage/migrate.h - apply the numbered SQL migrations of sql/ (compiled
 * into the library) to a database. Blocking libpq: used only by
 * `silo migrate` and by tests, never on a silo's loop. */
#ifndef GR_PERSISTENCE_MIGRATE_H
#define GR_PERSISTENCE_MIGRATE_H

#include <stdio.h>

/* Apply every migration not yet recorded in granary_schema_version, each in
 * its own transaction under an advisory lock (concurrent migrators wait for
 * each other). Progress lines go to `out` (may be NULL). Returns 0, or
 * GR_ESTORAGE with a message in err. Re-running is a no-op. */
int gr__migrate(const char *conninfo, FILE *out, char *err, size_t err_size);

/* Highest migration version compiled in. */
int gr__migrate_latest(void);

#endif
