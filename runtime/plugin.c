/* Plugins: shared objects that register actor types (README,
 * "Plugins"). Loaded before the node runs, after the check that they were
 * built for this keel's plugin ABI; closed when the node is destroyed. */
#include "runtime/node.h"

#include <dlfcn.h>
#include <stdio.h>

#include "common/error.h"

/* The plugin's declared ABI against this keel's: 0, or KEEL_EPLUGIN with
 * errbuf naming both. */
static int plugin_abi_check(void *h, const char *path, char *errbuf,
                            size_t errlen)
{
    const uint32_t *abi;
    unsigned major, minor;

    *(void **)&abi = dlsym(h, KEEL_PLUGIN_ABI_SYMBOL);
    if (abi == NULL) {
        snprintf(errbuf, errlen,
                 "%s declares no plugin ABI (no symbol %s): it was built "
                 "for an older keel; rebuild it against this keel.h "
                 "(plugin ABI %u.%u) with KEEL_PLUGIN_DECLARE_ABI",
                 path, KEEL_PLUGIN_ABI_SYMBOL, KEEL_PLUGIN_ABI_MAJOR,
                 KEEL_PLUGIN_ABI_MINOR);
        return KEEL_EPLUGIN;
    }
    major = *abi >> 16;
    minor = *abi & 0xffffu;
    if (major != KEEL_PLUGIN_ABI_MAJOR || minor > KEEL_PLUGIN_ABI_MINOR) {
        snprintf(errbuf, errlen,
                 "%s was built for plugin ABI %u.%u, this keel has plugin "
                 "ABI %u.%u%s; rebuild it against this keel.h",
                 path, major, minor, KEEL_PLUGIN_ABI_MAJOR,
                 KEEL_PLUGIN_ABI_MINOR,
                 major == KEEL_PLUGIN_ABI_MAJOR
                     ? " (the plugin may use functions this keel lacks)"
                     : "");
        return KEEL_EPLUGIN;
    }
    return 0;
}

int keel_node_load_plugin_args(keel_node *n, const char *path,
                               const char *args, char *errbuf, size_t errlen)
{
    keel_plugin_init_fn init;
    char scratch[1];
    void *h;
    int rc;

    if (n == NULL || path == NULL || n->running)
        return KEEL_EINVAL;
    /* Every message below has somewhere to go. */
    if (errbuf == NULL || errlen == 0) {
        errbuf = scratch;
        errlen = sizeof scratch;
    }
    if (n->nplugins >= sizeof n->plugins / sizeof n->plugins[0]) {
        snprintf(errbuf, errlen, "%s: too many plugins", path);
        return KEEL_EPLUGIN;
    }
    h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        snprintf(errbuf, errlen, "%s", dlerror());
        return KEEL_EPLUGIN;
    }
    /* The ABI first: an init of another signature is never called. */
    rc = plugin_abi_check(h, path, errbuf, errlen);
    if (rc != 0) {
        dlclose(h);
        return rc;
    }
    *(void **)&init = dlsym(h, KEEL_PLUGIN_INIT_SYMBOL);
    if (init == NULL) {
        snprintf(errbuf, errlen, "%s: no symbol %s", path,
                 KEEL_PLUGIN_INIT_SYMBOL);
        dlclose(h);
        return KEEL_EPLUGIN;
    }
    rc = init(n, args);
    if (!keel__err_known(rc)) {
        snprintf(errbuf, errlen, "%s: %s returned %d, which is not 0 or a "
                                 "KEEL_E* code",
                 path, KEEL_PLUGIN_INIT_SYMBOL, rc);
        dlclose(h);
        return KEEL_EPLUGIN;
    }
    if (rc != 0) {
        /* EEXIST is what keel_node_register_type gives a name taken
         * already, the likeliest reason for it here. */
        snprintf(errbuf, errlen, "%s: %s returned %s (%s)%s", path,
                 KEEL_PLUGIN_INIT_SYMBOL, keel_err_name(rc),
                 keel_strerror(rc),
                 rc == KEEL_EEXIST
                     ? ": a type it registers has the name of one already "
                       "registered (the built-in counter, kv or register, "
                       "or a type of a plugin loaded before)"
                     : "");
        dlclose(h);
        return KEEL_EPLUGIN;
    }
    n->plugins[n->nplugins++] = h;
    return 0;
}

int keel_node_load_plugin(keel_node *n, const char *path, char *errbuf,
                          size_t errlen)
{
    return keel_node_load_plugin_args(n, path, NULL, errbuf, errlen);
}

void keel__plugins_close(keel_node *n)
{
    unsigned i;

    for (i = 0; i < n->nplugins; i++)
        dlclose(n->plugins[i]);
    n->nplugins = 0;
}
