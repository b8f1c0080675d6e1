/* tests/fuzz/fuzz_frame.c - libFuzzer target for the frame decoder: decode
 * every frame in the input as the gateway would (with its size limit), and
 * re-encode what decodes to check the round trip. Built with clang when
 * GR_FUZZ=ON; run by scripts/test.sh for a fixed time with the seed corpus. */
#include <assert.h>
#include <string.h>

#include "wire/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t off = 0;
    while (off < size) {
        gr__frame_t f;
        size_t used = 0;
        int rc = gr__frame_decode(data + off, size - off, 64 * 1024, &f, &used);
        if (rc != 0) break;
        assert(used > 0 && used <= size - off);
        if (f.type == GR__FRAME_REQUEST || f.type == GR__FRAME_ONEWAY) {
            /* What decodes re-encodes to the same bytes. */
            char cls[GR_CLASS_NAME_MAX + 1], method[GR_METHOD_NAME_MAX + 1];
            memcpy(cls, f.u.request.class_name, f.u.request.class_len);
            cls[f.u.request.class_len] = '\0';
            memcpy(method, f.u.request.method, f.u.request.method_len);
            method[f.u.request.method_len] = '\0';
            if (!memchr(cls, 0, f.u.request.class_len) && !memchr(method, 0, f.u.request.method_len)) {
                gr__buf_t b;
                gr__buf_init(&b);
                if (gr__frame_encode_request(&b, f.type, f.id, f.u.request.timeout_ms, cls, f.u.request.key,
                                             f.u.request.key_len, method, f.u.request.arg,
                                             f.u.request.arg_len) == 0) {
                    b.data[7] = f.flags;
                    assert(b.len == used && memcmp(b.data, data + off, used) == 0);
                }
                gr__buf_free(&b);
            }
        }
        off += used;
    }
    return 0;
}
