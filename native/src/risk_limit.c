/*
 * risk_limit — a pre-trade notional limit as a native Virtufin filter.
 *
 * Bars (com.virtufin.exchange.<venue>.ohlcv.candle) update the last close per symbol. Each
 * com.virtufin.trading.order.submitted is answered exactly once:
 *   - com.virtufin.trading.order.accepted: the order's data plus "notional" (qty × price, or
 *     null for "all_in" orders whose size the filter cannot know);
 *   - com.virtufin.trading.order.rejected: the same plus "reject_reason", when the notional
 *     exceeds max_notional, no reference price is known, or all_in orders are not allowed.
 * price = limit_price when given, else the symbol's last close. Other events are ignored.
 * Twin: workers/risk_limit/worker.py (same decisions, same messages).
 *
 * Parameters (Configure): {"params": {"max_notional": 100000, "allow_all_in": true}}.
 */
#include <math.h>

#include "virtufin_worker.h"
#include "vf_util.h"

#define BAR_PREFIX "com.virtufin.exchange."
#define BAR_SUFFIX ".ohlcv.candle"
#define ORDER_SUBMITTED "com.virtufin.trading.order.submitted"
#define MAX_SYMBOLS 256
#define SYMBOL_BYTES 64

typedef struct {
    char symbol[SYMBOL_BYTES];
    double last;
} Mark;

typedef struct {
    double max_notional;
    int allow_all_in;
    int marks_used;
    Mark marks[MAX_SYMBOLS];
} Risk;

static vf_table g_instances = VF_TABLE_INIT;

static void* risk_new(void) {
    Risk* r = (Risk*)calloc(1, sizeof *r);
    if (r == NULL) return NULL;
    r->max_notional = 100000.0;
    r->allow_all_in = 1;
    return r;
}

static Mark* find_mark(Risk* r, vf_span symbol, int create) {
    for (int i = 0; i < r->marks_used; i++)
        if (vf_eq(symbol, r->marks[i].symbol)) return &r->marks[i];
    if (!create || r->marks_used == MAX_SYMBOLS) return NULL;
    Mark* m = &r->marks[r->marks_used];
    if (!vf_copy(symbol, m->symbol, sizeof m->symbol)) return NULL;
    r->marks_used++;
    return m;
}

VIRTUFIN_EXPORT int32_t VirtufinAbiVersion(void) { return VIRTUFIN_ABI_VERSION; }

VIRTUFIN_EXPORT int32_t Configure(const VirtufinHost* host, const uint8_t* json,
                                  int32_t json_len) {
    Risk* r = (Risk*)vf_state(&g_instances, host->engine_ptr, risk_new);
    if (r == NULL) return VIRTUFIN_E_NOMEM;
    vf_span root = {(const char*)json, (const char*)json + json_len};
    vf_span params, v;
    if (!vf_member(root, "params", &params)) return VIRTUFIN_OK;
    if (vf_member(params, "max_notional", &v)) {
        double d;
        if (!vf_number(v, &d) || !(d > 0)) {
            vf_log(host, VIRTUFIN_LOG_ERROR, "max_notional must be a number above 0");
            return VIRTUFIN_E_CONFIG;
        }
        r->max_notional = d;
    }
    if (vf_member(params, "allow_all_in", &v)) r->allow_all_in = vf_is_true(v);
    return VIRTUFIN_OK;
}

/* {"type": <type>, "data": <order data>, "notional": ..., ["reject_reason": ...]} */
static int32_t answer(vf_span data, const char* type, int has_notional, double notional,
                      const char* reason, uint8_t** out, int32_t* out_len) {
    vf_buf b = {0};
    vf_printf(&b, "{\"type\":\"%s\",\"data\":", type);
    const char* close = data.end - 1; /* the object's closing brace */
    const char* first = vf_ws(data.p + 1, data.end);
    vf_put(&b, data.p, (size_t)(close - data.p));
    if (first != close) vf_puts(&b, ",");
    if (has_notional)
        vf_printf(&b, "\"notional\":%.17g", notional);
    else
        vf_puts(&b, "\"notional\":null");
    if (reason != NULL) vf_printf(&b, ",\"reject_reason\":\"%s\"", reason);
    vf_puts(&b, "}}");
    return vf_finish(&b, out, out_len);
}

VIRTUFIN_EXPORT int32_t Process(const VirtufinHost* host, const uint8_t* in, int32_t in_len,
                                uint8_t** out, int32_t* out_len) {
    *out = NULL;
    *out_len = 0;
    Risk* r = (Risk*)vf_state(&g_instances, host->engine_ptr, risk_new);
    if (r == NULL) return VIRTUFIN_E_NOMEM;
    vf_span event = {(const char*)in, (const char*)in + in_len};
    vf_span v, type, data, symbol;
    if (!vf_member(event, "type", &v) || !vf_string(v, &type)) {
        vf_log(host, VIRTUFIN_LOG_ERROR, "event has no type");
        return VIRTUFIN_E_INPUT;
    }
    int is_bar = vf_starts(type, BAR_PREFIX) && vf_ends(type, BAR_SUFFIX);
    if (!is_bar && !vf_eq(type, ORDER_SUBMITTED)) return VIRTUFIN_OK;
    if (!vf_member(event, "data", &data) || data.p[0] != '{' ||
        !vf_member(data, "symbol", &v) || !vf_string(v, &symbol)) {
        vf_log(host, VIRTUFIN_LOG_ERROR, "event without a data.symbol string");
        return VIRTUFIN_E_INPUT;
    }
    if (is_bar) {
        double close;
        Mark* m = find_mark(r, symbol, 1);
        if (m != NULL && vf_member(data, "close", &v) && vf_number(v, &close)) m->last = close;
        return VIRTUFIN_OK;
    }

    char reason[256];
    double qty = 0, price = 0;
    int has_qty = vf_member(data, "qty", &v) && vf_number(v, &qty);
    int has_price = vf_member(data, "limit_price", &v) && vf_number(v, &price);
    if (!has_price) {
        Mark* m = find_mark(r, symbol, 0);
        if (m != NULL) {
            price = m->last;
            has_price = 1;
        }
    }
    if (!has_qty) {
        if (r->allow_all_in) return answer(data, "com.virtufin.trading.order.accepted", 0, 0,
                                           NULL, out, out_len);
        return answer(data, "com.virtufin.trading.order.rejected", 0, 0,
                      "all_in sizing is not allowed by this risk limit", out, out_len);
    }
    if (!has_price) {
        char sym[SYMBOL_BYTES];
        if (!vf_copy(symbol, sym, sizeof sym)) strcpy(sym, "?");
        snprintf(reason, sizeof reason, "no reference price for %s", sym);
        return answer(data, "com.virtufin.trading.order.rejected", 0, 0, reason, out, out_len);
    }
    double notional = qty * price;
    if (!isfinite(notional)) {
        return answer(data, "com.virtufin.trading.order.rejected", 0, 0,
                      "notional is not a finite number", out, out_len);
    }
    if (notional > r->max_notional) {
        snprintf(reason, sizeof reason, "notional %.2f exceeds the limit %.2f", notional,
                 r->max_notional);
        return answer(data, "com.virtufin.trading.order.rejected", 1, notional, reason, out,
                      out_len);
    }
    return answer(data, "com.virtufin.trading.order.accepted", 1, notional, NULL, out, out_len);
}

VIRTUFIN_EXPORT void FreeResult(uint8_t* out) { free(out); }

VIRTUFIN_EXPORT void Destroy(const VirtufinHost* host) { free(vf_forget(&g_instances, host->engine_ptr)); }
