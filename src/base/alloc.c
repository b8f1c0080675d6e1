/* src/base/alloc.c - the one hookable allocator every Granary allocation uses,
 * so tests can inject failures and embedders can route memory. */
#include <stdlib.h>

#include "base/base.h"

static struct {
    void *(*malloc_fn)(size_t);
    void *(*realloc_fn)(void *, size_t);
    void *(*calloc_fn)(size_t, size_t);
    void (*free_fn)(void *);
} gr__allocator = {malloc, realloc, calloc, free};

int gr__uthash_oom = 0;

int gr_replace_allocator(void *(*malloc_fn)(size_t), void *(*realloc_fn)(void *, size_t),
                         void *(*calloc_fn)(size_t, size_t), void (*free_fn)(void *)) {
    if (!malloc_fn || !realloc_fn || !calloc_fn || !free_fn) return GR_EINVAL;
    gr__allocator.malloc_fn = malloc_fn;
    gr__allocator.realloc_fn = realloc_fn;
    gr__allocator.calloc_fn = calloc_fn;
    gr__allocator.free_fn = free_fn;
    return 0;
}

const char *gr_version(void) { return GR_VERSION_STRING; }

/* malloc(0) may return NULL legitimately; asking for at least one byte keeps
 * "NULL means out of memory" true everywhere. */
void *gr__malloc(size_t n) { return gr__allocator.malloc_fn(n ? n : 1); }
void *gr__calloc(size_t n, size_t m) { return gr__allocator.calloc_fn(n ? n : 1, m ? m : 1); }
void *gr__realloc(void *p, size_t n) { return gr__allocator.realloc_fn(p, n ? n : 1); }
void gr__free(void *p) {
    if (p) gr__allocator.free_fn(p);
}

char *gr__strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = gr__malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

void *gr__memdup(const void *p, size_t n) {
    void *q = gr__malloc(n);
    if (q && n) memcpy(q, p, n);
    return q;
}

int gr__hash_oom(void) {
    int v = gr__uthash_oom;
    gr__uthash_oom = 0;
    return v;
}
