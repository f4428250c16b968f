#include "entries.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

long tu_entry_num(keel_turn *t, const char *key)
{
    const void *v;
    size_t vl;
    char buf[32];

    if (keel_turn_get(t, key, strlen(key), &v, &vl) != 0 || vl >= sizeof buf)
        return 0;
    memcpy(buf, v, vl);
    buf[vl] = '\0';
    return strtol(buf, NULL, 10);
}

int tu_entry_set(keel_turn *t, const char *key, long v)
{
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%ld", v);

    return keel_turn_put(t, key, strlen(key), buf, (size_t)n);
}
