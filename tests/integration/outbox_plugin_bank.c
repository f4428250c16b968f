/* A plugin for the outbox tests (test_outbox_crash, test_cluster_outbox):
 * actors that send to each other with keel_turn_send and count, in their
 * own state, what they received, so that a test can tell a message lost,
 * handled twice or out of order.
 *
 * "acct": a bank account, entries as decimal text.
 *   xfer TO AMT [fail]  debits AMT and sends "credit AMT SELF SEQ" to acct
 *                       TO, SEQ counting the transfers from SELF to TO;
 *                       with "fail" the turn then fails (nothing of it may
 *                       stay or leave). Answers SEQ.
 *   credit AMT FROM SEQ adds AMT; SEQ must be one more than the last from
 *                       FROM: not above it counts a duplicate, above it
 *                       a gap.
 *   get                 "balance sent credits dups gaps"
 *   bigxfer TO N        sends a message of N bytes ("pad " and filler)
 *                       to acct TO
 *   pad ...             counts the message and its bytes
 *   pads                "count bytes" of the pad messages received
 *
 * "payer": sends to acct (another type than its own).
 *   pay TO AMT          sends "credit AMT SELF SEQ" to acct TO, as xfer
 *                       does; answers SEQ
 *
 * With the argument "noacct" (--load PATH:noacct) the plugin registers
 * payer and tok but not acct: a node running older code.
 *
 * "tok": a ring of actors "0".."R-1" passing tokens.
 *   tok R HOPS FROM SEQ handles a token (FROM "-": a client's, unchecked;
 *                       else SEQ checked as for credit) and, if HOPS > 0,
 *                       sends "tok R HOPS-1 SELF SEQ'" to its successor.
 *   get                 "handled dups gaps" */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel.h"
#include "plugnum.h"

KEEL_PLUGIN_DECLARE_ABI;

static int set(keel_turn *t, const char *key, long v)
{
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%ld", v);

    return keel_turn_put(t, key, strlen(key), buf, (size_t)n);
}

/* Checks SEQ against the last one from FROM and records it. */
static int check_seq(keel_turn *t, const char *from, long seq)
{
    char key[96];
    long last;

    snprintf(key, sizeof key, "last:%s", from);
    last = tu_plug_num(t, key);
    if (seq <= last)
        return set(t, "dups", tu_plug_num(t, "dups") + 1);
    if (seq > last + 1 && set(t, "gaps", tu_plug_num(t, "gaps") + 1) != 0)
        return KEEL_ENOMEM;
    return set(t, key, seq);
}

static int text(const void *msg, size_t len, char *m, size_t cap)
{
    if (len >= cap)
        return -1;
    memcpy(m, msg, len);
    m[len] = '\0';
    return 0;
}

static int acct_message(keel_turn *t, const void *msg, size_t len)
{
    char m[160], to[64], from[64], key[96], out[160];
    const void *self;
    size_t sl;
    long amt, seq;
    int n, rc;

    if (len >= 4 && memcmp(msg, "pad ", 4) == 0) {
        if ((rc = set(t, "pads", tu_plug_num(t, "pads") + 1)) != 0)
            return rc;
        return set(t, "padbytes", tu_plug_num(t, "padbytes") + (long)len);
    }
    if (text(msg, len, m, sizeof m) != 0)
        return KEEL_EBADMSG;
    keel_turn_id(t, &self, &sl);
    if (strcmp(m, "pads") == 0)
        return keel_turn_replyf(t, "%ld %ld", tu_plug_num(t, "pads"),
                                tu_plug_num(t, "padbytes"));
    if (sscanf(m, "bigxfer %63s %ld", to, &amt) == 2 && amt >= 4) {
        char *big = malloc((size_t)amt);
        if (big == NULL)
            return KEEL_ENOMEM;
        memset(big, 'x', (size_t)amt);
        memcpy(big, "pad ", 4);
        rc = keel_turn_send(t, "acct", to, strlen(to), big, (size_t)amt);
        free(big);
        return rc;
    }
    if (strcmp(m, "get") == 0)
        return keel_turn_replyf(t, "%ld %ld %ld %ld %ld",
                                tu_plug_num(t, "bal"), tu_plug_num(t, "sent"),
                                tu_plug_num(t, "credits"),
                                tu_plug_num(t, "dups"),
                                tu_plug_num(t, "gaps"));
    if (sscanf(m, "xfer %63s %ld", to, &amt) == 2 && sl < 64) {
        snprintf(key, sizeof key, "to:%s", to);
        seq = tu_plug_num(t, key) + 1;
        if ((rc = set(t, key, seq)) != 0 ||
            (rc = set(t, "sent", tu_plug_num(t, "sent") + 1)) != 0 ||
            (rc = set(t, "bal", tu_plug_num(t, "bal") - amt)) != 0)
            return rc;
        n = snprintf(out, sizeof out, "credit %ld %.*s %ld", amt, (int)sl,
                     (const char *)self, seq);
        rc = keel_turn_send(t, "acct", to, strlen(to), out, (size_t)n);
        if (rc != 0)
            return rc;
        if (strstr(m, " fail") != NULL) {
            keel_turn_error(t, "transfer failed as asked");
            return KEEL_EHANDLER;
        }
        return keel_turn_replyf(t, "%ld", seq);
    }
    if (sscanf(m, "credit %ld %63s %ld", &amt, from, &seq) == 3) {
        if ((rc = check_seq(t, from, seq)) != 0 ||
            (rc = set(t, "bal", tu_plug_num(t, "bal") + amt)) != 0)
            return rc;
        return set(t, "credits", tu_plug_num(t, "credits") + 1);
    }
    keel_turn_error(t, "acct understands xfer, credit and get");
    return KEEL_EBADMSG;
}

static int tok_message(keel_turn *t, const void *msg, size_t len)
{
    char m[160], from[64], next[32], key[96], out[160];
    const void *self;
    size_t sl;
    long ring, hops, seq, me, oseq;
    int n, rc;

    if (text(msg, len, m, sizeof m) != 0)
        return KEEL_EBADMSG;
    if (strcmp(m, "get") == 0)
        return keel_turn_replyf(t, "%ld %ld %ld",
                                tu_plug_num(t, "handled"),
                                tu_plug_num(t, "dups"),
                                tu_plug_num(t, "gaps"));
    if (sscanf(m, "tok %ld %ld %63s %ld", &ring, &hops, from, &seq) != 4 ||
        ring <= 0) {
        keel_turn_error(t, "tok understands 'tok R HOPS FROM SEQ' and get");
        return KEEL_EBADMSG;
    }
    keel_turn_id(t, &self, &sl);
    if (sl >= sizeof next)
        return KEEL_EBADMSG;
    memcpy(next, self, sl);
    next[sl] = '\0';
    me = strtol(next, NULL, 10);
    if (strcmp(from, "-") != 0 && (rc = check_seq(t, from, seq)) != 0)
        return rc;
    if ((rc = set(t, "handled", tu_plug_num(t, "handled") + 1)) != 0)
        return rc;
    if (hops <= 0)
        return 0;
    snprintf(next, sizeof next, "%ld", (me + 1) % ring);
    snprintf(key, sizeof key, "to:%s", next);
    oseq = tu_plug_num(t, key) + 1;
    if ((rc = set(t, key, oseq)) != 0)
        return rc;
    n = snprintf(out, sizeof out, "tok %ld %ld %ld %ld", ring, hops - 1, me,
                 oseq);
    return keel_turn_send(t, "tok", next, strlen(next), out, (size_t)n);
}

static int payer_message(keel_turn *t, const void *msg, size_t len)
{
    char m[160], to[64], key[96], out[160];
    const void *self;
    size_t sl;
    long amt, seq;
    int n, rc;

    if (text(msg, len, m, sizeof m) != 0)
        return KEEL_EBADMSG;
    keel_turn_id(t, &self, &sl);
    if (sscanf(m, "pay %63s %ld", to, &amt) != 2 || sl >= 64) {
        keel_turn_error(t, "payer understands 'pay TO AMT'");
        return KEEL_EBADMSG;
    }
    snprintf(key, sizeof key, "to:%s", to);
    seq = tu_plug_num(t, key) + 1;
    if ((rc = set(t, key, seq)) != 0)
        return rc;
    n = snprintf(out, sizeof out, "credit %ld %.*s %ld", amt, (int)sl,
                 (const char *)self, seq);
    rc = keel_turn_send(t, "acct", to, strlen(to), out, (size_t)n);
    return rc != 0 ? rc : keel_turn_replyf(t, "%ld", seq);
}

int keel_plugin_init(keel_node *node, const char *args);

KEEL_PLUGIN_EXPORT int keel_plugin_init(keel_node *node, const char *args)
{
    keel_actor_type acct = {.name = "acct", .on_message = acct_message};
    keel_actor_type tok = {.name = "tok", .on_message = tok_message};
    keel_actor_type payer = {.name = "payer", .on_message = payer_message};
    int rc = 0;

    if (args == NULL || strcmp(args, "noacct") != 0)
        rc = keel_node_register_type(node, &acct);
    if (rc == 0)
        rc = keel_node_register_type(node, &tok);
    if (rc == 0)
        rc = keel_node_register_type(node, &payer);
    return rc;
}
