/* grains/runtime.h - what the grain runtime offers the silo beyond the public
 * grain.h: counters for metrics and the hook through which a call reaches a
 * grain. */
#ifndef GR_GRAINS_RUNTIME_H
#define GR_GRAINS_RUNTIME_H

#include "granary/grain.h"

typedef struct gr__runtime_stats {
    uint64_t calls;          /* calls accepted */
    uint64_t calls_failed;   /* completed with an error status */
    uint64_t late_replies;   /* replies dropped because the caller had timed out */
    uint64_t activations;    /* activations created */
    uint64_t deactivations;  /* activations finished */
    uint64_t storage_reads, storage_writes, storage_conflicts, storage_errors;
} gr__runtime_stats_t;

void gr__runtime_get_stats(const gr_runtime_t *rt, gr__runtime_stats_t *out);

#endif
