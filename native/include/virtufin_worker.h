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

#ifdef __cplusplus
}
#endif

#endif /* VIRTUFIN_WORKER_H */
