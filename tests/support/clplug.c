#include "clplug.h"

#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel.h"
#include "proc.h"
#include "runtime/client.h"
#include "runtime/proto.h"
#include "testutil.h"

#define CLIENT_MS 20000

char *tu_clplug_setup(tu_cluster *c, const char *tag, const char *prefix,
                      const char *so)
{
    tu_cluster_setup(c, tag, prefix);
    c->shards = 16;
    c->session_ms = 4000;
    return tu_bin(so);
}

void tu_clplug_teardown(tu_cluster *c, char *plugin)
{
    tu_cluster_teardown(c, SIGKILL);
    free(plugin);
}

int tu_clplug_call_keyed(const tu_cluster *c, int i, const uint8_t *key,
                         const char *type, const char *id, const char *msg,
                         char *out, size_t cap)
{
    uint8_t fresh[KEEL_REQUEST_KEY_LEN];
    double deadline = tu_now_s() + 30;
    keel_client *cl = NULL;
    int rc = KEEL_ETIMEDOUT;

    if (key == NULL) {
        ck_assert_int_eq(keel_client_new_key(fresh), 0);
        key = fresh;
    }
    while (tu_now_s() < deadline) {
        char *reply = NULL;
        size_t rl = 0;
        if (cl == NULL &&
            keel_client_connect(c->nodes[i].addr, CLIENT_MS, &cl) != 0) {
            cl = NULL;
            tu_sleep_ms(100);
            continue;
        }
        rc = keel_client_call_keyed(cl, KEEL_FRAME_CALL, key, type, id,
                                    strlen(id), msg, strlen(msg), &reply,
                                    &rl);
        if (rc == 0 && out != NULL)
            snprintf(out, cap, "%.*s", (int)rl, reply);
        free(reply);
        if (rc == 0)
            break;
        keel_client_close(cl);
        cl = NULL;
        tu_sleep_ms(100);
    }
    if (cl != NULL)
        keel_client_close(cl);
    return rc;
}

int tu_clplug_keel(const tu_cluster *c, int i, char **out, const char *a0,
                   const char *a1, const char *a2, const char *a3,
                   const char *a4)
{
    double deadline = tu_now_s() + 30;
    int rc = -1;

    *out = NULL;
    while (tu_now_s() < deadline) {
        char *err = NULL;
        free(*out);
        *out = NULL;
        rc = tu_keel(c->nodes[i].addr, out, &err, a0, a1, a2, a3, a4, NULL);
        if (rc != 0 && err != NULL) {
            free(*out);
            *out = err;
            err = NULL;
        }
        free(err);
        if (rc == 0)
            break;
        tu_sleep_ms(200);
    }
    return rc;
}
