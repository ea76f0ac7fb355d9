/*
 * sma_cross — backtesting.py's SMA-crossover example as a native Virtufin worker.
 *
 * Input: bar events (type com.virtufin.exchange.<venue>.ohlcv.candle, data.close, data.symbol).
 * Per symbol, once both simple moving averages of the closes exist on the previous and the
 * current bar, fast crossing above slow (fast[-2] < slow[-2] and fast[-1] > slow[-1]) emits a
 * buy order, slow crossing above fast a sell, each {"sizing": "all_in", "exclusive": true} so
 * positions reverse. Orders carry "order_id": null: the host fills in the id derived from the
 * bar (workers/kit/ids.py) and the subject order/<id>, so a redelivered bar yields the same
 * order. Twins: workers/sma_cross/worker.py and workers/sma_cross/script.py make the same
 * decisions on the same single-symbol input (tests/integration/runtime/test_equivalence.py).
 *
 * OnBatch (the batch extension) makes the same decisions on whole Arrow record batches, read in
 * place: every mean is the same sum, oldest close first, divided the same way, so both paths
 * decide bit for bit alike, whatever the batch sizes and however symbols interleave
 * (tests/integration/runtime/test_native_batch.py). The sums of eight consecutive bars are
 * accumulated side by side, which the compiler turns into vector adds.
 *
 * Parameters (Configure): {"worker_id": "...", "params": {"fast": 10, "slow": 20}}.
 */
#include "virtufin_worker.h"
#include "vf_util.h"

#define BAR_PREFIX "com.virtufin.exchange."
#define BAR_SUFFIX ".ohlcv.candle"
#define MAX_WINDOW 100000
#define BLOCK 2048 /* bars whose means OnBatch computes at a time */

/* One symbol's history. */
typedef struct {
    char* name;
    size_t len;
    double* closes; /* ring buffer of the last `slow` closes */
    long count;     /* closes seen */
    int has_prev;
    double prev_fast;
    double prev_slow;
} Series;

typedef struct {
    int fast;
    int slow;
    Series* series;
    size_t n_series, cap_series;
    uint32_t* slots; /* open addressing over series: index + 1, 0 = empty */
    size_t n_slots;  /* a power of two, or 0 */
    size_t last;     /* the series looked up last */
    /* OnBatch scratch, grown as needed and kept */
    double* x; /* a series' history then its closes in the batch */
    size_t cap_x;
    double* means; /* fast means, then slow means */
    size_t cap_means;
    int32_t* row_series; /* series of each row (several symbols in the batch) */
    size_t cap_row_series;
    int64_t* grouped; /* rows grouped by series */
    size_t cap_grouped;
    int64_t* ends; /* per series: where its rows end in `grouped` */
    size_t cap_ends;
    int64_t* buys; /* rows of this batch's buy decisions */
    size_t cap_buys, n_buys;
    int64_t* sells;
    size_t cap_sells, n_sells;
    int8_t* plus; /* +1 … (the sides of the buys) */
    size_t cap_plus;
    int8_t* minus; /* -1 … */
    size_t cap_minus;
    char buy_options[160];
    char sell_options[160];
    char worker_id[129];
} Sma;

static vf_table g_instances = VF_TABLE_INIT;

static void set_options(Sma* s) {
    static const char* format =
        "{\"qty\":null,\"sizing\":\"all_in\",\"exclusive\":true,"
        "\"reason\":\"fast SMA(%d) crossed %s slow SMA(%d)\"}";
    snprintf(s->buy_options, sizeof s->buy_options, format, s->fast, "above", s->slow);
    snprintf(s->sell_options, sizeof s->sell_options, format, s->fast, "below", s->slow);
}

static void* sma_new(void) {
    Sma* s = (Sma*)calloc(1, sizeof *s);
    if (s == NULL) return NULL;
    s->fast = 10;
    s->slow = 20;
    set_options(s);
    strcpy(s->worker_id, "sma_cross");
    return s;
}

static void forget_series(Sma* s) {
    for (size_t i = 0; i < s->n_series; i++) {
        free(s->series[i].name);
        free(s->series[i].closes);
    }
    free(s->series);
    free(s->slots);
    s->series = NULL;
    s->slots = NULL;
    s->n_series = s->cap_series = s->n_slots = s->last = 0;
}

static void sma_free(Sma* s) {
    forget_series(s);
    free(s->x);
    free(s->means);
    free(s->row_series);
    free(s->grouped);
    free(s->ends);
    free(s->buys);
    free(s->sells);
    free(s->plus);
    free(s->minus);
    free(s);
}

/* Make room for `need` elements of `size` bytes at *p (capacity *cap); 0 if out of memory. */
static int reserve(void* p, size_t* cap, size_t need, size_t size) {
    void** slot = (void**)p;
    if (need <= *cap && *slot != NULL) return 1;
    size_t grown = *cap ? *cap : 64;
    while (grown < need) grown *= 2;
    void* bigger = realloc(*slot, grown * size);
    if (bigger == NULL) return 0;
    *slot = bigger;
    *cap = grown;
    return 1;
}

/* ------------------------------------------------------------------ series by symbol */

static uint64_t hash_span(vf_span v) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const char* p = v.p; p < v.end; p++) h = (h ^ (uint8_t)*p) * 1099511628211ull;
    return h;
}

static int series_is(const Series* q, vf_span name) {
    return q->len == (size_t)(name.end - name.p) && memcmp(q->name, name.p, q->len) == 0;
}

static int rehash(Sma* s, size_t n_slots) {
    uint32_t* slots = (uint32_t*)calloc(n_slots, sizeof *slots);
    if (slots == NULL) return 0;
    for (size_t i = 0; i < s->n_series; i++) {
        vf_span name = {s->series[i].name, s->series[i].name + s->series[i].len};
        size_t at = (size_t)hash_span(name) & (n_slots - 1);
        while (slots[at] != 0) at = (at + 1) & (n_slots - 1);
        slots[at] = (uint32_t)(i + 1);
    }
    free(s->slots);
    s->slots = slots;
    s->n_slots = n_slots;
    return 1;
}

/* The index of the series of symbol `name`, created on first sight; -1 if out of memory. */
static long series_index(Sma* s, vf_span name) {
    if (s->last < s->n_series && series_is(&s->series[s->last], name)) return (long)s->last;
    if (s->n_slots == 0 && !rehash(s, 16)) return -1;
    size_t at = (size_t)hash_span(name) & (s->n_slots - 1);
    while (s->slots[at] != 0) {
        size_t index = s->slots[at] - 1;
        if (series_is(&s->series[index], name)) return (long)(s->last = index);
        at = (at + 1) & (s->n_slots - 1);
    }
    if (s->n_series >= 0x7fffffff) return -1;
    if (!reserve(&s->series, &s->cap_series, s->n_series + 1, sizeof(Series))) return -1;
    Series* q = &s->series[s->n_series];
    memset(q, 0, sizeof *q);
    q->len = (size_t)(name.end - name.p);
    q->name = (char*)malloc(q->len + 1);
    q->closes = (double*)calloc((size_t)s->slow, sizeof(double));
    if (q->name == NULL || q->closes == NULL) {
        free(q->name);
        free(q->closes);
        return -1;
    }
    memcpy(q->name, name.p, q->len);
    q->name[q->len] = '\0';
    s->slots[at] = (uint32_t)(s->n_series + 1);
    s->last = s->n_series++;
    if (2 * s->n_series > s->n_slots && !rehash(s, 2 * s->n_slots)) {
        s->n_series--; /* keep the table consistent: forget the new series */
        s->slots[at] = 0;
        free(q->name);
        free(q->closes);
        s->last = 0;
        return -1;
    }
    return (long)s->last;
}

/* ------------------------------------------------------------------ the arithmetic */

/* Mean of the last n closes of a series, summed oldest to newest (exactly as the Python twins
 * and window_means do). */
static double ring_mean(const Series* q, int slow, int n) {
    double sum = 0.0;
    for (long i = q->count - n; i < q->count; i++) sum += q->closes[i % slow];
    return sum / n;
}

/* out[i - from] = mean of x[i - w + 1 .. i], summed oldest first from 0.0, for i in [from, to).
 * Eight windows at a time, each its own accumulator: the same additions in the same order as
 * ring_mean, and independent, so they run as vector adds. */
static void window_means(const double* x, int64_t from, int64_t to, int w, double* out) {
    int64_t i = from;
    for (; i + 8 <= to; i += 8) {
        const double* p = x + i - w + 1;
        double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0, a4 = 0.0, a5 = 0.0, a6 = 0.0, a7 = 0.0;
        for (int k = 0; k < w; k++) {
            a0 += p[k];
            a1 += p[k + 1];
            a2 += p[k + 2];
            a3 += p[k + 3];
            a4 += p[k + 4];
            a5 += p[k + 5];
            a6 += p[k + 6];
            a7 += p[k + 7];
        }
        double* o = out + (i - from);
        o[0] = a0 / w;
        o[1] = a1 / w;
        o[2] = a2 / w;
        o[3] = a3 / w;
        o[4] = a4 / w;
        o[5] = a5 / w;
        o[6] = a6 / w;
        o[7] = a7 / w;
    }
    for (; i < to; i++) {
        const double* p = x + i - w + 1;
        double a = 0.0;
        for (int k = 0; k < w; k++) a += p[k];
        out[i - from] = a / w;
    }
}

/* -1 sell, +1 buy, 0 nothing: the crossover rule of both paths. */
static int cross(int has_prev, double prev_fast, double prev_slow, double fast, double slow) {
    if (!has_prev) return 0;
    if (prev_fast < prev_slow && fast > slow) return 1;
    if (prev_slow < prev_fast && slow > fast) return -1;
    return 0;
}

/* ------------------------------------------------------------------ exports */

static int read_int(const VirtufinHost* host, vf_span params, const char* name, int* out) {
    vf_span v;
    double d;
    if (!vf_member(params, name, &v)) return 1;
    if (!vf_number(v, &d) || d != (double)(int)d) {
        vf_log(host, VIRTUFIN_LOG_ERROR, "%s must be an integer", name);
        return 0;
    }
    *out = (int)d;
    return 1;
}

VIRTUFIN_EXPORT int32_t VirtufinAbiVersion(void) { return VIRTUFIN_ABI_VERSION; }

VIRTUFIN_EXPORT int32_t Configure(const VirtufinHost* host, const uint8_t* json,
                                  int32_t json_len) {
    Sma* s = (Sma*)vf_state(&g_instances, host->engine_ptr, sma_new);
    if (s == NULL) return VIRTUFIN_E_NOMEM;
    vf_span root = {(const char*)json, (const char*)json + json_len};
    vf_span v, text, params;
    int fast = s->fast, slow = s->slow;
    if (vf_member(root, "worker_id", &v) &&
        (!vf_string(v, &text) || !vf_copy(text, s->worker_id, sizeof s->worker_id))) {
        vf_log(host, VIRTUFIN_LOG_ERROR, "worker_id must be a string of at most 128 bytes");
        return VIRTUFIN_E_CONFIG;
    }
    if (vf_member(root, "params", &params)) {
        if (!read_int(host, params, "fast", &fast) || !read_int(host, params, "slow", &slow))
            return VIRTUFIN_E_CONFIG;
    }
    if (fast < 1 || slow > MAX_WINDOW) {
        vf_log(host, VIRTUFIN_LOG_ERROR, "fast (%d) must be >= 1 and slow (%d) <= %d", fast, slow,
               MAX_WINDOW);
        return VIRTUFIN_E_CONFIG;
    }
    if (fast >= slow) {
        vf_log(host, VIRTUFIN_LOG_ERROR, "fast (%d) must be less than slow (%d)", fast, slow);
        return VIRTUFIN_E_CONFIG;
    }
    forget_series(s); /* ring buffers are sized by slow */
    s->fast = fast;
    s->slow = slow;
    set_options(s);
    return VIRTUFIN_OK;
}

VIRTUFIN_EXPORT int32_t Process(const VirtufinHost* host, const uint8_t* in, int32_t in_len,
                                uint8_t** out, int32_t* out_len) {
    *out = NULL;
    *out_len = 0;
    Sma* s = (Sma*)vf_state(&g_instances, host->engine_ptr, sma_new);
    if (s == NULL) return VIRTUFIN_E_NOMEM;
    vf_span event = {(const char*)in, (const char*)in + in_len};
    vf_span v, type, symbol, venue;
    double close;
    if (!vf_member(event, "type", &v) || !vf_string(v, &type)) {
        vf_log(host, VIRTUFIN_LOG_ERROR, "event has no type");
        return VIRTUFIN_E_INPUT;
    }
    size_t pre = strlen(BAR_PREFIX), suf = strlen(BAR_SUFFIX);
    if (!vf_starts(type, BAR_PREFIX) || !vf_ends(type, BAR_SUFFIX) ||
        (size_t)(type.end - type.p) <= pre + suf)
        return VIRTUFIN_OK; /* not a bar: nothing to do */
    venue.p = type.p + pre;
    venue.end = type.end - suf;
    if (!vf_path(event, "data", "close", &v) || !vf_number(v, &close)) {
        vf_log(host, VIRTUFIN_LOG_ERROR, "bar without a numeric data.close");
        return VIRTUFIN_E_INPUT;
    }
    if (!vf_path(event, "data", "symbol", &v) || !vf_string(v, &symbol)) {
        vf_log(host, VIRTUFIN_LOG_ERROR, "bar without a data.symbol string");
        return VIRTUFIN_E_INPUT;
    }
    long index = series_index(s, symbol);
    if (index < 0) return VIRTUFIN_E_NOMEM;
    Series* q = &s->series[index];
    q->closes[q->count % s->slow] = close;
    q->count++;
    if (q->count < s->slow) return VIRTUFIN_OK;

    double fast = ring_mean(q, s->slow, s->fast), slow = ring_mean(q, s->slow, s->slow);
    int decision = cross(q->has_prev, q->prev_fast, q->prev_slow, fast, slow);
    q->prev_fast = fast;
    q->prev_slow = slow;
    q->has_prev = 1;
    if (decision == 0) return VIRTUFIN_OK;
    const char* side = decision > 0 ? "buy" : "sell";

    vf_buf b = {0};
    vf_puts(&b,
            "{\"type\":\"com.virtufin.trading.order.submitted\",\"data\":"
            "{\"order_id\":null,\"symbol\":\"");
    vf_put_span(&b, symbol);
    vf_puts(&b, "\",\"venue\":\"");
    vf_put_span(&b, venue);
    vf_printf(&b,
              "\",\"side\":\"%s\",\"type\":\"market\",\"qty\":null,\"limit_price\":null,"
              "\"sizing\":\"all_in\",\"exclusive\":true,"
              "\"reason\":\"fast SMA(%d) crossed %s slow SMA(%d)\"}}",
              side, s->fast, decision > 0 ? "above" : "below", s->slow);
    return vf_finish(&b, out, out_len);
}

VIRTUFIN_EXPORT void FreeResult(uint8_t* out) { free(out); }

/* One series' closes of this batch (`rows` of the batch, NULL: rows 0..m-1): appends the rows
 * of its crossovers to s->buys / s->sells and moves its history on. The means are computed a
 * block of bars at a time, so they stay in the cache whatever the batch size; the closes are
 * read in place, except the first slow - 1, whose windows reach back into the history. */
static int decide_series(Sma* s, long index, const double* closes, const int64_t* rows,
                         int64_t m) {
    const int w = s->slow;
    Series* q = &s->series[index];
    int64_t kept = q->count < w - 1 ? q->count : w - 1; /* history the first windows need */
    /* head: the history then the closes whose windows need it (all of them when gathered) */
    int64_t head = rows == NULL ? (m < w - 1 ? m : w - 1) : m;
    if (!reserve(&s->x, &s->cap_x, (size_t)(kept + head), sizeof(double)) ||
        !reserve(&s->means, &s->cap_means, 2 * BLOCK, sizeof(double)))
        return VIRTUFIN_E_NOMEM;
    double* x = s->x;
    for (int64_t i = 0; i < kept; i++) x[i] = q->closes[(q->count - kept + i) % w];
    for (int64_t t = 0; t < head; t++) x[kept + t] = closes[rows == NULL ? t : rows[t]];
    int64_t t0 = (int64_t)w - 1 - q->count; /* the first close with a whole slow window */
    if (t0 < 0) t0 = 0;
    int has_prev = q->has_prev;
    double prev_fast = q->prev_fast, prev_slow = q->prev_slow;
    double* fast = s->means;
    double* slow = s->means + BLOCK;
    for (int64_t from = t0; from < m; from += BLOCK) {
        int64_t to = from + BLOCK < m ? from + BLOCK : m;
        int64_t split = head < from ? from : (head < to ? head : to); /* [from, split): head */
        if (split > from) {
            window_means(x + kept, from, split, s->fast, fast);
            window_means(x + kept, from, split, w, slow);
        }
        if (to > split) { /* whole windows inside the batch's own closes */
            window_means(closes, split, to, s->fast, fast + (split - from));
            window_means(closes, split, to, w, slow + (split - from));
        }
        for (int64_t t = from; t < to; t++) {
            double f = fast[t - from], sl = slow[t - from];
            int decision = cross(has_prev, prev_fast, prev_slow, f, sl);
            if (decision > 0) s->buys[s->n_buys++] = rows == NULL ? t : rows[t];
            if (decision < 0) s->sells[s->n_sells++] = rows == NULL ? t : rows[t];
            prev_fast = f;
            prev_slow = sl;
            has_prev = 1;
        }
    }
    q->has_prev = has_prev;
    q->prev_fast = prev_fast;
    q->prev_slow = prev_slow;
    for (int64_t t = m > w ? m - w : 0; t < m; t++)
        q->closes[(q->count + t) % w] = closes[rows == NULL ? t : rows[t]];
    q->count += (long)m;
    return VIRTUFIN_OK;
}

/* Whether all n strings equal the first: equal lengths, and the bytes they cover repeat with
 * the first string's period (one memcmp, not one per row). */
static int one_symbol(const vf_arrow_strings* symbols, int64_t n) {
    vf_span first = vf_arrow_string(symbols, 0);
    int64_t len = first.end - first.p, bad = 0;
    if (symbols->off32 != NULL) {
        const int32_t* off = symbols->off32;
        for (int64_t r = 0; r < n; r++) bad |= (off[r + 1] - off[r]) ^ len;
    } else {
        const int64_t* off = symbols->off64;
        for (int64_t r = 0; r < n; r++) bad |= (off[r + 1] - off[r]) ^ len;
    }
    return bad == 0 && (n == 1 || memcmp(first.p + len, first.p, (size_t)((n - 1) * len)) == 0);
}

static int32_t on_batch(const VirtufinHost* host, Sma* s, const struct ArrowSchema* schema,
                        const struct ArrowArray* batch, const VirtufinBatchSink* sink) {
    if (sink == NULL || sink->version < 1 || sink->orders == NULL) {
        vf_log(host, VIRTUFIN_LOG_ERROR, "OnBatch needs a batch sink of revision 1");
        return VIRTUFIN_E_INPUT;
    }
    if (schema == NULL || batch == NULL || schema->release == NULL || batch->release == NULL ||
        strcmp(schema->format, "+s") != 0 || schema->n_children != batch->n_children) {
        vf_log(host, VIRTUFIN_LOG_ERROR, "OnBatch needs a record batch (a struct array)");
        return VIRTUFIN_E_INPUT;
    }
    int64_t n = batch->length, base = batch->offset;
    int64_t close_at = vf_arrow_column(schema, "close");
    int64_t symbol_at = vf_arrow_column(schema, "symbol");
    if (close_at < 0 || symbol_at < 0) {
        vf_log(host, VIRTUFIN_LOG_ERROR, "the batch has no %s column",
               close_at < 0 ? "close" : "symbol");
        return VIRTUFIN_E_INPUT;
    }
    const double* closes =
        vf_arrow_f64(schema->children[close_at], batch->children[close_at], base, n);
    vf_arrow_strings symbols;
    if (closes == NULL) {
        vf_log(host, VIRTUFIN_LOG_ERROR, "close must be float64 (\"g\") without nulls, not \"%s\"",
               schema->children[close_at]->format);
        return VIRTUFIN_E_INPUT;
    }
    if (!vf_arrow_strings_of(schema->children[symbol_at], batch->children[symbol_at], base, n,
                             &symbols)) {
        vf_log(host, VIRTUFIN_LOG_ERROR, "symbol must be utf8 (\"u\" or \"U\") without nulls, not "
               "\"%s\"", schema->children[symbol_at]->format);
        return VIRTUFIN_E_INPUT;
    }
    if (n == 0) return VIRTUFIN_OK;
    size_t had_plus = s->cap_plus, had_minus = s->cap_minus;
    if (!reserve(&s->buys, &s->cap_buys, (size_t)n, sizeof(int64_t)) ||
        !reserve(&s->sells, &s->cap_sells, (size_t)n, sizeof(int64_t)) ||
        !reserve(&s->plus, &s->cap_plus, (size_t)n, sizeof(int8_t)) ||
        !reserve(&s->minus, &s->cap_minus, (size_t)n, sizeof(int8_t)))
        return VIRTUFIN_E_NOMEM;
    if (s->cap_plus != had_plus) memset(s->plus, 1, s->cap_plus);
    if (s->cap_minus != had_minus) memset(s->minus, -1, s->cap_minus);
    s->n_buys = s->n_sells = 0;

    vf_span first = vf_arrow_string(&symbols, 0);
    int32_t rc = VIRTUFIN_OK;
    if (one_symbol(&symbols, n)) { /* its closes are the column itself */
        long index = series_index(s, first);
        if (index < 0) return VIRTUFIN_E_NOMEM;
        rc = decide_series(s, index, closes, NULL, n);
    } else { /* several: group the rows by series (a stable counting sort), then each series */
        if (!reserve(&s->row_series, &s->cap_row_series, (size_t)n, sizeof(int32_t)) ||
            !reserve(&s->grouped, &s->cap_grouped, (size_t)n, sizeof(int64_t)))
            return VIRTUFIN_E_NOMEM;
        vf_span previous = first;
        long index = series_index(s, first);
        for (int64_t r = 0; r < n && index >= 0; r++) {
            vf_span name = vf_arrow_string(&symbols, r);
            if (!vf_span_eq(name, previous)) {
                index = series_index(s, name);
                previous = name;
            }
            s->row_series[r] = (int32_t)index;
        }
        if (index < 0) return VIRTUFIN_E_NOMEM;
        if (!reserve(&s->ends, &s->cap_ends, s->n_series + 1, sizeof(int64_t)))
            return VIRTUFIN_E_NOMEM;
        int64_t* ends = s->ends; /* counts, then starts, then (after the fill) ends */
        memset(ends, 0, (s->n_series + 1) * sizeof(int64_t));
        for (int64_t r = 0; r < n; r++) ends[s->row_series[r] + 1]++;
        for (size_t k = 0; k < s->n_series; k++) ends[k + 1] += ends[k];
        for (int64_t r = 0; r < n; r++) s->grouped[ends[s->row_series[r]]++] = r;
        int64_t from = 0;
        for (size_t k = 0; k < s->n_series && rc == VIRTUFIN_OK; k++) {
            if (ends[k] > from)
                rc = decide_series(s, (long)k, closes, s->grouped + from, ends[k] - from);
            from = ends[k];
        }
    }
    if (rc != VIRTUFIN_OK) return rc;
    VirtufinOrderColumns orders = {0};
    if (s->n_buys > 0) {
        orders.length = (int64_t)s->n_buys;
        orders.rows = s->buys;
        orders.sides = s->plus;
        orders.options = s->buy_options;
        rc = sink->orders(sink->sink_ptr, &orders);
        if (rc != VIRTUFIN_OK) return rc;
    }
    if (s->n_sells > 0) {
        orders.length = (int64_t)s->n_sells;
        orders.rows = s->sells;
        orders.sides = s->minus;
        orders.options = s->sell_options;
        rc = sink->orders(sink->sink_ptr, &orders);
    }
    return rc;
}

VIRTUFIN_EXPORT int32_t OnBatch(const VirtufinHost* host, struct ArrowSchema* schema,
                                struct ArrowArray* batch, const VirtufinBatchSink* sink) {
    Sma* s = (Sma*)vf_state(&g_instances, host->engine_ptr, sma_new);
    int32_t rc = s == NULL ? VIRTUFIN_E_NOMEM : on_batch(host, s, schema, batch, sink);
    vf_arrow_release(schema, batch); /* read in place; done with it */
    return rc;
}

VIRTUFIN_EXPORT void Destroy(const VirtufinHost* host) {
    Sma* s = (Sma*)vf_forget(&g_instances, host->engine_ptr);
    if (s != NULL) sma_free(s);
}
