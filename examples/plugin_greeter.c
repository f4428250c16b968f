/* An example plugin: `keeld --load plugin_greeter.so` adds the actor type
 * "greeter". `keel call greeter ann hello` replies "hello, ann (1)", and the
 * count survives restarts because it is the actor's state. Text after the
 * path, `--load plugin_greeter.so:good day`, replaces the greeting
 * ("good day, ann (1)"); the plugin logs the greeting it uses.
 *
 * It also shows the activation hooks: on_activate parses the persisted
 * state once into a C struct kept with the activation, on_passivate frees
 * it. Writes still go through keel_turn_set_state, so they are durable. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel.h"

/* The plugin was built against this keel.h's plugin ABI: keel checks it
 * before calling keel_plugin_init. */
KEEL_PLUGIN_DECLARE_ABI;

/* Set once by keel_plugin_init, before the node runs. */
static char greeting[128] = "hello";

struct greeter {
    unsigned long long count;
};

static int greeter_activate(keel_turn *t)
{
    struct greeter *g = calloc(1, sizeof *g);
    const void *st;
    size_t len;

    if (g == NULL)
        return KEEL_ENOMEM;
    keel_turn_state(t, &st, &len);
    if (len == sizeof g->count)
        memcpy(&g->count, st, sizeof g->count);
    *keel_turn_actor_data(t) = g;
    return 0;
}

static void greeter_passivate(keel_turn *t)
{
    free(*keel_turn_actor_data(t));
}

static int greeter_message(keel_turn *t, const void *msg, size_t len)
{
    struct greeter *g = *keel_turn_actor_data(t);
    unsigned long long next;
    const void *id;
    size_t idlen;
    int rc;

    if (len != 5 || memcmp(msg, "hello", 5) != 0) {
        keel_turn_error(t, "greeter understands only 'hello'");
        return KEEL_EBADMSG;
    }
    next = g->count + 1;
    rc = keel_turn_set_state(t, &next, sizeof next);
    if (rc != 0)
        return rc;
    /* The in-memory copy follows only once the turn cannot fail. */
    g->count = next;
    keel_turn_id(t, &id, &idlen);
    return keel_turn_replyf(t, "%s, %.*s (%llu)", greeting, (int)idlen,
                            (const char *)id, next);
}

int keel_plugin_init(keel_node *node, const char *args);

/* args, when given, is the greeting; it lives only during this call, so
 * it is copied. */
int keel_plugin_init(keel_node *node, const char *args)
{
    keel_actor_type type = {
        .name = "greeter",
        .on_message = greeter_message,
        .on_activate = greeter_activate,
        .on_passivate = greeter_passivate,
    };

    if (args != NULL && *args != '\0') {
        if (strlen(args) >= sizeof greeting) {
            keel_node_log(node, KEEL_LOG_ERROR,
                          "greeter: a greeting is at most %zu bytes",
                          sizeof greeting - 1);
            return KEEL_EINVAL;
        }
        strcpy(greeting, args);
    }
    keel_node_log(node, KEEL_LOG_INFO, "greeter: greeting \"%s\"",
                  greeting);
    return keel_node_register_type(node, &type);
}
