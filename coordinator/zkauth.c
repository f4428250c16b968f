/* The ZooKeeper credentials file (see zkauth.h). */
#include "coordinator/zkauth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keel.h"

/* What is wrong with the line s[0..len), or NULL when it is well formed. */
static const char *check_line(const char *s, size_t len)
{
    const char *colon = memchr(s, ':', len);
    size_t i;

    if (len == 0)
        return "it is empty; it must hold one line user:password";
    for (i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '\n')
            return "it holds more than one line; it must hold one line "
                   "user:password";
        if (ch < 0x20 || ch == 0x7f)
            return "it holds a control character";
    }
    if (colon == NULL)
        return "no ':' between user and password";
    if (colon == s)
        return "the user (before ':') is empty";
    if (colon + 1 == s + len)
        return "the password (after ':') is empty";
    if (s[0] == ' ' || colon[-1] == ' ' || colon[1] == ' ' ||
        s[len - 1] == ' ')
        return "spaces around the user or the password";
    return NULL;
}

int keel_zkauth_load(const char *path, char *out, size_t cap, char *errbuf,
                     size_t errlen)
{
    char buf[KEEL_ZKAUTH_MAX + 3]; /* the line, "\r\n", one byte more */
    const char *why;
    struct stat st;
    size_t len = 0;
    ssize_t got;
    int fd, rc = KEEL_EINVAL;

    if (cap > 0)
        out[0] = '\0';
    if (path == NULL || out == NULL || cap == 0) {
        snprintf(errbuf, errlen, "no ZooKeeper credentials file");
        return KEEL_EINVAL;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        snprintf(errbuf, errlen, "ZooKeeper credentials file %s: %s", path,
                 strerror(errno));
        return KEEL_EIO;
    }
    if (fstat(fd, &st) != 0) {
        snprintf(errbuf, errlen, "ZooKeeper credentials file %s: %s", path,
                 strerror(errno));
        close(fd);
        return KEEL_EIO;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(errbuf, errlen,
                 "ZooKeeper credentials file %s is not a regular file", path);
        close(fd);
        return KEEL_EINVAL;
    }
    /* Refused before a byte of it is read. */
    if (st.st_mode & S_IRWXO) {
        snprintf(errbuf, errlen,
                 "ZooKeeper credentials file %s is %s by every user (mode "
                 "%04o): it holds a password; chmod o-rwx it (e.g. 0600)",
                 path, (st.st_mode & S_IROTH) ? "readable" : "accessible",
                 (unsigned)(st.st_mode & 07777));
        close(fd);
        return KEEL_EINVAL;
    }
    while (len < sizeof buf &&
           (got = read(fd, buf + len, sizeof buf - len)) != 0) {
        if (got < 0) {
            if (errno == EINTR)
                continue;
            snprintf(errbuf, errlen, "ZooKeeper credentials file %s: %s",
                     path, strerror(errno));
            close(fd);
            explicit_bzero(buf, sizeof buf);
            return KEEL_EIO;
        }
        len += (size_t)got;
    }
    close(fd);
    if (len == sizeof buf) {
        why = "it is longer than one line of credentials";
        goto malformed;
    }
    if (len > 0 && buf[len - 1] == '\n')
        len--;
    if (len > 0 && buf[len - 1] == '\r')
        len--;
    if (len > KEEL_ZKAUTH_MAX) {
        why = "it is longer than one line of credentials";
        goto malformed;
    }
    if ((why = check_line(buf, len)) != NULL)
        goto malformed;
    if (len + 1 > cap) {
        snprintf(errbuf, errlen,
                 "ZooKeeper credentials file %s: credentials too long", path);
        goto out;
    }
    memcpy(out, buf, len);
    out[len] = '\0';
    rc = 0;
    goto out;
malformed:
    snprintf(errbuf, errlen,
             "ZooKeeper credentials file %s is malformed: %s", path, why);
out:
    explicit_bzero(buf, sizeof buf);
    return rc;
}
