/* An actor's entry read as a number, for the test plugins (dead_plugin.c,
 * outbox_plugin_bank.c, remind_plugin.c in tests/integration) and
 * tu_entry_num (entries.c). Header only: the plugins are modules of their own that link
 * nothing but what keeld exports, not the test support library. */
#ifndef KEEL_TEST_PLUGNUM_H
#define KEEL_TEST_PLUGNUM_H

#include <stdlib.h>
#include <string.h>

#include "keel.h"

/* The decimal number entry `key` of the turn's actor holds: 0 when there
 * is no such entry or it is too long to be one. */
static inline long tu_plug_num(keel_turn *t, const char *key)
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

#endif
