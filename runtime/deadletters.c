/* Dead letters: kept, listed, retried and dropped (deadletters.h has the
 * rules and the storage layout). */
#include "runtime/deadletters.h"

#include <stdlib.h>
#include <string.h>

#include "common/be.h"
#include "runtime/outbox.h"
#include "runtime/proto.h"
#include "runtime/reminders.h"

#define DL_HDR "\0keel.dl"
#define DL_HDR_LEN 8
#define DL_REC "\0keel.dl/"
#define DL_REC_LEN 9
#define DL_FIXED 15 /* kind | code | attempts | at_ms | len(why) */

int keel__dl_transient(int status)
{
    switch (status) {
    case KEEL_ENOMEM:
    case KEEL_ENOSPC:
    case KEEL_EIO:
    case KEEL_EFENCED:
    case KEEL_EUNAVAIL:
    case KEEL_ESTOPPING:
    case KEEL_ECONN:
    case KEEL_ETIMEDOUT:
    case KEEL_ESTORE:
    case KEEL_EOVERLOAD:
    case KEEL_ECONNLOSS:
    case KEEL_ESESSION:
    case KEEL_EDEPOSED:
    case KEEL_EINDOUBT:
    case KEEL_ECAPUNKNOWN:
    case KEEL_EDEADLINE:
    case KEEL_ENOTSENT:
    case KEEL_ENOTMEMBER:
        return 1;
    default:
        return 0;
    }
}

int keel__dl_not_run(int status)
{
    switch (status) {
    case KEEL_EUNAVAIL:
    case KEEL_EOVERLOAD:
    case KEEL_EDEADLINE:
    case KEEL_ENOTSENT:
    case KEEL_ENOTMEMBER:
    case KEEL_ESTOPPING:
        return 1;
    default:
        return 0;
    }
}

unsigned keel__dl_after(const keel_node *n)
{
    return n->opts.dead_letter_after != 0 ? n->opts.dead_letter_after
                                          : KEEL_DEAD_LETTER_AFTER_DEFAULT;
}

uint32_t keel__deploy_wait_ms(const keel_node *n)
{
    return n->opts.deploy_wait_ms != 0 ? n->opts.deploy_wait_ms
                                       : KEEL_DEPLOY_WAIT_MS_DEFAULT;
}

/* The actor's dead-letter header: *last and *held (0 and 0: none yet). */
static int header_get(keel_turn *t, uint64_t *last, uint64_t *held)
{
    const void *v;
    size_t vl;
    int rc = keel__turn_rt_get(t, DL_HDR, DL_HDR_LEN, &v, &vl);

    *last = *held = 0;
    if (rc == KEEL_ENOTFOUND)
        return 0;
    if (rc != 0)
        return rc;
    if (vl != 16) {
        keel_turn_error(t, "the actor's dead-letter record is %zu bytes, "
                           "not 16",
                        vl);
        return KEEL_ECORRUPT;
    }
    *last = keel_get_be64(v);
    *held = keel_get_be64((const uint8_t *)v + 8);
    return 0;
}

static int header_put(keel_turn *t, uint64_t last, uint64_t held)
{
    uint8_t v[16];

    keel_put_be64(v, last);
    keel_put_be64(v + 8, held);
    return keel__turn_rt_put(t, DL_HDR, DL_HDR_LEN, v, sizeof v);
}

int keel__dl_add(keel_turn *t, int kind, int code, unsigned attempts,
                 const char *why, size_t why_len, const void *body,
                 size_t body_len)
{
    uint8_t key[DL_REC_LEN + 8], *rec;
    uint64_t last, held;
    size_t rl;
    int rc;

    if (why_len > KEEL_DL_WHY_MAX)
        why_len = KEEL_DL_WHY_MAX;
    rc = header_get(t, &last, &held);
    if (rc != 0)
        return rc;
    rl = DL_FIXED + why_len + body_len;
    rec = malloc(rl);
    if (rec == NULL)
        return KEEL_ENOMEM;
    rec[0] = (uint8_t)kind;
    keel_put_be16(rec + 1, (uint16_t)-code);
    keel_put_be16(rec + 3, (uint16_t)(attempts > 0xffff ? 0xffff : attempts));
    keel_put_be64(rec + 5, keel__wall_ms());
    keel_put_be16(rec + 13, (uint16_t)why_len);
    if (why_len > 0)
        memcpy(rec + DL_FIXED, why, why_len);
    if (body_len > 0)
        memcpy(rec + DL_FIXED + why_len, body, body_len);
    memcpy(key, DL_REC, DL_REC_LEN);
    keel_put_be64(key + DL_REC_LEN, last + 1);
    rc = keel__turn_rt_put(t, key, sizeof key, rec, rl);
    free(rec);
    if (rc == 0)
        rc = header_put(t, last + 1, held + 1);
    return rc;
}

/* ------------------------------------------------------- records */

/* A stored dead letter taken apart; pointers into the record. */
struct dl_rec {
    int kind, code;
    unsigned attempts;
    uint64_t at_ms;
    const uint8_t *why;
    size_t why_len;
    const uint8_t *a, *b, *msg; /* a, b as keel_dead_entry has them */
    size_t a_len, b_len, msg_len;
    const uint8_t *body; /* what retry hands back */
    size_t body_len;
};

static int rec_parse(const uint8_t *v, size_t vl, struct dl_rec *r)
{
    const uint8_t *p;
    size_t rest;

    if (vl < DL_FIXED)
        return KEEL_ECORRUPT;
    r->kind = v[0];
    r->code = -(int)keel_get_be16(v + 1);
    r->attempts = keel_get_be16(v + 3);
    r->at_ms = keel_get_be64(v + 5);
    r->why_len = keel_get_be16(v + 13);
    if (vl - DL_FIXED < r->why_len)
        return KEEL_ECORRUPT;
    r->why = v + DL_FIXED;
    r->body = p = r->why + r->why_len;
    r->body_len = rest = vl - DL_FIXED - r->why_len;
    if (r->kind == KEEL_DL_OUTBOX) {
        if (rest < 3 || p[0] == 0 || rest - 3 < p[0])
            return KEEL_ECORRUPT;
        r->a = p + 1;
        r->a_len = p[0];
        r->b_len = keel_get_be16(p + 1 + r->a_len);
        if (rest - 3 - r->a_len < r->b_len)
            return KEEL_ECORRUPT;
        r->b = p + 3 + r->a_len;
        r->msg = r->b + r->b_len;
        r->msg_len = rest - 3 - r->a_len - r->b_len;
    } else if (r->kind == KEEL_DL_REMINDER) {
        if (rest < 1 || p[0] == 0 || rest - 1 < p[0] ||
            p[0] > KEEL_MAX_REMINDER_NAME_LEN)
            return KEEL_ECORRUPT;
        r->a = p;
        r->a_len = 0;
        r->b = p + 1;
        r->b_len = p[0];
        r->msg = r->b + r->b_len;
        r->msg_len = rest - 1 - r->b_len;
    } else {
        return KEEL_ECORRUPT;
    }
    return 0;
}

/* ------------------------------------------------------- listing */

int keel__dl_page_init(struct keel_dl_page *pg, keel_node *n, uint64_t held)
{
    memset(pg, 0, sizeof *pg);
    pg->room = n->opts.max_frame > KEEL_FRAME_HEADER
                   ? n->opts.max_frame - KEEL_FRAME_HEADER
                   : 0;
    pg->cap = 512;
    pg->buf = malloc(pg->cap);
    if (pg->buf == NULL)
        return KEEL_ENOMEM;
    keel_put_be64(pg->buf, held);
    pg->len = 8;
    return 0;
}

int keel__dl_page_add(struct keel_dl_page *pg, const keel_dead_entry *e)
{
    size_t need = keel_dead_entry_size(e);

    if (pg->count == KEEL_DEAD_LIST_MAX)
        return 1;
    if (pg->len + need > pg->room) {
        /* The page ends here; the next one starts after it. */
        if (pg->count == 0)
            pg->err = KEEL_ETOOBIG;
        return 1;
    }
    if (pg->len + need > pg->cap) {
        size_t cap = pg->cap * 2;
        uint8_t *p;
        while (cap < pg->len + need)
            cap *= 2;
        p = realloc(pg->buf, cap);
        if (p == NULL) {
            pg->err = KEEL_ENOMEM;
            return 1;
        }
        pg->buf = p;
        pg->cap = cap;
    }
    keel_dead_entry_put(pg->buf + pg->len, e);
    pg->len += need;
    pg->count++;
    return 0;
}

int keel__dl_page_end(struct keel_dl_page *pg, keel_turn *t, int rc,
                      const char *what, uint8_t **reply, size_t *rlen)
{
    if (rc == 0)
        rc = pg->err;
    if (rc != 0) {
        free(pg->buf);
        pg->buf = NULL;
        if (rc == KEEL_ECORRUPT && !keel__turn_has_error(t))
            keel_turn_error(t, "%s of the actor is unreadable", what);
        else if (rc == KEEL_ETOOBIG && !keel__turn_has_error(t))
            keel_turn_error(t, "%s does not fit in a frame of %u bytes "
                               "(--max-frame)",
                            what, keel_turn_node(t)->opts.max_frame);
        return rc;
    }
    *reply = pg->buf;
    *rlen = pg->len;
    pg->buf = NULL;
    return 0;
}

struct list_acc {
    uint64_t after;
    struct keel_dl_page pg;
};

static int list_cb(const void *key, size_t klen, const void *val, size_t vlen,
                   void *data)
{
    struct list_acc *l = data;
    keel_dead_entry e;
    struct dl_rec r;

    if (klen != DL_REC_LEN + 8 || memcmp(key, DL_REC, DL_REC_LEN) != 0)
        return 0; /* another runtime entry */
    e.number = keel_get_be64((const uint8_t *)key + DL_REC_LEN);
    if (e.number <= l->after)
        return 0;
    if (rec_parse(val, vlen, &r) != 0) {
        l->pg.err = KEEL_ECORRUPT;
        return 1;
    }
    e.kind = r.kind;
    e.code = r.code;
    e.attempts = r.attempts;
    e.at_ms = r.at_ms;
    e.why = (const char *)r.why;
    e.why_len = r.why_len;
    e.a = (const char *)r.a;
    e.a_len = r.a_len;
    e.b = (const char *)r.b;
    e.b_len = r.b_len;
    e.msg_len = r.msg_len > UINT32_MAX ? UINT32_MAX : (uint32_t)r.msg_len;
    e.shown = r.msg;
    e.shown_len = r.msg_len < KEEL_DEAD_SHOWN_MAX ? r.msg_len
                                                  : KEEL_DEAD_SHOWN_MAX;
    return keel__dl_page_add(&l->pg, &e);
}

static int dl_list(keel_turn *t, uint64_t after, uint8_t **reply,
                   size_t *rlen)
{
    struct list_acc l = {.after = after};
    uint64_t last, held;
    int rc = header_get(t, &last, &held);

    if (rc != 0)
        return rc;
    rc = keel__dl_page_init(&l.pg, keel_turn_node(t), held);
    if (rc != 0)
        return rc;
    rc = keel__turn_rt_entries(t, DL_REC, DL_REC_LEN, list_cb, &l);
    return keel__dl_page_end(&l.pg, t, rc, "a dead letter", reply, rlen);
}

/* ------------------------------------------------ retry and drop */

/* Runs a reminder's message that became a dead letter through the
 * handler, in this turn, as the firing it was. */
static int retry_reminder(keel_turn *t, const struct dl_rec *r)
{
    keel_actor *a = keel__turn_actor(t);
    struct keel_rm_fire f;
    struct keel_rm_turn *rt = keel__turn_rm(t);
    int rc;

    memset(&f, 0, sizeof f);
    f.nlen = (uint8_t)r->b_len;
    memcpy(f.name, r->b, r->b_len);
    f.name[r->b_len] = '\0';
    rt->fire = &f;
    rc = keel__turn_hook_rc(t, "handler",
                            a->type->t.on_message(t, r->msg, r->msg_len));
    rt->fire = NULL;
    return rc;
}

static int dl_act(keel_turn *t, int retry, uint64_t number, int *ran)
{
    uint8_t key[DL_REC_LEN + 8];
    const void *v;
    size_t vl;
    uint64_t last, held;
    struct dl_rec r;
    uint8_t *copy;
    int rc;

    memcpy(key, DL_REC, DL_REC_LEN);
    keel_put_be64(key + DL_REC_LEN, number);
    rc = keel__turn_rt_get(t, key, sizeof key, &v, &vl);
    if (rc == KEEL_ENOTFOUND) {
        keel_turn_error(t, "the actor has no dead letter %llu",
                        (unsigned long long)number);
        return rc;
    }
    if (rc != 0)
        return rc;
    if (retry) {
        /* A copy: the writes below may move what v points into. */
        copy = malloc(vl ? vl : 1);
        if (copy == NULL)
            return KEEL_ENOMEM;
        memcpy(copy, v, vl);
        if (rec_parse(copy, vl, &r) != 0) {
            free(copy);
            keel_turn_error(t, "dead letter %llu is unreadable; drop it",
                            (unsigned long long)number);
            return KEEL_ECORRUPT;
        }
        if (r.kind == KEEL_DL_OUTBOX &&
            keel__type_find(keel_turn_node(t), r.a, r.a_len) == NULL) {
            keel_turn_error(t, "actor type '%.*s' is not registered on "
                               "this node",
                            (int)r.a_len, (const char *)r.a);
            rc = KEEL_ENOTYPE;
        } else if (r.kind == KEEL_DL_OUTBOX) {
            rc = keel__outbox_queue(t, r.body, r.body_len);
        } else {
            *ran = 1;
            rc = retry_reminder(t, &r);
        }
        free(copy);
        if (rc != 0)
            return rc;
    }
    rc = header_get(t, &last, &held);
    if (rc == 0)
        rc = keel__turn_rt_del(t, key, sizeof key);
    if (rc == 0)
        rc = header_put(t, last, held > 0 ? held - 1 : 0);
    return rc;
}

int keel__dl_is_request(const keel_req *req)
{
    return req->read_state && req->len >= KEEL_READ_DEAD_LEN &&
           memcmp(req->buf, KEEL_READ_DEAD, KEEL_READ_DEAD_LEN) == 0;
}

int keel__dl_request(keel_turn *t, keel_req *req, uint8_t **reply,
                     size_t *rlen, int *ran)
{
    const uint8_t *m = req->buf;
    size_t len = req->len;

    *reply = NULL;
    *rlen = 0;
    *ran = 0;
    if (len == KEEL_DEAD_LIST_LEN + 8 &&
        memcmp(m, KEEL_DEAD_LIST, KEEL_DEAD_LIST_LEN) == 0)
        return dl_list(t, keel_get_be64(m + KEEL_DEAD_LIST_LEN), reply,
                       rlen);
    if (len == KEEL_DEAD_RETRY_LEN + 8 &&
        memcmp(m, KEEL_DEAD_RETRY, KEEL_DEAD_RETRY_LEN) == 0)
        return dl_act(t, 1, keel_get_be64(m + KEEL_DEAD_RETRY_LEN), ran);
    if (len == KEEL_DEAD_DROP_LEN + 8 &&
        memcmp(m, KEEL_DEAD_DROP, KEEL_DEAD_DROP_LEN) == 0)
        return dl_act(t, 0, keel_get_be64(m + KEEL_DEAD_DROP_LEN), ran);
    if (len == KEEL_OB_WAITING_LEN + 8 &&
        memcmp(m, KEEL_OB_WAITING, KEEL_OB_WAITING_LEN) == 0)
        return keel__outbox_list(t, keel_get_be64(m + KEEL_OB_WAITING_LEN),
                                 reply, rlen);
    if (len == KEEL_OB_GIVE_UP_LEN + 8 &&
        memcmp(m, KEEL_OB_GIVE_UP, KEEL_OB_GIVE_UP_LEN) == 0)
        return keel__outbox_give_up_request(
            t, keel_get_be64(m + KEEL_OB_GIVE_UP_LEN), reply, rlen);
    keel_turn_error(t, "not a dead-letter request");
    return KEEL_EINVAL;
}
