/* The file of ZooKeeper credentials a node authenticates with
 * (keeld --zk-auth, keel_node_options.zk_auth): one line "user:password".
 * It is a secret, so a file every user of the machine may read or write
 * is refused rather than used. */
#ifndef KEEL_COORDINATOR_ZKAUTH_H
#define KEEL_COORDINATOR_ZKAUTH_H

#include <stddef.h>

/* Longest credentials line accepted, newline excluded. */
#define KEEL_ZKAUTH_MAX 1024

/* Reads the credentials of `path` into out (NUL-terminated, at most
 * KEEL_ZKAUTH_MAX bytes and the NUL; the caller wipes it once used). The
 * file must be a regular file with no permission for "others" and hold
 * exactly one line: a user of 1 or more bytes without ':', a ':', and a
 * password of 1 or more bytes; no control characters, no spaces around
 * either (one final "\n" or "\r\n" is allowed). Returns 0, KEEL_EIO (cannot
 * be read; errno's text in errbuf) or KEEL_EINVAL (readable or writable
 * by every user, malformed, too long, or out too small);
 * errbuf names the file and says why, and never holds the secret. out is
 * wiped on error. */
int keel_zkauth_load(const char *path, char *out, size_t cap, char *errbuf,
                     size_t errlen);

#endif
