/* examples/counter/counter.h - the Counter grain class. */
#ifndef GR_EXAMPLE_COUNTER_H
#define GR_EXAMPLE_COUNTER_H

#include <granary/granary.h>

/* Counter: state is the count in decimal text.
 *   incr      adds 1 (or the decimal ARG), persisted before the reply; replies the new value
 *   incr_once ARG = CLIENT-SEQ: adds 1 unless that client's SEQ (or a later one) was
 *             applied already, so retries of a lost reply never count twice
 *   get       replies the value
 *   where     replies the id of the silo hosting this activation
 *   sleep     replies after ARG milliseconds (tests of timeouts and drain)
 *   reset     deletes the stored row (committed before the reply "0")
 *   deactivate  replies "ok", then the activation deactivates once idle
 *   relay     ARG = "KEY METHOD [ARG]": calls Counter/KEY and relays its reply
 *   remind    ARG = "NAME DUE_MS PERIOD_MS": a durable reminder; each firing adds 1
 *   forget    ARG = NAME: deletes that reminder;  reminders: lists them
 * "where" interleaves (runs even while the grain waits on another call). */
extern const gr_class_t counter_class;

/* HashCounter and RandomCounter: Counter's methods and state, placed on the
 * grain's hash-ring owner or on a random silo instead of where the call
 * entered (gr_class_t.placement). */
extern const gr_class_t hash_counter_class;
extern const gr_class_t random_counter_class;

/* Checksum, a stateless worker: sum replies the FNV-1a 64 hash of ARG in hex;
 * where replies the silo that served the call (always the one it entered). */
extern const gr_class_t checksum_class;

#endif
