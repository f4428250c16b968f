/* A plugin for the dead-letter tests (test_dead_letters,
 * test_cluster_dead_letters): an actor type whose handler can be broken
 * and fixed, so that the messages the runtime delivers to it (from an
 * outbox, from a reminder) are refused until it is fixed.
 *
 * "svc":
 *   send ID MSG           keel_turn_send("svc", ID, MSG)
 *   sendto TYPE ID MSG    keel_turn_send(TYPE, ID, MSG), its error (a
 *                         type not registered: KEEL_ENOTYPE) returned
 *   sendn ID N            N messages "work K" (K = 1..N) to svc/ID
 *   remind NAME DUE MSG   keel_turn_remind(NAME, DUE ms, one-shot, MSG)
 *   break / fix           from now on, refuse / take "work" messages
 *   work X                refused (KEEL_EHANDLER, "broken") while broken;
 *                         otherwise counts it and keeps X as "last"
 *   get                   "done N last X"
 * Loaded with an argument (--load dead_plugin.so:CAP), svc requires
 * capability CAP (test_cluster_capless). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel.h"
#include "plugnum.h"

KEEL_PLUGIN_DECLARE_ABI;

static int svc_message(keel_turn *t, const void *msg, size_t len)
{
    char m[256], a[130], b[128], text[32];
    const void *last;
    size_t ll;
    unsigned long due;
    int n;

    if (len >= sizeof m)
        return KEEL_EBADMSG;
    memcpy(m, msg, len);
    m[len] = '\0';
    if (sscanf(m, "sendn %127s %lu", a, &due) == 2 && due <= 1000) {
        for (unsigned long k = 1; k <= due; k++) {
            int rc;
            n = snprintf(text, sizeof text, "work %lu", k);
            rc = keel_turn_send(t, "svc", a, strlen(a), text, (size_t)n);
            if (rc != 0)
                return rc;
        }
        return 0;
    }
    {
        char ty[64];
        if (sscanf(m, "sendto %63s %127s %127[^\n]", ty, a, b) == 3)
            return keel_turn_send(t, ty, a, strlen(a), b, strlen(b));
    }
    if (sscanf(m, "send %127s %127[^\n]", a, b) == 2)
        return keel_turn_send(t, "svc", a, strlen(a), b, strlen(b));
    if (sscanf(m, "remind %128s %lu %127[^\n]", a, &due, b) == 3)
        return keel_turn_remind(t, a, strlen(a), due, 0, b, strlen(b));
    if (strcmp(m, "break") == 0 || strcmp(m, "fix") == 0)
        return keel_turn_put(t, "broken", 6, m[0] == 'b' ? "1" : "0", 1);
    if (strncmp(m, "work ", 5) == 0) {
        if (tu_plug_num(t, "broken") == 1) {
            keel_turn_error(t, "broken");
            return KEEL_EHANDLER;
        }
        n = snprintf(text, sizeof text, "%ld", tu_plug_num(t, "done") + 1);
        if (keel_turn_put(t, "done", 4, text, (size_t)n) != 0)
            return KEEL_ENOMEM;
        return keel_turn_put(t, "last", 4, m + 5, len - 5);
    }
    if (strcmp(m, "get") == 0) {
        if (keel_turn_get(t, "last", 4, &last, &ll) != 0) {
            last = "-";
            ll = 1;
        }
        return keel_turn_replyf(t, "done %ld last %.*s",
                                tu_plug_num(t, "done"), (int)ll,
                                (const char *)last);
    }
    return KEEL_EBADMSG;
}

int keel_plugin_init(keel_node *node, const char *args);

/* args, when given: the capability svc requires (test_cluster_capless). */
KEEL_PLUGIN_EXPORT int keel_plugin_init(keel_node *node, const char *args)
{
    keel_actor_type svc = {
        .name = "svc",
        .on_message = svc_message,
        .capability = args != NULL && args[0] != '\0' ? args : NULL,
    };

    return keel_node_register_type(node, &svc);
}
