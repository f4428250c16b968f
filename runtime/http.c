/* The HTTP/JSON face: libmicrohttpd (MHD) parses HTTP on its own polling
 * thread; the node's loop thread does the work.
 *
 * A request's path: MHD calls the access handler once with the headers
 * (route it), once per piece of body (copy it, up to the node's max frame
 * size), and once more when the request is complete. Endpoints that need
 * nothing of the node's internals (/healthz; /v1/cluster standalone) are answered
 * there. The others suspend the connection and post a job to the loop
 * thread; the job calls keel_call(), reads the store or copies the
 * statistics, stores the outcome in the request and resumes the
 * connection; MHD then calls the handler again, which builds the
 * response.
 *
 * Ownership of a struct http_req: the MHD thread allocates it on the first
 * handler call and frees it when MHD reports the request complete. While
 * the connection is suspended only the loop thread touches it; resuming
 * the connection is the loop thread's last access (MHD may free it right
 * after). `done` (release/acquire) publishes the outcome.
 *
 * Suspending comes before posting: if the job ran first, it could resume
 * a connection that is not suspended yet.
 *
 * Slow clients. MHD's connection timeout counts from the last byte, so a
 * client that trickles its headers a byte at a time would hold its
 * connection for ever, and enough of them lock the face out. Each
 * connection therefore gets a header deadline (--http-header-timeout,
 * counted from its opening or the end of its previous request), which
 * the watchdog thread enforces by shutting down the socket of a
 * connection that missed it; MHD then sees the end of the stream and
 * closes the connection. And one client address may hold at most
 * --http-max-per-ip connections.
 *
 * HTTPS. A node with TLS files serves HTTPS only, TLS 1.3 only, with the
 * node's certificate; a client certificate that verifies against the CA
 * gives the connection its identity (auth.h). MHD cannot change a running
 * daemon's certificate, so a reload starts a second daemon with the new
 * files on a duplicate of the listen socket and quiesces the first: the
 * old daemon accepts nothing more, finishes the connections it has, and
 * the watchdog stops it once it has none. No connection is cut. */
#include "runtime/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <pthread.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/addr.h"
#include "common/log.h"
#include "coordinator/cluster.h"
#include "runtime/auth.h"
#include "runtime/dedup.h"
#include "runtime/follow.h"
#include "runtime/http_route.h"
#include "runtime/http_text.h"
#include "runtime/info.h"
#include "runtime/repl.h"
#include "runtime/node.h"
#include "runtime/procstat.h"

#define HTTP_BACKLOG 4096
#define HTTP_CONN_TIMEOUT_S 60u /* idle connections are closed after this */
#define HTTP_MAX_CONNECTIONS 16384u
#define HTTP_FD_RESERVE 256u    /* descriptors left for the store, the wire
                                 * listener and its clients */
#define HTTP_DRAIN_MS 2000      /* how long a stop waits for answers */
#define HTTP_PEM_MAX (1 << 20)  /* bytes of a certificate, key or CA file */
#define HTTP_RETIRE_MIN_S 1.0   /* a quiesced daemon lives at least this
                                 * long, so that a connection MHD accepted
                                 * as the quiesce came is counted */
/* TLS 1.3 only, as on the wire port. */
#define HTTP_TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3"

/* A connection's header deadline, from MHD's connect notice to its close
 * notice (which comes before MHD closes the socket, so fd is this
 * connection's while the entry is listed). Under keel_http.mu. */
struct hconn {
    struct hconn *prev, *next;
    int fd;
    double deadline; /* CLOCK_MONOTONIC seconds; 0: a request is in */
    /* The event stream the connection carries (under mu; unlinked by
     * whichever of the two goes first), and whether the watchdog ended it
     * because its client went away. */
    struct sse *sse;
    int sse_gone;
    /* HTTPS: the identity the client certificate gave, looked up at the
     * connection's first request (the handshake is over by then). MHD
     * thread. */
    int ident_known;
    keel_auth_conn ident;
};

/* One MHD daemon serving the listen socket. There is one, the current,
 * and after reloads maybe older ones, quiesced, that finish their
 * connections. */
struct hdaemon {
    struct keel_http *h;
    struct hdaemon *next;  /* keel_http.retired; under keel_http.mu */
    struct MHD_Daemon *d;
    int fd;                /* its listen descriptor */
    int quiesced;          /* fd is ours to close (else MHD closes it) */
    double retired_at;     /* mono_s() of the quiesce */
    unsigned limit;        /* its connection limit */
    atomic_int conns;      /* its open connections */
    /* The PEM text MHD was given: kept for the daemon's lifetime. */
    char *cert, *key, *ca;
};

struct keel_http {
    keel_node *n;
    char *addr;   /* as configured; owned */
    int fd;       /* the listen socket until a daemon takes it, ours to
                   * close; -1 after */
    int port;     /* bound port */
    int tls;      /* HTTPS: the node has TLS files */
    /* The daemon accepting connections: set by start and reload (loop
     * thread) and stop, never while the other runs. */
    struct hdaemon *cur;
    struct hdaemon *retired; /* quiesced daemons; under mu */
    atomic_int conns;        /* open connections, every daemon's */
    /* Requests between their first handler call and MHD's completion
     * notice: what a stop waits for. */
    atomic_int active;
    /* Connections suspended and not yet resumed. The daemon must not be
     * stopped while any is (an MHD rule). */
    atomic_int suspended;
    atomic_ullong answered; /* responses queued */
    /* MHD's messages: one line a second at most (log_mu). */
    pthread_mutex_t log_mu;
    double log_at;                /* when the last line went out */
    unsigned long long log_quiet; /* messages not logged since */
    /* Header deadlines: the connections, and the watchdog thread. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct hconn *hconns;
    int watch_stop;
    int watching; /* the thread runs */
    pthread_t watchdog;
    /* Event streams whose subscription is open (loop thread). */
    struct sse *streams;
};

static double mono_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* How many header timeouts a request's body has, from its headers. */
#define HTTP_BODY_TIMEOUTS 6

/* The connection's deadline: HTTP_DL_HEADERS (a request's headers are
 * awaited), HTTP_DL_BODY (its body is), or lifted (HTTP_DL_NONE: the
 * request is whole). MHD thread. */
enum { HTTP_DL_NONE, HTTP_DL_HEADERS, HTTP_DL_BODY };

static void hconn_deadline(keel_http *h, struct MHD_Connection *conn,
                           int what)
{
    double t = (double)h->n->opts.http_header_timeout_s;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct hconn *hc = ci != NULL ? ci->socket_context : NULL;

    if (hc == NULL)
        return;
    pthread_mutex_lock(&h->mu);
    hc->deadline = what == HTTP_DL_HEADERS ? mono_s() + t
                   : what == HTTP_DL_BODY  ? mono_s() + t * HTTP_BODY_TIMEOUTS
                                           : 0;
    pthread_mutex_unlock(&h->mu);
}

enum phase {
    PH_BODY = 0, /* headers or body arriving */
    PH_WAIT,     /* suspended: a job is with the loop thread */
    PH_ANSWERED  /* a response is queued */
};

struct http_req {
    keel_http *h;
    struct MHD_Connection *conn;
    /* What the request asks for, and an error found while routing,
     * answered once the body is in (http_route.h). */
    struct keel_http_route rt;
    int phase;
    int auth_err;                    /* refused by the access rules:
                                      * KEEL_EUNAUTH (401), KEEL_EDENIED
                                      * (403); the text in rt.errmsg */
    int too_big;                     /* body over the limit: 413 */
    /* Framing the node will not guess at (framing_refused): the status
     * (400 or 501) and the text; the answer closes the connection. */
    unsigned framing;
    const char *framing_msg;
    uint8_t *body;                   /* the message; malloc'd */
    size_t len, cap;

    /* Outcome, written by the loop thread before `done` is set. */
    atomic_int done;
    int status;     /* 0 or KEEL_E* */
    uint8_t *out;   /* reply, or error text; malloc'd */
    size_t outlen;
    int ready;      /* /readyz */
    int unready_code;          /* /readyz: KEEL_E* when not ready */
    const char *unready_why;   /* /readyz: a static text when not ready */
    keel_stats stats; /* /metrics */
    int cluster_mode; /* /metrics: cluster mode, and units it serves */
    size_t units_owned;
    struct keel_info_health health;
    int serving;      /* cluster mode: not fenced */
    int controller;   /* cluster mode: this node is the controller */
    uint32_t shard; /* GET state: */
    uint64_t version, entries;
    int have_blob;
    /* /events: the stream (made by the loop thread; taken by the response
     * once answered), and the bearer token it was allowed under (none:
     * token_len 0), which a reload may withdraw. */
    struct sse *sse;
    uint8_t token[KEEL_AUTH_TOKEN_MAX];
    size_t token_len;
};

/* ------------------------------------------------------------- routing */

/* Routes r by its method, raw path (the unescape callback leaves it
 * alone) and the header and argument values routing reads. */
static void route(struct http_req *r, const char *url, const char *method)
{
    struct keel_http_request req = {
        .method = method,
        .path = url,
        .idempotency_key = MHD_lookup_connection_value(
            r->conn, MHD_HEADER_KIND, "Idempotency-Key"),
        .last_event_id = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                     "Last-Event-ID"),
        .payloads = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND,
                                                "payloads"),
    };

    keel__http_route(&r->rt, &req);
}

/* ----------------------------------------------------------- responses */

/* Queues a response whose body is b's buffer (MHD frees it) and sets the
 * request answered. Out of memory anywhere gives a bare 500. */
static enum MHD_Result queue(struct http_req *r, unsigned status,
                             struct keel_sbuf *b, const char *ctype,
                             const char *allow)
{
    static char oom_text[] = "{\"error\": \"ENOMEM\", \"code\": 2, "
                             "\"message\": \"out of memory\"}\n";
    struct MHD_Response *resp = NULL;
    enum MHD_Result ok;

    if (!b->oom) {
        if (b->len == 0) {
            free(b->p);
            resp = MHD_create_response_from_buffer(0, NULL,
                                                   MHD_RESPMEM_PERSISTENT);
        } else {
            resp = MHD_create_response_from_buffer(b->len, b->p,
                                                   MHD_RESPMEM_MUST_FREE);
            if (resp == NULL)
                free(b->p);
        }
    } else {
        free(b->p);
    }
    b->p = NULL;
    if (resp != NULL &&
        (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype) !=
             MHD_YES ||
         (status == MHD_HTTP_SERVICE_UNAVAILABLE &&
          MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1") !=
              MHD_YES) ||
         (status == MHD_HTTP_UNAUTHORIZED &&
          MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                  "Bearer realm=\"keel\"") != MHD_YES) ||
         (allow != NULL &&
          MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow) !=
              MHD_YES) ||
         (r->framing != 0 &&
          MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION,
                                  "close") != MHD_YES))) {
        MHD_destroy_response(resp);
        resp = NULL;
    }
    if (resp == NULL) {
        status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        resp = MHD_create_response_from_buffer(sizeof oom_text - 1, oom_text,
                                               MHD_RESPMEM_PERSISTENT);
        if (resp == NULL)
            return MHD_NO; /* MHD closes the connection */
    }
    r->phase = PH_ANSWERED;
    ok = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp); /* MHD holds its own reference */
    atomic_fetch_add(&r->h->answered, 1);
    return ok;
}

/* {"error": "ENOTYPE", "code": 3, "message": "..."} */
static enum MHD_Result answer_error(struct http_req *r, unsigned status,
                                    int code, const void *msg, size_t mlen,
                                    const char *allow)
{
    struct keel_sbuf b = {0};

    keel__sb_printf(&b, "{\"error\": \"%s\", \"code\": %d, \"message\": ",
                    keel_err_name(code), code < 0 ? -code : code);
    keel__sb_json_str(&b, msg, mlen);
    keel__sb_puts(&b, "}\n");
    return queue(r, status, &b, "application/json", allow);
}

static enum MHD_Result answer_code(struct http_req *r, int code,
                                   const char *msg)
{
    return answer_error(r, keel__http_status(code), code, msg, strlen(msg),
                        NULL);
}

static enum MHD_Result answer_text(struct http_req *r, unsigned status,
                                   const char *text)
{
    struct keel_sbuf b = {0};

    keel__sb_puts(&b, text);
    return queue(r, status, &b, "text/plain; charset=utf-8", NULL);
}

/* ------------------------------------------------------------- metrics */

static void metric(struct keel_sbuf *b, const char *name, const char *type,
                   const char *help, const char *labels, uint64_t v)
{
    keel__sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s%s %" PRIu64 "\n", name,
                    help, name, type, name, labels, v);
}

/* Counters of cluster mode, all keel_stats fields. */
static const struct {
    const char *name, *help;
    size_t off;
} cluster_counters[] = {
    {"keel_units_acquired_total", "Units this node began to serve.",
     offsetof(keel_stats, units_acquired)},
    {"keel_units_handed_off_total", "Units this node handed to another node.",
     offsetof(keel_stats, units_handed_off)},
    {"keel_units_dropped_total", "Units this node lost without a handoff.",
     offsetof(keel_stats, units_dropped)},
    {"keel_handoff_bytes_in_total", "Record bytes received in handoffs.",
     offsetof(keel_stats, handoff_bytes_in)},
    {"keel_handoff_bytes_out_total", "Record bytes sent in handoffs.",
     offsetof(keel_stats, handoff_bytes_out)},
    {"keel_fenced_total",
     "Times this node stopped serving every unit (fenced).",
     offsetof(keel_stats, fenced)},
    {"keel_zk_session_expirations_total",
     "ZooKeeper sessions of this node that expired.",
     offsetof(keel_stats, session_expirations)},
};

/* Prometheus text format, from the figures the loop thread copied (the
 * loop writes them without locks, so they are read there). Only what this
 * node really measures. */
/* The process and its data directory (runtime/procstat.h), under the
 * names Prometheus's client libraries use for the process figures; a
 * figure that cannot be read is left out. */
static void process_metrics(struct keel_sbuf *b, const char *data_dir)
{
    keel_procstat p;

    keel__procstat(data_dir, &p);
    if (p.have_rss)
        metric(b, "process_resident_memory_bytes", "gauge",
               "Resident memory of the keeld process.", "", p.rss_bytes);
    if (p.have_fds)
        metric(b, "process_open_fds", "gauge", "Open file descriptors.", "",
               p.open_fds);
    if (p.have_max_fds)
        metric(b, "process_max_fds", "gauge",
               "Most file descriptors the process may open.", "", p.max_fds);
    if (p.have_start)
        keel__sb_printf(
            b,
            "# HELP process_start_time_seconds Start time of the "
            "process, Unix time.\n# TYPE process_start_time_seconds "
            "gauge\nprocess_start_time_seconds %.2f\n",
            p.start_time_s);
    if (p.have_cpu)
        keel__sb_printf(b,
                        "# HELP process_cpu_seconds_total User and system CPU "
                        "time used.\n# TYPE process_cpu_seconds_total counter\n"
                        "process_cpu_seconds_total %.3f\n",
                        p.cpu_s);
    if (p.have_dir)
        metric(b, "keel_data_dir_bytes", "gauge",
               "Disk space the data directory's files take.", "",
               p.dir_bytes);
    if (p.have_disk) {
        metric(b, "keel_data_dir_free_bytes", "gauge",
               "Space free (to this user) on the data directory's file "
               "system.",
               "", p.disk_free);
        metric(b, "keel_data_dir_fs_size_bytes", "gauge",
               "Size of the data directory's file system.", "", p.disk_size);
    }
}

/* Replication lag, per backup this node streams to as a primary: the age
 * of its oldest write the backup has not acknowledged, and how many
 * frames wait for its acknowledgement. */
static void lag_metrics(struct keel_sbuf *b, keel_node *n,
                        const keel_stats *st)
{
    size_t nv, k;
    keel_repl_lag *v = keel__repl_lag(n, &nv);

    metric(b, "keel_repl_lag_max_ms", "gauge",
           "The largest replication lag over this primary's backups, in "
           "ms (0: every write sent is acknowledged).",
           "", st->repl_lag_ms);
    keel__sb_printf(b, "# HELP keel_repl_lag_seconds Age of the oldest "
                       "write a backup has not acknowledged (0: none).\n"
                       "# TYPE keel_repl_lag_seconds gauge\n");
    for (k = 0; k < nv; k++)
        keel__sb_printf(b, "keel_repl_lag_seconds{backup=\"%s\"} %.6f\n",
                        v[k].backup, v[k].lag_s);
    keel__sb_printf(b, "# HELP keel_repl_unacked_frames REPL frames a "
                       "backup has not acknowledged.\n"
                       "# TYPE keel_repl_unacked_frames gauge\n");
    for (k = 0; k < nv; k++)
        keel__sb_printf(b, "keel_repl_unacked_frames{backup=\"%s\"} %" PRIu64
                           "\n",
                        v[k].backup, v[k].frames);
    free(v);
}

static enum MHD_Result answer_metrics(struct http_req *r)
{
    static const uint32_t bounds[] = KEEL_LATENCY_BOUNDS_US;
    keel_http *h = r->h;
    const keel_stats *st = &r->stats;
    struct keel_sbuf b = {0};
    uint64_t cum = 0;
    unsigned i;
    char lab[64];

    snprintf(lab, sizeof lab, "{version=\"%s\",mode=\"%s\"}",
             keel_version_string(),
             r->cluster_mode ? "cluster" : "standalone");
    metric(&b, "keel_info", "gauge", "Version and mode of this node.", lab,
           1);
    metric(&b, "keel_shards_owned", "gauge",
           "Placement units (capability, shard) the map gives this node "
           "(standalone: every shard).",
           r->cluster_mode ? "{mode=\"cluster\"}" : "{mode=\"standalone\"}",
           r->units_owned);
    if (r->cluster_mode) {
        metric(&b, "keel_cluster_serving", "gauge",
               "1 while this node may serve its units, 0 while it is "
               "fenced (lease lapsed, no session).",
               "", (uint64_t)r->serving);
        metric(&b, "keel_cluster_controller", "gauge",
               "1 if this node is the cluster's controller.", "",
               (uint64_t)r->controller);
        /* The cluster as this node's map and member list show it: what
         * to alert on when a node dies or a disk fails. */
        metric(&b, "keel_cluster_members", "gauge",
               "Live members of the cluster, as this node sees them.", "",
               r->health.members);
        metric(&b, "keel_cluster_units_unavailable", "gauge",
               "Units (capability, shard) with no owner or an owner that is "
               "not a live member: their calls wait, then fail EUNAVAIL, "
               "until a failover or the owner's return.",
               "", r->health.units_unavailable);
        metric(&b, "keel_cluster_replicas_out_of_sync", "gauge",
               "Backups the map lists that are not in their unit's in-sync "
               "set (catching up, or on a node that is gone).",
               "", r->health.replicas_out_of_sync);
        metric(&b, "keel_cluster_units_moving", "gauge",
               "Units the map is moving to another node (a target).", "",
               r->health.units_moving);
        for (i = 0; i < sizeof cluster_counters / sizeof *cluster_counters;
             i++)
            metric(&b, cluster_counters[i].name, "counter",
                   cluster_counters[i].help, "",
                   *(const uint64_t *)((const char *)st +
                                       cluster_counters[i].off));
    }
    metric(&b, "keel_messages_total", "counter",
           "Messages handled (turns run).", "", st->messages);
    metric(&b, "keel_handler_errors_total", "counter",
           "Turns whose handler (or activation) failed.", "",
           st->handler_errors);
    metric(&b, "keel_activations_total", "counter", "Actor activations.", "",
           st->activations);
    metric(&b, "keel_forwarded_total", "counter",
           "Calls and casts forwarded to their unit's owner.", "",
           st->forwarded);
    metric(&b, "keel_held_expired_total", "counter",
           "Calls that found no serving owner within the hold bound.", "",
           st->held_expired);
    metric(&b, "keel_peer_resets_total", "counter",
           "Links to other nodes reset because a forwarded call's deadline "
           "passed with its frame not acknowledged by the other node.",
           "", st->peer_resets);
    /* Every mode: standalone, a flush that fails after a commit leaves
     * its writes in doubt too. */
    metric(&b, "keel_replies_in_doubt_total", "counter",
           "Writes answered EINDOUBT, their outcome unknown: the lease "
           "lapsed before the reply left, or the store's flush failed "
           "after the commit.",
           "", st->replies_in_doubt);
    metric(&b, "keel_retries_answered_total", "counter",
           "Keyed requests answered from the actor's record, not run again.",
           "", st->retries_answered);
    metric(&b, "keel_passivations_total", "counter", "Actor passivations.",
           "", st->passivations);
    metric(&b, "keel_resident_actors", "gauge", "Actors in memory.", "",
           st->resident_actors);
    metric(&b, "keel_commits_total", "counter",
           "Store write transactions committed.", "", st->commits);
    metric(&b, "keel_fsyncs_total", "counter",
           "Device flushes of the store: log flushes, two per checkpoint.",
           "", st->fsyncs);
    metric(&b, "keel_checkpoints_total", "counter",
           "Store checkpoints: data file flushed, log started again.", "",
           st->checkpoints);
    metric(&b, "keel_commit_failures_total", "counter",
           "Store commits that failed.", "", st->commit_failures);
    keel__sb_puts(&b, "# HELP keel_commit_batch_turns State-changing turns per "
                      "commit (group commit batch size).\n"
                      "# TYPE keel_commit_batch_turns summary\n");
    keel__sb_printf(&b, "keel_commit_batch_turns_sum %" PRIu64 "\n",
                    st->batch_turns_total);
    keel__sb_printf(&b, "keel_commit_batch_turns_count %" PRIu64 "\n",
                    st->commits);
    metric(&b, "keel_commit_batch_turns_max", "gauge",
           "Most state-changing turns in one commit.", "",
           st->batch_turns_max);
    keel__sb_puts(&b, "# HELP keel_commit_batch_actors Actors written per "
                      "commit.\n# TYPE keel_commit_batch_actors summary\n");
    keel__sb_printf(&b, "keel_commit_batch_actors_sum %" PRIu64 "\n",
                    st->batch_actors_total);
    keel__sb_printf(&b, "keel_commit_batch_actors_count %" PRIu64 "\n",
                    st->commits);
    metric(&b, "keel_fence_refusals_total", "counter",
           "Writes the store refused for a stale shard epoch.", "",
           st->fence_refusals);
    metric(&b, "keel_map_size_bytes", "gauge", "Current LMDB map size.", "",
           st->map_size);
    metric(&b, "keel_connections", "gauge",
           "Open wire-protocol client connections.", "", st->connections);
    metric(&b, "keel_http_connections", "gauge", "Open HTTP connections.",
           "", (uint64_t)atomic_load(&h->conns));
    metric(&b, "keel_http_responses_total", "counter",
           "HTTP responses queued by this node (not counting this one).", "",
           atomic_load(&h->answered));
    metric(&b, "keel_frames_in_total", "counter", "Wire-protocol frames read.",
           "", st->frames_in);
    metric(&b, "keel_frames_bad_total", "counter",
           "Malformed wire-protocol frames.", "", st->frames_bad);
    metric(&b, "keel_auth_refused_unauth_total", "counter",
           "Requests refused for want of an identity: no token or an "
           "unknown one (wire EUNAUTH, HTTP 401).",
           "", st->auth_refused_unauth);
    metric(&b, "keel_auth_refused_denied_total", "counter",
           "Requests refused because the identity's role or actor types do "
           "not permit them (wire EDENIED, HTTP 403).",
           "", st->auth_refused_denied);
    metric(&b, "keel_insecure", "gauge",
           "1 when the node runs beyond loopback or in a cluster without "
           "credentials (--insecure).",
           "", st->insecure);
    metric(&b, "keel_auth_throttled_total", "counter",
           "Token attempts refused unchecked because their address failed "
           "too many lately (wire EUNAUTH, HTTP 401).",
           "", st->auth_throttled);
    metric(&b, "keel_auth_conns_closed_total", "counter",
           "Wire connections closed after too many failed token attempts.",
           "", st->auth_conns_closed);
    metric(&b, "keel_repl_frames_sent_total", "counter",
           "REPL frames sent to backups (a frame sent again counts again).",
           "", st->repl_frames_sent);
    metric(&b, "keel_repl_bytes_sent_total", "counter",
           "Bytes of REPL frames sent to backups.", "", st->repl_bytes_sent);
    metric(&b, "keel_repl_acks_total", "counter",
           "Units whose replicated writes a backup acknowledged.", "",
           st->repl_acks);
    metric(&b, "keel_repl_drop_requests_total", "counter",
           "Backups this primary asked to drop from a unit's in-sync set.",
           "", st->repl_drop_requests);
    metric(&b, "keel_repl_waiting", "gauge",
           "Replies waiting for backups to acknowledge their writes.", "",
           st->repl_waiting);
    metric(&b, "keel_repl_applied_frames_total", "counter",
           "REPL frames whose writes this backup committed.", "",
           st->repl_applied_frames);
    metric(&b, "keel_repl_merged_frames_total", "counter",
           "REPL frames this backup committed with an earlier frame, in "
           "one transaction.", "",
           st->repl_merged_frames);
    metric(&b, "keel_repl_refused_total", "counter",
           "Units of REPL frames this backup did not take.", "",
           st->repl_refused);
    metric(&b, "keel_repl_confirms_total", "counter",
           "Confirm rounds sent for reads (the read rule): one per unit "
           "with reads waiting in a loop iteration.",
           "", st->repl_confirms);
    metric(&b, "keel_repl_catchups_total", "counter",
           "Snapshots sent to backups out of sync to bring them into the "
           "in-sync set.",
           "", st->repl_catchups);
    metric(&b, "keel_repl_catchup_bytes_total", "counter",
           "Bytes of the snapshots sent to backups catching up.", "",
           st->repl_catchup_bytes);
    metric(&b, "keel_repl_catchup_waits_total", "counter",
           "Times a snapshot part waited for the catch-up rate limit.", "",
           st->repl_catchup_waits);
    metric(&b, "keel_repl_catchup_same_total", "counter",
           "Catch-ups whose backup already held the unit's content (its "
           "digest matched): no records sent.",
           "", st->repl_catchup_same);
    metric(&b, "keel_repl_copies_deleted_total", "counter",
           "Copies of units this node deleted because no map had listed "
           "it for them for the replica dead time.",
           "", st->repl_copies_deleted);
    metric(&b, "keel_isr_expansions_total", "counter",
           "Backups this node's controller added to in-sync sets.", "",
           st->isr_expansions);
    metric(&b, "keel_isr_shrinks_total", "counter",
           "Backups this node's controller dropped from in-sync sets.", "",
           st->isr_shrinks);
    metric(&b, "keel_failovers_total", "counter",
           "Units this node's controller failed over to an in-sync backup.",
           "", st->failovers);
    metric(&b, "keel_units_promoted_on_move_total", "counter",
           "Units this node took over as an in-sync backup from its own "
           "replicated copy, with nothing streamed.",
           "", st->units_promoted_on_move);
    metric(&b, "keel_outbox_sent_total", "counter",
           "Outbox messages sent to their receiver (resends count again).",
           "", st->outbox_sent);
    metric(&b, "keel_outbox_dropped_total", "counter",
           "Redelivered outbox messages answered without running again.",
           "", st->outbox_dropped);
    metric(&b, "keel_outbox_dead_total", "counter",
           "Outbox messages kept as dead letters.", "", st->outbox_dead);
    metric(&b, "keel_outbox_frames_total", "counter",
           "Frames that carried outbox messages to other nodes.", "",
           st->outbox_frames);
    metric(&b, "keel_outbox_senders", "gauge",
           "Actors whose outbox messages this node is delivering.", "",
           st->outbox_senders);
    metric(&b, "keel_conn_unsent_peak_bytes", "gauge",
           "The most bytes of answers one wire connection has had waiting "
           "in the node since it started.",
           "", st->conn_unsent_peak);
    metric(&b, "keel_repl_suspects_total", "counter",
           "Backups made suspect (they may hold writes this primary does "
           "not): dropped from the in-sync set, then caught up.",
           "", st->repl_suspects);
    if (r->cluster_mode)
        lag_metrics(&b, h->n, st);
    metric(&b, "keel_subscribers", "gauge",
           "Subscriptions to actors' changes open on this node.", "",
           st->subscribers);
    metric(&b, "keel_events_sent_total", "counter",
           "Change events sent to subscribers.", "", st->events_sent);
    metric(&b, "keel_reminders_fired_total", "counter",
           "Reminders whose handler ran in a committed turn.", "",
           st->reminders_fired);
    metric(&b, "keel_reminders_dead_total", "counter",
           "Reminder firings kept as dead letters after the handler refused "
           "them too often.",
           "", st->reminders_dead);
    /* Cumulative buckets; _count is their total so that the +Inf bucket
     * and _count agree even though the figures are read without a lock. */
    keel__sb_puts(&b,
                  "# HELP keel_call_latency_seconds Time from submission of a "
                  "message to the release of its reply (after its commit).\n"
                  "# TYPE keel_call_latency_seconds histogram\n");
    for (i = 0; i < KEEL_LATENCY_BUCKETS - 1; i++) {
        cum += st->latency_buckets[i];
        keel__sb_printf(
            &b, "keel_call_latency_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
            bounds[i] / 1e6, cum);
    }
    cum += st->latency_buckets[KEEL_LATENCY_BUCKETS - 1];
    keel__sb_printf(
        &b, "keel_call_latency_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n", cum);
    keel__sb_printf(&b, "keel_call_latency_seconds_sum %.6f\n",
                    (double)st->latency_sum_us / 1e6);
    keel__sb_printf(&b, "keel_call_latency_seconds_count %" PRIu64 "\n", cum);
    process_metrics(&b, h->n->data_dir);
    return queue(r, MHD_HTTP_OK, &b, "text/plain; version=0.0.4; charset=utf-8",
                 NULL);
}

/* -------------------------------------------- work on the loop thread */

/* Records the outcome (copied) in r. Loop thread, before resume(). */
static void set_result(struct http_req *r, int status, const void *data,
                       size_t len)
{
    r->status = status;
    r->out = malloc(len ? len : 1);
    if (r->out == NULL) {
        r->status = KEEL_ENOMEM;
        r->outlen = 0;
        return;
    }
    if (len)
        memcpy(r->out, data, len);
    r->outlen = len;
}

/* An error of the request's own: its message, naming the type where the
 * type is what is wrong. */
static void set_error(struct http_req *r, int rc)
{
    char msg[KEEL_MAX_TYPE_LEN + 64];

    if (rc == KEEL_ENOTYPE)
        snprintf(msg, sizeof msg, "%s '%s'", keel_strerror(rc), r->rt.type);
    else
        snprintf(msg, sizeof msg, "%s", keel_strerror(rc));
    set_result(r, rc, msg, strlen(msg));
}

/* Publishes the outcome and hands the connection back to MHD. After this
 * r belongs to the MHD thread again (it may be freed at once). */
static void resume(struct http_req *r)
{
    struct MHD_Connection *c = r->conn;
    keel_http *h = r->h;

    atomic_store_explicit(&r->done, 1, memory_order_release);
    MHD_resume_connection(c);
    atomic_fetch_sub(&h->suspended, 1);
}

static void call_cb(int status, const void *reply, size_t len, void *data)
{
    struct http_req *r = data;

    set_result(r, status, reply, len);
    resume(r);
}

/* A state read's reply (runtime/proto.h layout) into r's fields. Loop
 * thread, before resume(). */
static void read_cb(int status, const void *reply, size_t len, void *data)
{
    struct http_req *r = data;
    keel_state_read sr;

    if (status != 0) {
        set_result(r, status, reply, len);
    } else if (keel_state_read_parse(reply, len, &sr) != 0) {
        static const char bad[] = "malformed state read reply";
        set_result(r, KEEL_EPROTO, bad, sizeof bad - 1);
    } else {
        r->have_blob = sr.has_blob;
        r->version = sr.version;
        r->entries = sr.entries;
        set_result(r, 0, sr.blob, sr.blob_len);
    }
    resume(r);
}

/* The actor's state, read by a turn on the owner of its unit (forwarded
 * there from any node): ordered after the actor's earlier messages and
 * answered once what it shows is durable and past the read rule, as a
 * call's reply would be. Loop thread. */
static int read_state(keel_node *n, struct http_req *r)
{
    struct keel_type_entry *te =
        keel__type_find(n, r->rt.type, strlen(r->rt.type));

    if (te == NULL)
        return KEEL_ENOTYPE;
    r->shard =
        keel_shard_of(te->name, r->rt.id, r->rt.idlen, n->opts.shard_count);
    return keel__read_state(n, r->rt.type, r->rt.id, r->rt.idlen, read_cb, r);
}

/* Whether the node serves, and if not why: a cluster node is ready only
 * once it has joined and while it holds a lease. One refused by its store
 * check (or failed) serves nothing until the operator acts; one still
 * connecting to ZooKeeper or joining serves nothing yet. keel.h; /readyz
 * answers with it, keeld tells the service manager. */
int keel_node_readiness(keel_node *n, const char **why)
{
    keel_cluster *c;
    int err;
    const char *unused;

    if (why == NULL)
        why = &unused;
    *why = NULL;
    if (n == NULL) {
        *why = "keel_node_readiness: no node";
        return KEEL_EINVAL;
    }
    /* The cluster's state belongs to the loop thread. */
    if (atomic_load(&n->loop_tid_set) && !keel__on_loop_thread(n)) {
        *why = "keel_node_readiness: call it on the node's loop thread "
               "(from a keel_node_post job)";
        return KEEL_EINVAL;
    }
    if (!n->running || n->stopping) {
        *why = n->stopping || atomic_load(&n->ran)
                   ? "not ready: the node is stopping"
                   : "not ready: the node has not started (keel_node_start "
                     "or keel_node_run)";
        return KEEL_ESTOPPING;
    }
    if (n->cluster == NULL)
        return 0;
    c = keel_coord_to_cluster(n->coord);
    if ((err = keel_cluster_error(c)) != 0) {
        *why = "not ready: refused by its cluster (the node's log says why)";
        return err;
    }
    switch (keel_cluster_phase(c)) {
    case KEEL_CLUSTER_RUNNING:
        break;
    case KEEL_CLUSTER_CONNECTING:
        *why = "not ready: connecting to ZooKeeper";
        return KEEL_ESESSION;
    default:
        *why = "not ready: joining its cluster";
        return KEEL_ESESSION;
    }
    if (keel_cluster_fenced(c)) {
        *why = "not ready: fenced (ZooKeeper has not answered within its "
               "lease)";
        return KEEL_ESESSION;
    }
    return 0;
}

static void readiness(keel_node *n, struct http_req *r)
{
    r->unready_code = keel_node_readiness(n, &r->unready_why);
    r->ready = r->unready_code == 0;
}

/* Runs on the loop thread (keel_node_post). */

/* ------------------------------------------------ Server-Sent Events */

/* GET /v1/actors/{type}/{id}/events: a subscription (follow.h) whose
 * sink is this stream. The loop thread writes events as text into buf;
 * MHD's content reader takes them out on the MHD thread, and suspends
 * the connection when there is nothing, to be resumed by the next write.
 * Both sides hold the stream: the loop thread through its subscription
 * (until sse_gone_job closes the sink), MHD through the response (until
 * its free callback, which posts that job). */
struct sse {
    keel_http *h;
    struct MHD_Connection *conn;
    keel_follow_sink sink; /* loop thread */
    struct http_req *r;    /* until the first answer (loop thread) */
    /* In h->streams while subscribed (loop thread); the token it was
     * allowed under (token_len 0: none, a certificate or no access
     * control), and whether a reload withdrew it. */
    struct sse *prev, *next;
    int listed, cut;
    uint8_t token[KEEL_AUTH_TOKEN_MAX];
    size_t token_len;
    pthread_mutex_t mu;    /* the fields below */
    char *buf;
    size_t len, off, cap;
    int ended;     /* no more events: the stream ends once buf is out */
    int suspended; /* the reader suspended the connection */
    struct hconn *hc; /* its connection, under h->mu (see hconn) */
};

static void sse_free(struct sse *x)
{
    pthread_mutex_destroy(&x->mu);
    free(x->buf);
    free(x);
}

/* Appends text (and with end, ends the stream), waking the reader.
 * Loop thread. */
static void sse_push(struct sse *x, const struct keel_sbuf *b, int end)
{
    pthread_mutex_lock(&x->mu);
    if (b->oom) {
        x->ended = 1; /* a stream that misses an event must not go on */
    } else if (b->len > 0) {
        if (x->off > 0 && x->off == x->len)
            x->off = x->len = 0;
        if (x->len + b->len > x->cap) {
            size_t cap = x->cap ? x->cap : 4096;
            char *p;
            while (cap < x->len + b->len)
                cap *= 2;
            p = realloc(x->buf, cap);
            if (p == NULL) {
                x->ended = 1;
                goto wake;
            }
            x->buf = p;
            x->cap = cap;
        }
        memcpy(x->buf + x->len, b->p, b->len);
        x->len += b->len;
    }
    if (end)
        x->ended = 1;
wake:
    if (x->suspended) {
        /* Under mu: the reader's suspend is over before this resume. */
        x->suspended = 0;
        MHD_resume_connection(x->conn);
        atomic_fetch_sub(&x->h->suspended, 1);
    }
    pthread_mutex_unlock(&x->mu);
}

static ssize_t sse_read(void *cls, uint64_t pos, char *out, size_t max)
{
    struct sse *x = cls;
    size_t n;

    (void)pos;
    pthread_mutex_lock(&x->mu);
    n = x->len - x->off;
    if (n > max)
        n = max;
    if (n > 0) {
        memcpy(out, x->buf + x->off, n);
        x->off += n;
        pthread_mutex_unlock(&x->mu);
        return (ssize_t)n;
    }
    if (x->ended) {
        pthread_mutex_unlock(&x->mu);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    x->suspended = 1;
    atomic_fetch_add(&x->h->suspended, 1);
    MHD_suspend_connection(x->conn);
    pthread_mutex_unlock(&x->mu);
    return 0;
}

static void sse_unlist(struct sse *x)
{
    if (!x->listed)
        return;
    if (x->prev != NULL)
        x->prev->next = x->next;
    else
        x->h->streams = x->next;
    if (x->next != NULL)
        x->next->prev = x->prev;
    x->prev = x->next = NULL;
    x->listed = 0;
}

static void sse_gone_job(keel_node *n, void *data)
{
    struct sse *x = data;

    sse_unlist(x);
    keel__follow_sink_close(n, &x->sink);
    sse_free(x);
}

/* MHD is done with the stream (the response went, or was never made):
 * the loop thread drops its subscription and frees it. MHD thread. */
static void sse_release(void *cls)
{
    struct sse *x = cls;

    pthread_mutex_lock(&x->h->mu);
    if (x->hc != NULL)
        x->hc->sse = NULL;
    x->hc = NULL;
    pthread_mutex_unlock(&x->h->mu);
    if (keel_node_post(x->h->n, sse_gone_job, x) != 0)
        sse_free(x); /* the loop has ended: nothing of it runs again */
}

/* One event as text: id (the version), data (JSON on one line). */
static void sse_change_text(struct keel_sbuf *b, uint64_t version,
                            const uint8_t *state, size_t len, int has_state)
{
    keel__sb_printf(b,
                    "id: %" PRIu64 "\ndata: {\"version\": %" PRIu64
                    ", \"state_base64\": ",
                    version, version);
    keel__sb_base64(b, state, len);
    if (has_state && keel__is_text(state, len)) {
        keel__sb_puts(b, ", \"state_text\": ");
        keel__sb_json_str(b, state, len);
    }
    keel__sb_puts(b, "}\n\n");
}

static const char sse_withdrawn[] =
    "not authenticated: the token this event stream was opened with was "
    "withdrawn (the node's token file no longer holds it)";

static int sse_answer(keel_follow_sink *k, uint64_t tag, int rc,
                      const keel_state_read *st, const char *msg,
                      size_t msglen)
{
    struct sse *x = k->data;
    struct http_req *r = x->r;
    struct keel_sbuf b = {0};

    (void)tag;
    x->r = NULL;
    if (rc == 0 && x->token_len > 0 &&
        !keel__auth_token_held(x->h->n->auth, x->token, x->token_len)) {
        /* Withdrawn by a reload while the first answer was read. */
        rc = KEEL_EUNAUTH;
        msg = sse_withdrawn;
        msglen = strlen(sse_withdrawn);
    }
    if (rc != 0) {
        /* The request is answered with the error; the stream is never
         * used: completed_cb gives it back. */
        set_result(r, rc, msg, msglen);
        resume(r);
        return 0;
    }
    if (st != NULL)
        sse_change_text(&b, st->version, st->blob, st->blob_len,
                        st->has_blob);
    sse_push(x, &b, 0);
    free(b.p);
    r->status = 0;
    resume(r);
    return 0;
}

/* An event payload (keel_turn_event) under an event name of its own,
 * so that a client tells it from a state; its id is the version too. */
static void sse_payload_text(struct keel_sbuf *b, uint64_t version,
                             const uint8_t *p, size_t len)
{
    keel__sb_printf(b,
                    "event: payload\nid: %" PRIu64
                    "\ndata: {\"version\": %" PRIu64 ", \"payload_base64\": ",
                    version, version);
    keel__sb_base64(b, p, len);
    if (keel__is_text(p, len)) {
        keel__sb_puts(b, ", \"payload_text\": ");
        keel__sb_json_str(b, p, len);
    }
    keel__sb_puts(b, "}\n\n");
}

static int sse_change(keel_follow_sink *k, uint64_t tag, uint64_t version,
                      int payload, const uint8_t *data, size_t len)
{
    struct keel_sbuf b = {0};

    (void)tag;
    if (payload)
        sse_payload_text(&b, version, data, len);
    else
        sse_change_text(&b, version, data, len, 1);
    sse_push(k->data, &b, 0);
    free(b.p);
    return 0;
}

static void sse_end(keel_follow_sink *k, uint64_t tag, uint64_t version,
                    int code, const char *reason)
{
    struct keel_sbuf b = {0};

    (void)tag;
    keel__sb_printf(&b,
                    "event: end\ndata: {\"error\": \"%s\", \"code\": %d, "
                    "\"version\": %" PRIu64 ", \"message\": ",
                    keel_err_name(code), -code, version);
    keel__sb_json_str(&b, (const uint8_t *)reason, strlen(reason));
    keel__sb_puts(&b, "}\n\n");
    sse_push(k->data, &b, 1);
    free(b.p);
}

static size_t sse_backlog(keel_follow_sink *k)
{
    struct sse *x = k->data;
    size_t n;

    pthread_mutex_lock(&x->mu);
    n = x->ended ? SIZE_MAX : x->len - x->off;
    pthread_mutex_unlock(&x->mu);
    return n;
}

static const struct keel_follow_ops sse_ops = {sse_answer, sse_change,
                                               sse_end, sse_backlog};

/* Loop thread: subscribes r's stream. 0 when the first answer will come
 * through sse_answer, else the error, set as r's result. */
static int sse_subscribe(keel_node *n, struct http_req *r)
{
    struct keel_type_entry *te =
        keel__type_find(n, r->rt.type, strlen(r->rt.type));
    struct sse *x;
    char err[320];
    int rc;

    if (te == NULL) {
        snprintf(err, sizeof err, "unknown actor type '%s'", r->rt.type);
        set_result(r, KEEL_ENOTYPE, err, strlen(err));
        return KEEL_ENOTYPE;
    }
    x = calloc(1, sizeof *x);
    if (x == NULL) {
        set_error(r, KEEL_ENOMEM);
        return KEEL_ENOMEM;
    }
    x->h = r->h;
    x->conn = r->conn;
    x->r = r;
    x->sink.ops = &sse_ops;
    x->sink.data = x;
    memcpy(x->token, r->token, r->token_len);
    x->token_len = r->token_len;
    pthread_mutex_init(&x->mu, NULL);
    r->sse = x;
    rc = keel__follow_subscribe(
        n, &x->sink, 1, te, r->rt.id, r->rt.idlen, r->rt.since,
        r->rt.payloads ? KEEL_FOLLOW_PAYLOADS : 0, err, sizeof err);
    if (rc != 0) {
        r->sse = NULL;
        sse_free(x);
        set_result(r, rc, err, strlen(err));
        return rc;
    }
    x->next = x->h->streams;
    if (x->next != NULL)
        x->next->prev = x;
    x->h->streams = x;
    x->listed = 1;
    return 0;
}

static void job_fn(keel_node *n, void *data)
{
    struct http_req *r = data;
    int rc;

    if (r->rt.route == KEEL_HTTP_R_READYZ) {
        readiness(n, r);
    } else if (r->rt.route == KEEL_HTTP_R_METRICS) {
        keel_node_stats(n, &r->stats);
        r->cluster_mode = n->cluster != NULL;
        if (r->cluster_mode) {
            keel_cluster *c = keel_coord_to_cluster(n->coord);
            size_t movable;
            keel_cluster_held(c, &r->units_owned, &movable);
            r->serving = !keel_cluster_fenced(c);
            r->controller = keel_cluster_is_controller(c);
            keel__info_health(n, &r->health);
        } else {
            r->units_owned = n->opts.shard_count;
        }
    } else if (r->rt.route == KEEL_HTTP_R_CLUSTER) {
        /* The node's view (and in cluster mode the agent's) lives on
         * this thread. */
        char addr[300], *json;
        size_t len;
        const char *colon = strrchr(r->h->addr, ':');
        snprintf(addr, sizeof addr, "%.*s:%d",
                 (int)(colon ? colon - r->h->addr : 0), r->h->addr,
                 r->h->port);
        rc = keel__info_json(n, addr, &json, &len);
        if (rc == 0) {
            r->status = 0;
            r->out = (uint8_t *)json;
            r->outlen = len;
        } else {
            set_result(r, rc, keel_strerror(rc), strlen(keel_strerror(rc)));
        }
    } else if (r->rt.route == KEEL_HTTP_R_EVENTS) {
        if (sse_subscribe(n, r) == 0)
            return; /* resumed by sse_answer */
    } else if (r->rt.method == KEEL_HTTP_M_POST) {
        /* keel_call copies the message; the callback runs once the reply
         * is durable, or not at all if the call fails here. */
        rc = r->rt.keyed
                 ? keel_call_keyed(n, r->rt.rkey, r->rt.type, r->rt.id,
                                   r->rt.idlen, r->body, r->len, call_cb, r)
                 : keel_call(n, r->rt.type, r->rt.id, r->rt.idlen, r->body,
                             r->len, call_cb, r);
        if (rc == 0)
            return;
        set_error(r, rc);
    } else {
        rc = read_state(n, r);
        if (rc == 0)
            return;
        set_error(r, rc);
    }
    resume(r);
}

/* ------------------------------------------------------ the MHD thread */

static enum MHD_Result to_loop(struct http_req *r)
{
    keel_http *h = r->h;
    int rc;

    r->phase = PH_WAIT;
    atomic_fetch_add(&h->suspended, 1);
    MHD_suspend_connection(r->conn);
    rc = keel_node_post(h->n, job_fn, r);
    if (rc != 0) {
        /* The loop has ended (ESTOPPING) or no memory: answer that. */
        set_result(r, rc, keel_strerror(rc), strlen(keel_strerror(rc)));
        resume(r);
    }
    return MHD_YES;
}

static enum MHD_Result answer_state(struct http_req *r)
{
    struct keel_sbuf b = {0};

    keel__sb_puts(&b, "{\"type\": ");
    keel__sb_json_str(&b, (const uint8_t *)r->rt.type, strlen(r->rt.type));
    keel__sb_puts(&b, ", \"id\": ");
    keel__sb_json_str(&b, r->rt.id, r->rt.idlen);
    keel__sb_puts(&b, ", \"id_base64\": ");
    keel__sb_base64(&b, r->rt.id, r->rt.idlen);
    keel__sb_printf(
        &b, ", \"shard\": %u, \"version\": %" PRIu64 ", \"state_base64\": ",
        r->shard, r->version);
    keel__sb_base64(&b, r->out, r->outlen);
    if (r->have_blob && keel__is_text(r->out, r->outlen)) {
        keel__sb_puts(&b, ", \"state_text\": ");
        keel__sb_json_str(&b, r->out, r->outlen);
    }
    keel__sb_printf(&b, ", \"entries\": %" PRIu64 "}\n", r->entries);
    return queue(r, MHD_HTTP_OK, &b, "application/json", NULL);
}

/* The stream of an events request: text/event-stream, for as long as the
 * subscription lasts. */
static enum MHD_Result answer_events(struct http_req *r)
{
    struct sse *x = r->sse;
    struct MHD_Response *resp;
    enum MHD_Result ok;

    if (x == NULL) /* cannot be: a success comes with its stream */
        return answer_code(r, KEEL_EPROTO, "no event stream");
    resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096,
                                             sse_read, x, sse_release);
    if (resp == NULL)
        return answer_code(r, KEEL_ENOMEM, "out of memory");
    r->sse = NULL; /* the response's now: sse_release when it goes */
    if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                                "text/event-stream") != MHD_YES ||
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL,
                                "no-cache") != MHD_YES) {
        MHD_destroy_response(resp);
        return answer_code(r, KEEL_ENOMEM, "out of memory");
    }
    r->phase = PH_ANSWERED;
    ok = MHD_queue_response(r->conn, MHD_HTTP_OK, resp);
    if (ok == MHD_YES) {
        /* The watchdog looks after the stream's client from now on. */
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(
            r->conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        struct hconn *hc = ci != NULL ? ci->socket_context : NULL;
        if (hc != NULL) {
            pthread_mutex_lock(&r->h->mu);
            hc->sse = x;
            hc->sse_gone = 0;
            x->hc = hc;
            pthread_mutex_unlock(&r->h->mu);
        }
    }
    MHD_destroy_response(resp);
    atomic_fetch_add(&r->h->answered, 1);
    return ok;
}

/* The loop thread is done with r: answer from its outcome. */
static enum MHD_Result answer_from_loop(struct http_req *r)
{
    if (r->rt.route == KEEL_HTTP_R_READYZ) {
        if (r->ready)
            return answer_text(r, MHD_HTTP_OK, "ready\n");
        {
            /* Always 503: a probe asks only whether to send traffic. */
            const char *why = r->unready_why != NULL
                                  ? r->unready_why
                                  : keel_strerror(r->unready_code);
            return answer_error(r, MHD_HTTP_SERVICE_UNAVAILABLE,
                                r->unready_code, why, strlen(why), NULL);
        }
    }
    if (r->status != 0)
        return answer_error(r, keel__http_status(r->status), r->status, r->out,
                            r->outlen, NULL);
    if (r->rt.route == KEEL_HTTP_R_METRICS)
        return answer_metrics(r);
    if (r->rt.route == KEEL_HTTP_R_CLUSTER) {
        struct keel_sbuf b = {0};
        keel__sb_add(&b, r->out, r->outlen);
        return queue(r, MHD_HTTP_OK, &b, "application/json", NULL);
    }
    if (r->rt.route == KEEL_HTTP_R_EVENTS)
        return answer_events(r);
    if (r->rt.method == KEEL_HTTP_M_GET)
        return answer_state(r);
    {
        struct keel_sbuf b = {0};
        keel__sb_add(&b, r->out, r->outlen);
        return queue(r, MHD_HTTP_OK, &b, "application/octet-stream", NULL);
    }
}

/* The whole request is in. */
static enum MHD_Result request_complete(struct http_req *r)
{
    if (r->framing != 0)
        return answer_error(r, r->framing, KEEL_EMALFORMED, r->framing_msg,
                            strlen(r->framing_msg), NULL);
    if (r->auth_err != 0)
        return answer_code(r, r->auth_err, r->rt.errmsg);
    if (r->rt.not_allowed)
        return answer_error(r, MHD_HTTP_METHOD_NOT_ALLOWED, KEEL_EINVAL,
                            r->rt.errmsg, strlen(r->rt.errmsg),
                            r->rt.route == KEEL_HTTP_R_ACTOR ? "GET, HEAD, POST"
                                                             : "GET, HEAD");
    if (r->rt.err != 0)
        return answer_code(r, r->rt.err, r->rt.errmsg);
    if (r->too_big) {
        char msg[96];
        snprintf(msg, sizeof msg, "message over the %u-byte limit",
                 r->h->n->opts.max_frame);
        return answer_code(r, KEEL_ETOOBIG, msg);
    }
    switch (r->rt.route) {
    case KEEL_HTTP_R_HEALTHZ:
        return answer_text(r, MHD_HTTP_OK, "ok\n");
    default:
        return to_loop(r); /* KEEL_HTTP_R_READYZ, KEEL_HTTP_R_METRICS,
                              KEEL_HTTP_R_CLUSTER, KEEL_HTTP_R_ACTOR */
    }
}

/* Appends a piece of the body, or drops it: only actor POSTs keep theirs,
 * and only up to the node's max frame size (the rest is read and
 * discarded so that the 413 can be sent in order). */
static void take_body(struct http_req *r, const char *data, size_t len)
{
    size_t limit = r->h->n->opts.max_frame;

    if (r->rt.route != KEEL_HTTP_R_ACTOR || r->rt.method != KEEL_HTTP_M_POST ||
        r->rt.err != 0 || r->too_big)
        return;
    if (len > limit - r->len) {
        r->too_big = 1;
        free(r->body);
        r->body = NULL;
        r->len = r->cap = 0;
        return;
    }
    if (r->len + len > r->cap) {
        size_t cap = r->cap ? r->cap : 1024;
        uint8_t *p;
        while (cap < r->len + len)
            cap *= 2;
        if (cap > limit)
            cap = limit;
        p = realloc(r->body, cap);
        if (p == NULL) {
            r->rt.err = KEEL_ENOMEM;
            snprintf(r->rt.errmsg, sizeof r->rt.errmsg, "%s",
                     keel_strerror(KEEL_ENOMEM));
            return;
        }
        r->body = p;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, len);
    r->len += len;
}

/* What the framing headers of a request say, counted over all of them
 * (MHD keeps every header line, and looks up only the first). */
struct framing {
    unsigned lengths, encodings;
    unsigned odd_names; /* names holding white space or nothing */
    const char *encoding;
};

static enum MHD_Result framing_header(void *cls, enum MHD_ValueKind kind,
                                      const char *key, const char *value)
{
    static const char cl[] = MHD_HTTP_HEADER_CONTENT_LENGTH,
                      te[] = MHD_HTTP_HEADER_TRANSFER_ENCODING;
    struct framing *f = cls;

    (void)kind;
    if (strcasecmp(key, cl) == 0) {
        f->lengths++;
    } else if (strcasecmp(key, te) == 0) {
        f->encodings++;
        f->encoding = value;
    } else if (key[0] == '\0' || key[strcspn(key, " \t")] != '\0' ||
               strncasecmp(key, cl, sizeof cl - 1) == 0 ||
               strncasecmp(key, te, sizeof te - 1) == 0) {
        /* MHD keeps white space before the colon in the name
         * ("Content-Length : 4" is a header "Content-Length "), and glues
         * a value folded onto the next line to the name
         * ("Transfer-Encoding:" CRLF " chunked" is a header
         * "Transfer-Encodingchunked" with no value): another reader of
         * the request may take either for the field itself (RFC 9112 5.1
         * and 5.2: refused). */
        f->odd_names++;
    }
    return MHD_YES;
}

/* Whether a Transfer-Encoding value is chunked exactly as MHD reads it: it
 * drops the white space before a value, and takes no other spelling (not
 * even one with white space after). */
static int chunked(const char *v)
{
    if (v == NULL)
        return 0;
    return strcasecmp(v + strspn(v, " \t"), "chunked") == 0;
}

/* A request whose body's end the node and a proxy in front of it could
 * find in different places is refused, and its connection closed after
 * the answer, so that no bytes of it are read as a request of their own
 * (request smuggling, RFC 9112 6.3): a header name with white space in
 * it, two Content-Length lines, both Transfer-Encoding and
 * Content-Length, Transfer-Encoding in an HTTP/1.0 request (RFC 9112 6.1),
 * or a transfer coding other than chunked alone (501: MHD would read the
 * body as if there were none). Nonzero when r is refused so. */
static int framing_refused(struct http_req *r, const char *version)
{
    struct framing f = {0, 0, 0, NULL};

    MHD_get_connection_values(r->conn, MHD_HEADER_KIND, framing_header, &f);
    r->framing = MHD_HTTP_BAD_REQUEST;
    if (f.odd_names > 0) {
        r->framing_msg = "a header name with white space in it (before its "
                         "colon?), or a framing header folded onto the next "
                         "line";
    } else if (f.encodings > 0 && version != NULL &&
               strcmp(version, MHD_HTTP_VERSION_1_0) == 0) {
        r->framing_msg = "Transfer-Encoding in an HTTP/1.0 request";
    } else if (f.encodings > 0 && f.lengths > 0) {
        r->framing_msg = "a request with both Transfer-Encoding and "
                         "Content-Length";
    } else if (f.lengths > 1) {
        r->framing_msg = "a request with more than one Content-Length";
    } else if (f.encodings > 1 ||
               (f.encodings == 1 && !chunked(f.encoding))) {
        r->framing = MHD_HTTP_NOT_IMPLEMENTED;
        r->framing_msg = "the only transfer coding taken is chunked";
    } else {
        r->framing = 0;
    }
    return r->framing != 0;
}

/* A declared body over the limit is refused before it is read. */
static int declared_too_big(struct MHD_Connection *c, uint32_t limit)
{
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    unsigned long long v;
    char *end;

    if (cl == NULL)
        return 0;
    errno = 0;
    v = strtoull(cl, &end, 10);
    if (errno != 0 || end == cl)
        return 0; /* MHD judges malformed lengths itself */
    return v > limit;
}

/* The identity an HTTPS connection's client certificate proves: one that
 * verifies against the CA (MHD gave gnutls the CA as its trust list), may
 * serve a TLS client, and has one subject CN naming a node, a client or
 * an admin (keel__auth_conn_from_cert). 0 with ac set; -1 (ac left
 * anonymous) for no certificate, one that does not verify, or another
 * name: the bearer token rules apply then. MHD thread. */
static int peer_identity(struct MHD_Connection *conn, keel_auth_conn *ac)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    gnutls_session_t s;
    gnutls_typed_vdata_st purpose;
    const gnutls_datum_t *certs;
    unsigned ncerts = 0, status = 0;
    gnutls_x509_crt_t crt;
    char cn[KEEL_AUTH_NAME_MAX + 16], more[8];
    size_t cnlen = sizeof cn, morelen = sizeof more;
    int rc = -1;

    memset(ac, 0, sizeof *ac);
    if (ci == NULL || ci->tls_session == NULL)
        return -1;
    s = ci->tls_session;
    certs = gnutls_certificate_get_peers(s, &ncerts);
    if (certs == NULL || ncerts == 0)
        return -1;
    memset(&purpose, 0, sizeof purpose);
    purpose.type = GNUTLS_DT_KEY_PURPOSE_OID;
    purpose.data = (unsigned char *)GNUTLS_KP_TLS_WWW_CLIENT;
    if (gnutls_certificate_verify_peers(s, &purpose, 1, &status) != 0 ||
        status != 0)
        return -1;
    if (gnutls_x509_crt_init(&crt) < 0)
        return -1;
    /* Exactly one CN, without a NUL inside: as on the wire (tls.c). */
    if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) == 0 &&
        gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0,
                                      cn, &cnlen) == 0 &&
        cnlen < sizeof cn && strlen(cn) == cnlen &&
        gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 1, 0,
                                      more, &morelen) ==
            GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE &&
        keel__auth_conn_from_cert(ac, cn) == 0)
        rc = 0;
    gnutls_x509_crt_deinit(crt);
    if (rc != 0)
        memset(ac, 0, sizeof *ac);
    return rc;
}

/* The access rules (auth.c, docs/security.md): every endpoint but the
 * health probes needs an identity when the node has tokens, from a client
 * certificate (HTTPS) or a bearer token; actor endpoints one that allows
 * the type. Nonzero when r is refused (its answer is then a 401 or
 * 403). */
static int auth_refused(struct http_req *r)
{
    keel_auth *a = r->h->n->auth;
    const keel_auth_conn *cert = NULL;
    keel_auth_conn tmp;
    int op;

    if (!keel__auth_enabled(a) || r->rt.route == KEEL_HTTP_R_HEALTHZ ||
        r->rt.route == KEEL_HTTP_R_READYZ)
        return 0;
    if (r->h->tls) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(
            r->conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        struct hconn *hc = ci != NULL ? ci->socket_context : NULL;

        if (hc != NULL) {
            if (!hc->ident_known) {
                (void)peer_identity(r->conn, &hc->ident);
                hc->ident_known = 1;
            }
            cert = &hc->ident;
        } else if (peer_identity(r->conn, &tmp) == 0) {
            cert = &tmp;
        }
    }
    op = r->rt.route == KEEL_HTTP_R_ACTOR || r->rt.route == KEEL_HTTP_R_EVENTS
             ? KEEL_AUTH_OP_CALL
             : KEEL_AUTH_OP_READ;
    {
        /* The client's address: its failed tokens are limited. */
        const union MHD_ConnectionInfo *ai = MHD_get_connection_info(
            r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        const char *authz = MHD_lookup_connection_value(
            r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        r->auth_err = keel__auth_http(
            a, cert, authz, ai != NULL ? ai->client_addr : NULL, op,
            r->rt.type, strlen(r->rt.type), r->rt.errmsg,
            sizeof r->rt.errmsg);
        if (r->auth_err == 0 && r->rt.route == KEEL_HTTP_R_EVENTS &&
            (cert == NULL || cert->kind == KEEL_AUTH_ANON)) {
            /* Allowed under a bearer token: a reload that withdraws it
             * ends the stream (keel__http_tokens_reloaded). */
            size_t tl = 0;
            const char *tok = keel__auth_bearer(authz, &tl);
            if (tok != NULL && tl <= sizeof r->token) {
                memcpy(r->token, tok, tl);
                r->token_len = tl;
            }
        }
    }
    return r->auth_err != 0;
}

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *conn,
                                 const char *url, const char *method,
                                 const char *version, const char *upload,
                                 size_t *upload_size, void **con_cls)
{
    keel_http *h = cls;
    struct http_req *r = *con_cls;

    if (r == NULL) {
        /* Headers are in: the body has its own deadline, so that one
         * trickled a byte at a time cannot hold the connection for ever
         * (MHD's idle timeout restarts with every byte). */
        hconn_deadline(h, conn, HTTP_DL_BODY);
        r = calloc(1, sizeof *r);
        if (r == NULL)
            return MHD_NO;
        r->h = h;
        r->conn = conn;
        atomic_init(&r->done, 0);
        *con_cls = r;
        atomic_fetch_add(&h->active, 1);
        route(r, url, method);
        if (framing_refused(r, version))
            return request_complete(r); /* the body is not read */
        if (auth_refused(r))
            return request_complete(r); /* the body is not read */
        if (r->rt.route == KEEL_HTTP_R_ACTOR &&
            r->rt.method == KEEL_HTTP_M_POST && r->rt.err == 0 &&
            declared_too_big(conn, h->n->opts.max_frame)) {
            /* Answering now skips the body (and "100 Continue"); MHD closes
             * the connection after the answer. */
            r->too_big = 1;
            return request_complete(r);
        }
        return MHD_YES;
    }
    if (*upload_size > 0) {
        if (r->phase == PH_BODY)
            take_body(r, upload, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    switch (r->phase) {
    case PH_BODY:
        hconn_deadline(h, conn, HTTP_DL_NONE); /* the request is whole */
        return request_complete(r);
    case PH_WAIT:
        if (!atomic_load_explicit(&r->done, memory_order_acquire))
            return MHD_YES; /* not resumed by us: nothing to do yet */
        return answer_from_loop(r);
    default:
        return MHD_YES;
    }
}

static void completed_cb(void *cls, struct MHD_Connection *conn,
                         void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    keel_http *h = cls;
    struct http_req *r = *con_cls;

    (void)toe;
    /* The next request on the connection has its own deadline. */
    hconn_deadline(h, conn, HTTP_DL_HEADERS);
    if (r == NULL)
        return;
    *con_cls = NULL;
    if (r->sse != NULL)
        sse_release(r->sse); /* answered with an error, or never */
    keel__http_route_clear(&r->rt);
    free(r->body);
    free(r->out);
    free(r);
    atomic_fetch_sub(&h->active, 1);
}

/* Lists a new connection with its header deadline, unlists a closed one.
 * MHD thread. */
static void notify_conn_cb(void *cls, struct MHD_Connection *conn,
                           void **socket_context,
                           enum MHD_ConnectionNotificationCode code)
{
    struct hdaemon *hd = cls;
    keel_http *h = hd->h;
    struct hconn *hc;

    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);

        atomic_fetch_add(&hd->conns, 1);
        atomic_fetch_add(&h->conns, 1);
        if (ci == NULL || (hc = calloc(1, sizeof *hc)) == NULL)
            return; /* no deadline: MHD's idle timeout still applies */
        hc->fd = ci->connect_fd;
        pthread_mutex_lock(&h->mu);
        hc->deadline = mono_s() + (double)h->n->opts.http_header_timeout_s;
        hc->next = h->hconns;
        if (h->hconns != NULL)
            h->hconns->prev = hc;
        h->hconns = hc;
        pthread_mutex_unlock(&h->mu);
        *socket_context = hc;
        return;
    }
    atomic_fetch_sub(&hd->conns, 1);
    atomic_fetch_sub(&h->conns, 1);
    hc = *socket_context;
    if (hc == NULL)
        return;
    *socket_context = NULL;
    pthread_mutex_lock(&h->mu);
    if (hc->sse != NULL)
        hc->sse->hc = NULL;
    if (hc->prev != NULL)
        hc->prev->next = hc->next;
    else
        h->hconns = hc->next;
    if (hc->next != NULL)
        hc->next->prev = hc->prev;
    pthread_mutex_unlock(&h->mu);
    free(hc);
}

static void daemon_stop(struct hdaemon *hd);

/* Whether the client of an event stream went away: it closed or shut
 * down its side, or the connection failed. A suspended connection is not
 * watched by MHD, and a quiet actor sends nothing that would find out:
 * without this a stream left by its client holds its connection (and its
 * place under --http-max-per-ip) for as long as the actor stays quiet.
 * An event stream's client sends nothing after its request, so its
 * shutting down its side is its leaving. */
static int sse_client_gone(const struct hconn *hc)
{
    struct pollfd p = {.fd = hc->fd, .events = POLLRDHUP};

    if (poll(&p, 1, 0) <= 0)
        return 0;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

/* Four times a second: the connections past their header deadline are
 * shut down (not closed: the descriptor stays MHD's until its close
 * notice), and daemons quiesced by a reload that have no connection left
 * are stopped. */
static void *watchdog_main(void *arg)
{
    keel_http *h = arg;
    unsigned long shut = 0, gone = 0;

    pthread_mutex_lock(&h->mu);
    while (!h->watch_stop) {
        struct timespec ts;
        double t = mono_s();
        struct hconn *hc;
        struct hdaemon **pp = &h->retired, *done = NULL, *hd;

        while ((hd = *pp) != NULL) {
            if (atomic_load(&hd->conns) == 0 &&
                t - hd->retired_at >= HTTP_RETIRE_MIN_S) {
                *pp = hd->next;
                hd->next = done;
                done = hd;
            } else {
                pp = &hd->next;
            }
        }
        if (done != NULL) {
            /* Stopping joins the daemon's thread, whose callbacks take
             * mu. */
            pthread_mutex_unlock(&h->mu);
            while ((hd = done) != NULL) {
                done = hd->next;
                daemon_stop(hd);
                keel_info("http: the daemon of the previous certificate "
                          "has finished its connections and stopped");
            }
            pthread_mutex_lock(&h->mu);
            continue;
        }

        for (hc = h->hconns; hc != NULL; hc = hc->next) {
            if (hc->deadline != 0 && t >= hc->deadline) {
                shutdown(hc->fd, SHUT_RDWR);
                hc->deadline = 0;
                shut++;
            }
            if (hc->sse != NULL && !hc->sse_gone && sse_client_gone(hc)) {
                /* Ended here (mu keeps it from being freed meanwhile):
                 * resumed, MHD ends the response and finds the
                 * connection closed. */
                static const struct keel_sbuf none = {0};
                hc->sse_gone = 1;
                sse_push(hc->sse, &none, 1);
                gone++;
            }
        }
        if (gone > 0) {
            keel_info("http: ended %lu event streams whose clients went "
                      "away",
                      gone);
            gone = 0;
        }
        if (shut > 0) {
            /* Counted, not logged one by one: the clients at fault may be
             * many. */
            keel_info("http: closed %lu connections that did not send "
                      "their headers in time",
                      shut);
            shut = 0;
        }
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 250000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&h->cv, &h->mu, &ts);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

/* Leaves the path as sent: ids are decoded per segment by route(), so
 * that "%2F" and "%00" survive as bytes of the id. */
static size_t raw_unescape(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    return strlen(s);
}

/* MHD's messages that only say the client went away: a client that
 * stops following an actor (closes its event stream) leaves MHD failing
 * to send the stream's next chunk; or it hung up before its request was
 * whole. Nothing is wrong with the node. */
static int client_gone(const char *msg)
{
    return strstr(msg, "no longer available for sending") != NULL ||
           strstr(msg, "forcibly closed by remote peer") != NULL ||
           strstr(msg, "closed by remote side with incomplete request") !=
               NULL;
}

/* MHD's words when accept() fails for want of descriptors while the
 * daemon has no connection of its own: with none to close, it has nothing
 * to wait for, and it tries again at once, for as long as the shortage
 * lasts (a core spent on it, and a line logged each time). They follow
 * its "Error accepting connection: ..." line, which is the one logged. */
static const char mhd_out_of_fds[] =
    "Hit process or system resource limit at FIRST connection";

/* How long MHD's thread rests then before it tries again, as the wire
 * listener does (net.c). Nothing else waits for that thread meanwhile:
 * it serves no connection. */
#define HTTP_ACCEPT_REST_NS 100000000L

/* MHD's own messages (a refused connection, a malformed request...).
 * They come in floods (a scanner, a client that retries at once): one
 * line a second at most, with how many were not logged, as the wire
 * listener's refusals. Any MHD thread. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    keel_http *h = cls;
    unsigned long long quiet;
    double now;
    char buf[512];
    size_t n;

    if (strncmp(fmt, mhd_out_of_fds, sizeof mhd_out_of_fds - 1) == 0) {
        struct timespec rest = {0, HTTP_ACCEPT_REST_NS};
        nanosleep(&rest, NULL);
    }
    now = mono_s();
    vsnprintf(buf, sizeof buf, fmt, ap);
    n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    if (client_gone(buf)) {
        keel_debug("http: %s", buf);
        return;
    }
    pthread_mutex_lock(&h->log_mu);
    if (h->log_at != 0 && now - h->log_at < 1.0) {
        h->log_quiet++;
        pthread_mutex_unlock(&h->log_mu);
        return;
    }
    quiet = h->log_quiet;
    h->log_at = now;
    h->log_quiet = 0;
    pthread_mutex_unlock(&h->log_mu);
    if (quiet > 0)
        keel_warn("http: %s (and %llu more messages of the HTTP library "
                  "since the last such line)",
                  buf, quiet);
    else
        keel_warn("http: %s", buf);
}

/* ----------------------------------------------------------- lifecycle */

static int http_bind(keel_http *h, char *errbuf, size_t errlen)
{
    const char *addr = h->addr, *colon = strrchr(addr, ':');
    struct addrinfo hints, *res = NULL;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char host[256];
    size_t hl;
    int fd, one = 1, rc;

    if (colon == NULL || colon == addr || colon[1] == '\0' ||
        !keel_http_addr_valid(addr)) {
        snprintf(errbuf, errlen,
                 "http address '%s' is not HOST:PORT or [IPV6]:PORT (a port "
                 "from 0 to 65535, 0 for any free one)",
                 addr);
        return KEEL_EADDR;
    }
    hl = (size_t)(colon - addr);
    if (addr[0] == '[' && hl >= 2 && addr[hl - 1] == ']') {
        addr++; /* [v6 address] */
        hl -= 2;
    }
    if (hl >= sizeof host) {
        snprintf(errbuf, errlen, "host name too long in '%s'", h->addr);
        return KEEL_EADDR;
    }
    memcpy(host, addr, hl);
    host[hl] = '\0';
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc != 0 || res == NULL) {
        snprintf(errbuf, errlen, "cannot resolve '%s': %s", h->addr,
                 gai_strerror(rc));
        return KEEL_EADDR;
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                0);
    if (fd < 0) {
        snprintf(errbuf, errlen, "socket: %s", strerror(errno));
        freeaddrinfo(res);
        return KEEL_EADDR;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 ||
        listen(fd, HTTP_BACKLOG) != 0) {
        int e = errno;
        snprintf(errbuf, errlen, "cannot listen for HTTP on %s: %s%s",
                 h->addr, strerror(e),
                 e == EADDRINUSE ? " (another process holds that port: give "
                                   "another with --http HOST:PORT, or none "
                                   "without --http; embedded: "
                                   "keel_node_options.http_listen)"
                                 : "");
        close(fd);
        freeaddrinfo(res);
        return KEEL_EADDR;
    }
    freeaddrinfo(res);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            h->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6)
            h->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    h->fd = fd;
    return 0;
}

int keel__http_create(keel_node *n, const char *addr, char *errbuf,
                      size_t errlen)
{
    keel_http *h;
    int rc;

    h = calloc(1, sizeof *h);
    if (h == NULL)
        return KEEL_ENOMEM;
    h->n = n;
    h->fd = -1;
    atomic_init(&h->active, 0);
    atomic_init(&h->conns, 0);
    atomic_init(&h->suspended, 0);
    atomic_init(&h->answered, 0);
    pthread_mutex_init(&h->log_mu, NULL);
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    h->addr = strdup(addr);
    if (h->addr == NULL) {
        free(h);
        return KEEL_ENOMEM;
    }
    rc = http_bind(h, errbuf, errlen);
    if (rc != 0) {
        free(h->addr);
        free(h);
        return rc;
    }
    n->opts.http_listen = h->addr; /* the caller's string may not last */
    n->http = h;
    return 0;
}

/* Reads a PEM file whole, NUL-terminated, for MHD. NULL with the reason in
 * errbuf. */
static char *read_pem(const char *path, char *errbuf, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len;

    if (f == NULL) {
        snprintf(errbuf, errlen, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    buf = malloc(HTTP_PEM_MAX + 1);
    if (buf == NULL) {
        snprintf(errbuf, errlen, "out of memory reading %s", path);
        fclose(f);
        return NULL;
    }
    len = fread(buf, 1, HTTP_PEM_MAX + 1, f);
    if (ferror(f) || len > HTTP_PEM_MAX || len == 0) {
        snprintf(errbuf, errlen, "cannot read %s: %s", path,
                 ferror(f) ? strerror(errno)
                 : len == 0 ? "empty file"
                            : "larger than 1 MiB");
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    buf[len] = '\0';
    return buf;
}

static void daemon_free(struct hdaemon *hd)
{
    free(hd->cert);
    free(hd->key);
    free(hd->ca);
    free(hd);
}

/* Checks what gnutls will make of the node's files before MHD is given
 * them: a daemon that fails to start may close its listen descriptor
 * (see daemon_start). 0, or KEEL_EINVAL (a configuration error) with
 * the reason in errbuf. */
static int tls_check(const struct hdaemon *hd, char *errbuf, size_t errlen)
{
    gnutls_certificate_credentials_t cred;
    gnutls_datum_t c, k, ca;
    int rc;

    if (gnutls_certificate_allocate_credentials(&cred) < 0) {
        snprintf(errbuf, errlen, "out of memory");
        return KEEL_ENOMEM;
    }
    c.data = (unsigned char *)hd->cert;
    c.size = (unsigned)strlen(hd->cert);
    k.data = (unsigned char *)hd->key;
    k.size = (unsigned)strlen(hd->key);
    ca.data = (unsigned char *)hd->ca;
    ca.size = (unsigned)strlen(hd->ca);
    rc = gnutls_certificate_set_x509_key_mem(cred, &c, &k,
                                             GNUTLS_X509_FMT_PEM);
    if (rc < 0) {
        snprintf(errbuf, errlen, "certificate or key: %s",
                 gnutls_strerror(rc));
    } else {
        rc = gnutls_certificate_set_x509_trust_mem(cred, &ca,
                                                   GNUTLS_X509_FMT_PEM);
        if (rc <= 0)
            snprintf(errbuf, errlen, "CA: %s",
                     rc == 0 ? "no certificate in it" : gnutls_strerror(rc));
        rc = rc <= 0 ? -1 : 0;
    }
    gnutls_certificate_free_credentials(cred);
    return rc < 0 ? KEEL_EINVAL : 0;
}

/* Starts a daemon on listen descriptor fd, with the node's TLS files
 * read now when it has them. Returns the daemon, or NULL with the reason
 * in errbuf and *rc set: KEEL_EINVAL (a TLS file cannot be read or used; fd
 * is still the caller's) or KEEL_ENOMEM (MHD could not start; whether it
 * closed fd on its way out is not documented: the caller must neither
 * use nor close it). */
static struct hdaemon *daemon_start(keel_http *h, int fd, int *rc,
                                    char *errbuf, size_t errlen)
{
    keel_node *n = h->n;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    unsigned limit = HTTP_MAX_CONNECTIONS;
    struct MHD_OptionItem tls_opts[5];
    struct rlimit rl;
    struct hdaemon *hd;

    *rc = KEEL_ENOMEM;
    hd = calloc(1, sizeof *hd);
    if (hd == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    hd->h = h;
    hd->fd = fd;
    atomic_init(&hd->conns, 0);
    memset(tls_opts, 0, sizeof tls_opts);
    tls_opts[0].option = MHD_OPTION_END;
    if (h->tls) {
        hd->cert = read_pem(n->tls_cert, errbuf, errlen);
        hd->key = hd->cert ? read_pem(n->tls_key, errbuf, errlen) : NULL;
        hd->ca = hd->key ? read_pem(n->tls_ca, errbuf, errlen) : NULL;
        if (hd->ca == NULL || (*rc = tls_check(hd, errbuf, errlen)) != 0) {
            *rc = KEEL_EINVAL;
            daemon_free(hd);
            return NULL;
        }
        *rc = KEEL_ENOMEM;
        flags |= MHD_USE_TLS;
        tls_opts[0] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0,
                                              hd->cert};
        tls_opts[1] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0,
                                              hd->key};
        /* With a trust list MHD asks every client for a certificate,
         * without requiring one; peer_identity verifies it. */
        tls_opts[2] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_TRUST, 0,
                                              hd->ca};
        tls_opts[3] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_PRIORITIES, 0,
                                              (void *)HTTP_TLS_PRIORITIES};
        tls_opts[4] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    }
    flags |= MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES
                 ? MHD_USE_EPOLL
                 : MHD_USE_POLL;
    /* Past the descriptor limit accept() fails and MHD stalls; refusing
     * connections above a limit it knows is kinder. */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur < limit + HTTP_FD_RESERVE)
        limit = rl.rlim_cur > HTTP_FD_RESERVE + 16
                    ? (unsigned)(rl.rlim_cur - HTTP_FD_RESERVE)
                    : 16;
    /* The logger goes first so that it sees complaints about the rest. */
    hd->d = MHD_start_daemon(
        flags, 0, NULL, NULL, access_cb, h, MHD_OPTION_EXTERNAL_LOGGER,
        mhd_log, h, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
        MHD_OPTION_CONNECTION_LIMIT, limit, MHD_OPTION_CONNECTION_TIMEOUT,
        HTTP_CONN_TIMEOUT_S, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned)n->opts.http_max_per_ip, MHD_OPTION_NOTIFY_CONNECTION,
        notify_conn_cb, hd, MHD_OPTION_NOTIFY_COMPLETED, completed_cb, h,
        MHD_OPTION_UNESCAPE_CALLBACK, raw_unescape, NULL, MHD_OPTION_ARRAY,
        tls_opts, MHD_OPTION_END);
    if (hd->d == NULL) {
        snprintf(errbuf, errlen, "libmicrohttpd could not start%s",
                 h->tls ? " (with TLS)" : "");
        daemon_free(hd);
        return NULL;
    }
    hd->limit = limit;
    *rc = 0;
    return hd;
}

/* Stops a daemon with no suspended connection (an MHD rule): joins its
 * thread, closes its connections, and its listen descriptor. */
static void daemon_stop(struct hdaemon *hd)
{
    MHD_stop_daemon(hd->d); /* joins the thread, frees every request */
    /* After a quiesce the descriptor is ours to close; without one MHD
     * closed it. */
    if (hd->quiesced)
        close(hd->fd);
    daemon_free(hd);
}

/* The daemon accepts no more connections; its listen descriptor becomes
 * ours. */
static void daemon_quiesce(struct hdaemon *hd)
{
    hd->quiesced = MHD_quiesce_daemon(hd->d) != MHD_INVALID_SOCKET;
    hd->retired_at = mono_s();
}

int keel__http_start(keel_node *n)
{
    keel_http *h = n->http;
    char err[600];
    int rc;

    if (h == NULL || h->cur != NULL || h->fd < 0)
        return 0;
    h->tls = n->tls_cert != NULL && n->tls_key != NULL && n->tls_ca != NULL;
    h->cur = daemon_start(h, h->fd, &rc, err, sizeof err);
    if (h->cur == NULL) {
        keel_error("http: cannot start the HTTP%s server on %s: %s",
                   h->tls ? "S" : "", h->addr, err);
        /* A daemon that failed may have closed the socket: leave it alone
         * rather than risk closing a reused descriptor. */
        if (rc == KEEL_ENOMEM)
            h->fd = -1;
        return rc;
    }
    h->fd = -1; /* the daemon's now */
    h->watch_stop = 0;
    if (pthread_create(&h->watchdog, NULL, watchdog_main, h) == 0)
        h->watching = 1;
    else
        keel_warn("http: no header deadlines (cannot start a thread)");
    keel_info("http: serving %s on %s (port %d, at most %u connections, %u "
              "per client address, headers within %u s)",
              h->tls ? "HTTPS (TLS 1.3)" : "HTTP", h->addr, h->port,
              h->cur->limit, (unsigned)n->opts.http_max_per_ip,
              (unsigned)n->opts.http_header_timeout_s);
    return 0;
}

void keel__http_tokens_reloaded(keel_node *n)
{
    keel_http *h = n->http;
    unsigned cut = 0;

    if (h == NULL)
        return;
    for (struct sse *x = h->streams; x != NULL; x = x->next) {
        if (x->cut || x->token_len == 0 ||
            keel__auth_token_held(n->auth, x->token, x->token_len))
            continue;
        /* No more state reaches it: it ends as a stopping node ends it,
         * with the reason ("event: end"), or, still waiting for its first
         * answer, is answered with it. */
        x->cut = 1;
        cut++;
        keel__follow_sink_end(n, &x->sink, KEEL_EUNAUTH, sse_withdrawn);
    }
    if (cut > 0)
        keel_warn("auth tokens: %u HTTP event stream(s) opened with a token "
                  "the file no longer holds: ended",
                  cut);
}

int keel__http_tls_reload(keel_node *n)
{
    keel_http *h = n->http;
    struct hdaemon *nd, *old;
    char err[600];
    int fd, rc;

    if (h == NULL || h->cur == NULL || !h->tls)
        return 0;
    /* The new daemon listens on a duplicate: both accept from the same
     * socket for a moment, then the old one is quiesced. A failed start
     * can only lose the duplicate. */
    fd = fcntl(h->cur->fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) {
        keel_error("HTTPS reload failed, the old certificate stays: dup: %s",
                   strerror(errno));
        return KEEL_EIO;
    }
    nd = daemon_start(h, fd, &rc, err, sizeof err);
    if (nd == NULL) {
        if (rc != KEEL_ENOMEM)
            close(fd);
        keel_error("HTTPS reload failed, the old certificate stays: %s", err);
        return rc;
    }
    old = h->cur;
    h->cur = nd;
    daemon_quiesce(old);
    if (!old->quiesced)
        keel_warn("http: the old daemon could not be quiesced; it stops "
                  "once it has no connection");
    pthread_mutex_lock(&h->mu);
    old->next = h->retired;
    h->retired = old;
    pthread_mutex_unlock(&h->mu);
    keel_info("HTTPS reloaded: certificate %s, key %s, CA %s (connections "
              "already open finish on the old one)",
              n->tls_cert, n->tls_key, n->tls_ca);
    return 0;
}

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void keel__http_stop(keel_node *n)
{
    keel_http *h = n->http;
    struct hdaemon *hd;
    double deadline;

    if (h == NULL || h->cur == NULL)
        return;
    daemon_quiesce(h->cur); /* no new connections */
    /* Every job posted before the loop ended has run and resumed its
     * connection; what may remain are connections the MHD thread itself
     * is resuming after a refused post. That takes microseconds, and the
     * daemon must not stop before. */
    while (atomic_load(&h->suspended) > 0)
        usleep(1000);
    /* Requests in progress: their answers are queued or about to be (new
     * actor work gets 503 now). Give them a bounded time to go out. */
    deadline = now_ms() + HTTP_DRAIN_MS;
    while (atomic_load(&h->active) > 0 && now_ms() < deadline)
        usleep(5000);
    if (atomic_load(&h->active) > 0)
        keel_info("http: closing %d unfinished requests",
                  atomic_load(&h->active));
    /* The watchdog first: it may be stopping a retired daemon. */
    if (h->watching) {
        pthread_mutex_lock(&h->mu);
        h->watch_stop = 1;
        pthread_cond_signal(&h->cv);
        pthread_mutex_unlock(&h->mu);
        pthread_join(h->watchdog, NULL);
        h->watching = 0;
    }
    daemon_stop(h->cur);
    h->cur = NULL;
    pthread_mutex_lock(&h->mu);
    hd = h->retired;
    h->retired = NULL;
    pthread_mutex_unlock(&h->mu);
    while (hd != NULL) {
        struct hdaemon *next = hd->next;

        daemon_stop(hd);
        hd = next;
    }
    keel_info("http: stopped");
}

void keel__http_destroy(keel_node *n)
{
    keel_http *h = n->http;

    if (h == NULL)
        return;
    keel__http_stop(n);
    if (h->fd >= 0)
        close(h->fd); /* never started */
    if (n->opts.http_listen == h->addr)
        n->opts.http_listen = NULL;
    free(h->addr);
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    pthread_mutex_destroy(&h->log_mu);
    free(h);
    n->http = NULL;
}

int keel_node_http_port(const keel_node *n)
{
    return n != NULL && n->http != NULL ? n->http->port : 0;
}
