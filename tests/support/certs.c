#include "certs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "proc.h"

static const char *openssl_bin(void)
{
    static const char *const where[] = {"/usr/bin/openssl",
                                        "/usr/local/bin/openssl",
                                        "/bin/openssl"};
    size_t i;

    for (i = 0; i < sizeof where / sizeof where[0]; i++)
        if (access(where[i], X_OK) == 0)
            return where[i];
    return NULL;
}

int tu_certs_available(void)
{
    return openssl_bin() != NULL;
}

char *tu_certs_path(char *buf, size_t cap, const char *dir, const char *name,
                    const char *ext)
{
    snprintf(buf, cap, "%s/%s.%s", dir, name, ext);
    return buf;
}

/* Runs openssl with argv[1..] (argv[0] is filled in). */
static int run_openssl(const char **argv)
{
    char *out = NULL, *err = NULL;
    int rc;

    argv[0] = openssl_bin();
    if (argv[0] == NULL) {
        fprintf(stderr, "certs: the openssl command is not installed\n");
        return -1;
    }
    rc = tu_run(argv, &out, &err);
    if (rc != 0)
        fprintf(stderr, "certs: openssl %s exited %d:\n%s%s\n", argv[1], rc,
                out ? out : "", err ? err : "");
    free(out);
    free(err);
    return rc == 0 ? 0 : -1;
}

int tu_certs_ca(const char *dir, const char *ca)
{
    char key[512], pem[512], subj[300];
    const char *argv[] = {NULL, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                          "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                          tu_certs_path(key, sizeof key, dir, ca, "key"),
                          "-out", tu_certs_path(pem, sizeof pem, dir, ca, "pem"),
                          "-days", "2", "-subj", subj, NULL};

    snprintf(subj, sizeof subj, "/CN=keel test CA %s", ca);
    return run_openssl(argv);
}

int tu_certs_issue(const char *dir, const char *ca, const char *name,
                   const char *cn)
{
    char key[600], csr[600], pem[600], cakey[512], capem[512], serial[512];
    char subj[300], fkey[512], fpem[512];
    char tmp[540];
    const char *req[] = {NULL, "req", "-newkey", "ec", "-pkeyopt",
                         "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
                         "-out", csr, "-subj", subj, "-addext",
                         "subjectAltName=IP:127.0.0.1,DNS:localhost", NULL};
    const char *sign[] = {NULL, "x509", "-req", "-in", csr, "-CA", capem,
                          "-CAkey", cakey, "-CAserial", serial,
                          "-CAcreateserial", "-copy_extensions", "copy",
                          "-out", pem, "-days", "2", NULL};

    snprintf(tmp, sizeof tmp, "%s.new", name);
    tu_certs_path(key, sizeof key, dir, tmp, "key");
    tu_certs_path(pem, sizeof pem, dir, tmp, "pem");
    tu_certs_path(csr, sizeof csr, dir, tmp, "csr");
    tu_certs_path(cakey, sizeof cakey, dir, ca, "key");
    tu_certs_path(capem, sizeof capem, dir, ca, "pem");
    tu_certs_path(serial, sizeof serial, dir, ca, "srl");
    snprintf(subj, sizeof subj, "/CN=%s", cn);
    if (run_openssl(req) != 0 || run_openssl(sign) != 0)
        return -1;
    unlink(csr);
    if (rename(key, tu_certs_path(fkey, sizeof fkey, dir, name, "key")) != 0 ||
        rename(pem, tu_certs_path(fpem, sizeof fpem, dir, name, "pem")) != 0)
        return -1;
    return 0;
}

/* The configuration `openssl ca` needs to revoke and to make CRLs for CA
 * `ca` of dir: <dir>/<ca>.cnf and its empty database, made once. Its path
 * into cnf. */
static int ca_config(const char *dir, const char *ca, char *cnf, size_t cap)
{
    char index[512], pem[512], key[512];
    FILE *f;

    tu_certs_path(cnf, cap, dir, ca, "cnf");
    if (access(cnf, R_OK) == 0)
        return 0;
    tu_certs_path(index, sizeof index, dir, ca, "index");
    f = fopen(index, "w");
    if (f == NULL || fclose(f) != 0)
        return -1;
    f = fopen(cnf, "w");
    if (f == NULL)
        return -1;
    fprintf(f,
            "[ ca ]\ndefault_ca = keel\n[ keel ]\ndatabase = %s\n"
            "certificate = %s\nprivate_key = %s\ndefault_md = sha256\n"
            "default_crl_days = 2\n",
            index, tu_certs_path(pem, sizeof pem, dir, ca, "pem"),
            tu_certs_path(key, sizeof key, dir, ca, "key"));
    return fclose(f) == 0 ? 0 : -1;
}

int tu_certs_revoke(const char *dir, const char *ca, const char *name)
{
    char cnf[512], pem[512];
    const char *argv[] = {NULL, "ca", "-config", cnf, "-revoke", pem, NULL};

    if (ca_config(dir, ca, cnf, sizeof cnf) != 0)
        return -1;
    tu_certs_path(pem, sizeof pem, dir, name, "pem");
    return run_openssl(argv);
}

int tu_certs_crl(const char *dir, const char *ca, const char *out,
                 int expired)
{
    char cnf[512], tmp[540], aside[600], fin[512], last[32], next[32];
    const char *argv[] = {NULL, "ca", "-config", cnf, "-gencrl", "-out",
                          aside, NULL, NULL, NULL, NULL, NULL};
    time_t now = time(NULL);
    struct tm tm;

    if (ca_config(dir, ca, cnf, sizeof cnf) != 0)
        return -1;
    snprintf(tmp, sizeof tmp, "%s.new", out);
    tu_certs_path(aside, sizeof aside, dir, tmp, "pem");
    if (expired) {
        time_t t = now - 2 * 3600;
        gmtime_r(&t, &tm);
        strftime(last, sizeof last, "%Y%m%d%H%M%SZ", &tm);
        t = now - 3600;
        gmtime_r(&t, &tm);
        strftime(next, sizeof next, "%Y%m%d%H%M%SZ", &tm);
        argv[7] = "-crl_lastupdate";
        argv[8] = last;
        argv[9] = "-crl_nextupdate";
        argv[10] = next;
    }
    if (run_openssl(argv) != 0)
        return -1;
    return rename(aside, tu_certs_path(fin, sizeof fin, dir, out, "pem")) == 0
               ? 0
               : -1;
}
