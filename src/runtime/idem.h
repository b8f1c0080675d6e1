/* src/runtime/idem.h - an activation's reply log: the idempotency keys of calls
 * it ran, each with the status and reply it gave, so that a call retried
 * with the same key gets the first reply instead of running again
 * (docs/exactly-once.md). A log is plain data: the runtime decides when an
 * entry starts, settles or is written; this module keeps the entries in age
 * order, bounds them and turns them into bytes and back: the entries a
 * write adds to storage and the keys it forgets (storage/replies.h),
 * and the entries a read brings back after the state. */
#ifndef GR_GRAINS_IDEM_H
#define GR_GRAINS_IDEM_H

#include <stddef.h>
#include <stdint.h>

#include "base/base.h"
#include "granary/grain.h"
#include "storage/replies.h"

#define GR__IDEM_FORMAT_FLAG GR__REPLIES_FLAG
/* Bytes of stored replies per grain beyond which the oldest go (the newest
 * entry is always kept, however large its reply). */
#define GR__IDEM_MAX_BYTES (2u * 1024u * 1024u)
#define GR__IDEM_KEYS_DEFAULT 1000u
#define GR__IDEM_RETENTION_DEFAULT_MS 600000u

typedef enum {
    GR__IDEM_RUNNING, /* its call is running: duplicates wait */
    GR__IDEM_HELD,    /* replied; the reply waits for the state write that records it */
    GR__IDEM_DONE,    /* the reply is final (committed, or the class does not persist) */
} gr__idem_state_t;

typedef struct gr__idem_entry {
    UT_hash_handle hh;
    struct gr__idem_entry *older, *newer;
    uint64_t at_ms; /* wall clock (ms) of the reply: retention is judged across silos */
    int32_t status;
    uint32_t reply_len;
    uint8_t *reply;
    void *waiting;  /* the runtime's duplicates parked on this entry (gr_msg_t list) */
    void *owner;    /* the runtime's message running as this entry, until it settles */
    uint8_t state;  /* gr__idem_state_t */
    uint8_t stored; /* handed to a write (or read back): storage has it if that write commits */
    uint8_t key_len;
    uint8_t key[GR_IDEM_KEY_MAX];
} gr__idem_entry_t;

typedef struct gr__idem_log {
    gr__idem_entry_t *by_key;
    gr__idem_entry_t *oldest, *newest;
    uint32_t n;
    uint64_t bytes; /* keys and replies of the entries */
    gr__buf_t dels; /* keys of stored entries evicted since the last write: u8 len, key */
} gr__idem_log_t;

gr__idem_entry_t *gr__idem_find(gr__idem_log_t *log, const uint8_t *key, size_t key_len);
/* A new RUNNING entry, the newest. Returns 0 or GR_ENOMEM. */
int gr__idem_begin(gr__idem_log_t *log, const uint8_t *key, size_t key_len, gr__idem_entry_t **out);
/* Record the reply of a RUNNING entry (copied): it becomes HELD. GR_ENOMEM
 * leaves it RUNNING. */
int gr__idem_record(gr__idem_log_t *log, gr__idem_entry_t *e, int status, const void *reply, size_t len,
                    uint64_t now_ms);
/* Take an entry out and free it (its waiters are the caller's business). */
void gr__idem_remove(gr__idem_log_t *log, gr__idem_entry_t *e);
/* Drop settled entries older than retention_ms, then the oldest settled
 * ones past max_keys or GR__IDEM_MAX_BYTES; never RUNNING or HELD ones.
 * Stored entries dropped for the bounds are queued in `dels` (expired ones
 * storage forgets by itself). */
void gr__idem_prune(gr__idem_log_t *log, uint64_t now_ms, uint32_t max_keys, uint32_t retention_ms);
/* Append the settled (HELD or DONE) entries storage does not have yet,
 * oldest first, and mark them stored. Returns 0 or GR_ENOMEM. */
int gr__idem_encode_new(gr__idem_log_t *log, gr__buf_t *out);
/* 1 if a write has log changes to carry (entries to add or keys to forget). */
int gr__idem_pending(const gr__idem_log_t *log);
/* Split read bytes: *state_len is what precedes the log. Entries older
 * than retention_ms are skipped; all come back DONE and stored. GR_EPROTO
 * for a trailer or entry that does not add up, GR_ENOMEM. */
int gr__idem_decode(gr__idem_log_t *log, const uint8_t *data, size_t len, size_t *state_len, uint64_t now_ms,
                    uint32_t retention_ms);
/* Free every entry (waiters must have been dealt with). */
void gr__idem_clear(gr__idem_log_t *log);
/* Wall clock in ms. */
uint64_t gr__idem_now_ms(void);

#endif
