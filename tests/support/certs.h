/* Certificates for the TLS tests, made with the openssl command line in a
 * directory the test owns (docs/security.md names them the same way):
 *   <dir>/<ca>.pem, <ca>.key       a CA (self-signed)
 *   <dir>/<name>.pem, <name>.key   a certificate signed by a CA, with the
 *                                  subject CN given ("node:n0",
 *                                  "client:alice") and the subject
 *                                  alternative names 127.0.0.1 and
 *                                  localhost (for HTTPS clients such as
 *                                  curl, which check the host name)
 *   <dir>/<crl>.pem                a CRL of a CA (tu_certs_crl), from the
 *                                  CA's database <ca>.index, which
 *                                  tu_certs_revoke adds to
 * P-256 keys, valid for two days. Every openssl run is bounded (tu_run). */
#ifndef KEEL_TEST_CERTS_H
#define KEEL_TEST_CERTS_H

#include <stddef.h>

/* 1 when the openssl command is installed. */
int tu_certs_available(void);

/* Makes CA `ca` in dir. Returns 0, or -1 with openssl's output on
 * stderr. */
int tu_certs_ca(const char *dir, const char *ca);

/* Makes certificate `name` for subject CN `cn`, signed by CA `ca` of dir.
 * Replaces the files of an earlier one of that name (atomically: each is
 * written aside, then renamed). Returns 0, or -1 as above. */
int tu_certs_issue(const char *dir, const char *ca, const char *name,
                   const char *cn);

/* Records certificate `name` of dir as revoked in CA `ca`'s database
 * (openssl ca -revoke). Returns 0, or -1 as above. */
int tu_certs_revoke(const char *dir, const char *ca, const char *name);

/* Writes CA `ca`'s CRL, listing what tu_certs_revoke recorded, to
 * <dir>/<out>.pem (written aside, then renamed into place). Valid for two
 * days, or, with expired, one that was due for its next update an hour
 * ago. Returns 0, or -1 as above. */
int tu_certs_crl(const char *dir, const char *ca, const char *out,
                 int expired);

/* "<dir>/<name>.<ext>" into buf (cap bytes); returns buf. */
char *tu_certs_path(char *buf, size_t cap, const char *dir, const char *name,
                    const char *ext);

#endif
