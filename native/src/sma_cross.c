/*
 * sma_cross — backtesting.py's SMA-crossover example as a native Virtufin worker.
 *
 * Input: bar events (type com.virtufin.exchange.<venue>.ohlcv.candle, data.close, data.symbol).
 * Once both simple moving averages of the closes exist on the previous and the current bar,
 * fast crossing above slow (fast[-2] < slow[-2] and fast[-1] > slow[-1]) emits a buy order,
 * slow crossing above fast a sell, each {"sizing": "all_in", "exclusive": true} so positions
 * reverse. Orders carry "order_id": null: the host fills in the id derived from the bar
 * (workers/kit/ids.py) and the subject order/<id>, so a redelivered bar yields the same order. Twins: workers/sma_cross/worker.py and workers/sma_cross/script.py make the same
 * decisions on the same input (tests/integration/runtime/test_equivalence.py).
 *
 * Parameters (Configure): {"worker_id": "...", "params": {"fast": 10, "slow": 20}}.
 */
#include "virtufin_worker.h"
#include "vf_util.h"

#define BAR_PREFIX "com.virtufin.exchange."
#define BAR_SUFFIX ".ohlcv.candle"
#define MAX_WINDOW 100000

typedef struct {
    int fast;
    int slow;
    double* closes; /* ring buffer of the last `slow` closes */
    long count;     /* closes seen */
    int has_prev;
    double prev_fast;
    double prev_slow;
    char worker_id[129];
} Sma;

static vf_table g_instances = VF_TABLE_INIT;

static void* sma_new(void) {
    Sma* s = (Sma*)calloc(1, sizeof *s);
    if (s == NULL) return NULL;
    s->fast = 10;
    s->slow = 20;
    s->closes = (double*)calloc((size_t)s->slow, sizeof(double));
    if (s->closes == NULL) {
        free(s);
        return NULL;
    }
    strcpy(s->worker_id, "sma_cross");
    return s;
}

/* Mean of the last n closes, summed oldest to newest (exactly as the Python twins do). */
static double sma_mean(const Sma* s, int n) {
    double sum = 0.0;
    for (long i = s->count - n; i < s->count; i++) sum += s->closes[i % s->slow];
    return sum / n;
}

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
    double* closes = (double*)realloc(s->closes, (size_t)slow * sizeof(double));
    if (closes == NULL) return VIRTUFIN_E_NOMEM;
    s->closes = closes;
    s->fast = fast;
    s->slow = slow;
    s->count = 0;
    s->has_prev = 0;
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
    s->closes[s->count % s->slow] = close;
    s->count++;
    if (s->count < s->slow) return VIRTUFIN_OK;

    double fast = sma_mean(s, s->fast), slow = sma_mean(s, s->slow);
    const char* side = NULL;
    if (s->has_prev) {
        if (s->prev_fast < s->prev_slow && fast > slow)
            side = "buy";
        else if (s->prev_slow < s->prev_fast && slow > fast)
            side = "sell";
    }
    s->prev_fast = fast;
    s->prev_slow = slow;
    s->has_prev = 1;
    if (side == NULL) return VIRTUFIN_OK;

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
              side, s->fast, side[0] == 'b' ? "above" : "below", s->slow);
    return vf_finish(&b, out, out_len);
}

VIRTUFIN_EXPORT void FreeResult(uint8_t* out) { free(out); }

VIRTUFIN_EXPORT void Destroy(const VirtufinHost* host) {
    Sma* s = (Sma*)vf_forget(&g_instances, host->engine_ptr);
    if (s != NULL) {
        free(s->closes);
        free(s);
    }
}
