/* src/storage/claim.h - activation claims (docs/directory.md, "Single
 * activation"), for the grain runtime. A provider either stores claims (the
 * PostgreSQL one, in granary_activation) or has no other silo to share with
 * (the memory one: every claim is granted, release does nothing). */
#ifndef GR_PERSISTENCE_CLAIM_H
#define GR_PERSISTENCE_CLAIM_H

#include "granary/storage.h"

/* Claim (cls, key) for silo incarnation `owner` with `token` (a number that
 * tells this activation apart from the owner's earlier ones) and read its
 * state, in one statement. The claim is granted when nobody holds it, when
 * `owner` holds it already, or when its holder is dead and silent for longer
 * than its lease. cb runs once, later: status 0 with the state as for
 * gr_storage_read (the claim is granted); GR_ENOTHERE with `detail` = the
 * holder's silo id ("" if it could not be read) when another silo holds it;
 * GR_ESTORAGE with `detail` on failure (the claim's outcome is then unknown:
 * the owner may hold it). Returns 0, or GR_EINVAL / GR_ETOOBIG / GR_ESHUTDOWN /
 * GR_ENOMEM (cb never runs). Strings and key are copied. */
int gr__storage_claim(gr_storage_t *st, const char *class_name, const void *key, size_t key_len,
                      const char *owner, int64_t token, gr_storage_read_cb cb, void *ud);

/* Give up the claim of activation `token` of `owner` on (cls, key), if it
 * still holds it; fire and forget (a release that fails leaves the claim
 * with its owner, which can activate the grain again, and others are sent
 * to it). Returns 0, or GR_EINVAL / GR_ETOOBIG / GR_ESHUTDOWN / GR_ENOMEM. */
int gr__storage_release(gr_storage_t *st, const char *class_name, const void *key, size_t key_len,
                        const char *owner, int64_t token);

/* Live migration (docs/migration.md): move the claim of (cls, key) from
 * activation `from_token` of silo `from` to activation `token` of `owner`,
 * only if that activation holds it still. cb runs once, possibly inside
 * this call: 0 (owner holds it now), GR_ENOTHERE (the source did not hold
 * it: nothing changed), GR_ECANCELED (never sent: nothing changed; storage
 * closing or out of memory), GR_ESTORAGE with `detail` (outcome unknown:
 * the transfer may have committed). Returns 0, or GR_EINVAL (bad
 * arguments, or a provider without claims) / GR_ETOOBIG / GR_ESHUTDOWN /
 * GR_ENOMEM (cb never runs). Strings and key are copied. */
typedef void (*gr__transfer_cb)(void *ud, int status, const char *detail);
int gr__storage_transfer(gr_storage_t *st, const char *class_name, const void *key, size_t key_len,
                         const char *from, int64_t from_token, const char *owner, int64_t token,
                         gr__transfer_cb cb, void *ud);

#endif
