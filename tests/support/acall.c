#include "acall.h"

#include <check.h>
#include <errno.h>
#include <string.h>

void tu_acall_init(tu_acall *c, const char *type, const char *id,
                   const char *msg, const uint8_t *key)
{
    memset(c, 0, sizeof *c);
    sem_init(&c->done, 0, 0);
    c->type = type;
    c->id = id;
    c->msg = msg;
    c->key = key;
}

static void acall_cb(int status, const void *reply, size_t len, void *data)
{
    tu_acall *c = data;

    c->len = len;
    if (len >= sizeof c->reply)
        len = sizeof c->reply - 1;
    memcpy(c->reply, reply, len);
    c->reply[len] = '\0';
    c->status = status;
    sem_post(&c->done);
}

void tu_acall_post(keel_node *n, void *data)
{
    tu_acall *c = data;
    int rc = c->key ? keel_call_keyed(n, c->key, c->type, c->id,
                                      strlen(c->id), c->msg, strlen(c->msg),
                                      acall_cb, c)
                    : keel_call(n, c->type, c->id, strlen(c->id), c->msg,
                                strlen(c->msg), acall_cb, c);

    if (rc != 0) {
        c->status = rc;
        sem_post(&c->done);
    }
}

void tu_acall_start(keel_node *n, tu_acall *c, const char *type,
                    const char *id, const char *msg, const uint8_t *key)
{
    tu_acall_init(c, type, id, msg, key);
    ck_assert_int_eq(keel_node_post(n, tu_acall_post, c), 0);
}

int tu_acall_finished(tu_acall *c)
{
    if (sem_trywait(&c->done) != 0)
        return 0;
    sem_post(&c->done);
    return 1;
}

void tu_acall_wait(tu_acall *c)
{
    while (sem_wait(&c->done) != 0 && errno == EINTR)
        ;
    sem_post(&c->done);
}
