/* examples/counter/counter_silo.c - a silo binary with the Counter class
 * linked in: the "link libgranary and call the entry point" way. */
#include "counter.h"
#include "granary/silo_main.h"

int main(int argc, char **argv) {
    static const gr_class_t *const classes[] = {&counter_class, &hash_counter_class, &random_counter_class,
                                                &checksum_class, NULL};
    return gr_silo_main(argc, argv, classes);
}
