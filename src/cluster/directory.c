/* src/cluster/directory.c - grain id -> silo maps (partition and cache). The
 * first live registration wins; entries for dead silos are dropped on every
 * view change. */
#include <stdio.h>

#include "cluster/directory.h"
#include "base/base.h"

struct gr__dir_entry {
    UT_hash_handle hh;
    char silo[GR__SILO_ID_MAX + 1];
    size_t id_len;
    uint8_t id[];
};

static gr__dir_entry_t *gr__find(const gr__dir_map_t *map, const void *id, size_t id_len) {
    gr__dir_entry_t *e = NULL;
    HASH_FIND(hh, map->entries, id, id_len, e);
    return e;
}

int gr__dir_put(gr__dir_map_t *map, const void *id, size_t id_len, const char *silo) {
    gr__dir_entry_t *e = gr__find(map, id, id_len);
    if (!e) {
        e = gr__calloc(1, sizeof *e + id_len);
        if (!e) return GR_ENOMEM;
        memcpy(e->id, id, id_len);
        e->id_len = id_len;
        HASH_ADD(hh, map->entries, id[0], id_len, e);
        if (gr__hash_oom()) {
            gr__free(e);
            return GR_ENOMEM;
        }
        map->n++;
    }
    snprintf(e->silo, sizeof e->silo, "%s", silo);
    return 0;
}

int gr__dir_register(gr__dir_map_t *map, const void *id, size_t id_len, const char *silo,
                     gr__dir_alive_fn alive, void *ud, char *winner) {
    gr__dir_entry_t *e = gr__find(map, id, id_len);
    if (e && alive(ud, e->silo)) {
        snprintf(winner, GR__SILO_ID_MAX + 1, "%s", e->silo);
        return 0;
    }
    int rc = gr__dir_put(map, id, id_len, silo);
    if (rc == 0) snprintf(winner, GR__SILO_ID_MAX + 1, "%s", silo);
    return rc;
}

void gr__dir_unregister(gr__dir_map_t *map, const void *id, size_t id_len, const char *silo) {
    gr__dir_entry_t *e = gr__find(map, id, id_len);
    if (!e || strcmp(e->silo, silo) != 0) return;
    HASH_DEL(map->entries, e);
    map->n--;
    gr__free(e);
}

const char *gr__dir_lookup(const gr__dir_map_t *map, const void *id, size_t id_len) {
    gr__dir_entry_t *e = gr__find(map, id, id_len);
    return e ? e->silo : NULL;
}

size_t gr__dir_retain_alive(gr__dir_map_t *map, gr__dir_alive_fn alive, void *ud) {
    gr__dir_entry_t *e, *tmp;
    size_t dropped = 0;
    HASH_ITER(hh, map->entries, e, tmp) {
        if (alive(ud, e->silo)) continue;
        HASH_DEL(map->entries, e);
        map->n--;
        gr__free(e);
        dropped++;
    }
    return dropped;
}

void gr__dir_clear(gr__dir_map_t *map) {
    gr__dir_entry_t *e, *tmp;
    HASH_ITER(hh, map->entries, e, tmp) {
        HASH_DEL(map->entries, e);
        gr__free(e);
    }
    map->n = 0;
}
