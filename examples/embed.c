/* Embedding keel: a durable counter type in a few lines. */
#include <stdio.h>
#include <string.h>
#include "keel.h"

static int hits(keel_turn *t, const void *msg, size_t len)
{
    const void *st; size_t n; unsigned long long v = 0;
    (void)msg; (void)len;                       /* every message counts a hit */
    keel_turn_state(t, &st, &n);
    if (n == sizeof v) memcpy(&v, st, sizeof v);
    v++;
    int rc = keel_turn_set_state(t, &v, sizeof v); /* durable before the reply */
    if (rc != 0) return rc;                     /* the turn fails, nothing kept */
    return keel_turn_replyf(t, "%llu", v);
}

int main(int argc, char **argv)
{
    keel_node_options o; keel_node *node; void *reply; size_t len;
    char err[256];
    keel_actor_type type = {.name = "hits", .on_message = hits};
    keel_node_options_init(&o);
    o.data_dir = argc > 1 ? argv[1] : "hits-data";
    if (keel_node_create(&o, &node, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (keel_node_register_type(node, &type) != 0 || keel_node_start(node) != 0)
        return 1;                               /* the loop runs on its own thread */
    int rc = keel_call_sync(node, "hits", "home", 4, "", 0, &reply, &len);
    if (rc == 0) printf("home page hits: %.*s\n", (int)len, (char *)reply);
    else fprintf(stderr, "%s: %.*s\n", keel_err_name(rc), (int)len, (char *)reply);
    keel_free(reply);                           /* the reply, or the error's text */
    keel_node_stop(node); keel_node_join(node); keel_node_destroy(node);
    return rc == 0 ? 0 : 1;
}
