/* tests/fuzz/gen_seeds.c - writes the seed corpus: one file per kind of
 * valid frame, and a pipelined session. Run once; the files are committed. */
#include <stdio.h>

#include "wire/frame.h"

static void put(const char *dir, const char *name, const gr__buf_t *b) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    fwrite(b->data, 1, b->len, f);
    fclose(f);
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : ".";
    gr__buf_t b;
    gr__buf_init(&b);
    gr__frame_encode_hello(&b, 1, GR__ROLE_CLIENT, "default", "s3cret", 6, "client");
    put(dir, "hello.bin", &b);
    b.len = 0;
    gr__frame_encode_hello_ok(&b, 1, "127.0.0.1:7700-1");
    put(dir, "hello_ok.bin", &b);
    b.len = 0;
    gr__frame_encode_request(&b, GR__FRAME_REQUEST, 7, 5000, "Counter", "user-42", 7, "incr", "", 0);
    put(dir, "request.bin", &b);
    b.len = 0;
    gr__frame_encode_response(&b, GR__FRAME_RESPONSE, 7, 0, "42", 2);
    put(dir, "response.bin", &b);
    b.len = 0;
    gr__frame_encode_response(&b, GR__FRAME_GOAWAY, 0, GR_ESHUTDOWN, "bye", 3);
    put(dir, "goaway.bin", &b);
    b.len = 0;
    gr__frame_encode_hello(&b, 1, GR__ROLE_SILO, "default", "", 0, "silo-a");
    gr__frame_encode_empty(&b, GR__FRAME_PING, 1);
    gr__frame_encode_request(&b, GR__FRAME_ONEWAY, 2, 100, "$dir", "Counter\0k", 9, "unregister", "silo-a",
                             6);
    gr__frame_encode_request(&b, GR__FRAME_REQUEST, 3, 100, "Counter", "\0\xff'", 3, "get", NULL, 0);
    put(dir, "session.bin", &b);
    gr__buf_free(&b);
    return 0;
}
