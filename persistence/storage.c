/* persistence/storage.c - the provider-independent entry points: argument
 * checks shared by every provider, then dispatch. */
#include <assert.h>

#include "persistence/claim.h"
#include "persistence/provider.h"

static int gr__check(gr_storage_t *st, const char *class_name, const void *key, size_t key_len) {
    if (!st || !gr__valid_class_name(class_name) || (key_len && !key)) return GR_EINVAL;
    if (key_len > GR_KEY_MAX) return GR_ETOOBIG;
    if (st->closing) return GR_ESHUTDOWN;
    return 0;
}

int gr_storage_read(gr_storage_t *st, const char *class_name, const void *key, size_t key_len,
                    gr_storage_read_cb cb, void *ud) {
    int rc = gr__check(st, class_name, key, key_len);
    if (rc) return rc;
    if (!cb) return GR_EINVAL;
    return st->vt->read(st, class_name, key, key_len, cb, ud);
}

int gr_storage_write(gr_storage_t *st, const char *class_name, const void *key, size_t key_len,
                     const void *data, size_t len, uint32_t format, int64_t expected, gr_storage_write_cb cb,
                     void *ud) {
    int rc = gr__check(st, class_name, key, key_len);
    if (rc) return rc;
    if (!cb || expected < 0 || (len && !data) || format > INT32_MAX) return GR_EINVAL;
    /* The state, and the reply log the runtime stores after it (grains/idem.h). */
    if (len > GR_STATE_MAX + GR__STORED_EXTRA) return GR_ETOOBIG;
    return st->vt->write(st, class_name, key, key_len, data, len, format, expected, cb, ud);
}

int gr_storage_clear(gr_storage_t *st, const char *class_name, const void *key, size_t key_len,
                     int64_t expected, gr_storage_write_cb cb, void *ud) {
    int rc = gr__check(st, class_name, key, key_len);
    if (rc) return rc;
    if (!cb || expected < 0) return GR_EINVAL;
    return st->vt->clear(st, class_name, key, key_len, expected, cb, ud);
}

int gr__storage_claim(gr_storage_t *st, const char *class_name, const void *key, size_t key_len,
                      const char *owner, int64_t token, gr_storage_read_cb cb, void *ud) {
    int rc = gr__check(st, class_name, key, key_len);
    if (rc) return rc;
    if (!cb || !owner || !owner[0]) return GR_EINVAL;
    if (!st->vt->claim) return st->vt->read(st, class_name, key, key_len, cb, ud);
    return st->vt->claim(st, class_name, key, key_len, owner, token, cb, ud);
}

int gr__storage_release(gr_storage_t *st, const char *class_name, const void *key, size_t key_len,
                        const char *owner, int64_t token) {
    int rc = gr__check(st, class_name, key, key_len);
    if (rc) return rc;
    if (!owner || !owner[0]) return GR_EINVAL;
    return st->vt->release ? st->vt->release(st, class_name, key, key_len, owner, token) : 0;
}

void gr_storage_close(gr_storage_t *st, void (*cb)(void *ud), void *ud) {
    assert(!st->closing && "gr_storage_close called twice");
    st->closing = 1;
    st->vt->close(st, cb, ud);
}
