#include "entries.h"
#include "plugnum.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

long tu_entry_num(keel_turn *t, const char *key)
{
    return tu_plug_num(t, key);
}

int tu_entry_set(keel_turn *t, const char *key, long v)
{
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%ld", v);

    return keel_turn_put(t, key, strlen(key), buf, (size_t)n);
}
