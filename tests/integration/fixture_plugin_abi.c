/* Test plugins keel must refuse (test_logplug): built as
 * plugin_wrongabi.so (FIXTURE_ABI_MAJOR: a major version that is not
 * keel's) and as plugin_noabi.so (FIXTURE_NO_ABI: no declaration, as a
 * plugin built before the declaration existed). Were its init ever
 * called, it would log "fixture init ran" and register the type
 * "fixture": the test checks that neither happens. Built a third time as
 * plugin_dupname.so, with this keel's ABI and FIXTURE_TYPE "counter": its
 * init runs and fails, since the built-in type has that name. Given the
 * args "return N", its init returns N instead of registering. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "keel.h"

#ifndef FIXTURE_TYPE
#define FIXTURE_TYPE "fixture"
#endif

#if defined(FIXTURE_ABI_MAJOR)
KEEL_PLUGIN_EXPORT extern const uint32_t keel_plugin_abi;
KEEL_PLUGIN_EXPORT const uint32_t keel_plugin_abi =
    (uint32_t)FIXTURE_ABI_MAJOR << 16;
#elif !defined(FIXTURE_NO_ABI)
KEEL_PLUGIN_DECLARE_ABI;
#endif

static int fixture_message(keel_turn *t, const void *msg, size_t len)
{
    (void)msg;
    (void)len;
    return keel_turn_replyf(t, "fixture");
}

int keel_plugin_init(keel_node *node, const char *args);

int keel_plugin_init(keel_node *node, const char *args)
{
    keel_actor_type type = {.name = FIXTURE_TYPE,
                            .on_message = fixture_message};

    keel_node_log(node, KEEL_LOG_ERROR, "fixture init ran");
    if (args != NULL && strncmp(args, "return ", 7) == 0)
        return atoi(args + 7);
    return keel_node_register_type(node, &type);
}
