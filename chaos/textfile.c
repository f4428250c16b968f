/* See chaos/textfile.h. */
#include "chaos/textfile.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keel.h"

int chaos_read_text(const char *path, char **text_out, size_t *len_out,
                    char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    char *text = NULL;
    size_t len = 0, cap = 0, got;

    if (f == NULL) {
        if (errlen > 0)
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return KEEL_EIO;
    }
    for (;;) {
        if (len == cap) {
            char *t;
            cap = cap ? cap * 2 : 65536;
            t = realloc(text, cap);
            if (t == NULL) {
                free(text);
                fclose(f);
                return KEEL_ENOMEM;
            }
            text = t;
        }
        got = fread(text + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        free(text);
        fclose(f);
        if (errlen > 0)
            snprintf(err, errlen, "%s: read error", path);
        return KEEL_EIO;
    }
    fclose(f);
    *text_out = text;
    *len_out = len;
    return 0;
}
