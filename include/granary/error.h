/* granary/error.h - the one error space of Granary.
 *
 * Every function that can fail returns int: 0 on success or a negative GR_E*
 * code. The table below is the single source for the enum, gr_strerror() and
 * gr_err_name(); codes are stable and also travel on the wire.
 */
#ifndef GRANARY_ERROR_H
#define GRANARY_ERROR_H

#include "granary/common.h"

/* X(name, value, message), in order of decreasing value (a unit test checks
 * it). Values are part of the wire protocol: never reuse one. -19 is
 * retired: it was the decoders' "need more data", which never reaches a
 * caller or the wire and is now internal. */
#define GR_ERRNO_MAP(X)                                                                                      \
    X(EINVAL, -1, "invalid argument")                                                                        \
    X(ENOMEM, -2, "out of memory")                                                                           \
    X(ETIMEDOUT, -3, "call timed out")                                                                       \
    X(ECANCELED, -4, "operation canceled")                                                                   \
    X(ENOCLASS, -5, "unknown grain class")                                                                   \
    X(ENOMETHOD, -6, "unknown method")                                                                       \
    X(EAPP, -7, "grain replied with an application error")                                                   \
    X(ECONFLICT, -8, "storage version conflict (another activation wrote first)")                            \
    X(ESTORAGE, -9, "storage unavailable or failed (retryable)")                                             \
    X(EPROTO, -10, "protocol error (malformed frame)")                                                       \
    X(ETOOBIG, -11, "too large (frame, key, name or state over its limit)")                                  \
    X(ECONN, -12, "connection failed or closed")                                                             \
    X(EVERSION, -13, "protocol version not supported")                                                       \
    X(EAUTH, -14, "handshake refused (wrong cluster name, secret or certificate)")                           \
    X(ENOTHERE, -15, "grain is not hosted here (retryable)")                                                 \
    X(EOVERLOAD, -16, "overloaded: queue limit reached (retryable)")                                         \
    X(ESHUTDOWN, -17, "silo is shutting down (retryable)")                                                   \
    X(EACTIVATE, -18, "grain activation failed")                                                             \
    X(EEXIST, -20, "already exists")                                                                         \
    X(ENOENT, -21, "not found")                                                                              \
    X(EIO, -22, "i/o error")                                                                                 \
    X(ECONFIG, -23, "invalid configuration")                                                                 \
    X(EBUSY, -24, "resource busy")                                                                           \
    X(ESTATE, -25, "operation not valid in the current state")                                               \
    X(EDEADLOCK, -26, "call cycle would deadlock a non-reentrant grain")                                     \
    X(ESTATEVERSION, -27, "stored state is newer than this silo's class (retryable)")

typedef enum gr_errno {
#define GR__ERR_ENUM(name, val, msg) GR_##name = (val),
    GR_ERRNO_MAP(GR__ERR_ENUM)
#undef GR__ERR_ENUM
        GR__ERRNO_END,               /* the last entry's value + 1: the table is in decreasing order */
    GR_ERRNO_MIN = GR__ERRNO_END - 1 /* the lowest code; every GR_E* lies in [GR_ERRNO_MIN, -1] */
} gr_errno_t;

/** Return a static, human-readable message for a GR_E* code (or "unknown
 * error" for a value outside the table). Never NULL; thread-safe; the string
 * lives forever. 0 gives "success". */
GR_EXTERN const char *gr_strerror(int err);

/** Return the symbolic name of a GR_E* code, e.g. "GR_ETIMEDOUT" (or
 * "GR_UNKNOWN"). Never NULL; the string lives forever. */
GR_EXTERN const char *gr_err_name(int err);

/** Return 1 if a caller may retry the operation that failed with `err`
 * (a different silo, a later attempt or a re-resolved route may succeed),
 * else 0. */
GR_EXTERN int gr_err_retryable(int err);

#endif
