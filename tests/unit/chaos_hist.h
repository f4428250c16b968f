/* Hand-made histories for the chaos tests: each event is written as the
 * JSON line a runner would write, then parsed and added, so every
 * history built here also passes through the reader.
 *
 *   hb_actor("register/r");
 *   hb_inv(h, 1, "write", "\"1\"");   client 1 invokes write "1"
 *   hb_ret(h, "ok", 1, "null");       ...which completes ok
 *   hb_inv(h, 2, "read", "null");
 *   hb_ret(h, "ok", 2, "\"1\"");
 *
 * Indexes count from 0, times are index * 1000. A completion repeats its
 * client's invocation. */
#ifndef KEEL_TEST_CHAOS_HIST_H
#define KEEL_TEST_CHAOS_HIST_H

#include <check.h>
#include <stdio.h>
#include <string.h>

#include "chaos/arena.h"
#include "chaos/history.h"

#define HB_CLIENTS 64

static struct {
    const char *actor;
    char op[HB_CLIENTS][16];
    char actor_of[HB_CLIENTS][64];
    char args[HB_CLIENTS][256];
    int final[HB_CLIENTS];
    int final_next;
} hb = {"register/r", {{0}}, {{0}}, {{0}}, {0}, 0};

static inline void hb_actor(const char *actor)
{
    hb.actor = actor;
}

/* The next invocation is a final read. */
static inline void hb_final(void)
{
    hb.final_next = 1;
}

static inline void hb_line(chaos_history *h, const char *body)
{
    char line[1024], err[512];
    chaos_arena a;
    chaos_event ev;
    int rc;

    snprintf(line, sizeof line, "{\"index\":%llu,\"time_ns\":%llu,%s}",
             (unsigned long long)h->nevents,
             (unsigned long long)h->nevents * 1000, body);
    chaos_arena_init(&a);
    rc = chaos_event_parse(line, strlen(line), &a, &ev, err, sizeof err);
    ck_assert_msg(rc == 0, "%s: %s", line, err);
    rc = chaos_history_add(h, &ev, (size_t)h->nevents + 1, err, sizeof err);
    ck_assert_msg(rc == 0, "%s: %s", line, err);
    chaos_arena_free(&a);
}

static inline void hb_inv(chaos_history *h, int c, const char *op,
                          const char *args)
{
    char body[768];

    ck_assert_int_lt(c, HB_CLIENTS);
    snprintf(hb.op[c], sizeof hb.op[c], "%s", op);
    snprintf(hb.actor_of[c], sizeof hb.actor_of[c], "%s", hb.actor);
    snprintf(hb.args[c], sizeof hb.args[c], "%s", args);
    hb.final[c] = hb.final_next;
    hb.final_next = 0;
    snprintf(body, sizeof body,
             "\"t\":\"invoke\",\"client\":%d,\"actor\":\"%s\",\"op\":\"%s\","
             "\"args\":%s%s",
             c, hb.actor, op, args, hb.final[c] ? ",\"final\":true" : "");
    hb_line(h, body);
}

/* result: JSON text, or NULL for none (fail, info). */
static inline void hb_ret(chaos_history *h, const char *t, int c,
                          const char *result)
{
    char body[768];

    snprintf(body, sizeof body,
             "\"t\":\"%s\",\"client\":%d,\"actor\":\"%s\",\"op\":\"%s\","
             "\"args\":%s%s%s%s",
             t, c, hb.actor_of[c], hb.op[c], hb.args[c],
             result ? ",\"result\":" : "", result ? result : "",
             hb.final[c] ? ",\"final\":true" : "");
    hb_line(h, body);
}

/* An operation that runs alone: invocation, then completion. */
static inline void hb_op(chaos_history *h, int c, const char *op,
                         const char *args, const char *t, const char *result)
{
    hb_inv(h, c, op, args);
    hb_ret(h, t, c, result);
}

#endif
