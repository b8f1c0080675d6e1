/* granary/common.h - export macro, documented limits, the allocator hook.
 *
 * Included by every other public header; a user never needs it directly.
 */
#ifndef GRANARY_COMMON_H
#define GRANARY_COMMON_H

#include <stddef.h>
#include <stdint.h>

#if defined(GR_BUILDING_LIBRARY) && defined(__GNUC__)
#define GR_EXTERN __attribute__((visibility("default")))
#else
#define GR_EXTERN /* nothing */
#endif

#define GR_VERSION_MAJOR 0
#define GR_VERSION_MINOR 1
#define GR_VERSION_PATCH 0
#define GR_VERSION_STRING "0.1.0"

/* Hard limits. They are checked at every entry point (API, wire, storage) and
 * a breach is GR_ETOOBIG, never truncation. The key limit keeps a grain's
 * primary key inside a PostgreSQL btree page (entries must stay under ~2.7 kB). */
#define GR_CLASS_NAME_MAX 128u             /* bytes, no NUL, printable ASCII */
#define GR_METHOD_NAME_MAX 128u            /* bytes */
#define GR_KEY_MAX 1024u                   /* bytes; any byte value including NUL */
#define GR_ARG_MAX (1024u * 1024u)         /* bytes of call argument or reply body */
#define GR_STATE_MAX (16u * 1024u * 1024u) /* bytes of grain state */
#define GR_IDEM_KEY_MAX 128u               /* bytes of an idempotency key (docs/exactly-once.md) */

/** Replace the allocator used by every Granary allocation (and by the uthash
 * tables inside it). All four functions must be non-NULL and behave like the C
 * library's. Call it before creating any Granary object; memory allocated with
 * one allocator must not be freed after switching to another. This is the one
 * piece of process-global mutable state besides logging (as uv_replace_allocator
 * is in libuv). Returns 0 or GR_EINVAL. Not thread-safe. */
GR_EXTERN int gr_replace_allocator(void *(*malloc_fn)(size_t), void *(*realloc_fn)(void *, size_t),
                                   void *(*calloc_fn)(size_t, size_t), void (*free_fn)(void *));

/** Return the library version as "MAJOR.MINOR.PATCH"; a static string. */
GR_EXTERN const char *gr_version(void);

#endif
