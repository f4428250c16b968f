/* The durable outbox inside one node (runtime/outbox.c, keel_turn_send):
 * a failed turn sends nothing and a committed one delivers once; a
 * redelivered message is answered without running the handler again; a
 * message the receiver refuses becomes a dead letter and the next one
 * goes; messages waiting when the node stops are delivered, in order,
 * after it starts again; a turn whose commit fails sends nothing; bad
 * arguments get typed errors. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keel.h"
#include "runtime/node.h"
#include "persistence/store.h"
#include "gates.h"
#include "runtime/deadletters.h"
#include "runtime/outbox.h"
#include "runtime/proto.h"
#include "common/be.h"
#include "entries.h"
#include "testutil.h"

static char *dir;
/* Written on the loop thread, read by the test thread once the loop is
 * quiet (polled with sync calls, which order them). */
static int credit_runs;
static int flaky_down;
static char flaky_seen[256];
/* moody/r's activations fail while moody_fails > 0 (each one counts it
 * down); what moody/r took is appended to moody_seen. */
static int moody_fails;
static char moody_seen[256];

static void setup(void)
{
    dir = tu_tmpdir("outbox");
    credit_runs = 0;
    flaky_down = 0;
    flaky_seen[0] = '\0';
    moody_fails = 0;
    moody_seen[0] = '\0';
}

static void teardown(void)
{
    tu_rmrf(dir);
    free(dir);
}

/* acct: "xfer TO AMT [fail]" debits itself and sends "credit AMT SELF SEQ"
 * to acct TO (SEQ counts its transfers); "credit AMT FROM SEQ" adds AMT
 * and checks SEQ follows the last one from FROM; "get" answers
 * "balance sent credits bad". */
static int acct_message(keel_turn *t, const void *msg, size_t len)
{
    char m[128], to[32], from[64], key[80], cmsg[128];
    const void *self;
    size_t sl;
    long amt, seq, sent;
    int rc, n;

    if (len >= sizeof m)
        return KEEL_EBADMSG;
    memcpy(m, msg, len);
    m[len] = '\0';
    if (strcmp(m, "get") == 0)
        return keel_turn_replyf(t, "%ld %ld %ld %ld", tu_entry_num(t, "bal"),
                                tu_entry_num(t, "sent"),
                                tu_entry_num(t, "credits"),
                                tu_entry_num(t, "bad"));
    if (sscanf(m, "xfer %31s %ld", to, &amt) == 2) {
        keel_turn_id(t, &self, &sl);
        sent = tu_entry_num(t, "sent") + 1;
        tu_entry_set(t, "bal", tu_entry_num(t, "bal") - amt);
        tu_entry_set(t, "sent", sent);
        n = snprintf(cmsg, sizeof cmsg, "credit %ld %.*s %ld", amt, (int)sl,
                     (const char *)self, sent);
        rc = keel_turn_send(t, "acct", to, strlen(to), cmsg, (size_t)n);
        if (rc != 0)
            return rc;
        if (strstr(m, " fail") != NULL)
            return KEEL_EHANDLER;
        return 0;
    }
    if (sscanf(m, "credit %ld %63s %ld", &amt, from, &seq) == 3) {
        credit_runs++;
        snprintf(key, sizeof key, "last:%s", from);
        if (tu_entry_num(t, key) != seq - 1)
            tu_entry_set(t, "bad", tu_entry_num(t, "bad") + 1);
        tu_entry_set(t, key, seq);
        tu_entry_set(t, "bal", tu_entry_num(t, "bal") + amt);
        return tu_entry_set(t, "credits", tu_entry_num(t, "credits") + 1);
    }
    return KEEL_EBADMSG;
}

/* flaky: while flaky_down, every message fails KEEL_EUNAVAIL (sent again
 * later); "bad" is refused with KEEL_EBADMSG; anything else is appended
 * to flaky_seen. "send TEXT" (to any actor) queues TEXT for flaky/r, "two A
 * B" queues A and B. */
static int flaky_message(keel_turn *t, const void *msg, size_t len)
{
    if (len > 5 && memcmp(msg, "send ", 5) == 0)
        return keel_turn_send(t, "flaky", "r", 1, (const char *)msg + 5,
                              len - 5);
    if (len > 4 && memcmp(msg, "two ", 4) == 0) {
        /* "two A B": A and B from one turn */
        const char *a = (const char *)msg + 4;
        const char *sp = memchr(a, ' ', len - 4);
        int rc;
        if (sp == NULL)
            return KEEL_EBADMSG;
        rc = keel_turn_send(t, "flaky", "r", 1, a, (size_t)(sp - a));
        if (rc != 0)
            return rc;
        return keel_turn_send(t, "flaky", "r", 1, sp + 1,
                              len - 4 - (size_t)(sp - a) - 1);
    }
    if (len == 3 && memcmp(msg, "get", 3) == 0)
        return keel_turn_replyf(t, "%s", flaky_seen);
    if (__atomic_load_n(&flaky_down, __ATOMIC_RELAXED))
        return KEEL_EUNAVAIL;
    if (len == 3 && memcmp(msg, "bad", 3) == 0)
        return KEEL_EBADMSG;
    if (strlen(flaky_seen) + len + 2 < sizeof flaky_seen) {
        strncat(flaky_seen, msg, len);
        strcat(flaky_seen, ",");
    }
    return keel_turn_put(t, "seen", 4, msg, len);
}

/* moody: "send TEXT" queues TEXT for moody/r, "get" answers moody_seen,
 * anything else (at moody/r) is appended to it. */
static int moody_activate(keel_turn *t)
{
    const void *id;
    size_t il;

    keel_turn_id(t, &id, &il);
    if (il == 1 && memcmp(id, "r", 1) == 0 && moody_fails > 0) {
        moody_fails--;
        return KEEL_EHANDLER;
    }
    return 0;
}

static int moody_message(keel_turn *t, const void *msg, size_t len)
{
    if (len > 5 && memcmp(msg, "send ", 5) == 0)
        return keel_turn_send(t, "moody", "r", 1, (const char *)msg + 5,
                              len - 5);
    if (len == 3 && memcmp(msg, "get", 3) == 0)
        return keel_turn_replyf(t, "%s", moody_seen);
    if (strlen(moody_seen) + len + 2 < sizeof moody_seen) {
        strncat(moody_seen, msg, len);
        strcat(moody_seen, ",");
    }
    return keel_turn_put(t, "seen", 4, msg, len);
}

static keel_node *make_node(void)
{
    keel_node_options o;
    keel_node *n;
    char err[256];
    keel_actor_type acct = {.name = "acct", .on_message = acct_message};
    keel_actor_type flaky = {.name = "flaky", .on_message = flaky_message};
    keel_actor_type moody = {.name = "moody",
                             .on_activate = moody_activate,
                             .on_message = moody_message};

    keel_node_options_init(&o);
    o.data_dir = dir;
    o.log_level = KEEL_LOG_ERROR;
    o.durability = KEEL_DURABILITY_NONE;
    ck_assert_int_eq(keel_node_create(&o, &n, err, sizeof err), 0);
    ck_assert_int_eq(keel_node_register_type(n, &acct), 0);
    ck_assert_int_eq(keel_node_register_type(n, &flaky), 0);
    ck_assert_int_eq(keel_node_register_type(n, &moody), 0);
    return n;
}

static keel_node *start_node(void)
{
    keel_node *n = make_node();

    ck_assert_int_eq(keel_node_start(n), 0);
    return n;
}

static void finish(keel_node *n)
{
    keel_node_stop(n);
    keel_node_join(n);
    keel_node_destroy(n);
}

static int call(keel_node *n, const char *type, const char *id,
                const char *msg, char *out, size_t cap)
{
    void *reply = NULL;
    size_t rl = 0;
    int rc = keel_call_sync(n, type, id, strlen(id), msg, strlen(msg), &reply,
                            &rl);

    if (out != NULL) {
        size_t k = rl < cap - 1 ? rl : cap - 1;
        if (reply != NULL)
            memcpy(out, reply, k);
        out[reply != NULL ? k : 0] = '\0';
    }
    keel_free(reply);
    return rc;
}

/* Polls acct id's "get" until it answers want (at most 15 s: a refused
 * message goes again a second or two later). */
static int wait_get(keel_node *n, const char *type, const char *id,
                    const char *want, char *got, size_t cap)
{
    int i;

    for (i = 0; i < 1500; i++) {
        if (call(n, type, id, "get", got, cap) == 0 && strcmp(got, want) == 0)
            return 1;
        usleep(10000);
    }
    return 0;
}

START_TEST(failed_turn_sends_nothing)
{
    keel_node *n = start_node();
    char got[128];
    keel_stats st;

    ck_assert_int_eq(call(n, "acct", "a", "xfer b 10 fail", NULL, 0),
                     KEEL_EHANDLER);
    ck_assert_int_eq(call(n, "acct", "a", "xfer b 5", NULL, 0), 0);
    /* One sender's messages go in order: had the failed turn queued its
     * credit, it would arrive before this one. */
    ck_assert_msg(wait_get(n, "acct", "b", "5 0 1 0", got, sizeof got),
                  "b: %s", got);
    ck_assert_int_eq(call(n, "acct", "a", "get", got, sizeof got), 0);
    ck_assert_str_eq(got, "-5 1 0 0");
    ck_assert_int_eq(credit_runs, 1);
    keel_node_stats(n, &st);
    ck_assert_uint_eq(st.outbox_sent, 1);
    ck_assert_uint_eq(st.outbox_dropped, 0);
    finish(n);
}
END_TEST

START_TEST(many_in_order_once)
{
    keel_node *n = start_node();
    char got[128], want[64];
    int i;

    for (i = 0; i < 50; i++) {
        ck_assert_int_eq(call(n, "acct", "a", "xfer b 1", NULL, 0), 0);
        ck_assert_int_eq(call(n, "acct", "c", "xfer b 2", NULL, 0), 0);
    }
    snprintf(want, sizeof want, "%d 0 %d 0", 150, 100);
    ck_assert_msg(wait_get(n, "acct", "b", want, got, sizeof got), "b: %s",
                  got);
    ck_assert_int_eq(credit_runs, 100);
    finish(n);
}
END_TEST

/* A turn whose commit fails is answered with the failure, and its
 * message never leaves, not even when the node looks again later. */
START_TEST(failed_commit_sends_nothing)
{
    keel_node *n = make_node();
    struct gates g = {.fail_commit = 1, .fail_rc = KEEL_ENOSPC};
    char got[128];
    keel_stats st;

    gates_install(n->store, &g);
    ck_assert_int_eq(keel_node_start(n), 0);
    ck_assert_int_eq(call(n, "acct", "a", "xfer b 10", NULL, 0),
                     KEEL_ENOSPC);
    usleep(1500000); /* past the second look at a reply that failed */
    keel_node_stats(n, &st);
    ck_assert_uint_eq(st.outbox_sent, 0);
    ck_assert_int_eq(call(n, "acct", "a", "xfer b 5", NULL, 0), 0);
    ck_assert_msg(wait_get(n, "acct", "b", "5 0 1 0", got, sizeof got),
                  "b: %s", got);
    ck_assert_int_eq(credit_runs, 1);
    finish(n);
}
END_TEST

/* Runs on the loop thread: hands acct/b a credit as if redelivered from
 * acct/z's outbox at sequence `seq`. */
struct redeliver {
    uint64_t seq;
    int done, status;
    pthread_mutex_t mu;
};

static void redeliver_cb(int status, const void *reply, size_t len,
                         void *data)
{
    struct redeliver *r = data;

    (void)reply;
    (void)len;
    pthread_mutex_lock(&r->mu);
    r->status = status;
    r->done = 1;
    pthread_mutex_unlock(&r->mu);
}

static void redeliver_post(keel_node *n, void *data)
{
    struct redeliver *r = data;
    char msg[64];
    int len = snprintf(msg, sizeof msg, "credit 7 z %llu",
                       (unsigned long long)r->seq);
    keel_req *req = keel__req_alloc(n, (size_t)len);
    struct keel_type_entry *te = keel__type_find(n, "acct", 4);

    ck_assert_ptr_nonnull(req);
    keel__req_set(req, msg, (size_t)len);
    req->from = calloc(1, sizeof *req->from);
    req->from->seq = r->seq;
    req->from->tlen = 4;
    memcpy(req->from->type, "acct", 5);
    req->from->idlen = 1;
    req->from->id[0] = 'z';
    req->origin = REQ_LOCAL;
    req->is_cast = 1;
    req->u.local.cb = redeliver_cb;
    req->u.local.data = r;
    ck_assert_int_eq(keel__submit(n, te, "b", 1, req), 0);
}

static int redeliver(keel_node *n, uint64_t seq)
{
    struct redeliver r = {.seq = seq};
    int i, done = 0;

    pthread_mutex_init(&r.mu, NULL);
    ck_assert_int_eq(keel_node_post(n, redeliver_post, &r), 0);
    for (i = 0; i < 500 && !done; i++) {
        usleep(10000);
        pthread_mutex_lock(&r.mu);
        done = r.done;
        pthread_mutex_unlock(&r.mu);
    }
    pthread_mutex_destroy(&r.mu);
    ck_assert_msg(done, "no answer to a delivery");
    return r.status;
}

START_TEST(redelivery_dropped)
{
    keel_node *n = start_node();
    char got[128];
    keel_stats st;

    ck_assert_int_eq(redeliver(n, 1), 0);
    ck_assert_int_eq(redeliver(n, 1), 0); /* the answer was lost: again */
    ck_assert_int_eq(redeliver(n, 2), 0);
    ck_assert_int_eq(redeliver(n, 1), 0); /* a late copy of the first */
    ck_assert_int_eq(call(n, "acct", "b", "get", got, sizeof got), 0);
    ck_assert_str_eq(got, "14 0 2 0");
    ck_assert_int_eq(credit_runs, 2);
    keel_node_stats(n, &st);
    ck_assert_uint_eq(st.outbox_dropped, 2);
    finish(n);
    /* The record of what b applied is durable with b's state. */
    n = start_node();
    ck_assert_int_eq(redeliver(n, 2), 0);
    ck_assert_int_eq(call(n, "acct", "b", "get", got, sizeof got), 0);
    ck_assert_str_eq(got, "14 0 2 0");
    ck_assert_int_eq(credit_runs, 2);
    finish(n);
}
END_TEST

/* A sender whose records were lost (its unit came without its data:
 * keel node forget) sends again from a fresh outbox, while its receivers
 * remember the highest number they applied from it. Counted from 1
 * again, its new messages, of turns acknowledged after the loss, were
 * dropped as copies. Here b remembers 5 from z (a redelivery), and z,
 * which never had an outbox on this node, sends a credit: b applies it. */
START_TEST(a_fresh_sender_is_not_taken_for_copies)
{
    keel_node *n = start_node();
    char got[128];
    int i, applied = 0;

    ck_assert_int_eq(redeliver(n, 5), 0);
    ck_assert_int_eq(call(n, "acct", "b", "get", got, sizeof got), 0);
    ck_assert_str_eq(got, "7 0 1 1"); /* 5 follows no 4: "bad" counts it */
    ck_assert_int_eq(call(n, "acct", "z", "xfer b 3", got, sizeof got), 0);
    for (i = 0; i < 300 && !applied; i++) {
        ck_assert_int_eq(call(n, "acct", "b", "get", got, sizeof got), 0);
        applied = strcmp(got, "10 0 2 2") == 0;
        if (!applied)
            usleep(10000);
    }
    ck_assert_msg(applied, "b did not apply z's new credit: '%s' (balance, "
                           "sent, credits, bad)", got);
    finish(n);
}
END_TEST

/* "ver": a receiver whose state layout has a version (ver_node's);
 * "TEXT" appends it to the state, "get" answers the state. "vsend":
 * "send TEXT" queues TEXT for ver/r. */
static int ver_message(keel_turn *t, const void *msg, size_t len)
{
    const void *st;
    size_t sl;
    char buf[256];

    keel_turn_state(t, &st, &sl);
    if (len == 3 && memcmp(msg, "get", 3) == 0)
        return keel_turn_reply(t, st, sl);
    if (sl + len + 1 > sizeof buf)
        return KEEL_ETOOBIG;
    if (sl > 0)
        memcpy(buf, st, sl);
    memcpy(buf + sl, msg, len);
    buf[sl + len] = ',';
    return keel_turn_set_state(t, buf, sl + len + 1);
}

static int vsend_message(keel_turn *t, const void *msg, size_t len)
{
    if (len > 5 && memcmp(msg, "send ", 5) == 0)
        return keel_turn_send(t, "ver", "r", 1, (const char *)msg + 5,
                              len - 5);
    return KEEL_EBADMSG;
}

static keel_node *ver_node(uint32_t version)
{
    keel_node_options o;
    keel_node *n;
    char err[256];
    keel_actor_type ver = {.name = "ver", .on_message = ver_message};
    keel_actor_type vsend = {.name = "vsend", .on_message = vsend_message};

    ver.state_version = version;
    keel_node_options_init(&o);
    o.data_dir = dir;
    o.log_level = KEEL_LOG_ERROR;
    o.durability = KEEL_DURABILITY_NONE;
    ck_assert_int_eq(keel_node_create(&o, &n, err, sizeof err), 0);
    ck_assert_int_eq(keel_node_register_type(n, &ver), 0);
    ck_assert_int_eq(keel_node_register_type(n, &vsend), 0);
    ck_assert_int_eq(keel_node_start(n), 0);
    return n;
}

/* A receiver whose state its node's code cannot read (written by a newer
 * version of its type: a deploy under way, a rollback) answers
 * ESTATEVER. That is no verdict on the message: it waits, and is
 * delivered once the node runs code that reads the state, instead of
 * becoming a dead letter after three attempts. */
START_TEST(a_message_waits_for_code_that_reads_its_receiver)
{
    keel_node *n = ver_node(2);
    char got[128];
    keel_stats st;
    int i;

    ck_assert_int_eq(call(n, "ver", "r", "a", NULL, 0), 0);
    finish(n);
    n = ver_node(1); /* older code: r's state is of version 2 */
    ck_assert_int_eq(call(n, "vsend", "s", "send b", NULL, 0), 0);
    memset(&st, 0, sizeof st);
    for (i = 0; i < 1000 && st.outbox_sent < 5; i++) {
        usleep(10000);
        keel_node_stats(n, &st);
    }
    ck_assert_msg(st.outbox_sent >= 5, "sent %llu times",
                  (unsigned long long)st.outbox_sent);
    ck_assert_uint_eq(st.outbox_dead, 0);
    finish(n);
    n = ver_node(2);
    ck_assert_msg(wait_get(n, "ver", "r", "a,b,", got, sizeof got),
                  "ver/r holds '%s'", got);
    keel_node_stats(n, &st);
    ck_assert_uint_eq(st.outbox_dead, 0);
    finish(n);
}
END_TEST

START_TEST(refused_is_dead_letter)
{
    keel_node *n = start_node();
    char got[128];
    keel_stats st;

    ck_assert_int_eq(call(n, "flaky", "s", "send one", NULL, 0), 0);
    ck_assert_int_eq(call(n, "flaky", "s", "send bad", NULL, 0), 0);
    ck_assert_int_eq(call(n, "flaky", "s", "send two", NULL, 0), 0);
    ck_assert_msg(wait_get(n, "flaky", "q", "one,two,", got, sizeof got),
                  "seen: %s", got);
    keel_node_stats(n, &st);
    ck_assert_uint_eq(st.outbox_dead, 1);
    finish(n);
}
END_TEST

/* A receiver whose activation fails has not looked up what it applied
 * from the sender (an earlier copy, its answer lost, may have been
 * applied): its failure is no refusal of the message, which goes again
 * until the receiver activates, more often than dead_letter_after, and
 * is then taken once. As a dead letter, sent again under a new number,
 * it could have been applied twice. */
START_TEST(a_receiver_that_cannot_activate_is_no_refusal)
{
    keel_node *n = start_node();
    char got[128];
    keel_stats st;

    moody_fails = KEEL_DEAD_LETTER_AFTER_DEFAULT + 2;
    ck_assert_int_eq(call(n, "moody", "s", "send hello", NULL, 0), 0);
    ck_assert_msg(wait_get(n, "moody", "s", "hello,", got, sizeof got),
                  "seen: '%s'", got);
    keel_node_stats(n, &st);
    ck_assert_uint_eq(st.outbox_dead, 0);
    finish(n);
}
END_TEST

/* An operator's request to actor type/id (a state read whose message is
 * word then number, as `keel outbox` sends), run on the loop. */
struct op_ask {
    const char *type, *id, *word;
    uint64_t number;
    int done, status;
    uint8_t reply[4096];
    size_t len;
    pthread_mutex_t mu;
};

static void op_ask_cb(int status, const void *reply, size_t len, void *data)
{
    struct op_ask *a = data;

    pthread_mutex_lock(&a->mu);
    a->status = status;
    a->len = len < sizeof a->reply ? len : sizeof a->reply;
    if (reply != NULL && a->len > 0)
        memcpy(a->reply, reply, a->len);
    a->done = 1;
    pthread_mutex_unlock(&a->mu);
}

static void op_ask_post(keel_node *n, void *data)
{
    struct op_ask *a = data;
    size_t wl = strlen(a->word);
    keel_req *req = keel__req_alloc(n, wl + 8);
    struct keel_type_entry *te = keel__type_find(n, a->type,
                                                 strlen(a->type));

    ck_assert_ptr_nonnull(req);
    memcpy(req->buf, a->word, wl);
    keel_put_be64(req->buf + wl, a->number);
    req->len = (uint32_t)(wl + 8);
    req->read_state = 1;
    req->origin = REQ_LOCAL;
    req->u.local.cb = op_ask_cb;
    req->u.local.data = a;
    ck_assert_int_eq(keel__submit(n, te, a->id, strlen(a->id), req), 0);
}

static int op_ask(keel_node *n, struct op_ask *a)
{
    int i, done = 0;

    pthread_mutex_init(&a->mu, NULL);
    ck_assert_int_eq(keel_node_post(n, op_ask_post, a), 0);
    for (i = 0; i < 500 && !done; i++) {
        usleep(10000);
        pthread_mutex_lock(&a->mu);
        done = a->done;
        pthread_mutex_unlock(&a->mu);
    }
    pthread_mutex_destroy(&a->mu);
    ck_assert_msg(done, "no answer to an operator's request");
    return a->status;
}

/* A receiver that answers "try later" for ever (its capability retired,
 * here a handler that says EUNAVAIL) holds its sender's messages: such
 * answers never make a dead letter. The operator lists the waiting
 * messages and gives up the first; it becomes a dead letter and the
 * next one goes. */
START_TEST(an_operator_gives_up_a_message_that_holds_the_rest)
{
    keel_node *n = start_node();
    struct op_ask list = {.type = "flaky", .id = "s",
                          .word = KEEL_OB_WAITING};
    struct op_ask up = {.type = "flaky", .id = "s", .word = KEEL_OB_GIVE_UP};
    struct op_ask dead = {.type = "flaky", .id = "s",
                          .word = KEEL_DEAD_LIST};
    keel_dead_entry e1, e2;
    char got[128];
    keel_stats st;
    long k;
    int i;

    flaky_down = 1;
    ck_assert_int_eq(call(n, "flaky", "s", "send m1", NULL, 0), 0);
    ck_assert_int_eq(call(n, "flaky", "s", "send m2", NULL, 0), 0);
    for (i = 0; i < 500; i++) {
        keel_node_stats(n, &st);
        if (st.outbox_sent >= 3)
            break; /* m1 tried, refused for now, more than once */
        usleep(10000);
    }
    ck_assert_uint_ge(st.outbox_sent, 3);
    ck_assert_int_eq(op_ask(n, &list), 0);
    ck_assert_uint_ge(list.len, 8);
    ck_assert_uint_eq(keel_get_be64(list.reply), 2);
    k = keel_dead_entry_parse(list.reply + 8, list.len - 8, &e1);
    ck_assert_int_gt(k, 0);
    ck_assert_int_gt(keel_dead_entry_parse(list.reply + 8 + k,
                                           list.len - 8 - (size_t)k, &e2),
                     0);
    ck_assert_int_eq(e1.code, KEEL_EUNAVAIL);
    ck_assert_uint_ge(e1.attempts, 2);
    ck_assert_int_eq(e2.attempts, 0);
    ck_assert_uint_eq(e2.number, e1.number + 1);
    ck_assert_msg(e2.why_len > 0 &&
                      memmem(e2.why, e2.why_len, "before it", 9) != NULL,
                  "m2: %.*s", (int)e2.why_len, e2.why);
    /* Only the next to go: m2 is refused. */
    up.number = e2.number;
    ck_assert_int_eq(op_ask(n, &up), KEEL_EINVAL);
    up.done = 0;
    up.number = e1.number;
    ck_assert_int_eq(op_ask(n, &up), 0);
    ck_assert_msg(memmem(up.reply, up.len, "given up", 8) != NULL,
                  "give-up: %.*s", (int)up.len, up.reply);
    /* Refused again (flaky is still down), it becomes a dead letter. */
    for (i = 0; i < 500; i++) {
        keel_node_stats(n, &st);
        if (st.outbox_dead >= 1)
            break;
        usleep(10000);
    }
    ck_assert_uint_eq(st.outbox_dead, 1);
    __atomic_store_n(&flaky_down, 0, __ATOMIC_RELAXED);
    ck_assert_msg(wait_get(n, "flaky", "q", "m2,", got, sizeof got),
                  "seen: %s", got);
    keel_node_stats(n, &st);
    ck_assert_uint_eq(st.outbox_dead, 1);
    ck_assert_int_eq(op_ask(n, &dead), 0);
    ck_assert_uint_eq(keel_get_be64(dead.reply), 1);
    ck_assert_int_gt(keel_dead_entry_parse(dead.reply + 8, dead.len - 8,
                                           &e1),
                     0);
    ck_assert_int_eq(e1.code, KEEL_EUNAVAIL);
    ck_assert_uint_ge(e1.attempts, 2); /* its failed attempts, kept */
    ck_assert_msg(memmem(e1.why, e1.why_len, "given up by an operator",
                         23) != NULL &&
                      memmem(e1.why, e1.why_len, "has not applied it", 18) !=
                          NULL,
                  "dead letter: %.*s", (int)e1.why_len, e1.why);
    finish(n);
}
END_TEST

START_TEST(waiting_messages_survive_restart)
{
    keel_node *n = start_node();
    char got[128];
    keel_stats st;
    int i;

    flaky_down = 1;
    ck_assert_int_eq(call(n, "flaky", "s", "send m1", NULL, 0), 0);
    ck_assert_int_eq(call(n, "flaky", "s", "send m2", NULL, 0), 0);
    ck_assert_int_eq(call(n, "flaky", "t", "send m3", NULL, 0), 0);
    for (i = 0; i < 500; i++) {
        keel_node_stats(n, &st);
        if (st.outbox_sent >= 4)
            break; /* tried, refused for now, more than once */
        usleep(10000);
    }
    ck_assert_uint_ge(st.outbox_sent, 4);
    ck_assert_uint_eq(st.outbox_senders, 2); /* s and t wait */
    finish(n);
    ck_assert_str_eq(flaky_seen, ""); /* the loop thread has ended */
    n = start_node(); /* finds s and t in the index */
    for (i = 0; i < 500; i++) {
        keel_node_stats(n, &st);
        if (st.outbox_senders == 2)
            break;
        usleep(10000);
    }
    ck_assert_uint_eq(st.outbox_senders, 2);
    __atomic_store_n(&flaky_down, 0, __ATOMIC_RELAXED); /* they go */
    got[0] = '\0';
    for (i = 0; i < 500 && strlen(got) < 9; i++) {
        if (call(n, "flaky", "q", "get", got, sizeof got) != 0)
            got[0] = '\0';
        usleep(10000);
    }
    ck_assert_msg(strcmp(got, "m1,m2,m3,") == 0 ||
                      strcmp(got, "m3,m1,m2,") == 0 ||
                      strcmp(got, "m1,m3,m2,") == 0,
                  "seen: %s", got);
    for (i = 0; i < 500; i++) { /* retired: the outboxes have drained */
        keel_node_stats(n, &st);
        if (st.outbox_senders == 0)
            break;
        usleep(10000);
    }
    ck_assert_uint_eq(st.outbox_senders, 0);
    finish(n);
}
END_TEST

static int send_bad_args(keel_turn *t, const void *msg, size_t len)
{
    char big[KEEL_MAX_ID_LEN + 1];

    (void)msg;
    (void)len;
    memset(big, 'x', sizeof big);
    if (keel_turn_send(t, "nosuch", "x", 1, "m", 1) != KEEL_ENOTYPE)
        return keel_turn_replyf(t, "unknown type accepted");
    if (keel_turn_send(t, "acct", big, sizeof big, "m", 1) != KEEL_ELIMIT)
        return keel_turn_replyf(t, "long id accepted");
    if (keel_turn_send(t, "", "x", 1, "m", 1) != KEEL_EINVAL)
        return keel_turn_replyf(t, "empty type accepted");
    if (keel_turn_send(t, NULL, "x", 1, "m", 1) != KEEL_EINVAL)
        return keel_turn_replyf(t, "NULL type accepted");
    return keel_turn_replyf(t, "ok");
}

/* Returns keel_turn_send's code as it is, as a handler may. */
static int send_to_nosuch(keel_turn *t, const void *msg, size_t len)
{
    (void)msg;
    (void)len;
    return keel_turn_send(t, "payment", "p-17", 4, "charge 30", 9);
}

START_TEST(bad_arguments)
{
    keel_node_options o;
    keel_node *n;
    char err[256], got[64];
    keel_actor_type acct = {.name = "acct", .on_message = acct_message};
    keel_actor_type bad = {.name = "bad", .on_message = send_bad_args};
    keel_actor_type order = {.name = "order", .on_message = send_to_nosuch};

    keel_node_options_init(&o);
    o.data_dir = dir;
    o.log_level = KEEL_LOG_ERROR;
    ck_assert_int_eq(keel_node_create(&o, &n, err, sizeof err), 0);
    ck_assert_int_eq(keel_node_register_type(n, &acct), 0);
    ck_assert_int_eq(keel_node_register_type(n, &bad), 0);
    ck_assert_int_eq(keel_node_register_type(n, &order), 0);
    ck_assert_int_eq(keel_node_start(n), 0);
    ck_assert_int_eq(call(n, "bad", "x", "go", got, sizeof got), 0);
    ck_assert_str_eq(got, "ok");
    {
        /* The caller learns which type is missing: the receiver's, not
         * its own. */
        char why[160];

        ck_assert_int_eq(call(n, "order", "o-1", "go", why, sizeof why),
                         KEEL_ENOTYPE);
        ck_assert_str_eq(why, "keel_turn_send: no actor type 'payment' is "
                              "registered on this node");
    }
    finish(n);
}
END_TEST


/* Reads flaky/s's runtime entry `entry` from the store in dir (the node
 * stopped): 1 and its 8 bytes from off in *v when it exists, else 0. */
static int stored_entry_at(const char *entry, size_t elen, size_t off,
                           uint64_t *v)
{
    keel_store_options so;
    keel_store *s;
    keel_store_read *r;
    keel_record rec;
    uint8_t key[KEEL_KEY_MAX];
    char err[256];
    uint32_t shard = keel_shard_of("flaky", "s", 1, KEEL_DEFAULT_SHARDS);
    int kl, rc, found = 0;

    memset(&so, 0, sizeof so);
    so.path = dir;
    so.shard_count = KEEL_DEFAULT_SHARDS;
    ck_assert_int_eq(keel_store_open(&so, &s, err, sizeof err), 0);
    kl = keel_key_encode(key, (uint16_t)shard, "flaky", 5, "s", 1, entry,
                         elen);
    ck_assert_int_gt(kl, 0);
    ck_assert_int_eq(keel_store_read_begin(s, &r), 0);
    rc = keel_store_get(r, key, (size_t)kl, &rec);
    if (rc == 0) {
        found = 1;
        *v = 0;
        if (rec.len >= off + 8) {
            const uint8_t *p = (const uint8_t *)rec.data + off;
            int i;
            for (i = 0; i < 8; i++)
                *v = *v << 8 | p[i];
        }
    }
    keel_store_read_end(r);
    keel_store_close(s);
    return found;
}

static int stored_entry(const char *entry, size_t elen, uint64_t *v)
{
    return stored_entry_at(entry, elen, 0, v);
}

/* Deletes flaky/s's outbox record of message seq from the store of n, a
 * node not started. */
static void drop_record(keel_node *n, uint64_t seq)
{
    uint32_t shard = keel_shard_of("flaky", "s", 1, n->opts.shard_count);
    keel_batch *b = keel_batch_create();
    uint8_t key[KEEL_KEY_MAX], e[9 + 8];
    int kl, st, i;

    ck_assert_ptr_nonnull(b);
    memcpy(e, "\0keel.ob/", 9);
    for (i = 0; i < 8; i++)
        e[9 + i] = (uint8_t)(seq >> (56 - 8 * i));
    ck_assert_int_eq(keel_batch_begin_group(b, "", (uint16_t)shard, 1, NULL),
                     0);
    kl = keel_key_encode(key, (uint16_t)shard, "flaky", 5, "s", 1, e,
                         sizeof e);
    ck_assert_int_gt(kl, 0);
    ck_assert_int_eq(keel_batch_del(b, key, (size_t)kl), 0);
    ck_assert_int_eq(keel_store_commit(n->store, b), 0);
    keel_batch_group(b, 0, &st);
    ck_assert_int_eq(st, 0);
    keel_batch_destroy(b);
}

/* flaky/s's outbox header (the node stopped) counts every message it
 * gave out as retired. */
static void assert_all_retired(void)
{
    uint64_t next = 0, done = 0;

    ck_assert(stored_entry_at("\0keel.ob", 8, 0, &next));
    ck_assert(stored_entry_at("\0keel.ob", 8, 8, &done));
    ck_assert_msg(done == next,
                  "the sender's outbox counts %llu of its messages not "
                  "retired",
                  (unsigned long long)(next - done));
}

/* Waits for the node to have dropped `want` messages as applied, then
 * half a second more for their retiring turns; stops it. */
static void finish_after_drops(keel_node *n, uint64_t want)
{
    keel_stats st;
    int i;

    for (i = 0; i < 500; i++) {
        keel_node_stats(n, &st);
        if (st.outbox_dropped >= want)
            break;
        usleep(10000);
    }
    usleep(500000);
    finish(n);
    ck_assert_uint_ge(st.outbox_dropped, want);
}

/* The turn retiring a delivered message fails (the disk was full for
 * that one commit): the message is delivered again, dropped by its
 * receiver, and retired, while the node runs. Otherwise its record stays
 * and the sender's count of retired messages never moves again. */
START_TEST(a_failed_retire_is_retired_again)
{
    keel_node *n = make_node();
    /* commit 1: "send a"; 2: its delivery; 3: its retiring turn */
    struct gates g = {.fail_commit = 3, .fail_rc = KEEL_ENOSPC};
    char got[128];

    gates_install(n->store, &g);
    ck_assert_int_eq(keel_node_start(n), 0);
    ck_assert_int_eq(call(n, "flaky", "s", "send a", NULL, 0), 0);
    ck_assert_msg(wait_get(n, "flaky", "q", "a,", got, sizeof got),
                  "seen: %s", got);
    finish_after_drops(n, 1);
    ck_assert_int_ge(g.commits, 3); /* the gate was met */
    ck_assert_str_eq(flaky_seen, "a,");
    assert_all_retired();
}
END_TEST

/* A later message was retired before an earlier one, whose retiring turn
 * failed (its record is gone, the count stays). Once the earlier one is
 * retired, the count moves past both, and the unit's index forgets the
 * sender; otherwise every later retirement is out of order. */
START_TEST(a_late_retire_moves_past_the_retired)
{
    keel_node *n = start_node();
    char got[128];
    keel_stats st;
    uint64_t next = 0;
    int i;

    flaky_down = 1;
    ck_assert_int_eq(call(n, "flaky", "s", "two a b", NULL, 0), 0);
    for (i = 0; i < 500; i++) {
        keel_node_stats(n, &st);
        if (st.outbox_sent >= 2)
            break; /* a tried, refused for now */
        usleep(10000);
    }
    finish(n);
    flaky_down = 0;
    ck_assert(stored_entry_at("\0keel.ob", 8, 0, &next));
    n = make_node();
    drop_record(n, next); /* b: as its retiring turn left it */
    ck_assert_int_eq(keel_node_start(n), 0);
    ck_assert_msg(wait_get(n, "flaky", "q", "a,", got, sizeof got),
                  "seen: %s", got);
    usleep(500000);
    /* A message of the sender after that one is retired in order. */
    ck_assert_int_eq(call(n, "flaky", "s", "send c", NULL, 0), 0);
    ck_assert_msg(wait_get(n, "flaky", "q", "a,c,", got, sizeof got),
                  "seen: %s", got);
    usleep(500000);
    finish(n);
    assert_all_retired();
}
END_TEST

/* Every commit from the retiring turn on fails for a while (a disk that
 * stays full). */
static int full_from; /* the 1-based commit from which they fail; 0: none */
static int full_commits;

static int full_commit(void *data)
{
    (void)data;
    full_commits++;
    return __atomic_load_n(&full_from, __ATOMIC_ACQUIRE) != 0 &&
                   full_commits >= full_from
               ? KEEL_ENOSPC
               : 0;
}

static int full_sync(void *data)
{
    (void)data;
    return 0;
}

/* While its retiring turns keep failing, a sender delivers its message
 * again after a growing pause, not in a loop that holds the node's
 * thread; once they commit, it is retired. */
START_TEST(a_sender_whose_retirement_keeps_failing_pauses)
{
    keel_node *n = make_node();
    keel_store_hooks h = {full_commit, full_sync, NULL};
    char got[128];
    keel_stats st0, st1;
    int i;

    full_commits = 0;
    full_from = 3; /* 1: "send a"; 2: its delivery; 3: its retiring turn */
    keel_store_set_hooks(n->store, &h);
    ck_assert_int_eq(keel_node_start(n), 0);
    ck_assert_int_eq(call(n, "flaky", "s", "send a", NULL, 0), 0);
    ck_assert_msg(wait_get(n, "flaky", "q", "a,", got, sizeof got),
                  "seen: %s", got);
    for (i = 0; i < 500; i++) {
        keel_node_stats(n, &st0);
        if (st0.outbox_dropped >= 1)
            break;
        usleep(10000);
    }
    ck_assert_uint_ge(st0.outbox_dropped, 1);
    sleep(1);
    keel_node_stats(n, &st1);
    ck_assert_msg(st1.outbox_dropped - st0.outbox_dropped < 50,
                  "the message was delivered again %llu times in a second",
                  (unsigned long long)(st1.outbox_dropped -
                                       st0.outbox_dropped));
    __atomic_store_n(&full_from, 0, __ATOMIC_RELEASE);
    finish_after_drops(n, st1.outbox_dropped + 1);
    ck_assert_str_eq(flaky_seen, "a,");
    assert_all_retired();
}
END_TEST

/* The turn that keeps a refused message as a dead letter fails to commit
 * (the disk was full for that one commit) while the sender's next message
 * goes: the refused one must still end as a dead letter of the sender (or
 * be tried again), never be taken for delivered. */
START_TEST(dead_letter_survives_a_failed_retire)
{
    keel_node *n = make_node();
    /* commit 1: "send bad"; 2: "send good"; 3: the dead letter's turn
     * (with the delivery of "good", in the same group commit) */
    struct gates g = {.fail_commit = 3, .fail_rc = KEEL_ENOSPC};
    char got[128];
    keel_stats st;
    uint64_t v = 0;
    int i, dl;

    gates_install(n->store, &g);
    ck_assert_int_eq(keel_node_start(n), 0);
    ck_assert_int_eq(call(n, "flaky", "s", "send bad", NULL, 0), 0);
    ck_assert_int_eq(call(n, "flaky", "s", "send good", NULL, 0), 0);
    ck_assert_msg(wait_get(n, "flaky", "q", "good,", got, sizeof got),
                  "seen: %s", got);
    for (i = 0; i < 300; i++) {
        keel_node_stats(n, &st);
        if (st.outbox_dead >= 1)
            break;
        usleep(10000);
    }
    ck_assert_uint_ge(st.outbox_dead, 1);
    usleep(500000);
    ck_assert_int_ge(g.commits, 3); /* the gate was met */
    finish(n);
    /* Start again: whatever the store says of "bad" is acted on. */
    n = start_node();
    usleep(6000000); /* three refusals take about three seconds */
    keel_node_stats(n, &st);
    finish(n);
    dl = stored_entry("\0keel.dl", 8, &v);
    ck_assert_msg(dl && v >= 1,
                  "the refused message is no dead letter of its sender "
                  "(dead-letter header %s, last %llu; after the restart it "
                  "was dropped %llu times as already applied)",
                  dl ? "present" : "absent", (unsigned long long)v,
                  (unsigned long long)st.outbox_dropped);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("outbox");
    TCase *tc = tcase_create("node");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, failed_turn_sends_nothing);
    tcase_add_test(tc, many_in_order_once);
    tcase_add_test(tc, failed_commit_sends_nothing);
    tcase_add_test(tc, redelivery_dropped);
    tcase_add_test(tc, a_fresh_sender_is_not_taken_for_copies);
    tcase_add_test(tc, a_message_waits_for_code_that_reads_its_receiver);
    tcase_add_test(tc, refused_is_dead_letter);
    tcase_add_test(tc, a_receiver_that_cannot_activate_is_no_refusal);
    tcase_add_test(tc, waiting_messages_survive_restart);
    tcase_add_test(tc, an_operator_gives_up_a_message_that_holds_the_rest);
    tcase_add_test(tc, bad_arguments);
    tcase_add_test(tc, dead_letter_survives_a_failed_retire);
    tcase_add_test(tc, a_failed_retire_is_retired_again);
    tcase_add_test(tc, a_late_retire_moves_past_the_retired);
    tcase_add_test(tc, a_sender_whose_retirement_keeps_failing_pauses);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(suite());
}
