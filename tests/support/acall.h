/* In-process asynchronous calls for tests that run a keel_node in this
 * process: the call is made on the node's loop thread (through
 * keel_node_post) and the test thread awaits its completion on a
 * semaphore. The waits here are bounded only by the node, which answers
 * every call (a reply, an error, or a refusal at shutdown), and by the
 * test's own timeout. */
#ifndef KEEL_TEST_ACALL_H
#define KEEL_TEST_ACALL_H

#include <semaphore.h>
#include <stddef.h>
#include <stdint.h>

#include "keel.h"

typedef struct tu_acall {
    const char *type, *id, *msg;
    const uint8_t *key; /* the request key (16 bytes), or NULL */
    sem_t done;         /* posted once the call completed */
    int status;         /* 0 or a KEEL_E* code */
    char reply[256];    /* the reply (or error message), NUL-terminated */
    size_t len;         /* the reply's length before any truncation */
} tu_acall;

/* Readies c for a call `type`/id with msg, keyed with key unless NULL. */
void tu_acall_init(tu_acall *c, const char *type, const char *id,
                   const char *msg, const uint8_t *key);

/* A keel_post_fn (data: a tu_acall readied by tu_acall_init): makes the
 * call on the loop thread with keel_call or keel_call_keyed. A call that
 * is refused at once completes with the refusal as its status. */
void tu_acall_post(keel_node *n, void *data);

/* tu_acall_init and then keel_node_post(n, tu_acall_post, c), which must
 * succeed (the test fails otherwise). */
void tu_acall_start(keel_node *n, tu_acall *c, const char *type,
                    const char *id, const char *msg, const uint8_t *key);

/* 1 if the call has completed, else 0; does not wait. */
int tu_acall_finished(tu_acall *c);

/* Waits until the call has completed (it stays completed: the wait and
 * tu_acall_finished may be repeated). */
void tu_acall_wait(tu_acall *c);

#endif
