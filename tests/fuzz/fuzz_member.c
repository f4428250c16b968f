/* Fuzz target: the member znode's text (coordinator/layout.c,
 * keel_member_parse and keel_member_mark_leaving), which every node
 * parses for every member of its cluster.
 *
 * Input: the znode's bytes.
 *
 * Properties, besides "no crash, no sanitizer report, no leak":
 *  - parsing fails only with KEEL_ECORRUPT, and then leaves the member it
 *    was given as it was;
 *  - what parses is written back by the format's own rules (addr, caps,
 *    then the optional session_timeout, store, insecure and leaving
 *    lines) to the
 *    very bytes it came from: the format is strict, one text per member;
 *  - marking a member leaving appends "leaving 1\n", parses again, and
 *    is refused (KEEL_EEXIST) for a member already leaving. */
#include <string.h>

#include "coordinator/layout.h"
#include "fuzz.h"
#include "keel.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    keel_member m, m2;
    char *text, *p, *marked = NULL;
    size_t i, mlen = 0;
    int rc;

    memset(&m, 0, sizeof m);
    /* A previous value: a failed parse must leave it alone. */
    strcpy(m.addr, "before:1");
    m.caps[0] = strdup("old");
    FUZZ_CHECK(m.caps[0] != NULL);
    m.ncaps = 1;
    rc = keel_member_parse(size > 0 ? data : (const uint8_t *)"", size, &m);
    FUZZ_CHECK(rc == 0 || rc == KEEL_ECORRUPT);
    if (rc != 0) {
        FUZZ_CHECK(strcmp(m.addr, "before:1") == 0 && m.ncaps == 1 &&
                   strcmp(m.caps[0], "old") == 0);
        keel_member_clear(&m);
        return 0;
    }
    /* Written back. */
    text = malloc(size + 1);
    FUZZ_CHECK(text != NULL);
    p = text + sprintf(text, "addr %s\ncaps ", m.addr);
    FUZZ_CHECK(m.ncaps <= KEEL_MAP_MAX_CAPS);
    for (i = 0; i < m.ncaps; i++) {
        FUZZ_CHECK(keel_name_valid(m.caps[i], 0));
        FUZZ_CHECK((size_t)(p - text) + strlen(m.caps[i]) + 1 <= size);
        p += sprintf(p, "%s%s", i ? "," : "", m.caps[i]);
    }
    *p++ = '\n';
    FUZZ_CHECK((size_t)(p - text) <= size);
    if (m.session_timeout_ms > 0) {
        char line[40];
        int n = snprintf(line, sizeof line, "session_timeout %u\n",
                         m.session_timeout_ms);
        FUZZ_CHECK((size_t)(p - text) + (size_t)n <= size);
        memcpy(p, line, (size_t)n);
        p += n;
    }
    if (m.store[0] != '\0') {
        FUZZ_CHECK(strlen(m.store) == 32);
        FUZZ_CHECK((size_t)(p - text) + 39 <= size);
        p += sprintf(p, "store %s\n", m.store);
    }
    if (m.insecure) {
        FUZZ_CHECK((size_t)(p - text) + 11 <= size);
        memcpy(p, "insecure 1\n", 11);
        p += 11;
    }
    if (m.leaving) {
        FUZZ_CHECK((size_t)(p - text) + 10 <= size);
        memcpy(p, "leaving 1\n", 10);
        p += 10;
    }
    FUZZ_CHECK((size_t)(p - text) == size && memcmp(text, data, size) == 0);
    free(text);

    rc = keel_member_mark_leaving(data, size, &marked, &mlen);
    if (m.leaving) {
        FUZZ_CHECK(rc == KEEL_EEXIST && marked == NULL);
    } else {
        FUZZ_CHECK(rc == 0 && mlen == size + 10);
        FUZZ_CHECK(memcmp(marked, data, size) == 0 &&
                   memcmp(marked + size, "leaving 1\n", 10) == 0);
        memset(&m2, 0, sizeof m2);
        FUZZ_CHECK(keel_member_parse(marked, mlen, &m2) == 0 && m2.leaving);
        FUZZ_CHECK(m2.ncaps == m.ncaps && strcmp(m2.addr, m.addr) == 0);
        keel_member_clear(&m2);
        free(marked);
    }
    keel_member_clear(&m);
    return 0;
}
