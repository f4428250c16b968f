/* The HTTP/JSON face of a real keeld (--http 127.0.0.1:0), driven by the
 * curl program as a user would, and by raw sockets where curl cannot
 * misbehave on purpose: garbage request lines, a client that trickles its
 * body, a thousand connections at once. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "keel.h"
#include "persistence/store.h"
#include "proc.h"
#include "testutil.h"

static char *dir, *data;
static tu_keeld node;
static int http_port;

static void setup(void)
{
    dir = tu_tmpdir("http");
    if (asprintf(&data, "%s/data", dir) < 0)
        abort();
    memset(&node, 0, sizeof node);
    http_port = 0;
}

static void teardown(void)
{
    tu_keeld_free(&node);
    tu_rmrf(dir);
    free(dir);
    free(data);
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Starts keeld with an HTTP listener on a kernel-chosen port and reads
 * that port from the newest "http on port" line of its log. keeld prints
 * the line before its loop runs, and tu_keeld_start returns only once
 * the loop answers, so the line is there. */
static void start_node(const char *const *more)
{
    const char *extra[16];
    const char *p = NULL, *q;
    char *log;
    int i = 0, j;

    extra[i++] = "--http";
    extra[i++] = "127.0.0.1:0";
    for (j = 0; more != NULL && more[j] != NULL && i < 15; j++)
        extra[i++] = more[j];
    extra[i] = NULL;
    ck_assert_msg(tu_keeld_start(&node, data, 0, extra) == 0,
                  "keeld did not start");
    log = tu_keeld_log(&node);
    ck_assert_ptr_nonnull(log);
    for (q = log; (q = strstr(q, "keeld: http on port ")) != NULL; q++)
        p = q;
    ck_assert_msg(p != NULL, "no http port in the log:\n%s", log);
    http_port = atoi(p + strlen("keeld: http on port "));
    ck_assert_int_gt(http_port, 0);
    free(log);
}

static void stop_node_clean(void)
{
    int rc = tu_keeld_stop(&node, SIGTERM);

    if (rc != 0) {
        char *log = tu_keeld_log(&node);
        ck_abort_msg("keeld exited %d; log:\n%s", rc, log ? log : "");
    }
}

/* ------------------------------------------------------------ curl */

struct hres {
    int code;
    char *hdr;  /* response headers as sent */
    char *body; /* NUL-terminated */
};

static void hres_free(struct hres *r)
{
    free(r->hdr);
    free(r->body);
    memset(r, 0, sizeof *r);
}

/* Runs curl: method "GET", "POST", "HEAD", "PUT"...; body sent with
 * --data-binary when not NULL; extra_hdr is one more -H value or NULL. */
static void curl(struct hres *r, const char *method, const char *path,
                 const void *body, size_t blen, const char *extra_hdr)
{
    const char *argv[32];
    char *bin_out = NULL, *err = NULL, url[1200], bodyf[512], hdrf[512],
         reqf[512], reqarg[520];
    int argc = 0, rc;

    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", http_port, path);
    snprintf(bodyf, sizeof bodyf, "%s/resp.body", dir);
    snprintf(hdrf, sizeof hdrf, "%s/resp.hdr", dir);
    snprintf(reqf, sizeof reqf, "%s/req.body", dir);
    unlink(bodyf);
    unlink(hdrf);
    argv[argc++] = "/usr/bin/curl";
    argv[argc++] = "-sS";
    argv[argc++] = "--path-as-is";
    argv[argc++] = "--max-time";
    argv[argc++] = "20";
    argv[argc++] = "-o";
    argv[argc++] = bodyf;
    argv[argc++] = "-D";
    argv[argc++] = hdrf;
    argv[argc++] = "-w";
    argv[argc++] = "%{http_code}";
    if (strcmp(method, "HEAD") == 0) {
        argv[argc++] = "-I";
    } else if (strcmp(method, "GET") != 0 || body != NULL) {
        argv[argc++] = "-X";
        argv[argc++] = method;
    }
    if (body != NULL) {
        FILE *f = fopen(reqf, "wb");
        ck_assert_ptr_nonnull(f);
        ck_assert_uint_eq(fwrite(body, 1, blen, f), blen);
        fclose(f);
        snprintf(reqarg, sizeof reqarg, "@%s", reqf);
        argv[argc++] = "--data-binary";
        argv[argc++] = reqarg;
    }
    if (extra_hdr != NULL) {
        argv[argc++] = "-H";
        argv[argc++] = extra_hdr;
    }
    argv[argc++] = url;
    argv[argc] = NULL;
    rc = tu_run(argv, &bin_out, &err);
    ck_assert_msg(rc == 0, "curl %s %s: exit %d: %s", method, path, rc, err);
    r->code = atoi(bin_out);
    r->hdr = tu_read_file(hdrf);
    r->body = tu_read_file(bodyf);
    if (r->hdr == NULL)
        r->hdr = calloc(1, 1);
    if (r->body == NULL)
        r->body = calloc(1, 1);
    free(bin_out);
    free(err);
}

static void post(struct hres *r, const char *path, const char *msg)
{
    curl(r, "POST", path, msg, strlen(msg), NULL);
}

static void get(struct hres *r, const char *path)
{
    curl(r, "GET", path, NULL, 0, NULL);
}

/* Expects a status and an exact body. */
static void expect(const char *method, const char *path, const char *msg,
                   int code, const char *body)
{
    struct hres r;

    curl(&r, method, path, msg, msg ? strlen(msg) : 0, NULL);
    ck_assert_msg(r.code == code, "%s %s: status %d, want %d; body %s",
                  method, path, r.code, code, r.body);
    if (body != NULL)
        ck_assert_msg(strcmp(r.body, body) == 0, "%s %s: body '%s', want '%s'",
                      method, path, r.body, body);
    hres_free(&r);
}

/* Expects an error status with its JSON body. */
static void expect_error(struct hres *r, int code, const char *name,
                         int kcode)
{
    char want[64];

    ck_assert_msg(r->code == code, "status %d, want %d; body %s", r->code,
                  code, r->body);
    snprintf(want, sizeof want, "\"error\": \"%s\"", name);
    ck_assert_msg(strstr(r->body, want) != NULL, "body %s lacks %s", r->body,
                  want);
    snprintf(want, sizeof want, "\"code\": %d,", kcode);
    ck_assert_msg(strstr(r->body, want) != NULL, "body %s lacks %s", r->body,
                  want);
    ck_assert_ptr_nonnull(strstr(r->body, "\"message\": \""));
    ck_assert_ptr_nonnull(strcasestr(r->hdr, "Content-Type: application/json"));
}

/* -------------------------------------------------------- raw sockets */

static int raw_connect(void)
{
    struct sockaddr_in sin;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)http_port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_msg(connect(fd, (struct sockaddr *)&sin, sizeof sin) == 0,
                  "connect: %s", strerror(errno));
    return fd;
}

static void send_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t w = send(fd, p, len, MSG_NOSIGNAL);
        ck_assert_msg(w > 0, "send: %s", strerror(errno));
        p += w;
        len -= (size_t)w;
    }
}

/* Reads until the server closes (at most 20 s). Malloc'd, NUL-ended. */
static char *read_to_eof(int fd)
{
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    double deadline = now_s() + 20;

    ck_assert_ptr_nonnull(buf);
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        ssize_t r;
        ck_assert_msg(now_s() < deadline, "no end of reply after 20 s");
        if (poll(&p, 1, 200) <= 0)
            continue;
        if (len + 1024 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            ck_assert_ptr_nonnull(buf);
        }
        r = recv(fd, buf + len, cap - len - 1, 0);
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    buf[len] = '\0';
    return buf;
}

static void healthy(void)
{
    expect("GET", "/healthz", NULL, 200, "ok\n");
}

/* ------------------------------------------------------------- tests */

START_TEST(actor_calls_and_status_codes)
{
    static const char *const more[] = {"--max-frame", "4096", NULL};
    struct hres r;
    char *big, path[700];
    size_t i;

    start_node(more);
    /* 200: the reply is the body. */
    expect("POST", "/v1/actors/counter/c1", "incr 5", 200, "5");
    expect("POST", "/v1/actors/counter/c1", "incr", 200, "6");
    expect("POST", "/v1/actors/kv/users", "put ann Ann Lee", 200, "OK");
    expect("POST", "/v1/actors/kv/users", "get ann", 200, "Ann Lee");
    curl(&r, "POST", "/v1/actors/counter/c1", "get", 3,
         "Content-Type: application/octet-stream");
    ck_assert_int_eq(r.code, 200);
    ck_assert_str_eq(r.body, "6");
    ck_assert_ptr_nonnull(
        strcasestr(r.hdr, "Content-Type: application/octet-stream"));
    hres_free(&r);

    /* 400: bad message, empty message, id over its limit, bad escape. */
    post(&r, "/v1/actors/counter/c1", "jump");
    expect_error(&r, 400, "EBADMSG", 8);
    ck_assert_ptr_nonnull(strstr(r.body, "jump"));
    /* and says what it does take */
    ck_assert_ptr_nonnull(strstr(r.body, "try incr [n], decr [n] or get"));
    hres_free(&r);
    curl(&r, "POST", "/v1/actors/counter/c1", "", 0, NULL);
    expect_error(&r, 400, "EBADMSG", 8);
    hres_free(&r);
    strcpy(path, "/v1/actors/counter/");
    for (i = 0; i < 256; i++)
        strcat(path, "x");
    post(&r, path, "incr");
    expect_error(&r, 400, "ELIMIT", 6);
    hres_free(&r);
    post(&r, "/v1/actors/counter/a%zz", "incr");
    expect_error(&r, 400, "EINVAL", 1);
    hres_free(&r);

    /* 404: unknown type, missing key, unknown path. */
    post(&r, "/v1/actors/nosuch/x", "hi");
    expect_error(&r, 404, "ENOTYPE", 3);
    ck_assert_msg(strstr(r.body, "unknown actor type 'nosuch'") != NULL, "%s",
                  r.body);
    hres_free(&r);
    post(&r, "/v1/actors/kv/users", "get bob");
    expect_error(&r, 404, "ENOTFOUND", 16);
    ck_assert_ptr_nonnull(strstr(r.body, "bob"));
    hres_free(&r);
    get(&r, "/v2/nothing");
    expect_error(&r, 404, "ENOTFOUND", 16);
    hres_free(&r);
    get(&r, "/v1/actors/counter");
    expect_error(&r, 404, "ENOTFOUND", 16);
    hres_free(&r);

    /* 405 with Allow. */
    curl(&r, "PUT", "/v1/actors/counter/c1", "incr", 4, NULL);
    ck_assert_int_eq(r.code, 405);
    ck_assert_ptr_nonnull(strcasestr(r.hdr, "Allow: GET, HEAD, POST"));
    ck_assert_ptr_nonnull(strstr(r.body, "\"error\": \"EINVAL\""));
    hres_free(&r);
    curl(&r, "POST", "/metrics", "x", 1, NULL);
    ck_assert_int_eq(r.code, 405);
    ck_assert_ptr_nonnull(strcasestr(r.hdr, "Allow: GET, HEAD\r\n"));
    hres_free(&r);
    curl(&r, "DELETE", "/healthz", NULL, 0, NULL);
    ck_assert_int_eq(r.code, 405);
    hres_free(&r);

    /* 413: declared too big (Content-Length), and found too big while
     * arriving (chunked, no length given). The limit itself passes. */
    big = malloc(8192);
    ck_assert_ptr_nonnull(big);
    memcpy(big, "put big ", 8);
    memset(big + 8, 'v', 8192 - 8);
    curl(&r, "POST", "/v1/actors/kv/big", big, 4097, NULL);
    expect_error(&r, 413, "ETOOBIG", 5);
    hres_free(&r);
    curl(&r, "POST", "/v1/actors/kv/big", big, 8192,
         "Transfer-Encoding: chunked");
    expect_error(&r, 413, "ETOOBIG", 5);
    hres_free(&r);
    curl(&r, "POST", "/v1/actors/kv/big", big, 4096, NULL);
    ck_assert_int_eq(r.code, 200);
    ck_assert_str_eq(r.body, "OK");
    hres_free(&r);
    free(big);

    /* Everything went through the same actors the wire protocol sees. */
    {
        char *out = NULL;
        ck_assert_int_eq(tu_keel(node.addr, &out, NULL, "call", "counter",
                                 "c1", "get", NULL),
                         0);
        ck_assert_str_eq(out, "6\n");
        free(out);
    }
    stop_node_clean();
}
END_TEST

START_TEST(state_reads_and_ids)
{
    struct hres r;
    char want[160];
    uint32_t shard = keel_shard_of("counter", "c1", 2, KEEL_DEFAULT_SHARDS);

    start_node(NULL);
    /* Never written: 404; the GET does not create the actor. */
    get(&r, "/v1/actors/counter/c1");
    expect_error(&r, 404, "ENOTFOUND", 16);
    hres_free(&r);
    get(&r, "/v1/actors/nosuch/c1");
    expect_error(&r, 404, "ENOTYPE", 3);
    ck_assert_msg(strstr(r.body, "unknown actor type 'nosuch'") != NULL, "%s",
                  r.body);
    /* An absolute-form request target names the same resource. */
    {
        char target[128], base[64], *out = NULL;
        snprintf(target, sizeof target,
                 "http://127.0.0.1:%d/v1/actors/counter/absolute", http_port);
        snprintf(base, sizeof base, "http://127.0.0.1:%d/", http_port);
        {
            const char *argv[] = {"/usr/bin/curl", "-s", "-X", "POST",
                                  "--data-binary", "incr 7",
                                  "--request-target", target, base, NULL};
            ck_assert_int_eq(tu_run(argv, &out, NULL), 0);
            ck_assert_str_eq(out, "7");
            free(out);
        }
    }
    hres_free(&r);

    expect("POST", "/v1/actors/counter/c1", "incr 5", 200, "5");
    expect("POST", "/v1/actors/counter/c1", "incr", 200, "6");
    get(&r, "/v1/actors/counter/c1");
    ck_assert_int_eq(r.code, 200);
    snprintf(want, sizeof want,
             "{\"type\": \"counter\", \"id\": \"c1\", \"id_base64\": "
             "\"YzE=\", \"shard\": %u, \"version\": 2, \"state_base64\": "
             "\"AAAAAAAAAAY=\", \"entries\": 0}\n",
             shard);
    ck_assert_str_eq(r.body, want); /* no state_text: the state has NULs */
    hres_free(&r);

    /* An id with '/', NUL, space and a non-UTF-8 byte, percent-encoded. */
    expect("POST", "/v1/actors/register/a%2Fb%00c%20d%FF", "write hello",
           200, "OK");
    expect("POST", "/v1/actors/register/a%2Fb%00c%20d%FF", "read", 200,
           "hello");
    expect("POST", "/v1/actors/register/a%2Fb", "read", 200, "");
    get(&r, "/v1/actors/register/a%2fb%00c%20d%ff");
    ck_assert_int_eq(r.code, 200);
    ck_assert_ptr_nonnull(strstr(r.body,
                                 "\"id\": \"a/b\\u0000c d\\ufffd\""));
    /* base64 of the 8 bytes 'a' '/' 'b' 0 'c' ' ' 'd' 0xff */
    ck_assert_ptr_nonnull(strstr(r.body, "\"id_base64\": \"YS9iAGMgZP8=\""));
    ck_assert_ptr_nonnull(strstr(r.body, "\"version\": 1,"));
    ck_assert_ptr_nonnull(strstr(r.body, "\"state_base64\": \"aGVsbG8=\""));
    ck_assert_ptr_nonnull(strstr(r.body, "\"state_text\": \"hello\""));
    hres_free(&r);

    /* kv keeps named entries, no state blob. */
    expect("POST", "/v1/actors/kv/users", "put ann Ann", 200, "OK");
    expect("POST", "/v1/actors/kv/users", "put bob Bob", 200, "OK");
    expect("POST", "/v1/actors/kv/users", "put cy Cy", 200, "OK");
    expect("POST", "/v1/actors/kv/users", "del cy", 200, "1");
    get(&r, "/v1/actors/kv/users");
    ck_assert_int_eq(r.code, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"entries\": 2}"));
    ck_assert_ptr_nonnull(strstr(r.body, "\"version\": 1,"));
    ck_assert_ptr_nonnull(strstr(r.body, "\"state_base64\": \"\""));
    hres_free(&r);

    /* HEAD is GET without a body (curl -I prints the headers only). */
    curl(&r, "HEAD", "/v1/actors/counter/c1", NULL, 0, NULL);
    ck_assert_int_eq(r.code, 200);
    ck_assert_ptr_nonnull(strcasestr(r.hdr, "Content-Length: "));
    ck_assert_ptr_null(strchr(r.body, '{'));
    hres_free(&r);

    /* The state survives a restart, and reads still see it. */
    stop_node_clean();
    start_node(NULL);
    get(&r, "/v1/actors/counter/c1");
    ck_assert_int_eq(r.code, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"version\": 2,"));
    hres_free(&r);
    stop_node_clean();
}
END_TEST

/* The value of the first sample line of a metric (no labels). */
/* Idempotency-Key: a POST sent again with its key is answered with the
 * first reply and does not run again; the record is not counted among
 * the actor's entries; a malformed key is a 400. */
START_TEST(idempotency_key)
{
    const char *k1 = "Idempotency-Key: 0123456789abcdef0123456789abcdef";
    const char *k2 = "idempotency-key: FEDCBA9876543210FEDCBA9876543210";
    struct hres r;

    start_node(NULL);
    curl(&r, "POST", "/v1/actors/counter/k", "incr 5", 6, k1);
    ck_assert_int_eq(r.code, 200);
    ck_assert_str_eq(r.body, "5");
    hres_free(&r);
    curl(&r, "POST", "/v1/actors/counter/k", "incr 5", 6, k1);
    ck_assert_int_eq(r.code, 200);
    ck_assert_str_eq(r.body, "5");
    hres_free(&r);
    curl(&r, "POST", "/v1/actors/counter/k", "incr 5", 6, k2);
    ck_assert_int_eq(r.code, 200);
    ck_assert_str_eq(r.body, "10");
    hres_free(&r);
    expect("POST", "/v1/actors/counter/k", "get", 200, "10");
    curl(&r, "POST", "/v1/actors/kv/m", "put a 1", 7, k1);
    ck_assert_int_eq(r.code, 200);
    hres_free(&r);
    get(&r, "/v1/actors/kv/m");
    ck_assert_int_eq(r.code, 200);
    ck_assert_msg(strstr(r.body, "\"entries\": 1}") != NULL, "%s", r.body);
    hres_free(&r);
    curl(&r, "POST", "/v1/actors/counter/k", "incr 5", 6,
         "Idempotency-Key: 0123");
    expect_error(&r, 400, "EINVAL", 1);
    hres_free(&r);
    expect("POST", "/v1/actors/counter/k", "get", 200, "10");
}
END_TEST

static double metric_value(const char *text, const char *name)
{
    char key[128];
    const char *p;

    snprintf(key, sizeof key, "\n%s ", name);
    p = strstr(text, key);
    ck_assert_msg(p != NULL, "metric %s missing", name);
    return atof(p + strlen(key));
}

START_TEST(metrics_health_cluster)
{
    static const char *const names[] = {
        "keel_messages_total",         "keel_activations_total",
        "keel_passivations_total",     "keel_resident_actors",
        "keel_commits_total",          "keel_fsyncs_total",
        "keel_checkpoints_total",
        "keel_commit_batch_turns_sum", "keel_commit_batch_turns_count",
        "keel_handler_errors_total",   "keel_fence_refusals_total",
        "keel_connections",            "keel_map_size_bytes",
        "keel_call_latency_seconds_sum", "keel_call_latency_seconds_count",
        NULL};
    struct hres r;
    double m0, m1;
    char want[128];
    int i;

    start_node(NULL);
    expect("GET", "/healthz", NULL, 200, "ok\n");
    expect("GET", "/readyz", NULL, 200, "ready\n");

    get(&r, "/metrics");
    ck_assert_int_eq(r.code, 200);
    ck_assert_ptr_nonnull(strcasestr(r.hdr, "Content-Type: text/plain"));
    for (i = 0; names[i] != NULL; i++)
        metric_value(r.body, names[i]);
    ck_assert_ptr_nonnull(
        strstr(r.body, "# TYPE keel_call_latency_seconds histogram\n"));
    ck_assert_ptr_nonnull(strstr(r.body, "# HELP keel_messages_total "));
    ck_assert_ptr_nonnull(strstr(r.body, "# TYPE keel_messages_total counter"));
    ck_assert_ptr_nonnull(
        strstr(r.body, "keel_call_latency_seconds_bucket{le=\"+Inf\"} "));
    ck_assert_ptr_nonnull(
        strstr(r.body, "keel_call_latency_seconds_bucket{le=\"0.001\"} "));
    snprintf(want, sizeof want, "keel_shards_owned{mode=\"standalone\"} %u\n",
             KEEL_DEFAULT_SHARDS);
    ck_assert_ptr_nonnull(strstr(r.body, want));
    /* Nothing is forwarded standalone; features that do not exist yet
     * have no metrics at all. */
    ck_assert_double_eq(metric_value(r.body, "keel_forwarded_total"), 0);
    /* A failed flush leaves writes in doubt standalone too, so the
     * figure is there in every mode, as in `keel stat`. */
    ck_assert_double_eq(metric_value(r.body, "keel_replies_in_doubt_total"),
                        0);
    ck_assert_ptr_null(strstr(r.body, "handoff"));
    ck_assert_ptr_null(strstr(r.body, "zk"));
    ck_assert_ptr_null(strstr(r.body, "zookeeper"));
    m0 = metric_value(r.body, "keel_messages_total");
    hres_free(&r);

    expect("POST", "/v1/actors/counter/m", "incr", 200, "1");
    expect("POST", "/v1/actors/counter/m", "incr", 200, "2");
    get(&r, "/metrics");
    m1 = metric_value(r.body, "keel_messages_total");
    ck_assert_msg(m1 >= m0 + 2, "messages %g -> %g", m0, m1);
    /* The process and its data directory: a resident keeld with open
     * descriptors, started moments ago, whose store takes disk space on
     * a file system with room left. */
    ck_assert_double_gt(metric_value(r.body, "process_resident_memory_bytes"),
                        1e6);
    ck_assert_double_ge(metric_value(r.body, "process_open_fds"), 3);
    ck_assert_double_ge(metric_value(r.body, "process_max_fds"),
                        metric_value(r.body, "process_open_fds"));
    {
        double started = metric_value(r.body, "process_start_time_seconds");
        double now = (double)time(NULL);
        ck_assert_msg(started > now - 600 && started <= now + 1,
                      "started %.2f, now %.0f", started, now);
    }
    ck_assert_double_ge(metric_value(r.body, "process_cpu_seconds_total"), 0);
    ck_assert_double_gt(metric_value(r.body, "keel_data_dir_bytes"), 0);
    ck_assert_double_gt(metric_value(r.body, "keel_data_dir_free_bytes"), 0);
    ck_assert_double_ge(metric_value(r.body, "keel_data_dir_fs_size_bytes"),
                        metric_value(r.body, "keel_data_dir_free_bytes"));
    ck_assert_ptr_nonnull(
        strstr(r.body, "# TYPE process_cpu_seconds_total counter\n"));
    ck_assert_double_ge(metric_value(r.body, "keel_commits_total"), 2);
    ck_assert_double_ge(
        metric_value(r.body, "keel_call_latency_seconds_count"), 2);
    hres_free(&r);

    get(&r, "/v1/cluster");
    ck_assert_int_eq(r.code, 200);
    /* The schema of cluster mode: the only member, its controller,
     * owning every unit at map epoch 1 (as `keel nodes` says). */
    ck_assert_ptr_nonnull(strstr(r.body, "{\"mode\": \"standalone\", "));
    ck_assert_ptr_nonnull(strstr(r.body, "\"cluster\": null, "
                                         "\"self\": \"local\", "));
    ck_assert_ptr_nonnull(strstr(r.body, "\"members\": [{\"name\": "
                                         "\"local\", \"self\": true, "));
    ck_assert_ptr_nonnull(strstr(r.body, "\"incarnation\": 1, "
                                         "\"capabilities\": [], "
                                         "\"controller\": true}]"));
    ck_assert_ptr_nonnull(strstr(r.body, "\"controller\": \"local\", "
                                         "\"capabilities\": "
                                         "{\"\": [\"local\"]}"));
    ck_assert_ptr_nonnull(strstr(r.body, "\"map_epoch\": 1, "));
    ck_assert_ptr_nonnull(strstr(r.body, "\"units\": [{\"capability\": "
                                         "\"\", \"owners\": [\"local\", "));
    ck_assert_ptr_nonnull(strstr(r.body, "\"targets\": {}, \"backups\": "
                                         "{}, \"out_of_sync\": {}}], "
                                         "\"replication\": {\"lag_max_ms\": "
                                         "0, \"backups\": [], "));
    ck_assert_ptr_nonnull(strstr(r.body, "\"failovers\": 0}}\n"));
    snprintf(want, sizeof want, "\"shard_count\": %u", KEEL_DEFAULT_SHARDS);
    ck_assert_ptr_nonnull(strstr(r.body, want));
    snprintf(want, sizeof want, "\"listen\": \"%s\"", node.addr);
    ck_assert_ptr_nonnull(strstr(r.body, want));
    snprintf(want, sizeof want, "\"http\": \"127.0.0.1:%d\"", http_port);
    ck_assert_ptr_nonnull(strstr(r.body, want));
    hres_free(&r);
    stop_node_clean();
}
END_TEST

/* 503: a newer owner's fence epoch in the store refuses this node's
 * writes to that shard (what a stale owner sees after a move). */
START_TEST(fenced_shard_is_503)
{
    keel_store_options so;
    keel_store *s;
    keel_batch *b;
    struct hres r;
    char err[256];
    uint32_t shard = keel_shard_of("counter", "c1", 2, KEEL_DEFAULT_SHARDS);
    int st;

    start_node(NULL);
    expect("POST", "/v1/actors/counter/c1", "incr", 200, "1");
    stop_node_clean();

    memset(&so, 0, sizeof so);
    so.path = data;
    so.shard_count = KEEL_DEFAULT_SHARDS;
    ck_assert_int_eq(keel_store_open(&so, &s, err, sizeof err), 0);
    b = keel_batch_create();
    ck_assert_int_eq(keel_batch_begin_group(b, "", (uint16_t)shard, 7, NULL),
                     0);
    ck_assert_int_eq(keel_batch_fence_only(b), 0);
    ck_assert_int_eq(keel_store_commit(s, b), 0);
    keel_batch_group(b, 0, &st);
    ck_assert_int_eq(st, 0);
    keel_batch_destroy(b);
    keel_store_close(s);

    start_node(NULL);
    post(&r, "/v1/actors/counter/c1", "incr");
    expect_error(&r, 503, "EFENCED", 11);
    ck_assert_ptr_nonnull(strcasestr(r.hdr, "Retry-After: 1\r\n"));
    hres_free(&r);
    healthy();
    stop_node_clean();
}
END_TEST

/* 507: the data file cannot grow (RLIMIT_FSIZE makes writes fail with
 * EFBIG, which the store reports as ENOSPC). */
START_TEST(disk_full_is_507)
{
    static const char *const more[] = {"--map-size", "65536", NULL};
    const size_t vlen = 200000;
    char *msg = malloc(vlen + 16);
    struct hres r;
    int i, got = 0;

    ck_assert_ptr_nonnull(msg);
    node.fsize_limit = 3L << 20;
    start_node(more);
    for (i = 0; i < 60 && !got; i++) {
        int n = snprintf(msg, 16, "put k%03d ", i);
        memset(msg + n, 'a' + i % 26, vlen);
        curl(&r, "POST", "/v1/actors/kv/disk", msg, (size_t)n + vlen, NULL);
        if (r.code == 507) {
            expect_error(&r, 507, "ENOSPC", 9);
            got = 1;
        } else {
            ck_assert_msg(r.code == 200, "put %d: status %d: %s", i, r.code,
                          r.body);
        }
        hres_free(&r);
    }
    ck_assert_msg(got, "no 507 after %d puts of %zu bytes", i, vlen);
    free(msg);
    healthy();
    expect("GET", "/readyz", NULL, 200, "ready\n");
    stop_node_clean();
}
END_TEST

START_TEST(malformed_and_slow_clients)
{
    static const char body[] = "incr 41";
    char *reply, hdr[256];
    int fd, n;
    size_t i;
    double t0;

    start_node(NULL);
    /* Garbage request lines: MHD answers 400 itself, or, for a line
     * without a single space, just closes the connection. */
    fd = raw_connect();
    send_all(fd, "THIS IS GARBAGE\r\n\r\n", 19);
    reply = read_to_eof(fd);
    close(fd);
    ck_assert_msg(strncmp(reply, "HTTP/1.1 400 ", 13) == 0, "reply: %s",
                  reply);
    free(reply);
    fd = raw_connect();
    send_all(fd, "GARBAGE\r\n\r\n", 11);
    reply = read_to_eof(fd);
    close(fd);
    ck_assert_msg(reply[0] == '\0' || strncmp(reply, "HTTP/1.1 400 ", 13) == 0,
                  "reply: %s", reply);
    free(reply);
    fd = raw_connect();
    send_all(fd, "\x01\x02\xff junk \x7f\r\n\r\n", 14);
    reply = read_to_eof(fd);
    close(fd);
    ck_assert_msg(strstr(reply, " 400 ") != NULL, "reply: %s", reply);
    free(reply);
    healthy();

    /* A flood of them logs a line a second, and the next line counts
     * what was left out; a client hanging up mid-request logs nothing
     * at warn. */
    t0 = now_s();
    for (i = 0; i < 40; i++) {
        static const char cut[] = "POST /v1/actors/counter/x HTTP/1.1\r\n"
                                  "Content-Length: 100\r\n\r\nincr";
        fd = raw_connect();
        send_all(fd, "\x01\x02\xff junk \x7f\r\n\r\n", 14);
        free(read_to_eof(fd));
        close(fd);
        fd = raw_connect();
        send_all(fd, cut, sizeof cut - 1);
        close(fd);
    }
    usleep(1100000);
    fd = raw_connect();
    send_all(fd, "\x01\x02\xff junk \x7f\r\n\r\n", 14);
    free(read_to_eof(fd));
    close(fd);
    {
        char *log = NULL, *p;
        int lines = 0, tries;
        for (tries = 0; tries < 50; tries++) {
            free(log);
            log = tu_keeld_log(&node);
            ck_assert_ptr_nonnull(log);
            if (strstr(log, "more messages of the HTTP library since the "
                            "last such line)") != NULL)
                break;
            usleep(100000);
        }
        ck_assert_msg(strstr(log, "more messages of the HTTP library since "
                                  "the last such line)") != NULL,
                      "%s", log);
        ck_assert_msg(strstr(log, "incomplete request") == NULL, "%s", log);
        for (p = log; (p = strstr(p, " warn http: ")) != NULL; p++)
            lines++;
        /* 41 malformed requests: a line a second at most. */
        ck_assert_msg(lines <= (int)(now_s() - t0) + 2,
                      "%d warn lines from the HTTP library in %.1f s", lines,
                      now_s() - t0);
        free(log);
    }
    healthy();

    /* A body trickled byte by byte over about a second. */
    fd = raw_connect();
    n = snprintf(hdr, sizeof hdr,
                 "POST /v1/actors/counter/slow HTTP/1.1\r\n"
                 "Host: 127.0.0.1\r\nContent-Length: %zu\r\n"
                 "Connection: close\r\n\r\n",
                 strlen(body));
    send_all(fd, hdr, (size_t)n);
    {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    for (i = 0; i < strlen(body); i++) {
        usleep(150000);
        send_all(fd, body + i, 1);
    }
    reply = read_to_eof(fd);
    close(fd);
    ck_assert_msg(strncmp(reply, "HTTP/1.1 200 ", 13) == 0, "reply: %s",
                  reply);
    ck_assert_msg(strstr(reply, "\r\n\r\n41") != NULL, "reply: %s", reply);
    free(reply);
    healthy();
    stop_node_clean();
}
END_TEST

/* Sends req on a connection of its own and reads until the node closes
 * it. Malloc'd. */
static char *raw_exchange(const char *req)
{
    int fd = raw_connect();
    char *reply;

    send_all(fd, req, strlen(req));
    reply = read_to_eof(fd);
    close(fd);
    return reply;
}

/* Sends req (raw_exchange) and expects its reply to begin with status
 * (e.g. "HTTP/1.1 400 ") and to hold text (when not NULL); with once, no
 * second answer follows on the connection. Returns the reply (free it). */
static char *refused_with(const char *req, const char *status,
                          const char *text, int once)
{
    char *reply = raw_exchange(req);

    ck_assert_msg(strncmp(reply, status, strlen(status)) == 0, "reply: %s",
                  reply);
    ck_assert_msg(text == NULL || strstr(reply, text) != NULL, "reply: %s",
                  reply);
    ck_assert_msg(!once || strstr(reply + 13, "HTTP/1.1 ") == NULL,
                  "a second answer: %s", reply);
    return reply;
}

/* A request whose end a proxy and the node could find in different places
 * is refused and its connection closed: nothing after the first framing
 * header runs as a request of its own (request smuggling). Before, the
 * first Content-Length was taken and the rest ran as a second request,
 * and a Transfer-Encoding other than chunked got no answer for 10 s. */
START_TEST(conflicting_framing_is_refused)
{
    static const char hidden[] = "POST /v1/actors/counter/smuggled HTTP/1.1\r\n"
                                 "Host: 127.0.0.1\r\nContent-Length: 4\r\n\r\n"
                                 "incr";
    static const char chunk[] = "4\r\nincr\r\n0\r\n\r\n";
    char req[1024];
    char *reply;
    double t0;

    start_node(NULL);
    /* Two Content-Length lines: the first covers "incr", the second the
     * hidden request too. */
    snprintf(req, sizeof req,
             "POST /v1/actors/counter/front HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             "Content-Length: 4\r\nContent-Length: %zu\r\n\r\nincr%s",
             4 + strlen(hidden), hidden);
    reply = refused_with(req, "HTTP/1.1 400 ", "more than one Content-Length",
                         1);
    ck_assert_msg(strstr(reply, "\"EMALFORMED\"") != NULL, "reply: %s", reply);
    ck_assert_msg(strcasestr(reply, "Connection: close") != NULL, "reply: %s",
                  reply);
    free(reply);

    /* Chunked and a Content-Length: the chunked body ends before the
     * hidden request, the length covers it. */
    snprintf(req, sizeof req,
             "POST /v1/actors/counter/front HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             "Transfer-Encoding: chunked\r\nContent-Length: %zu\r\n\r\n%s%s",
             strlen(chunk) + strlen(hidden), chunk, hidden);
    free(refused_with(req, "HTTP/1.1 400 ",
                      "both Transfer-Encoding and Content-Length", 1));

    /* A coding the node does not decode: 501 at once, not a wait. */
    t0 = now_s();
    free(refused_with("POST /v1/actors/counter/front HTTP/1.1\r\n"
                      "Host: 127.0.0.1\r\nTransfer-Encoding: gzip\r\n\r\n"
                      "incr",
                      "HTTP/1.1 501 ", "only transfer coding taken is chunked",
                      0));
    ck_assert_msg(now_s() - t0 < 8, "501 after %.1f s", now_s() - t0);
    free(refused_with("POST /v1/actors/counter/front HTTP/1.1\r\n"
                      "Host: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n4\r\nincr\r\n"
                      "0\r\n\r\n",
                      "HTTP/1.1 501 ", NULL, 0));

    /* White space before a colon (libmicrohttpd keeps it in the name, so
     * a "Content-Length " went uncounted), a framing header folded onto
     * the next line (glued to the name), and Transfer-Encoding in
     * HTTP/1.0: refused too, nothing after them run. */
    snprintf(req, sizeof req,
             "POST /v1/actors/counter/front HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             "Content-Length: 4\r\nContent-Length : %zu\r\n\r\nincr%s",
             4 + strlen(hidden), hidden);
    free(refused_with(req, "HTTP/1.1 400 ", "white space", 1));
    snprintf(req, sizeof req,
             "POST /v1/actors/counter/front HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             "Transfer-Encoding:\r\n chunked\r\nContent-Length: %zu\r\n\r\n"
             "%s%s",
             strlen(chunk) + strlen(hidden), chunk, hidden);
    free(refused_with(req, "HTTP/1.1 400 ", "folded", 1));
    reply = raw_exchange("POST /v1/actors/counter/front HTTP/1.0\r\n"
                         "Host: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                         "\r\n4\r\nincr\r\n0\r\n\r\n");
    ck_assert_msg(strstr(reply, " 400 ") != NULL &&
                      strstr(reply, "Transfer-Encoding in an HTTP/1.0 "
                                    "request") != NULL,
                  "reply: %s", reply);
    free(reply);

    /* Neither the front request nor the hidden one ran. */
    {
        struct hres r;
        get(&r, "/v1/actors/counter/smuggled");
        expect_error(&r, 404, "ENOTFOUND", 16);
        hres_free(&r);
        get(&r, "/v1/actors/counter/front");
        expect_error(&r, 404, "ENOTFOUND", 16);
        hres_free(&r);
    }
    /* White space after chunked: MHD would not decode the body, and the
     * client would wait for its connection's timeout. */
    free(refused_with("POST /v1/actors/counter/front HTTP/1.1\r\n"
                      "Host: 127.0.0.1\r\nTransfer-Encoding: chunked \r\n"
                      "Connection: close\r\n\r\n6\r\nincr 4\r\n0\r\n\r\n",
                      "HTTP/1.1 501 ", NULL, 0));
    /* Chunked alone is taken, whatever its case. */
    reply = raw_exchange("POST /v1/actors/counter/front HTTP/1.1\r\n"
                         "Host: 127.0.0.1\r\nTransfer-Encoding:  Chunked\r\n"
                         "Connection: close\r\n\r\n6\r\nincr 4\r\n0\r\n\r\n");
    ck_assert_msg(strncmp(reply, "HTTP/1.1 200 ", 13) == 0 &&
                      strstr(reply, "\r\n\r\n4") != NULL,
                  "reply: %s", reply);
    free(reply);
    healthy();
    stop_node_clean();
}
END_TEST


/* The largest count of left-out messages the "more messages of the HTTP
 * library" lines of the node's log give; -1 when there is no such line. */
static long most_left_out(void)
{
    static const char tail[] = " more messages of the HTTP library since "
                               "the last such line)";
    char *log = tu_keeld_log(&node), *p;
    long most = -1;

    ck_assert_ptr_nonnull(log);
    for (p = log; (p = strstr(p, tail)) != NULL; p++) {
        char *q = p;
        while (q > log && q[-1] >= '0' && q[-1] <= '9')
            q--;
        if (q < p && atol(q) > most)
            most = atol(q);
    }
    free(log);
    return most;
}

/* How many descriptors a process has open; with top, the highest
 * number among them plus one. */
static int open_fds_top(pid_t pid, int *top)
{
    char path[64];
    DIR *d;
    struct dirent *e;
    int count = 0, t = 0;

    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    d = opendir(path);
    ck_assert_ptr_nonnull(d);
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        count++;
        if (atoi(e->d_name) + 1 > t)
            t = atoi(e->d_name) + 1;
    }
    closedir(d);
    if (top != NULL)
        *top = t;
    return count;
}


/* With every descriptor number under the process's limit taken, an HTTP
 * client waits, and the HTTP thread rests between tries instead of
 * trying again at once: a few tries a second, not hundreds of thousands
 * (counted by the log's "N more messages" lines, each try logging two).
 * Once descriptors are free again it is answered. The node's limit is
 * set just above its highest descriptor, and wire connections fill the
 * numbers free below it (the node takes each, none is refused, so no
 * descriptor comes free meanwhile). */
START_TEST(out_of_descriptors_rests)
{
    enum { WIRE_MAX = 64 };
    struct rlimit rl, was;
    int wire[WIRE_MAX], nwire, i, fd, top;
    long most = -1;
    double deadline;
    char *reply;

    start_node(NULL);
    nwire = open_fds_top(node.pid, &top);
    nwire = top - nwire; /* the numbers free under the highest */
    ck_assert_msg(nwire >= 0 && nwire < WIRE_MAX, "%d free descriptors "
                  "below %d", nwire, top);
    /* The soft limit only: raising a hard one again needs a privilege. */
    ck_assert_int_eq(prlimit(node.pid, RLIMIT_NOFILE, NULL, &was), 0);
    rl.rlim_cur = (rlim_t)top;
    rl.rlim_max = was.rlim_max;
    ck_assert_msg(prlimit(node.pid, RLIMIT_NOFILE, &rl, NULL) == 0,
                  "prlimit: %s", strerror(errno));
    for (i = 0; i < nwire; i++) {
        struct sockaddr_in sin;
        wire[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(wire[i], 0);
        memset(&sin, 0, sizeof sin);
        sin.sin_family = AF_INET;
        sin.sin_port = htons((uint16_t)node.port);
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ck_assert_int_eq(connect(wire[i], (struct sockaddr *)&sin, sizeof sin),
                         0);
    }
    deadline = now_s() + 20;
    while (open_fds_top(node.pid, NULL) < top) {
        ck_assert_msg(now_s() < deadline, "the node holds %d descriptors "
                      "under %d", open_fds_top(node.pid, NULL), top);
        usleep(50000);
    }
    fd = raw_connect();
    {
        static const char hz[] = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                 "Connection: close\r\n\r\n";
        send_all(fd, hz, sizeof hz - 1);
    }
    /* Two "more messages" lines: a second and more of tries. */
    deadline = now_s() + 30;
    for (;;) {
        char *log = tu_keeld_log(&node), *p = log;
        int lines = 0;
        ck_assert_ptr_nonnull(log);
        while ((p = strstr(p, "more messages of the HTTP library")) != NULL) {
            lines++;
            p++;
        }
        if (lines >= 2) {
            free(log);
            break;
        }
        ck_assert_msg(now_s() < deadline, "%d counting lines after 30 s:\n%s",
                      lines, log);
        free(log);
        usleep(200000);
    }
    most = most_left_out();
    ck_assert_msg(most >= 0 && most < 500,
                  "the HTTP library logged %ld messages in about a second "
                  "out of descriptors", most);
    /* Descriptors back: the waiting request is answered. */
    ck_assert_int_eq(prlimit(node.pid, RLIMIT_NOFILE, &was, NULL), 0);
    for (i = 0; i < nwire; i++)
        close(wire[i]);
    reply = read_to_eof(fd);
    close(fd);
    ck_assert_msg(strncmp(reply, "HTTP/1.1 200 ", 13) == 0 &&
                      strstr(reply, "\r\n\r\nok\n") != NULL,
                  "reply: %s", reply);
    free(reply);
    healthy();
    stop_node_clean();
}
END_TEST

START_TEST(thousand_connections)
{
    enum { N = 1000, ACTORS = 50 };
    static int fds[N];
    static char *bufs[N];
    static size_t lens[N];
    struct rlimit rl;
    struct pollfd *pf;
    int i, open_ = N, ok = 0;
    double t0, deadline;
    long total = 0;

    /* Our side needs N descriptors too. */
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < N + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    }
    ck_assert_msg(rl.rlim_cur >= N + 64,
                  "RLIMIT_NOFILE %llu is too low for %d connections",
                  (unsigned long long)rl.rlim_cur, N);
    start_node(NULL);
    t0 = now_s();
    for (i = 0; i < N; i++) {
        char req[256];
        int n = snprintf(req, sizeof req,
                         "POST /v1/actors/counter/k%d HTTP/1.1\r\n"
                         "Host: 127.0.0.1\r\nContent-Length: 4\r\n"
                         "Connection: close\r\n\r\nincr",
                         i % ACTORS);
        fds[i] = raw_connect();
        send_all(fds[i], req, (size_t)n);
        bufs[i] = calloc(1, 512);
        ck_assert_ptr_nonnull(bufs[i]);
        lens[i] = 0;
    }
    pf = calloc(N, sizeof *pf);
    ck_assert_ptr_nonnull(pf);
    deadline = now_s() + 120;
    while (open_ > 0) {
        ck_assert_msg(now_s() < deadline, "%d of %d replies missing after "
                      "120 s", open_, N);
        for (i = 0; i < N; i++) {
            pf[i].fd = fds[i];
            pf[i].events = POLLIN;
            pf[i].revents = 0;
        }
        if (poll(pf, N, 500) <= 0)
            continue;
        for (i = 0; i < N; i++) {
            ssize_t r;
            if (fds[i] < 0 || pf[i].revents == 0)
                continue;
            r = recv(fds[i], bufs[i] + lens[i], 511 - lens[i], 0);
            if (r > 0) {
                lens[i] += (size_t)r;
                if (lens[i] < 511)
                    continue;
            }
            close(fds[i]);
            fds[i] = -1;
            open_--;
        }
    }
    for (i = 0; i < N; i++) {
        if (strncmp(bufs[i], "HTTP/1.1 200 ", 13) == 0)
            ok++;
        free(bufs[i]);
    }
    free(pf);
    printf("%d concurrent HTTP connections: %d answered 200 in %.2f s\n", N,
           ok, now_s() - t0);
    ck_assert_int_eq(ok, N);

    /* Every increment happened exactly once, and the node still answers. */
    for (i = 0; i < ACTORS; i++) {
        struct hres r;
        char path[64];
        snprintf(path, sizeof path, "/v1/actors/counter/k%d", i);
        post(&r, path, "get");
        ck_assert_int_eq(r.code, 200);
        total += atol(r.body);
        hres_free(&r);
    }
    ck_assert_int_eq(total, N);
    healthy();
    stop_node_clean();
}
END_TEST

/* SIGTERM with connections open (idle keep-alive, half-sent request,
 * requests in flight): keeld stops within bounds and exits 0 (so, under
 * ASan, without leaks). */
START_TEST(stop_with_open_connections)
{
    enum { IDLE = 20 };
    int idle[IDLE], partial, busy[10], i, rc;
    double t0;

    start_node(NULL);
    for (i = 0; i < IDLE; i++) {
        static const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        char buf[512];
        idle[i] = raw_connect();
        send_all(idle[i], req, sizeof req - 1);
        ck_assert_int_gt(recv(idle[i], buf, sizeof buf, 0), 0);
    }
    partial = raw_connect();
    send_all(partial, "POST /v1/actors/counter/p HTTP/1.1\r\nHost: x\r\n"
                      "Content-Length: 100\r\n\r\nincr",
             strlen("POST /v1/actors/counter/p HTTP/1.1\r\nHost: x\r\n"
                    "Content-Length: 100\r\n\r\nincr"));
    for (i = 0; i < 10; i++) {
        static const char req[] = "POST /v1/actors/counter/b HTTP/1.1\r\n"
                                  "Host: x\r\nContent-Length: 4\r\n\r\nincr";
        busy[i] = raw_connect();
        send_all(busy[i], req, sizeof req - 1);
    }
    t0 = now_s();
    rc = tu_keeld_stop(&node, SIGTERM);
    ck_assert_msg(rc == 0, "keeld exited %d", rc);
    ck_assert_msg(now_s() - t0 < 15, "stop took %.1f s", now_s() - t0);
    /* Each in-flight request got an answer (200 if it ran, 503 if it came
     * in after the stop began) or its connection was closed. */
    for (i = 0; i < 10; i++) {
        char *reply = read_to_eof(busy[i]);
        ck_assert_msg(reply[0] == '\0' ||
                          strncmp(reply, "HTTP/1.1 200 ", 13) == 0 ||
                          strncmp(reply, "HTTP/1.1 503 ", 13) == 0,
                      "reply: %s", reply);
        free(reply);
        close(busy[i]);
    }
    for (i = 0; i < IDLE; i++)
        close(idle[i]);
    close(partial);
}
END_TEST

/* The library itself, embedded: the listener binds in keel_node_create
 * (address errors surface there), serves only while the loop runs, and
 * create/destroy without a run leaves nothing behind. */
START_TEST(embedded_lifecycle)
{
    keel_node_options o;
    keel_node *n = NULL, *n2 = NULL;
    char err[256], addr[64];
    struct hres r;

    keel_node_options_init(&o);
    o.data_dir = data;
    o.http_listen = "no-port-here";
    ck_assert_int_eq(keel_node_create(&o, &n, err, sizeof err), KEEL_EADDR);
    ck_assert_ptr_nonnull(strstr(err, "no-port-here"));
    ck_assert_ptr_null(n);

    o.http_listen = "127.0.0.1:0";
    ck_assert_int_eq(keel_node_create(&o, &n, err, sizeof err), 0);
    http_port = keel_node_http_port(n);
    ck_assert_int_gt(http_port, 0);
    ck_assert_int_eq(keel_node_port(n), 0); /* no wire listener asked */

    /* The port is taken: a second node cannot have it. */
    snprintf(addr, sizeof addr, "127.0.0.1:%d", http_port);
    o.http_listen = addr;
    o.data_dir = dir;
    ck_assert_int_eq(keel_node_create(&o, &n2, err, sizeof err), KEEL_EADDR);
    ck_assert_ptr_null(n2);

    ck_assert_int_eq(keel_node_start(n), 0);
    {
        /* A round trip through the loop before anything else: it is
         * running (and its wakeup exists) once this returns. */
        void *reply = NULL;
        size_t rl = 0;
        ck_assert_int_eq(
            keel_call_sync(n, "counter", "e", 1, "get", 3, &reply, &rl), 0);
        keel_free(reply);
    }
    expect("POST", "/v1/actors/counter/e", "incr 3", 200, "3");
    get(&r, "/v1/cluster");
    ck_assert_ptr_nonnull(strstr(r.body, "\"listen\": null"));
    hres_free(&r);
    keel_node_stop(n);
    ck_assert_int_eq(keel_node_join(n), 0);
    keel_node_destroy(n);

    /* Created and destroyed without running. */
    o.http_listen = "127.0.0.1:0";
    o.data_dir = data;
    ck_assert_int_eq(keel_node_create(&o, &n, err, sizeof err), 0);
    keel_node_destroy(n);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("http");
    TCase *tc = tcase_create("http");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, actor_calls_and_status_codes);
    tcase_add_test(tc, state_reads_and_ids);
    tcase_add_test(tc, idempotency_key);
    tcase_add_test(tc, metrics_health_cluster);
    tcase_add_test(tc, fenced_shard_is_503);
    tcase_add_test(tc, disk_full_is_507);
    tcase_add_test(tc, malformed_and_slow_clients);
    tcase_add_test(tc, conflicting_framing_is_refused);
    tcase_add_test(tc, out_of_descriptors_rests);
    tcase_add_test(tc, thousand_connections);
    tcase_add_test(tc, stop_with_open_connections);
    tcase_add_test(tc, embedded_lifecycle);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(suite());
}
