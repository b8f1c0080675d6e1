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
#define GR_VERSION_MINOR 2
#define GR_VERSION_PATCH 0
#define GR_VERSION_STRING "0.2.0"

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

/** Log levels and formats of gr_log_setup(). Every line goes to stderr:
 * text ("2026-12-02T03:04:05.678Z warn  silo=ID message") or one JSON object
 * per line ({"ts":...,"level":"warn","silo":...,"msg":...}, docs/operations.md). */
typedef enum gr_log_level {
    GR_LOG_LEVEL_DEBUG = 0,
    GR_LOG_LEVEL_INFO,
    GR_LOG_LEVEL_WARN,
    GR_LOG_LEVEL_ERROR
} gr_log_level_t;
typedef enum gr_log_format { GR_LOG_FORMAT_TEXT = 0, GR_LOG_FORMAT_JSON } gr_log_format_t;

/** Set the process-wide log settings (the other piece of global state, as
 * Redis's verbosity; default: info, text, no silo id). `silo_id` (may be
 * NULL) is copied and named in every JSON line. Not thread-safe: call it
 * at start-up, or from the loop's thread. */
GR_EXTERN void gr_log_setup(gr_log_level_t level, gr_log_format_t format, const char *silo_id);

/** Parse "debug", "info", "warn" or "error" into *out. Returns 0 or
 * GR_EINVAL (anything else; *out is left as it was). */
GR_EXTERN int gr_log_parse_level(const char *s, gr_log_level_t *out);

/** Log one line at `level` under the settings of gr_log_setup() (a line
 * below the level is dropped), printf-style, for programs built on Granary
 * that want their lines in the same stream and format. */
GR_EXTERN void gr_log(gr_log_level_t level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/** Runs once when a handle's close has finished and its memory is gone
 * (gr_runtime_close, gr_silo_close, gr_client_close, gr_storage_close).
 * Callbacks follow one order: the handle an event is about first, then the
 * status and data, `ud` last (gr_write_cb, gr_timer_fn, gr_drain_cb,
 * gr_silo_stop_cb); a callback with no live handle to pass (this one, a
 * call's or a storage operation's completion) takes `ud` first. */
typedef void (*gr_close_cb)(void *ud);

/** Return the library version as "MAJOR.MINOR.PATCH"; a static string. */
GR_EXTERN const char *gr_version(void);

#endif
