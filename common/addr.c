/* HOST:PORT syntax: see common/addr.h. */
#include "common/addr.h"

#include <string.h>

#define HOST_MAX 253 /* the longest DNS name */

static int host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

int keel_addr_valid(const char *addr, size_t len, int port0_ok)
{
    const char *colon;
    size_t hl, pl, i;
    unsigned long port = 0;

    if (addr == NULL || len == 0)
        return 0;
    colon = memchr(addr, ':', len);
    if (colon == NULL)
        return 0;
    hl = (size_t)(colon - addr);
    pl = len - hl - 1;
    if (hl == 0 || hl > HOST_MAX || pl == 0 || pl > 5)
        return 0;
    for (i = 0; i < hl; i++)
        if (!host_char(addr[i]))
            return 0;
    for (i = 0; i < pl; i++) {
        char c = colon[1 + i];
        if (c < '0' || c > '9')
            return 0; /* a second ':' lands here too */
        port = port * 10 + (unsigned long)(c - '0');
    }
    return port <= 65535 && (port > 0 || port0_ok);
}

static int port_valid(const char *p)
{
    size_t i, n = strlen(p);
    unsigned long port = 0;

    if (n == 0 || n > 5)
        return 0;
    for (i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return 0;
        port = port * 10 + (unsigned long)(p[i] - '0');
    }
    return port <= 65535;
}

int keel_http_addr_valid(const char *addr)
{
    const char *close, *p;
    size_t n;
    int zone = 0;

    if (addr == NULL)
        return 0;
    if (addr[0] != '[')
        return keel_addr_valid(addr, strlen(addr), 1);
    close = strchr(addr, ']');
    if (close == NULL || close[1] != ':' || !port_valid(close + 2))
        return 0;
    n = (size_t)(close - addr - 1);
    if (n < 2 || n > 45)
        return 0;
    for (p = addr + 1; p < close; p++) {
        char c = *p;
        if (c == '%' && !zone && p > addr + 1) {
            zone = 1;
            continue;
        }
        if ((c >= '0' && c <= '9') ||
            (zone && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) ||
            (!zone && ((c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
                       c == ':' || c == '.')))
            continue;
        return 0;
    }
    return 1;
}
