/* Helpers shared by both implementations of the ZooKeeper vtable. */
#include "coordinator/zk.h"

const char *keel_zk_session_event_name(int event)
{
    switch (event) {
    case KEEL_ZK_CONNECTED:
        return "connected";
    case KEEL_ZK_DISCONNECTED:
        return "disconnected";
    case KEEL_ZK_EXPIRED:
        return "expired";
    default:
        return "unknown";
    }
}

const char *keel_zk_watch_event_name(int event)
{
    switch (event) {
    case KEEL_ZK_NODE_CREATED:
        return "created";
    case KEEL_ZK_NODE_DELETED:
        return "deleted";
    case KEEL_ZK_NODE_CHANGED:
        return "changed";
    case KEEL_ZK_CHILDREN_CHANGED:
        return "children";
    default:
        return "unknown";
    }
}
