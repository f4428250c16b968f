/* The protocol hello against a real keeld (docs/protocol.md, "Hello"):
 * what is not a keel client's hello (an HTTP request, garbage, frames
 * from a client older than the hello, another version) is answered in
 * words it can read and closed, and the node serves on; the keel tool
 * pointed at a node's HTTP port says that it is not a keel node; an
 * oversized frame is answered ETOOBIG, naming the limit, before the
 * close, even while the client is still sending its body. Every wait is
 * bounded; nothing here asserts how long anything took. */
#include <check.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "keel.h"
#include "proc.h"
#include "rawconn.h"
#include "runtime/client.h"
#include "runtime/proto.h"
#include "testutil.h"

static char *dir, *data;
static tu_keeld node;
static int http_port;

static void setup(void)
{
    dir = tu_tmpdir("handshake");
    if (asprintf(&data, "%s/data", dir) < 0)
        abort();
    memset(&node, 0, sizeof node);
    http_port = 0;
}

static void teardown(void)
{
    if (node.pid > 0)
        tu_keeld_stop(&node, SIGKILL);
    tu_keeld_free(&node);
    tu_rmrf(dir);
    free(dir);
    free(data);
}

/* keeld with an HTTP listener on a free port, read from its log. */
static void start_node(const char *max_frame)
{
    const char *extra[] = {"--http", "127.0.0.1:0", NULL, NULL, NULL};
    const char *p = NULL, *q;
    char *log;

    if (max_frame != NULL) {
        extra[2] = "--max-frame";
        extra[3] = max_frame;
    }
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

/* Everything the node sends until it closes (at most 5 s), NUL-ended. */
static size_t read_to_close(int fd, char *buf, size_t cap)
{
    size_t len = 0;

    while (len + 1 < cap) {
        ssize_t r;

        if (!tu_wait_readable(fd, 5000))
            break;
        r = recv(fd, buf + len, cap - 1 - len, 0);
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    buf[len] = '\0';
    return len;
}

/* A counter call through the ordinary client: the node still serves. */
static void still_serves(const char *id, const char *want)
{
    keel_client *c = NULL;
    char *reply = NULL;
    size_t rlen;

    ck_assert_int_eq(keel_client_connect(node.addr, 10000, &c), 0);
    ck_assert_int_eq(keel_client_call(c, KEEL_FRAME_CALL, "counter", id,
                                      strlen(id), "incr", 4, &reply, &rlen),
                     0);
    ck_assert_str_eq(reply, want);
    free(reply);
    keel_client_close(c);
}

static void frame_text(const tu_rframe *f, char *out, size_t cap)
{
    size_t n = f->len > 2 ? f->len - 2 : 0;

    if (n >= cap)
        n = cap - 1;
    memcpy(out, f->body + 2, n);
    out[n] = '\0';
}

/* An HTTP request on the wire port gets an HTTP answer that says which
 * port is which; garbage and a client without the hello get a bare
 * ERROR EPROTO quoting request id 0; all are closed, and the node serves
 * on between them. */
START_TEST(not_keel_clients_told)
{
    static const char get[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    static const char junk[] = "hello there\r\n";
    char buf[2048], want[64], text[600];
    uint8_t ping[KEEL_FRAME_HEADER];
    tu_rframe f;
    int fd;

    start_node(NULL);
    still_serves("h", "1");

    fd = tu_raw_connect_bare(node.port);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(tu_send_all(fd, get, sizeof get - 1), 0);
    read_to_close(fd, buf, sizeof buf);
    close(fd);
    ck_assert_msg(strncmp(buf, "HTTP/1.1 400 ", 13) == 0, "answer: %s", buf);
    ck_assert_msg(strstr(buf, "keel wire protocol port") != NULL, "%s", buf);
    snprintf(want, sizeof want, "port %d", http_port);
    ck_assert_msg(strstr(buf, want) != NULL, "names not %s: %s", want, buf);
    still_serves("h", "2");

    fd = tu_raw_connect_bare(node.port);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(tu_send_all(fd, junk, sizeof junk - 1), 0);
    ck_assert_int_eq(tu_read_frame(fd, &f, 5000), 1);
    ck_assert_int_eq(f.kind, KEEL_FRAME_ERROR);
    ck_assert_int_eq(f.code, KEEL_EPROTO);
    ck_assert(f.id == 0);
    frame_text(&f, text, sizeof text);
    ck_assert_msg(strstr(text, "not a keel client") != NULL, "%s", text);
    ck_assert(tu_closed_within(fd, 5000));
    close(fd);
    still_serves("h", "3");

    /* A PING as a client older than the hello sends it. */
    fd = tu_raw_connect_bare(node.port);
    ck_assert_int_ge(fd, 0);
    keel_frame_header(ping, KEEL_FRAME_PING, 42, 0);
    ck_assert_int_eq(tu_send_all(fd, ping, sizeof ping), 0);
    ck_assert_int_eq(tu_read_frame(fd, &f, 5000), 1);
    ck_assert_int_eq(f.kind, KEEL_FRAME_ERROR);
    ck_assert_int_eq(f.code, KEEL_EPROTO);
    frame_text(&f, text, sizeof text);
    ck_assert_msg(strstr(text, "no protocol hello") != NULL &&
                      strstr(text, "version 1") != NULL,
                  "%s", text);
    ck_assert(tu_closed_within(fd, 5000));
    close(fd);
    still_serves("h", "4");
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
}
END_TEST

/* A hello of another version gets the node's hello (its version), then
 * an ERROR EPROTO naming both versions, then the close. */
START_TEST(other_version_named)
{
    static const uint8_t hello7[] = {'K', 'E', 'E', 'L', 7, 0, '\r', '\n'};
    uint8_t theirs[KEEL_HELLO_LEN];
    unsigned version = 0;
    char text[600];
    tu_rframe f;
    int fd;

    start_node(NULL);
    fd = tu_raw_connect_bare(node.port);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(tu_send_all(fd, hello7, sizeof hello7), 0);
    ck_assert_int_eq(tu_read_exact(fd, theirs, sizeof theirs, 5000), 1);
    ck_assert_int_eq(keel_hello_parse(theirs, sizeof theirs, &version),
                     KEEL_HELLO_LEN);
    ck_assert_uint_eq(version, KEEL_PROTO_VERSION);
    ck_assert_int_eq(tu_read_frame(fd, &f, 5000), 1);
    ck_assert_int_eq(f.kind, KEEL_FRAME_ERROR);
    ck_assert_int_eq(f.code, KEEL_EPROTO);
    ck_assert(f.id == 0);
    frame_text(&f, text, sizeof text);
    ck_assert_msg(strstr(text, "unsupported protocol version 7 (this node "
                               "speaks 1)") != NULL,
                  "%s", text);
    ck_assert(tu_closed_within(fd, 5000));
    close(fd);
    still_serves("v", "1");
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
}
END_TEST

/* The keel tool pointed at the node's HTTP port: not a keel node, a
 * transport failure (exit 3); at the wire port all is well. */
START_TEST(cli_at_http_port)
{
    char addr[64], *out = NULL, *err = NULL;
    int rc;

    start_node(NULL);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", http_port);
    rc = tu_keel(addr, &out, &err, "-t", "10000", "call", "counter", "c",
                 "incr", NULL);
    ck_assert_msg(rc == 3, "exit %d: %s", rc, err ? err : "");
    ck_assert_msg(err != NULL && strstr(err, "not a keel node") != NULL,
                  "stderr: %s", err ? err : "");
    ck_assert_msg(out != NULL && out[0] == '\0', "stdout: %s", out);
    free(out);
    free(err);
    out = err = NULL;
    rc = tu_keel(addr, &out, &err, "ping", NULL);
    ck_assert_msg(rc == 3 && err != NULL &&
                      strstr(err, "not a keel node") != NULL,
                  "exit %d: %s", rc, err ? err : "");
    /* keeld's HTTP face closes on the hello without a word: the message
     * still points at the likely mistake. */
    ck_assert_msg(strstr(err, "HTTP port") != NULL, "stderr: %s", err);
    free(out);
    free(err);
    out = err = NULL;
    /* the counter did not move: nothing reached the node */
    ck_assert_int_eq(tu_keel(node.addr, &out, &err, "call", "counter", "c",
                             "incr", NULL),
                     0);
    ck_assert_str_eq(out, "1\n");
    free(out);
    free(err);
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
}
END_TEST

/* A frame announced over --max-frame is answered ETOOBIG, quoting its
 * request id and naming the limit, and the client reads that answer
 * although it goes on sending the body: the node drops what it sends
 * after rather than closing on unread input, which would reset the
 * connection and destroy answers still on their way. To have answers on
 * their way, the client reads nothing until it has sent everything: the
 * PONGs of its pipelined PINGs fill the socket buffers ahead of the
 * ERROR. */
#define PINGS 1500
#define PING_BODY 4000

START_TEST(oversized_answered_before_close)
{
    const size_t body = 256u << 10;
    uint8_t *ping = calloc(1, KEEL_FRAME_HEADER + PING_BODY);
    uint8_t hdr[KEEL_FRAME_HEADER];
    char *junk = calloc(1, body), text[600];
    int fd, i, rcvbuf = 65536, pongs = 0, rc;
    tu_rframe f;

    ck_assert_ptr_nonnull(junk);
    ck_assert_ptr_nonnull(ping);
    start_node("4096");
    fd = tu_raw_connect(node.port);
    ck_assert_int_ge(fd, 0);
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    for (i = 0; i < PINGS; i++) {
        keel_frame_header(ping, KEEL_FRAME_PING, 1000 + (uint64_t)i,
                          PING_BODY);
        ck_assert_int_eq(tu_send_all(fd, ping, KEEL_FRAME_HEADER + PING_BODY),
                         0);
    }
    keel_frame_header(hdr, KEEL_FRAME_CALL, 77, 1u << 20);
    ck_assert_int_eq(tu_send_all(fd, hdr, sizeof hdr), 0);
    /* The body: the node may stop taking it once it has answered; what
     * counts is that the answer is there to read. */
    (void)tu_send_all(fd, junk, body);
    while ((rc = tu_read_frame(fd, &f, 5000)) == 1 &&
           f.kind == KEEL_FRAME_PONG)
        pongs++;
    ck_assert_msg(rc == 1, "after %d PONGs: %s", pongs,
                  rc == 0 ? "closed" : "nothing more");
    ck_assert_int_eq(pongs, PINGS);
    ck_assert_int_eq(f.kind, KEEL_FRAME_ERROR);
    ck_assert_int_eq(f.code, KEEL_ETOOBIG);
    ck_assert(f.id == 77);
    frame_text(&f, text, sizeof text);
    ck_assert_msg(strstr(text, "4096 bytes") != NULL, "%s", text);
    ck_assert(tu_closed_within(fd, 5000));
    close(fd);
    free(junk);
    free(ping);
    still_serves("big", "1");
    ck_assert_int_eq(tu_keeld_stop(&node, SIGTERM), 0);
}
END_TEST

static Suite *handshake_suite(void)
{
    Suite *s = suite_create("handshake");
    TCase *tc = tcase_create("hello");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, not_keel_clients_told);
    tcase_add_test(tc, other_version_named);
    tcase_add_test(tc, cli_at_http_port);
    tcase_add_test(tc, oversized_answered_before_close);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run_suite(handshake_suite());
}
