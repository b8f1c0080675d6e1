/* src/storage/replies.h - the reply log of keyed calls in storage
 * (docs/exactly-once.md), for the grain runtime. A grain's log entries live
 * beside its state (PostgreSQL: table granary_reply, sql/005_replies.sql),
 * are written by the same statement that commits the state, and come back
 * with every read of the grain:
 *   read data = state || entries || u32 entries_len || u32 GR__REPLIES_MAGIC
 * with GR__REPLIES_FLAG set in the format, whenever the grain has live
 * entries (also with no state row: version 0, no state bytes).
 * An entry: u8 key_len (1..128), key, u64 at_ms, i32 status, u32 reply_len,
 * reply. */
#ifndef GR_PERSISTENCE_REPLIES_H
#define GR_PERSISTENCE_REPLIES_H

#include "granary/storage.h"

#define GR__REPLIES_FLAG 0x40000000u  /* bit 30 of a read's format (an int4 column holds formats) */
#define GR__REPLIES_MAGIC 0x4b494752u /* "GRIK" */
#define GR__REPLIES_TRAILER 8u

/* gr_storage_write() that also adds entries to the grain's log (`adds`:
 * entries as above, back to back, each live until its at_ms +
 * retention_ms) and forgets keys (`dels`: u8 key_len, key, back to back),
 * in the same commit: if the write conflicts or fails, neither happens.
 * Returns as gr_storage_write(); GR_EPROTO if adds or dels do not parse. */
int gr__storage_write_replies(gr_storage_t *st, const char *class_name, const void *key, size_t key_len,
                              const void *data, size_t len, uint32_t format, int64_t expected,
                              const uint8_t *adds, size_t adds_len, const uint8_t *dels, size_t dels_len,
                              uint32_t retention_ms, gr_storage_write_cb cb, void *ud);

/* Walk `adds` or `dels`: returns the size of the entry at p (0 at the end,
 * (size_t)-1 if it does not parse). */
size_t gr__replies_entry_size(const uint8_t *p, size_t left);
size_t gr__replies_del_size(const uint8_t *p, size_t left);

#endif
