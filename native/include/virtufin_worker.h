/*
 * virtufin_worker.h — Virtufin's native worker ABI, version 1.
 *
 * A native worker is a shared library exporting the functions below (C linkage). The host
 * passes each input event as the UTF-8 JSON of a structured CloudEvent; the worker answers with
 * nothing, one JSON object {"type", "source"?, "data", "subject"?} or a JSON array of them.
 * The host owns everything else in the output envelope (id, source, extensions, topic).
 * docs/spec/native-abi.md is the full contract.
 *
 *   required   int32_t VirtufinAbiVersion(void)          must return VIRTUFIN_ABI_VERSION
 *   required   int32_t Process(host, in, in_len, &out, &out_len)
 *   required   void    FreeResult(uint8_t* out)          once per non-null *out
 *   optional   int32_t Configure(host, json, json_len)   this project's extension
 *   optional   void    Destroy(host)                     this project's extension
 *   optional   int32_t OnBatch(host, schema, batch, sink)  batch extension (revision 1): a
 *                      whole Arrow record batch, zero-copy through the Arrow C data interface;
 *                      decisions go back as columns through `sink`
 *
 * A library without OnBatch is a plain ABI 1 library (event path only); a library exporting it
 * still reports VIRTUFIN_ABI_VERSION 1 and loads in hosts that do not know the extension.
 */
#ifndef VIRTUFIN_WORKER_H
#define VIRTUFIN_WORKER_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VIRTUFIN_ABI_VERSION 1

/* Log levels for VirtufinHost.log. */
#define VIRTUFIN_LOG_TRACE 0
#define VIRTUFIN_LOG_DEBUG 1
#define VIRTUFIN_LOG_INFO 2
#define VIRTUFIN_LOG_WARN 3
#define VIRTUFIN_LOG_ERROR 4

/* Return codes. 0 is success; anything else fails the event (Process) or the load
 * (Configure). gateway_call answers 0 with the backend's JSON answer in *response; the gRPC
 * status code (1-16) of a failed call with {"code","status","message"} in *response; or
 * VIRTUFIN_E_UNAVAILABLE (*response NULL) when the host has no gateway. Release every non-NULL
 * *response with free_response. */
#define VIRTUFIN_OK 0
#define VIRTUFIN_E_INPUT 1
#define VIRTUFIN_E_CONFIG 2
#define VIRTUFIN_E_NOMEM 3
#define VIRTUFIN_E_UNAVAILABLE (-1)

/*
 * What the host gives every call. 40 bytes on 64-bit platforms:
 *   offset  0  void*   engine_ptr     opaque, unique per loaded worker instance; key state by it
 *   offset  8  int32_t abi_version    = VIRTUFIN_ABI_VERSION (then 4 bytes of padding)
 *   offset 16  log                    write one log line (copied before the call returns)
 *   offset 24  gateway_call           call a service method through the API gateway (JSON)
 *   offset 32  free_response          release a gateway_call response (exactly once)
 */
typedef struct VirtufinHost {
    void* engine_ptr;
    int32_t abi_version;
    void (*log)(void* engine_ptr, int32_t level, const char* message);
    int32_t (*gateway_call)(void* engine_ptr, const char* service, const char* method,
                            const uint8_t* request, int32_t request_len,
                            uint8_t** response, int32_t* response_len);
    void (*free_response)(uint8_t* response);
} VirtufinHost;

#if UINTPTR_MAX == 0xffffffffffffffffu
_Static_assert(sizeof(VirtufinHost) == 40, "VirtufinHost must be 40 bytes on 64-bit");
#endif

/* ------------------------------------------------------------------ Arrow C data interface
 * The standard, stable definitions of https://arrow.apache.org/docs/format/CDataInterface.html
 * (guarded by ARROW_C_DATA_INTERFACE, so they coexist with Arrow's own headers and nanoarrow). */
#ifndef ARROW_C_DATA_INTERFACE
#define ARROW_C_DATA_INTERFACE

#define ARROW_FLAG_DICTIONARY_ORDERED 1
#define ARROW_FLAG_NULLABLE 2
#define ARROW_FLAG_MAP_KEYS_SORTED 4

struct ArrowSchema {
    /* Array type description */
    const char* format;
    const char* name;
    const char* metadata;
    int64_t flags;
    int64_t n_children;
    struct ArrowSchema** children;
    struct ArrowSchema* dictionary;

    /* Release callback */
    void (*release)(struct ArrowSchema*);
    /* Opaque producer-specific data */
    void* private_data;
};

struct ArrowArray {
    /* Array data description */
    int64_t length;
    int64_t null_count;
    int64_t offset;
    int64_t n_buffers;
    int64_t n_children;
    const void** buffers;
    struct ArrowArray** children;
    struct ArrowArray* dictionary;

    /* Release callback */
    void (*release)(struct ArrowArray*);
    /* Opaque producer-specific data */
    void* private_data;
};

#endif /* ARROW_C_DATA_INTERFACE */

/* ------------------------------------------------------------------ batch extension
 * Revision of the batch extension this header describes; VirtufinBatchSink.version carries the
 * host's. Later revisions only append fields to the structs below. */
#define VIRTUFIN_BATCH_VERSION 1

/*
 * Orders decided on one batch, as columns (valid only during the `orders` call: the host
 * copies them). Every order is for the instrument of the bar it was decided on (the batch's
 * "symbol" at `rows[i]`) and is submitted at that bar's close, as on the event path.
 * 40 bytes on 64-bit platforms:
 *   offset  0  int64_t        length        number of orders
 *   offset  8  const int64_t* rows          0-based row of the batch each order was decided on
 *   offset 16  const int8_t*  sides         +1 buy, -1 sell
 *   offset 24  const double*  limit_prices  NULL: market orders; else one limit price per order
 *   offset 32  const char*    options       NULL or a NUL-terminated JSON object applied to every
 *                                           order: "qty" (number or null), "sizing" ("all_in" |
 *                                           "units"), "exclusive" (bool), "reason" (string)
 */
typedef struct VirtufinOrderColumns {
    int64_t length;
    const int64_t* rows;
    const int8_t* sides;
    const double* limit_prices;
    const char* options;
} VirtufinOrderColumns;

/*
 * Where OnBatch puts its decisions. 32 bytes on 64-bit platforms:
 *   offset  0  void*   sink_ptr  opaque: pass it back to the callbacks
 *   offset  8  int32_t version   the host's VIRTUFIN_BATCH_VERSION (then 4 bytes of padding)
 *   offset 16  orders            orders(sink_ptr, &columns): hand over a group of orders
 *   offset 24  emit              emit(sink_ptr, json, json_len): anything else, as the JSON
 *                                Process returns (orders need data.row), for rare events
 * Both return VIRTUFIN_OK, or non-zero when the host refused the input (its reason is logged and
 * fails the batch); return that code from OnBatch. Call them only during OnBatch.
 */
typedef struct VirtufinBatchSink {
    void* sink_ptr;
    int32_t version;
    int32_t (*orders)(void* sink_ptr, const VirtufinOrderColumns* orders);
    int32_t (*emit)(void* sink_ptr, const uint8_t* json, int32_t json_len);
} VirtufinBatchSink;

#if UINTPTR_MAX == 0xffffffffffffffffu
_Static_assert(sizeof(struct ArrowSchema) == 72, "ArrowSchema must be 72 bytes on 64-bit");
_Static_assert(sizeof(struct ArrowArray) == 80, "ArrowArray must be 80 bytes on 64-bit");
_Static_assert(sizeof(VirtufinOrderColumns) == 40, "VirtufinOrderColumns must be 40 bytes");
_Static_assert(sizeof(VirtufinBatchSink) == 32, "VirtufinBatchSink must be 32 bytes on 64-bit");
#endif

#if defined(__GNUC__)
#define VIRTUFIN_EXPORT __attribute__((visibility("default")))
#else
#define VIRTUFIN_EXPORT
#endif

/* The ABI version the library was built for; checked by the host before any other call. */
VIRTUFIN_EXPORT int32_t VirtufinAbiVersion(void);

/* Handle one event. `in` is not NUL-terminated. On success return VIRTUFIN_OK and set *out to
 * a buffer the library allocated (or NULL for "no output") and *out_len to its length. */
VIRTUFIN_EXPORT int32_t Process(const VirtufinHost* host, const uint8_t* in, int32_t in_len,
                                uint8_t** out, int32_t* out_len);

/* Release an output of Process with the allocator that made it. */
VIRTUFIN_EXPORT void FreeResult(uint8_t* out);

/* Optional (this project's extension): called once before the first event with
 * {"worker_id": "...", "params": {...}, "env": {...}}. Non-zero refuses the load. */
VIRTUFIN_EXPORT int32_t Configure(const VirtufinHost* host, const uint8_t* json, int32_t json_len);

/* Optional (this project's extension): called once at stop; free the state of engine_ptr. */
VIRTUFIN_EXPORT void Destroy(const VirtufinHost* host);

/* Optional (batch extension): one Arrow record batch — `schema` a struct ("+s") with one child
 * per column, `batch` the matching struct array — exported zero-copy by the host: read the
 * buffers in place. The library owns both from the call on and must release them exactly once
 * (batch->release(batch), schema->release(schema)) before it returns, or move them (copy the
 * struct, set the original's release to NULL) and release them later, at the latest in Destroy;
 * the host releases whatever is still unreleased when the call returns, and logs a warning.
 * Decisions go to `sink`. Non-zero fails the batch (the backtest stops with the last error). */
VIRTUFIN_EXPORT int32_t OnBatch(const VirtufinHost* host, struct ArrowSchema* schema,
                                struct ArrowArray* batch, const VirtufinBatchSink* sink);

#ifdef __cplusplus
}
#endif

#endif /* VIRTUFIN_WORKER_H */
