/* src/cluster/directory.h - the grain directory's data: the partition this
 * silo owns (grain id -> silo of its activation) and a lookup cache. Pure
 * data, no I/O: cluster/router.c and registry.c do the talking. docs/directory.md. */
#ifndef GR_DIRECTORY_DIRECTORY_H
#define GR_DIRECTORY_DIRECTORY_H

#include <stddef.h>
#include <stdint.h>

#define GR__SILO_ID_MAX 127

typedef struct gr__dir_entry gr__dir_entry_t;

/* A map from grain id bytes (class '\0' key) to a silo id. */
typedef struct gr__dir_map {
    gr__dir_entry_t *entries;
    size_t n;
} gr__dir_map_t;

/* Silo liveness, as the current view says. */
typedef int (*gr__dir_alive_fn)(void *ud, const char *silo_id);

/* Register `silo` for the grain unless a live silo holds it already; the
 * silo that holds the grain afterwards is copied to winner (size
 * GR__SILO_ID_MAX + 1). Returns 0 or GR_ENOMEM. */
int gr__dir_register(gr__dir_map_t *map, const void *id, size_t id_len, const char *silo,
                     gr__dir_alive_fn alive, void *ud, char *winner);

/* Forget the grain if (and only if) `silo` holds it. */
void gr__dir_unregister(gr__dir_map_t *map, const void *id, size_t id_len, const char *silo);

/* The silo holding the grain, or NULL (borrowed until the map changes). */
const char *gr__dir_lookup(const gr__dir_map_t *map, const void *id, size_t id_len);

/* Set (replace) an entry without checks: the cache's insert. */
int gr__dir_put(gr__dir_map_t *map, const void *id, size_t id_len, const char *silo);

/* Drop every entry whose silo is no longer alive; returns how many. */
size_t gr__dir_retain_alive(gr__dir_map_t *map, gr__dir_alive_fn alive, void *ud);

void gr__dir_clear(gr__dir_map_t *map);

#endif
