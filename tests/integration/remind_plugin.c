/* A plugin for the reminder tests (test_reminders_crash,
 * test_cluster_reminders): an actor type that sets reminders on request
 * and counts, in its own state, each firing by name, so that a test can
 * tell a reminder lost or fired twice.
 *
 * "rem":
 *   set NAME DUE PERIOD MSG  keel_turn_remind(NAME, DUE ms, PERIOD ms, MSG)
 *   unset NAME               keel_turn_unremind(NAME)
 *   count NAME               how many times NAME fired (committed)
 *   last                     "NAME:MSG" of the last firing
 * A firing (keel_turn_reminder not NULL) adds one to "n:NAME" and keeps
 * "NAME:MSG" as "last". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel.h"
#include "plugnum.h"

KEEL_PLUGIN_DECLARE_ABI;

static int rem_message(keel_turn *t, const void *msg, size_t len)
{
    char m[256], name[130], text[128], key[140], last[300];
    unsigned long due, period;
    const char *rname;
    size_t rl;
    int n;

    rname = keel_turn_reminder(t, &rl);
    if (rname != NULL) {
        n = snprintf(last, sizeof last, "%.*s:%.*s", (int)rl, rname,
                     (int)len, (const char *)msg);
        snprintf(key, sizeof key, "n:%.*s", (int)rl, rname);
        snprintf(text, sizeof text, "%ld", tu_plug_num(t, key) + 1);
        if (keel_turn_put(t, key, strlen(key), text, strlen(text)) != 0)
            return KEEL_ENOMEM;
        return keel_turn_put(t, "last", 4, last, (size_t)n);
    }
    if (len >= sizeof m)
        return KEEL_EBADMSG;
    memcpy(m, msg, len);
    m[len] = '\0';
    if (sscanf(m, "set %128s %lu %lu %127s", name, &due, &period, text) == 4)
        return keel_turn_remind(t, name, strlen(name), due, period, text,
                                strlen(text));
    if (sscanf(m, "unset %128s", name) == 1)
        return keel_turn_unremind(t, name, strlen(name));
    if (sscanf(m, "count %128s", name) == 1) {
        snprintf(key, sizeof key, "n:%s", name);
        return keel_turn_replyf(t, "%ld", tu_plug_num(t, key));
    }
    if (strcmp(m, "last") == 0) {
        const void *v = NULL;
        size_t vl = 0;
        keel_turn_get(t, "last", 4, &v, &vl);
        return keel_turn_reply(t, v, vl);
    }
    return KEEL_EBADMSG;
}

int keel_plugin_init(keel_node *node, const char *args);

KEEL_PLUGIN_EXPORT int keel_plugin_init(keel_node *node, const char *args)
{
    keel_actor_type rem = {.name = "rem", .on_message = rem_message};

    (void)args;
    return keel_node_register_type(node, &rem);
}
