/* A whole file read into memory, for the checkers of recorded runs
 * (activation logs, digests), which parse their input in one piece. */
#ifndef KEEL_CHAOS_TEXTFILE_H
#define KEEL_CHAOS_TEXTFILE_H

#include <stddef.h>

/* The contents of path into *text (malloc'd, not NUL-terminated; the
 * caller frees it) and *len. 0; KEEL_EIO with "PATH: why" in err (errlen
 * may be 0) when it cannot be opened or read; KEEL_ENOMEM. */
int chaos_read_text(const char *path, char **text, size_t *len, char *err,
                    size_t errlen);

#endif
