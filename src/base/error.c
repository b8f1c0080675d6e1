/* src/base/error.c - gr_strerror() and friends, generated from GR_ERRNO_MAP. */
#include "base/base.h"

const char *gr_strerror(int err) {
    if (err == 0) return "success";
    switch (err) {
#define GR__ERR_MSG(name, val, msg)                                                                          \
    case (val):                                                                                              \
        return msg;
        GR_ERRNO_MAP(GR__ERR_MSG)
#undef GR__ERR_MSG
    default:
        return "unknown error";
    }
}

const char *gr_err_name(int err) {
    if (err == 0) return "GR_OK";
    switch (err) {
#define GR__ERR_NAME(name, val, msg)                                                                         \
    case (val):                                                                                              \
        return "GR_" #name;
        GR_ERRNO_MAP(GR__ERR_NAME)
#undef GR__ERR_NAME
    default:
        return "GR_UNKNOWN";
    }
}

int gr_err_retryable(int err) {
    switch (err) {
    case GR_ETIMEDOUT:
    case GR_ECONFLICT:
    case GR_ESTORAGE:
    case GR_ECONN:
    case GR_ENOTHERE:
    case GR_EOVERLOAD:
    case GR_ESHUTDOWN:
    case GR_ESTATEVERSION:
        return 1;
    default:
        return 0;
    }
}
