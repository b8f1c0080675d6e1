/* src/base/base.h - what every module may use: the allocator, uthash wired to
 * it, logging, hashing, a growable byte buffer and big-endian helpers.
 * Internal: never installed.
 */
#ifndef GR_COMMON_INTERNAL_H
#define GR_COMMON_INTERNAL_H

#include <stdarg.h>
#include <stdint.h>
#include <string.h>

#include "granary/error.h"

#if defined(__GNUC__)
#define GR__PRINTF(a, b) __attribute__((format(printf, a, b)))
#define GR__UNUSED __attribute__((unused))
#else
#define GR__PRINTF(a, b)
#define GR__UNUSED
#endif

#define GR__ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define GR__CONTAINER_OF(ptr, type, field) ((type *)((char *)(ptr)-offsetof(type, field)))
/* A string literal as (pointer, length) arguments, its length counted by
 * the compiler: GR__LIT("no such reminder"). */
#define GR__LIT(s) (const void *)(s), (sizeof(s) - 1)
/* A decoder's "need more bytes" (frames, HTTP): not an error, outside the
 * wire-stable GR_E* space, never returned by the public API. */
#define GR__EAGAIN (-1000)
/* Most bytes of call chain a request carries (docs/grains.md): a limit of
 * both the runtime (cycle detection) and the wire (frames carry chains). */
#define GR__CHAIN_MAX 2048u

/* ---- allocation (hookable, see gr_replace_allocator) ---- */
void *gr__malloc(size_t n);
void *gr__calloc(size_t n, size_t m);
void *gr__realloc(void *p, size_t n);
void gr__free(void *p);
char *gr__strdup(const char *s);
void *gr__memdup(const void *p, size_t n);
/* The wall clock in ms since the epoch (the same on every silo, within NTP):
 * for ages judged across silos, such as an idempotency key's retention. */
uint64_t gr__wall_ms(void);

/* uthash allocates through the hook. With HASH_NONFATAL_OOM an allocation
 * failure leaves the item out of the table and calls uthash_nonfatal_oom,
 * which we turn into a flag instead of uthash's default exit(-1); callers of
 * HASH_ADD check gr__hash_oom() right after adding. */
extern int gr__uthash_oom; /* documented global: set by uthash_fatal, reset by gr__hash_oom() */
int gr__hash_oom(void);
#define uthash_malloc(sz) gr__malloc(sz)
#define uthash_free(ptr, sz) gr__free(ptr)
#define uthash_nonfatal_oom(obj) (gr__uthash_oom = 1)
#define HASH_NONFATAL_OOM 1
#include <uthash.h>

/* ---- hashing ---- */
uint64_t gr__hash64(const void *data, size_t len, uint64_t seed);

/* ---- byte buffer ---- */
typedef struct gr__buf {
    uint8_t *data;
    size_t len;
    size_t cap;
} gr__buf_t;

void gr__buf_init(gr__buf_t *b);
int gr__buf_reserve(gr__buf_t *b, size_t extra);
int gr__buf_append(gr__buf_t *b, const void *p, size_t n);
void gr__buf_consume(gr__buf_t *b, size_t n); /* drop n bytes from the front */
void gr__buf_free(gr__buf_t *b);
/* Append formatted text; GR_ENOMEM on failure (b unchanged). */
int gr__buf_printf(gr__buf_t *b, const char *fmt, ...) GR__PRINTF(2, 3);
/* Append bytes as a quoted JSON string: control characters, quotes and
 * backslashes escaped, valid UTF-8 kept, any other byte as U+FFFD. */
int gr__buf_json_str(gr__buf_t *b, const void *s, size_t len);
/* The same escaping (without the quotes) into a fixed buffer of cap bytes,
 * NUL-terminated, cut at a whole character; returns the bytes written. For
 * code that must not allocate (a log line about running out of memory). */
size_t gr__json_escape(char *out, size_t cap, const void *s, size_t len);

/* ---- latency histogram (Prometheus buckets, seconds) ---- */
#define GR__HIST_BUCKETS 16
typedef struct gr__hist {
    uint64_t buckets[GR__HIST_BUCKETS]; /* cumulative on output, per-bucket here */
    uint64_t count;
    uint64_t sum_ns;
} gr__hist_t;
void gr__hist_observe(gr__hist_t *h, uint64_t ns);
/* h += other (merging per-method histograms into a class total). */
void gr__hist_add(gr__hist_t *h, const gr__hist_t *other);
/* Upper bound of bucket i in ns (UINT64_MAX for the last, +Inf). */
uint64_t gr__hist_le(size_t i);
/* Append `name_bucket{labels,le=..}`, `name_sum`, `name_count` lines.
 * labels is "" or like `class="Counter"`. */
int gr__hist_write(const gr__hist_t *h, gr__buf_t *b, const char *name, const char *labels);

static inline void gr__put_u16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static inline void gr__put_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static inline void gr__put_u64(uint8_t *p, uint64_t v) {
    gr__put_u32(p, (uint32_t)(v >> 32));
    gr__put_u32(p + 4, (uint32_t)v);
}
static inline uint16_t gr__get_u16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t gr__get_u32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint64_t gr__get_u64(const uint8_t *p) {
    return ((uint64_t)gr__get_u32(p) << 32) | gr__get_u32(p + 4);
}

/* ---- logging ----
 * Process-wide settings (documented global state, like Redis's verbosity):
 * level and format are set once at start-up by the silo. One line per event
 * on stderr. `grain` may be NULL; it is printed with non-printable key bytes
 * escaped. The level and format types, gr_log_setup and gr_log are public
 * (granary/common.h). */
int gr__log_enabled(gr_log_level_t level);
void gr__log(gr_log_level_t level, const char *grain_class, const void *key, size_t key_len, const char *fmt,
             ...) GR__PRINTF(5, 6);
/* With fields an operator filters on (peer, view, counts): `fields` is a
 * NULL-terminated list of key, value strings, printed as JSON members in
 * JSON format ("peer":"..."), as key=value in text, before the message. */
void gr__log_fields(gr_log_level_t level, const char *const *fields, const char *fmt, ...) GR__PRINTF(3, 4);

#define GR__LOG_DEBUG(...)                                                                                   \
    do {                                                                                                     \
        if (gr__log_enabled(GR_LOG_LEVEL_DEBUG)) gr__log(GR_LOG_LEVEL_DEBUG, NULL, NULL, 0, __VA_ARGS__);    \
    } while (0)
#define GR__LOG_INFO(...) gr__log(GR_LOG_LEVEL_INFO, NULL, NULL, 0, __VA_ARGS__)
#define GR__LOG_WARN(...) gr__log(GR_LOG_LEVEL_WARN, NULL, NULL, 0, __VA_ARGS__)
#define GR__LOG_ERROR(...) gr__log(GR_LOG_LEVEL_ERROR, NULL, NULL, 0, __VA_ARGS__)

/* Escape bytes for a log line or message: printable ASCII kept, others \xNN,
 * cut at out_size-1 with "..." when too long. Returns out. */
char *gr__escape(const void *data, size_t len, char *out, size_t out_size);

/* The process's resident memory in bytes (/proc/self/statm; 0 if unknown). */
uint64_t gr__rss_bytes(void);
/* Give freed heap memory back to the system where the C library can
 * (glibc's malloc_trim): after evicting activations, RSS should show it. */
void gr__release_memory(void);

/* Milliseconds since an arbitrary epoch, monotonic. */
uint64_t gr__now_ms(void);

/* Whether a class name is acceptable: 1..GR_CLASS_NAME_MAX bytes of
 * printable ASCII other than '/' and space. */
int gr__valid_class_name(const char *name);

/* 1 if the n bytes at a equal the string b (NULL: ""), in time that depends
 * on n only, not on where they differ: secrets must not leak through timing. */
int gr__secret_equal(const void *a, size_t n, const char *b);
/* A reminder name: 1..GR_METHOD_NAME_MAX printable ASCII, no spaces. */
int gr__valid_reminder_name(const char *name);

/* Parse "HOST:PORT" or "[V6]:PORT" into host (NUL-terminated) and port
 * 0..65535. Returns 0 or GR_EINVAL. */
int gr__parse_hostport(const char *s, size_t len, char *host, size_t host_size, int *port);

/* Resolve a numeric host and port into a sockaddr (IPv4 or IPv6; names are
 * not looked up: that would block). Returns 0 or GR_EINVAL. */
struct sockaddr_storage;
int gr__make_addr(const char *host, int port, struct sockaddr_storage *out);

/* ---- deadline queue ----
 * An intrusive list kept sorted by deadline. Nearly all entries of one queue
 * share a timeout, so a new deadline is almost always the latest and
 * insertion (walking back from the tail) is O(1); removal is O(1). The owner
 * arms one uv_timer for the head instead of a timer per request. */
typedef struct gr__dlq_node {
    struct gr__dlq_node *prev, *next;
    uint64_t deadline;
    int linked;
} gr__dlq_node_t;

typedef struct gr__dlq {
    gr__dlq_node_t *head, *tail;
} gr__dlq_t;

/* Insert n; returns 1 if it became the head (re-arm the timer). */
int gr__dlq_insert(gr__dlq_t *q, gr__dlq_node_t *n, uint64_t deadline);
void gr__dlq_remove(gr__dlq_t *q, gr__dlq_node_t *n);
/* Remove and return the head if its deadline is <= now, else NULL. */
gr__dlq_node_t *gr__dlq_pop_expired(gr__dlq_t *q, uint64_t now);
/* Milliseconds until the head is due (0 if due), or UINT64_MAX if empty. */
uint64_t gr__dlq_next_in(const gr__dlq_t *q, uint64_t now);

#endif
