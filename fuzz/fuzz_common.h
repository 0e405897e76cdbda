/* What every fuzz target checks of a refusal: its message is escaped, so no
 * control character from the input reaches the terminal. */
#ifndef MOEVK_FUZZ_COMMON_H
#define MOEVK_FUZZ_COMMON_H

#include <stdlib.h>

static inline void message_is_clean(const char *err)
{
    for (const unsigned char *p = (const unsigned char *)err; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            abort();
}

#endif
