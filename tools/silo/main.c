/* tools/silo/main.c - the stock `silo` binary: grain classes come from --grains. */
#include "granary/silo_main.h"

int main(int argc, char **argv) { return gr_silo_main(argc, argv, NULL); }
