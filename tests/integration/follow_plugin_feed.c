/* A plugin for test_follow: an actor type whose turns choose event
 * payloads for its followers (keel_turn_event), with or without changing
 * the state, so that a test can tell what each kind of subscriber gets.
 *
 * "feed" (the argument is the rest of the message after one space):
 *   add TEXT     state TEXT, event "added TEXT"
 *   state TEXT   state TEXT, no event
 *   emit TEXT    event TEXT, state unchanged
 *   twice A B    event A, then event B in the same turn (the last goes)
 *   fail TEXT    event TEXT, then the turn fails (KEEL_EBADMSG)
 *   big N        event of N bytes 'x'; replies keel_turn_event's result
 *   keep N       event "kept", then one of N bytes; replies the second
 *                call's result (the first stands when it fails)
 *   put K        entry K (value "v"), no state blob, no event */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel.h"

KEEL_PLUGIN_DECLARE_ABI;

/* Whether msg begins with the word w and a space; *arg the rest. */
static int cmd(const char *msg, size_t len, const char *w, const char **arg,
               size_t *alen)
{
    size_t wl = strlen(w);

    if (len <= wl || memcmp(msg, w, wl) != 0 || msg[wl] != ' ')
        return 0;
    *arg = msg + wl + 1;
    *alen = len - wl - 1;
    return 1;
}

/* An event of n bytes 'x' and the turn's reply: keel_turn_event's code. */
static int big_event(keel_turn *t, const char *arg, size_t alen)
{
    char num[24];
    size_t n;
    char *p;
    int rc;

    if (alen == 0 || alen >= sizeof num)
        return KEEL_EBADMSG;
    memcpy(num, arg, alen);
    num[alen] = '\0';
    n = strtoul(num, NULL, 10);
    p = malloc(n > 0 ? n : 1);
    if (p == NULL)
        return KEEL_ENOMEM;
    memset(p, 'x', n);
    rc = keel_turn_event(t, p, n);
    free(p);
    return keel_turn_replyf(t, "%d", rc);
}

static int feed_message(keel_turn *t, const void *m, size_t len)
{
    const char *msg = m, *arg, *sp;
    size_t alen;
    char ev[300];
    int rc, n;

    if (cmd(msg, len, "add", &arg, &alen)) {
        n = snprintf(ev, sizeof ev, "added %.*s", (int)alen, arg);
        rc = keel_turn_set_state(t, arg, alen);
        return rc != 0 ? rc : keel_turn_event(t, ev, (size_t)n);
    }
    if (cmd(msg, len, "state", &arg, &alen))
        return keel_turn_set_state(t, arg, alen);
    if (cmd(msg, len, "emit", &arg, &alen))
        return keel_turn_event(t, arg, alen);
    if (cmd(msg, len, "twice", &arg, &alen)) {
        sp = memchr(arg, ' ', alen);
        if (sp == NULL)
            return KEEL_EBADMSG;
        rc = keel_turn_event(t, arg, (size_t)(sp - arg));
        return rc != 0 ? rc
                       : keel_turn_event(t, sp + 1,
                                         alen - (size_t)(sp - arg) - 1);
    }
    if (cmd(msg, len, "fail", &arg, &alen)) {
        rc = keel_turn_event(t, arg, alen);
        if (rc != 0)
            return rc;
        keel_turn_error(t, "failing on purpose");
        return KEEL_EBADMSG;
    }
    if (cmd(msg, len, "big", &arg, &alen))
        return big_event(t, arg, alen);
    if (cmd(msg, len, "keep", &arg, &alen)) {
        rc = keel_turn_event(t, "kept", 4);
        return rc != 0 ? rc : big_event(t, arg, alen);
    }
    if (cmd(msg, len, "put", &arg, &alen))
        return keel_turn_put(t, arg, alen, "v", 1);
    keel_turn_error(t, "unknown feed command");
    return KEEL_EBADMSG;
}

int keel_plugin_init(keel_node *node, const char *args);

KEEL_PLUGIN_EXPORT int keel_plugin_init(keel_node *node, const char *args)
{
    keel_actor_type feed = {.name = "feed", .on_message = feed_message};

    (void)args;
    return keel_node_register_type(node, &feed);
}
