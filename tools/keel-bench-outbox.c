/* The actor types of keel-bench's outbox workload (docs/benchmarks.md),
 * loaded by the keeld nodes it starts (keeld --load):
 *
 *   obsend  send ID...   queues with keel_turn_send one message to
 *                        obrecv ID for each ID, carrying the time it was
 *                        queued (CLOCK_MONOTONIC, the same clock for
 *                        every process of the machine); replies nothing
 *   obrecv  t NS         counts the message and the delay from NS to
 *                        now in its state (count, sum of the delays in
 *                        microseconds, a histogram of them)
 *           get          "count sum_us b0 b1 ... b<OB_BUCKETS-1>"
 *
 * Bucket k holds the delays d (microseconds) with floor(4 * log2(d)) = k
 * (d < 1: bucket 0): a quarter of an octave each, about 19 % wide. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keel.h"

KEEL_PLUGIN_DECLARE_ABI;

#define OB_BUCKETS 112 /* up to 2^28 us, some four and a half minutes */

struct recv_state {
    uint64_t count, sum_us;
    uint64_t b[OB_BUCKETS];
};

static uint64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int obsend_message(keel_turn *t, const void *msg, size_t len)
{
    const char *p = msg, *end = p + len;
    char out[32];
    int n, rc;

    if (len < 5 || memcmp(p, "send ", 5) != 0) {
        keel_turn_error(t, "obsend understands send ID...");
        return KEEL_EBADMSG;
    }
    n = snprintf(out, sizeof out, "t %llu", (unsigned long long)mono_ns());
    for (p += 5; p < end;) {
        const char *sp = memchr(p, ' ', (size_t)(end - p));
        size_t il = (size_t)((sp != NULL ? sp : end) - p);
        if (il > 0 &&
            (rc = keel_turn_send(t, "obrecv", p, il, out, (size_t)n)) != 0)
            return rc;
        p += il + (sp != NULL);
    }
    return 0;
}

static int obrecv_message(keel_turn *t, const void *msg, size_t len)
{
    struct recv_state st;
    const void *cur;
    size_t cl;
    char m[32], *text;
    unsigned long long sent;
    uint64_t now = mono_ns(), us;
    int k, off;

    keel_turn_state(t, &cur, &cl);
    memset(&st, 0, sizeof st);
    if (cl == sizeof st)
        memcpy(&st, cur, sizeof st);
    if (len == 3 && memcmp(msg, "get", 3) == 0) {
        size_t cap = 48 + OB_BUCKETS * 21;
        text = malloc(cap);
        if (text == NULL)
            return KEEL_ENOMEM;
        off = snprintf(text, cap, "%llu %llu", (unsigned long long)st.count,
                       (unsigned long long)st.sum_us);
        for (k = 0; k < OB_BUCKETS; k++)
            off += snprintf(text + off, cap - (size_t)off, " %llu",
                            (unsigned long long)st.b[k]);
        k = keel_turn_reply(t, text, (size_t)off);
        free(text);
        return k;
    }
    if (len >= sizeof m) {
        keel_turn_error(t, "obrecv understands t NS and get");
        return KEEL_EBADMSG;
    }
    memcpy(m, msg, len);
    m[len] = '\0';
    if (sscanf(m, "t %llu", &sent) != 1) {
        keel_turn_error(t, "obrecv understands t NS and get");
        return KEEL_EBADMSG;
    }
    us = now > sent ? (now - sent) / 1000u : 0;
    k = us < 1 ? 0 : (int)floor(4.0 * log2((double)us));
    if (k >= OB_BUCKETS)
        k = OB_BUCKETS - 1;
    st.count++;
    st.sum_us += us;
    st.b[k]++;
    return keel_turn_set_state(t, &st, sizeof st);
}

int keel_plugin_init(keel_node *node, const char *args);

KEEL_PLUGIN_EXPORT int keel_plugin_init(keel_node *node, const char *args)
{
    keel_actor_type snd = {.name = "obsend", .on_message = obsend_message};
    keel_actor_type rcv = {.name = "obrecv", .on_message = obrecv_message};
    int rc;

    (void)args;
    rc = keel_node_register_type(node, &snd);
    if (rc == 0)
        rc = keel_node_register_type(node, &rcv);
    return rc;
}
