/* src/storage/provider.h - what a storage provider implements. gr_storage_t
 * is the common head of every provider; storage.c validates arguments once
 * and dispatches through the vtable, so providers trust their inputs. */
#ifndef GR_PERSISTENCE_PROVIDER_H
#define GR_PERSISTENCE_PROVIDER_H

#include "base/base.h"
#include "granary/storage.h"
#include "storage/claim.h"

typedef struct gr__storage_vtable {
    int (*read)(gr_storage_t *st, const char *class_name, const void *key, size_t key_len,
                gr_storage_read_cb cb, void *ud);
    int (*write)(gr_storage_t *st, const char *class_name, const void *key, size_t key_len, const void *data,
                 size_t len, uint32_t format, int64_t expected, gr_storage_write_cb cb, void *ud);
    int (*clear)(gr_storage_t *st, const char *class_name, const void *key, size_t key_len, int64_t expected,
                 gr_storage_write_cb cb, void *ud);
    void (*close)(gr_storage_t *st, void (*cb)(void *ud), void *ud);
    /* Activation claims (storage/claim.h); NULL: every claim is granted
     * (read instead) and release does nothing. */
    int (*claim)(gr_storage_t *st, const char *class_name, const void *key, size_t key_len, const char *owner,
                 int64_t token, gr_storage_read_cb cb, void *ud);
    int (*release)(gr_storage_t *st, const char *class_name, const void *key, size_t key_len,
                   const char *owner, int64_t token);
    /* A write with reply-log changes (storage/replies.h); inputs are
     * checked by storage.c (adds and dels parse). */
    int (*write_replies)(gr_storage_t *st, const char *class_name, const void *key, size_t key_len,
                         const void *data, size_t len, uint32_t format, int64_t expected, const uint8_t *adds,
                         size_t adds_len, const uint8_t *dels, size_t dels_len, uint32_t retention_ms,
                         gr_storage_write_cb cb, void *ud);
    /* Claim transfers (storage/claim.h); NULL: not supported (GR_ENOTSUP
     * is not an error code: storage.c answers GR_EINVAL). */
    int (*transfer)(gr_storage_t *st, const char *class_name, const void *key, size_t key_len,
                    const char *from, int64_t from_token, const char *owner, int64_t token,
                    gr__transfer_cb cb, void *ud);
} gr__storage_vtable_t;

struct gr_storage {
    const gr__storage_vtable_t *vt;
    uv_loop_t *loop;
    int closing;
};

#endif
