/* granary/silo_main.h - the `silo` command line as a function, for a silo
 * binary with its grain classes linked in. It lives in its own library,
 * libgranary_main (pkg-config granary-main, CMake granary::main): it loads
 * shared objects (dlopen), handles signals and exits the process, which a
 * library should not, and `status` queries PostgreSQL with blocking libpq.
 * It uses only the public API, as any program of yours could (`migrate`
 * is gr_storage_pg_migrate(), public and documented as blocking). Not in
 * granary.h.
 */
#ifndef GRANARY_SILO_MAIN_H
#define GRANARY_SILO_MAIN_H

#include "granary/silo.h"

/** The complete `silo` command line (run, migrate, status, --help;
 * docs/configuration.md) with `classes` (a NULL-terminated array, may be
 * NULL) registered in every silo it runs. Installs SIGTERM/SIGINT handling
 * for `run` (the first signal stops gracefully, a second exits at once) and
 * SIGHUP (reload TLS files). Returns the process exit status: 0, 1 (a
 * runtime failure), 2 (bad usage or configuration, or the silo id is a live
 * member's), 3 (declared dead by the cluster). */
GR_EXTERN int gr_silo_main(int argc, char **argv, const gr_class_t *const *classes);

#endif
