/* Embedding keel: a durable counter type in a few lines. */
#include <stdio.h>
#include <string.h>
#include "keel.h"

static int hits(keel_turn *t, const void *msg, size_t len)
{
    const void *st; size_t n; unsigned long long v = 0;
    keel_turn_state(t, &st, &n);
    if (n == sizeof v) memcpy(&v, st, sizeof v);
    v++;
    keel_turn_set_state(t, &v, sizeof v);       /* durable before the reply */
    return keel_turn_replyf(t, "%llu", v);
}

int main(int argc, char **argv)
{
    keel_node_options o; keel_node *node; void *reply; size_t len;
    keel_actor_type type = {.name = "hits", .on_message = hits};
    keel_node_options_init(&o);
    o.data_dir = argc > 1 ? argv[1] : "hits-data";
    if (keel_node_create(&o, &node, NULL, 0) != 0) return 1;
    keel_node_register_type(node, &type);
    keel_node_start(node);                      /* loop on its own thread */
    int rc = keel_call_sync(node, "hits", "home", 4, "", 0, &reply, &len);
    if (rc == 0) printf("home page hits: %.*s\n", (int)len, (char *)reply);
    keel_free(reply);
    keel_node_stop(node); keel_node_join(node); keel_node_destroy(node);
    return rc == 0 ? 0 : 1;
}
