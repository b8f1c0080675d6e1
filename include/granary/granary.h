/* granary/granary.h - the umbrella header: include this one. */
#ifndef GRANARY_H
#define GRANARY_H

#include "granary/common.h"
#include "granary/error.h"
#include "granary/storage.h"
#include "granary/grain.h"
#include "granary/silo.h"
#include "granary/client.h"

#endif
