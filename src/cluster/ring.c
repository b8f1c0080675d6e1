/* src/cluster/ring.c - consistent hashing with virtual nodes. Each member
 * contributes GR__RING_VNODES points hash(id, i); a grain belongs to the
 * member of the first point clockwise from its hash. Removing a member moves
 * only the grains it owned. */
#include <stdlib.h>

#include "base/base.h"
#include "cluster/ring.h"

static int gr__point_cmp(const void *a, const void *b) {
    const gr__ring_point_t *x = a, *y = b;
    if (x->hash != y->hash) return x->hash < y->hash ? -1 : 1;
    return x->member < y->member ? -1 : x->member > y->member;
}

int gr__ring_build(gr__ring_t *ring, const char *const *ids, size_t n) {
    ring->points = NULL;
    ring->n_points = 0;
    ring->n_members = n;
    if (n == 0) return 0;
    ring->points = gr__malloc(n * GR__RING_VNODES * sizeof *ring->points);
    if (!ring->points) return GR_ENOMEM;
    for (size_t m = 0; m < n; m++) {
        size_t len = strlen(ids[m]);
        for (uint64_t v = 0; v < GR__RING_VNODES; v++) {
            gr__ring_point_t *p = &ring->points[ring->n_points++];
            p->hash = gr__hash64(ids[m], len, v + 1);
            p->member = (uint32_t)m;
        }
    }
    qsort(ring->points, ring->n_points, sizeof *ring->points, gr__point_cmp);
    return 0;
}

void gr__ring_free(gr__ring_t *ring) {
    gr__free(ring->points);
    ring->points = NULL;
    ring->n_points = ring->n_members = 0;
}

int gr__ring_owner(const gr__ring_t *ring, uint64_t hash) {
    if (ring->n_points == 0) return -1;
    size_t lo = 0, hi = ring->n_points;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ring->points[mid].hash < hash)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == ring->n_points) lo = 0; /* wrap around */
    return (int)ring->points[lo].member;
}

uint64_t gr__grain_hash(const char *class_name, const void *key, size_t key_len) {
    /* class '\0' key, the same bytes the runtime's table uses. */
    uint64_t h = gr__hash64(class_name, strlen(class_name) + 1, 0x67726169ull);
    return gr__hash64(key, key_len, h);
}
