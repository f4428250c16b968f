/* A plugin for test_chaos_plugin: the actor type "tally", a counter of
 * one's own that answers as the built-in counter does (`incr N` with the
 * new value, `get`), so that keel-chaos run --load ... --workload-type
 * tally --workload counter checks it against the counter model. Its state
 * is the value as 8 bytes, little-endian. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keel.h"

KEEL_PLUGIN_DECLARE_ABI;

static int64_t value_of(keel_turn *t)
{
    const void *st;
    size_t len;
    uint64_t v = 0;
    int k;

    keel_turn_state(t, &st, &len);
    if (len != 8)
        return 0;
    for (k = 7; k >= 0; k--)
        v = v << 8 | ((const unsigned char *)st)[k];
    return (int64_t)v;
}

static int tally_message(keel_turn *t, const void *msg, size_t len)
{
    char buf[32], *end;
    unsigned char st[8];
    long long n;
    int64_t v = value_of(t);
    uint64_t u;
    int k, rc;

    if (len == 3 && memcmp(msg, "get", 3) == 0)
        return keel_turn_replyf(t, "%lld", (long long)v);
    if (len < 6 || len - 5 >= sizeof buf || memcmp(msg, "incr ", 5) != 0) {
        keel_turn_error(t, "tally understands 'incr N' and 'get'");
        return KEEL_EBADMSG;
    }
    memcpy(buf, (const char *)msg + 5, len - 5);
    buf[len - 5] = '\0';
    errno = 0;
    n = strtoll(buf, &end, 10);
    if (errno != 0 || *end != '\0' || end == buf) {
        keel_turn_error(t, "tally: not a number");
        return KEEL_EBADMSG;
    }
    v += n;
    u = (uint64_t)v;
    for (k = 0; k < 8; k++)
        st[k] = (unsigned char)(u >> (8 * k));
    rc = keel_turn_set_state(t, st, sizeof st);
    if (rc != 0)
        return rc;
    return keel_turn_replyf(t, "%lld", (long long)v);
}

int keel_plugin_init(keel_node *node, const char *args);

int keel_plugin_init(keel_node *node, const char *args)
{
    keel_actor_type type = {.name = "tally", .on_message = tally_message};

    (void)args;
    return keel_node_register_type(node, &type);
}
