/* Test worker for the batch extension (OnBatch). Configure's params.mode selects a behaviour:
 *   report   (default) log where the buffers are, order on the first and last rows (a buy limit
 *            at the first close, a sell limit at the last), release the batch
 *   json     the same orders through sink->emit, as Process-style JSON with data.row
 *   keep     log, order nothing and leave the batch and schema unreleased (the host must)
 *   move     move the batch and schema out (Arrow's move semantics), release them on the
 *            next call or in Destroy
 *   fail     log an error and return 7
 *   options  hand over orders with an unknown option, return the sink's answer
 *   ignore   the same, but return 0 anyway
 *   rows     order on a row past the end of the batch
 *   layout   log the sizes and offsets of the batch structs as C sees them
 * Process is there because it is required; it answers nothing. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "virtufin_worker.h"

static char mode[32] = "report";
static struct ArrowArray moved_batch;
static struct ArrowSchema moved_schema;

static void say(const VirtufinHost* host, int32_t level, const char* text) {
    host->log(host->engine_ptr, level, text);
}

static void release_moved(void) {
    if (moved_batch.release != NULL) moved_batch.release(&moved_batch);
    if (moved_schema.release != NULL) moved_schema.release(&moved_schema);
}

static int64_t column(const struct ArrowSchema* schema, const char* name) {
    for (int64_t i = 0; i < schema->n_children; i++)
        if (strcmp(schema->children[i]->name, name) == 0) return i;
    return -1;
}

VIRTUFIN_EXPORT int32_t VirtufinAbiVersion(void) { return VIRTUFIN_ABI_VERSION; }

VIRTUFIN_EXPORT int32_t Configure(const VirtufinHost* host, const uint8_t* json,
                                  int32_t json_len) {
    (void)host;
    const char* key = "\"mode\":\"";
    size_t n = strlen(key);
    for (int32_t i = 0; i + (int32_t)n <= json_len; i++) {
        if (memcmp(json + i, key, n) != 0) continue;
        size_t k = 0;
        for (int32_t j = i + (int32_t)n; j < json_len && json[j] != '"' && k + 1 < sizeof mode;
             j++)
            mode[k++] = (char)json[j];
        mode[k] = '\0';
    }
    return VIRTUFIN_OK;
}

VIRTUFIN_EXPORT int32_t Process(const VirtufinHost* host, const uint8_t* in, int32_t in_len,
                                uint8_t** out, int32_t* out_len) {
    (void)host;
    (void)in;
    (void)in_len;
    *out = NULL;
    *out_len = 0;
    return VIRTUFIN_OK;
}

VIRTUFIN_EXPORT void FreeResult(uint8_t* out) { free(out); }

static int32_t decide(const VirtufinHost* host, struct ArrowSchema* schema,
                      struct ArrowArray* batch, const VirtufinBatchSink* sink) {
    char line[512];
    if (strcmp(mode, "layout") == 0) {
        snprintf(line, sizeof line,
                 "sizes %zu %zu %zu %zu columns %zu %zu %zu %zu sink %zu %zu %zu version %d",
                 sizeof(struct ArrowSchema), sizeof(struct ArrowArray),
                 sizeof(VirtufinOrderColumns), sizeof(VirtufinBatchSink),
                 offsetof(VirtufinOrderColumns, rows), offsetof(VirtufinOrderColumns, sides),
                 offsetof(VirtufinOrderColumns, limit_prices),
                 offsetof(VirtufinOrderColumns, options), offsetof(VirtufinBatchSink, version),
                 offsetof(VirtufinBatchSink, orders), offsetof(VirtufinBatchSink, emit),
                 sink->version);
        say(host, VIRTUFIN_LOG_INFO, line);
        return VIRTUFIN_OK;
    }
    if (strcmp(mode, "fail") == 0) {
        say(host, VIRTUFIN_LOG_ERROR, "probe refuses the batch");
        return 7;
    }
    int64_t close_at = column(schema, "close"), symbol_at = column(schema, "symbol");
    if (close_at < 0 || symbol_at < 0) {
        say(host, VIRTUFIN_LOG_ERROR, "no close or symbol column");
        return VIRTUFIN_E_INPUT;
    }
    const struct ArrowArray* close = batch->children[close_at];
    const struct ArrowArray* symbol = batch->children[symbol_at];
    snprintf(line, sizeof line,
             "rows=%lld close=%p close_offset=%lld symbol_offsets=%p symbol_data=%p "
             "symbol_offset=%lld format=%s",
             (long long)batch->length, close->buffers[1], (long long)close->offset,
             symbol->buffers[1], symbol->buffers[2], (long long)symbol->offset,
             schema->children[close_at]->format);
    say(host, VIRTUFIN_LOG_INFO, line);
    int64_t n = batch->length;
    if (n == 0 || strcmp(mode, "keep") == 0 || strcmp(mode, "move") == 0) return VIRTUFIN_OK;
    const double* closes = (const double*)close->buffers[1] + close->offset + batch->offset;
    int64_t rows[2] = {0, n - 1};
    int8_t sides[2] = {1, -1};
    double limits[2] = {closes[0], closes[n - 1]};
    VirtufinOrderColumns orders = {2, rows, sides, limits,
                                   "{\"qty\":2,\"sizing\":\"units\",\"exclusive\":false,"
                                   "\"reason\":\"probe\"}"};
    if (strcmp(mode, "json") == 0) {
        snprintf(line, sizeof line,
                 "[{\"type\":\"com.virtufin.trading.order.submitted\",\"data\":{\"symbol\":\"X\","
                 "\"side\":\"buy\",\"type\":\"limit\",\"qty\":2,\"limit_price\":%.17g,"
                 "\"sizing\":\"units\",\"exclusive\":false,\"reason\":\"probe\",\"row\":0}},"
                 "{\"type\":\"com.example.note\",\"data\":{\"rows\":%lld}}]",
                 closes[0], (long long)n);
        return sink->emit(sink->sink_ptr, (const uint8_t*)line, (int32_t)strlen(line));
    }
    if (strcmp(mode, "rows") == 0) rows[1] = n;
    if (strcmp(mode, "options") == 0 || strcmp(mode, "ignore") == 0) {
        orders.options = "{\"colour\":\"red\"}";
        int32_t rc = sink->orders(sink->sink_ptr, &orders);
        return strcmp(mode, "ignore") == 0 ? VIRTUFIN_OK : rc;
    }
    return sink->orders(sink->sink_ptr, &orders);
}

VIRTUFIN_EXPORT int32_t OnBatch(const VirtufinHost* host, struct ArrowSchema* schema,
                                struct ArrowArray* batch, const VirtufinBatchSink* sink) {
    int32_t rc = decide(host, schema, batch, sink);
    if (strcmp(mode, "keep") == 0) return rc;
    if (strcmp(mode, "move") == 0) {
        release_moved();
        moved_batch = *batch;
        moved_schema = *schema;
        batch->release = NULL;
        schema->release = NULL;
        return rc;
    }
    batch->release(batch);
    schema->release(schema);
    return rc;
}

VIRTUFIN_EXPORT void Destroy(const VirtufinHost* host) {
    (void)host;
    release_moved();
    strcpy(mode, "report");
}
