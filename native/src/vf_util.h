/*
 * vf_util.h — helpers shared by the bundled C workers (header-only, static functions):
 *   - a JSON scanner: find members and read numbers/strings in place, no allocation;
 *   - a growable output buffer (malloc'd, so FreeResult is free());
 *   - a table of per-instance state keyed by VirtufinHost.engine_ptr;
 *   - readers of Arrow record batches (the OnBatch extension) that work on the buffers in place.
 */
#ifndef VF_UTIL_H
#define VF_UTIL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "virtufin_worker.h"

/* ------------------------------------------------------------------ JSON scanning */

typedef struct {
    const char* p;   /* first byte of the value */
    const char* end; /* one past its last byte */
} vf_span;

static inline const char* vf_ws(const char* p, const char* e) {
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

static inline const char* vf_skip_string(const char* p, const char* e) {
    if (p >= e || *p != '"') return NULL;
    for (p++; p < e; p++) {
        if (*p == '\\') {
            p++;
        } else if (*p == '"') {
            return p + 1;
        }
    }
    return NULL;
}

/* Skip one JSON value starting at p (no leading whitespace); NULL if malformed. */
static inline const char* vf_skip_value(const char* p, const char* e) {
    if (p >= e) return NULL;
    if (*p == '"') return vf_skip_string(p, e);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < e) {
            if (*p == '"') {
                p = vf_skip_string(p, e);
                if (p == NULL) return NULL;
                continue;
            }
            if (*p == '{' || *p == '[') depth++;
            if (*p == '}' || *p == ']') {
                depth--;
                if (depth == 0) return p + 1;
            }
            p++;
        }
        return NULL;
    }
    while (p < e && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n' &&
           *p != '\r' && *p != '\t')
        p++;
    return p;
}

/* Find member `key` of the JSON object `obj`; 1 and its value span if present. */
static inline int vf_member(vf_span obj, const char* key, vf_span* out) {
    const char* e = obj.end;
    const char* p = vf_ws(obj.p, e);
    size_t klen = strlen(key);
    if (p >= e || *p != '{') return 0;
    p = vf_ws(p + 1, e);
    while (p < e && *p != '}') {
        const char* kstart = p + 1;
        const char* kend = vf_skip_string(p, e);
        if (kend == NULL) return 0;
        p = vf_ws(kend, e);
        if (p >= e || *p != ':') return 0;
        p = vf_ws(p + 1, e);
        const char* vend = vf_skip_value(p, e);
        if (vend == NULL) return 0;
        if ((size_t)(kend - 1 - kstart) == klen && memcmp(kstart, key, klen) == 0) {
            out->p = p;
            out->end = vend;
            return 1;
        }
        p = vf_ws(vend, e);
        if (p < e && *p == ',') p = vf_ws(p + 1, e);
    }
    return 0;
}

static inline int vf_path(vf_span obj, const char* outer, const char* inner, vf_span* out) {
    vf_span mid;
    return vf_member(obj, outer, &mid) && vf_member(mid, inner, out);
}


static inline int vf_is_true(vf_span v) { return v.end - v.p == 4 && memcmp(v.p, "true", 4) == 0; }

/* A JSON number, parsed with strtod (correctly rounded, like Python's float()). */
static inline int vf_number(vf_span v, double* out) {
    char buf[64];
    size_t n = (size_t)(v.end - v.p);
    if (n == 0 || n >= sizeof buf) return 0;
    if (!(v.p[0] == '-' || (v.p[0] >= '0' && v.p[0] <= '9'))) return 0;
    memcpy(buf, v.p, n);
    buf[n] = '\0';
    char* endp = NULL;
    *out = strtod(buf, &endp);
    return endp == buf + n;
}

/* The raw text between the quotes of a JSON string (escapes left as they are). */
static inline int vf_string(vf_span v, vf_span* inner) {
    if (v.end - v.p < 2 || v.p[0] != '"' || v.end[-1] != '"') return 0;
    inner->p = v.p + 1;
    inner->end = v.end - 1;
    return 1;
}

static inline int vf_eq(vf_span s, const char* lit) {
    size_t n = strlen(lit);
    return (size_t)(s.end - s.p) == n && memcmp(s.p, lit, n) == 0;
}

static inline int vf_starts(vf_span s, const char* lit) {
    size_t n = strlen(lit);
    return (size_t)(s.end - s.p) >= n && memcmp(s.p, lit, n) == 0;
}

static inline int vf_ends(vf_span s, const char* lit) {
    size_t n = strlen(lit);
    return (size_t)(s.end - s.p) >= n && memcmp(s.end - n, lit, n) == 0;
}

/* Copy a span into a NUL-terminated buffer of `cap` bytes; 0 if it does not fit. */
static inline int vf_copy(vf_span s, char* dst, size_t cap) {
    size_t n = (size_t)(s.end - s.p);
    if (n + 1 > cap) return 0;
    memcpy(dst, s.p, n);
    dst[n] = '\0';
    return 1;
}

/* ------------------------------------------------------------------ output buffer */

typedef struct {
    char* data;
    size_t len;
    size_t cap;
    int failed;
} vf_buf;

static inline void vf_reserve(vf_buf* b, size_t more) {
    if (b->failed || b->len + more + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more + 1) cap *= 2;
    char* grown = (char*)realloc(b->data, cap);
    if (grown == NULL) {
        b->failed = 1;
        return;
    }
    b->data = grown;
    b->cap = cap;
}

static inline void vf_put(vf_buf* b, const char* s, size_t n) {
    vf_reserve(b, n);
    if (b->failed) return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static inline void vf_puts(vf_buf* b, const char* s) { vf_put(b, s, strlen(s)); }

static inline void vf_put_span(vf_buf* b, vf_span s) { vf_put(b, s.p, (size_t)(s.end - s.p)); }

static inline void vf_printf(vf_buf* b, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void vf_printf(vf_buf* b, const char* fmt, ...) {
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = 1;
        return;
    }
    if ((size_t)n < sizeof small) {
        vf_put(b, small, (size_t)n);
        return;
    }
    vf_reserve(b, (size_t)n);
    if (b->failed) return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Hand the buffer to the host as Process output; VIRTUFIN_E_NOMEM if building it failed. */
static inline int32_t vf_finish(vf_buf* b, uint8_t** out, int32_t* out_len) {
    if (b->failed || b->len > 0x7fffffff) {
        free(b->data);
        return VIRTUFIN_E_NOMEM;
    }
    *out = (uint8_t*)b->data;
    *out_len = (int32_t)b->len;
    return VIRTUFIN_OK;
}

static inline void vf_log(const VirtufinHost* host, int32_t level, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline void vf_log(const VirtufinHost* host, int32_t level, const char* fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (host != NULL && host->log != NULL) host->log(host->engine_ptr, level, line);
}

/* ------------------------------------------------------------------ per-instance state */

typedef struct vf_slot {
    void* key;
    void* state;
    struct vf_slot* next;
} vf_slot;

typedef struct {
    pthread_mutex_t lock;
    vf_slot* head;
} vf_table;

#define VF_TABLE_INIT {PTHREAD_MUTEX_INITIALIZER, NULL}

/* The state of `key`, created with `make()` the first time (NULL if that fails). */
static inline void* vf_state(vf_table* t, void* key, void* (*make)(void)) {
    pthread_mutex_lock(&t->lock);
    vf_slot* s = t->head;
    while (s != NULL && s->key != key) s = s->next;
    if (s == NULL && make != NULL) {
        s = (vf_slot*)calloc(1, sizeof *s);
        if (s != NULL) {
            s->key = key;
            s->state = make();
            if (s->state == NULL) {
                free(s);
                s = NULL;
            } else {
                s->next = t->head;
                t->head = s;
            }
        }
    }
    void* state = s ? s->state : NULL;
    pthread_mutex_unlock(&t->lock);
    return state;
}

/* Remove `key`'s state and return it for the caller to free. */
static inline void* vf_forget(vf_table* t, void* key) {
    pthread_mutex_lock(&t->lock);
    vf_slot** link = &t->head;
    void* state = NULL;
    while (*link != NULL) {
        if ((*link)->key == key) {
            vf_slot* gone = *link;
            *link = gone->next;
            state = gone->state;
            free(gone);
            break;
        }
        link = &(*link)->next;
    }
    pthread_mutex_unlock(&t->lock);
    return state;
}

/* ------------------------------------------------------------------ Arrow record batches */

/* The index of the column called `name` of a struct schema (a record batch), or -1. */
static inline int64_t vf_arrow_column(const struct ArrowSchema* schema, const char* name) {
    for (int64_t i = 0; i < schema->n_children; i++) {
        const char* n = schema->children[i]->name;
        if (n != NULL && strcmp(n, name) == 0) return i;
    }
    return -1;
}

/* 1 if rows [first, first + length) of the array (its own offset added) hold no null. */
static inline int vf_arrow_no_nulls(const struct ArrowArray* a, int64_t first, int64_t length) {
    if (a->null_count == 0 || a->n_buffers < 1 || a->buffers[0] == NULL) return 1;
    const uint8_t* bits = (const uint8_t*)a->buffers[0];
    for (int64_t i = a->offset + first; i < a->offset + first + length; i++)
        if (!((bits[i >> 3] >> (i & 7)) & 1)) return 0;
    return 1;
}

/* The float64 ("g") values of rows [first, first + length), in place; NULL if the column has
 * another type or a null there. */
static inline const double* vf_arrow_f64(const struct ArrowSchema* s, const struct ArrowArray* a,
                                         int64_t first, int64_t length) {
    static const double none[1] = {0.0};
    if (strcmp(s->format, "g") != 0 || a->n_buffers != 2 || a->length < first + length ||
        !vf_arrow_no_nulls(a, first, length))
        return NULL;
    if (a->buffers[1] == NULL) return length == 0 ? none : NULL;
    return (const double*)a->buffers[1] + a->offset + first;
}

/* A utf8 ("u") or large utf8 ("U") column, read in place. */
typedef struct {
    const char* data;
    const int32_t* off32; /* "u": offsets, the row's first included */
    const int64_t* off64; /* "U" */
} vf_arrow_strings;

/* Point `out` at rows [first, …) of a string column; 0 if it is not one or has a null among
 * the `length` rows. */
static inline int vf_arrow_strings_of(const struct ArrowSchema* s, const struct ArrowArray* a,
                                      int64_t first, int64_t length, vf_arrow_strings* out) {
    int large = strcmp(s->format, "U") == 0;
    if ((!large && strcmp(s->format, "u") != 0) || a->n_buffers != 3 ||
        a->length < first + length || !vf_arrow_no_nulls(a, first, length))
        return 0;
    if (length == 0) {
        out->data = "";
        out->off32 = NULL;
        out->off64 = NULL;
        return 1;
    }
    if (a->buffers[1] == NULL) return 0;
    out->data = a->buffers[2] != NULL ? (const char*)a->buffers[2] : "";
    out->off32 = large ? NULL : (const int32_t*)a->buffers[1] + a->offset + first;
    out->off64 = large ? (const int64_t*)a->buffers[1] + a->offset + first : NULL;
    return 1;
}

/* The bytes of row `row` (relative to `first` above), as a span of the column's data buffer. */
static inline vf_span vf_arrow_string(const vf_arrow_strings* s, int64_t row) {
    vf_span out;
    if (s->off32 != NULL) {
        out.p = s->data + s->off32[row];
        out.end = s->data + s->off32[row + 1];
    } else {
        out.p = s->data + s->off64[row];
        out.end = s->data + s->off64[row + 1];
    }
    return out;
}

static inline int vf_span_eq(vf_span a, vf_span b) {
    size_t n = (size_t)(a.end - a.p);
    return (size_t)(b.end - b.p) == n && memcmp(a.p, b.p, n) == 0;
}

/* Release a batch and its schema (whichever is still unreleased), as OnBatch must. */
static inline void vf_arrow_release(struct ArrowSchema* schema, struct ArrowArray* batch) {
    if (batch != NULL && batch->release != NULL) batch->release(batch);
    if (schema != NULL && schema->release != NULL) schema->release(schema);
}

#endif /* VF_UTIL_H */
