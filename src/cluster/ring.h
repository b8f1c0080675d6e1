/* src/cluster/ring.h - the consistent-hash ring: which silo owns the directory
 * partition (and the default hash placement) of a grain id. Pure data: built
 * from a view, queried with a hash; no I/O. */
#ifndef GR_DIRECTORY_RING_H
#define GR_DIRECTORY_RING_H

#include <stddef.h>
#include <stdint.h>

#define GR__RING_VNODES 64 /* virtual nodes per silo: spread within ~15% at 3 silos */

typedef struct gr__ring_point {
    uint64_t hash;
    uint32_t member; /* index into the ids given to gr__ring_build */
} gr__ring_point_t;

typedef struct gr__ring {
    gr__ring_point_t *points; /* sorted by hash */
    size_t n_points;
    size_t n_members;
} gr__ring_t;

/* Build the ring over `n` member ids (any order; the result depends only on
 * the set). Returns 0 or GR_ENOMEM. An empty ring owns nothing. */
int gr__ring_build(gr__ring_t *ring, const char *const *ids, size_t n);
void gr__ring_free(gr__ring_t *ring);

/* Member index owning `hash` (the first point at or after it, wrapping), or
 * -1 for an empty ring. */
int gr__ring_owner(const gr__ring_t *ring, uint64_t hash);

/* The hash of a grain id as the ring and the directory use it. */
uint64_t gr__grain_hash(const char *class_name, const void *key, size_t key_len);

#endif
