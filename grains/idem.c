/* grains/idem.c - the reply log (see idem.h). */
#include "grains/idem.h"

#include <uv.h>

uint64_t gr__idem_now_ms(void) {
    uv_timeval64_t tv;
    uv_gettimeofday(&tv);
    return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

gr__idem_entry_t *gr__idem_find(gr__idem_log_t *log, const uint8_t *key, size_t key_len) {
    gr__idem_entry_t *e = NULL;
    HASH_FIND(hh, log->by_key, key, key_len, e);
    return e;
}

static void gr__idem_link_newest(gr__idem_log_t *log, gr__idem_entry_t *e) {
    e->newer = NULL;
    e->older = log->newest;
    if (log->newest)
        log->newest->newer = e;
    else
        log->oldest = e;
    log->newest = e;
}

static int gr__idem_add(gr__idem_log_t *log, const uint8_t *key, size_t key_len, gr__idem_entry_t **out) {
    if (key_len == 0 || key_len > GR_IDEM_KEY_MAX) return GR_EINVAL;
    gr__idem_entry_t *e = gr__calloc(1, sizeof *e);
    if (!e) return GR_ENOMEM;
    memcpy(e->key, key, key_len);
    e->key_len = (uint8_t)key_len;
    HASH_ADD(hh, log->by_key, key, key_len, e);
    if (gr__hash_oom()) {
        gr__free(e);
        return GR_ENOMEM;
    }
    gr__idem_link_newest(log, e);
    log->n++;
    log->bytes += key_len;
    *out = e;
    return 0;
}

int gr__idem_begin(gr__idem_log_t *log, const uint8_t *key, size_t key_len, gr__idem_entry_t **out) {
    int rc = gr__idem_add(log, key, key_len, out);
    if (rc == 0) (*out)->state = GR__IDEM_RUNNING;
    return rc;
}

int gr__idem_record(gr__idem_log_t *log, gr__idem_entry_t *e, int status, const void *reply, size_t len,
                    uint64_t now_ms) {
    uint8_t *copy = NULL;
    if (len && !(copy = gr__memdup(reply, len))) return GR_ENOMEM;
    e->reply = copy;
    e->reply_len = (uint32_t)len;
    e->status = status;
    e->at_ms = now_ms;
    e->state = GR__IDEM_HELD;
    log->bytes += len;
    log->changed = 1;
    /* Age order is reply order: what retention measures. */
    if (log->newest != e) {
        if (e->older) e->older->newer = e->newer;
        if (e->newer) e->newer->older = e->older;
        if (log->oldest == e) log->oldest = e->newer;
        gr__idem_link_newest(log, e);
    }
    return 0;
}

void gr__idem_remove(gr__idem_log_t *log, gr__idem_entry_t *e) {
    HASH_DEL(log->by_key, e);
    if (e->older)
        e->older->newer = e->newer;
    else
        log->oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        log->newest = e->older;
    log->n--;
    log->bytes -= e->key_len + e->reply_len;
    if (e->state != GR__IDEM_RUNNING) log->changed = 1;
    gr__free(e->reply);
    gr__free(e);
}

void gr__idem_prune(gr__idem_log_t *log, uint64_t now_ms, uint32_t max_keys, uint32_t retention_ms) {
    gr__idem_entry_t *e = log->oldest;
    while (e) {
        gr__idem_entry_t *next = e->newer;
        int settled = e->state == GR__IDEM_DONE && !e->waiting;
        int expired = now_ms > e->at_ms && now_ms - e->at_ms > retention_ms;
        int over = log->n > max_keys || (log->bytes > GR__IDEM_MAX_BYTES && e != log->newest);
        if (settled && (expired || over))
            gr__idem_remove(log, e);
        else if (!expired && !over)
            break; /* newer ones are younger, and the bounds hold */
        e = next;
    }
}

int gr__idem_encode(const gr__idem_log_t *log, gr__buf_t *out) {
    size_t start = out->len;
    for (const gr__idem_entry_t *e = log->oldest; e; e = e->newer) {
        if (e->state == GR__IDEM_RUNNING) continue;
        uint8_t h[1 + 8 + 4 + 4];
        h[0] = e->key_len;
        if (gr__buf_reserve(out, sizeof h + e->key_len + e->reply_len) != 0) return GR_ENOMEM;
        gr__buf_append(out, h, 1);
        gr__buf_append(out, e->key, e->key_len);
        gr__put_u64(h, e->at_ms);
        gr__put_u32(h + 8, (uint32_t)e->status);
        gr__put_u32(h + 12, e->reply_len);
        gr__buf_append(out, h, 16);
        if (e->reply_len) gr__buf_append(out, e->reply, e->reply_len);
    }
    uint8_t t[GR__IDEM_TRAILER];
    gr__put_u32(t, (uint32_t)(out->len - start));
    gr__put_u32(t + 4, GR__IDEM_MAGIC);
    return gr__buf_append(out, t, sizeof t);
}

int gr__idem_decode(gr__idem_log_t *log, const uint8_t *data, size_t len, size_t *state_len, uint64_t now_ms,
                    uint32_t retention_ms) {
    if (len < GR__IDEM_TRAILER || gr__get_u32(data + len - 4) != GR__IDEM_MAGIC) return GR_EPROTO;
    size_t n = gr__get_u32(data + len - 8);
    if (n > len - GR__IDEM_TRAILER) return GR_EPROTO;
    const uint8_t *p = data + len - GR__IDEM_TRAILER - n, *end = data + len - GR__IDEM_TRAILER;
    *state_len = (size_t)(p - data);
    while (p < end) {
        size_t kl = p[0];
        if (kl == 0 || (size_t)(end - p) < 1 + kl + 16) return GR_EPROTO;
        const uint8_t *key = p + 1;
        uint64_t at = gr__get_u64(p + 1 + kl);
        int32_t status = (int32_t)gr__get_u32(p + 1 + kl + 8);
        uint32_t rl = gr__get_u32(p + 1 + kl + 12);
        p += 1 + kl + 16;
        if ((size_t)(end - p) < rl) return GR_EPROTO;
        int expired = now_ms > at && now_ms - at > retention_ms;
        if (!expired && !gr__idem_find(log, key, kl)) {
            gr__idem_entry_t *e;
            int rc = gr__idem_add(log, key, kl, &e);
            if (rc == 0) rc = gr__idem_record(log, e, status, p, rl, at);
            if (rc != 0) return rc;
            e->state = GR__IDEM_DONE;
        }
        p += rl;
    }
    log->changed = 0;
    return 0;
}

void gr__idem_clear(gr__idem_log_t *log) {
    while (log->oldest)
        gr__idem_remove(log, log->oldest);
    log->changed = 0;
}
