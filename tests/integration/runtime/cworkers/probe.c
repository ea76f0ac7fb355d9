/* Test worker: data.op selects a behaviour, so one library exercises every path of the ABI.
 *   echo     -> {"type":"probe.echo","data":<input data>}
 *   none     -> no output
 *   array    -> two outputs
 *   layout   -> sizeof(VirtufinHost), offsets, host->abi_version as seen from C
 *   log      -> host->log(ERROR, "probe says hi"), no output
 *   gateway  -> host->gateway_call("svc", "Method", {"q":1}) and the response as data
 *   call     -> host->gateway_call(data.service, data.method, data.request) ->
 *               {"rc": <rc>, "response": <the response, or the error object, or null>}
 *   garbage  -> output that is not JSON
 *   number   -> output that is a JSON number
 *   fail     -> return 7 (after logging an error)
 *   crash    -> SIGSEGV
 *   hang     -> sleep 30 s
 *   exit     -> _exit(3)
 * ProbeLiveBuffers() counts outputs not yet released with FreeResult; ProbeConfigured() the
 * bytes of the last Configure JSON. */
#define _DEFAULT_SOURCE
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "virtufin_worker.h"

static int live_buffers = 0;
static char configured[4096];

static int has_op(const uint8_t* in, int32_t len, const char* op) {
    char needle[64];
    snprintf(needle, sizeof needle, "\"op\":\"%s\"", op);
    size_t n = strlen(needle);
    for (int32_t i = 0; i + (int32_t)n <= len; i++)
        if (memcmp(in + i, needle, n) == 0) return 1;
    return 0;
}

static int32_t give(const char* text, uint8_t** out, int32_t* out_len) {
    size_t n = strlen(text);
    char* buf = malloc(n + 1);
    memcpy(buf, text, n + 1);
    *out = (uint8_t*)buf;
    *out_len = (int32_t)n;
    live_buffers++;
    return VIRTUFIN_OK;
}

/* The string value of "key":"..." in the input (no escapes), copied into buf. */
static int string_field(const uint8_t* in, int32_t len, const char* key, char* buf, size_t size) {
    char needle[64];
    snprintf(needle, sizeof needle, "\"%s\":\"", key);
    size_t n = strlen(needle);
    for (int32_t i = 0; i + (int32_t)n <= len; i++) {
        if (memcmp(in + i, needle, n) != 0) continue;
        size_t k = 0;
        for (int32_t j = i + (int32_t)n; j < len && in[j] != '"' && k + 1 < size; j++)
            buf[k++] = (char)in[j];
        buf[k] = '\0';
        return 1;
    }
    return 0;
}

/* The JSON object value of "key":{...} in the input (braces balanced, strings not parsed). */
static int object_field(const uint8_t* in, int32_t len, const char* key, const uint8_t** start,
                        int32_t* size) {
    char needle[64];
    snprintf(needle, sizeof needle, "\"%s\":{", key);
    size_t n = strlen(needle);
    for (int32_t i = 0; i + (int32_t)n <= len; i++) {
        if (memcmp(in + i, needle, n) != 0) continue;
        int32_t open = i + (int32_t)n - 1, depth = 0;
        for (int32_t j = open; j < len; j++) {
            if (in[j] == '{') depth++;
            if (in[j] == '}' && --depth == 0) {
                *start = in + open;
                *size = j - open + 1;
                return 1;
            }
        }
    }
    return 0;
}

static int32_t call(const VirtufinHost* host, const uint8_t* in, int32_t in_len, uint8_t** out,
                    int32_t* out_len) {
    char service[128] = "", method[128] = "";
    const uint8_t* request = (const uint8_t*)"{}";
    int32_t request_len = 2;
    string_field(in, in_len, "service", service, sizeof service);
    string_field(in, in_len, "method", method, sizeof method);
    object_field(in, in_len, "request", &request, &request_len);
    uint8_t* resp = NULL;
    int32_t resp_len = 0;
    int32_t rc = host->gateway_call(host->engine_ptr, service, method, request, request_len,
                                    &resp, &resp_len);
    size_t n = (size_t)resp_len + 96;
    char* buf = malloc(n);
    int w = snprintf(buf, n, "{\"type\":\"probe.call\",\"data\":{\"rc\":%d,\"response\":%.*s}}",
                     rc, resp ? (int)resp_len : 4, resp ? (const char*)resp : "null");
    if (resp) host->free_response(resp);
    *out = (uint8_t*)buf;
    *out_len = w;
    live_buffers++;
    return VIRTUFIN_OK;
}

VIRTUFIN_EXPORT int32_t VirtufinAbiVersion(void) { return VIRTUFIN_ABI_VERSION; }

VIRTUFIN_EXPORT int32_t ProbeLiveBuffers(void) { return live_buffers; }

VIRTUFIN_EXPORT const char* ProbeConfigured(void) { return configured; }

VIRTUFIN_EXPORT int32_t Configure(const VirtufinHost* host, const uint8_t* json, int32_t len) {
    (void)host;
    size_t n = (size_t)len < sizeof configured - 1 ? (size_t)len : sizeof configured - 1;
    memcpy(configured, json, n);
    configured[n] = '\0';
    return strstr(configured, "\"refuse\":true") ? VIRTUFIN_E_CONFIG : VIRTUFIN_OK;
}

VIRTUFIN_EXPORT int32_t Process(const VirtufinHost* host, const uint8_t* in, int32_t in_len,
                                uint8_t** out, int32_t* out_len) {
    char text[512];
    if (has_op(in, in_len, "none")) return VIRTUFIN_OK;
    if (has_op(in, in_len, "array"))
        return give("[{\"type\":\"probe.one\",\"data\":1},{\"type\":\"probe.two\",\"data\":2}]",
                    out, out_len);
    if (has_op(in, in_len, "layout")) {
        snprintf(text, sizeof text,
                 "{\"type\":\"probe.layout\",\"data\":{\"size\":%zu,\"abi\":%d,\"log\":%zu,"
                 "\"gateway_call\":%zu,\"free_response\":%zu}}",
                 sizeof(VirtufinHost), host->abi_version, offsetof(VirtufinHost, log),
                 offsetof(VirtufinHost, gateway_call), offsetof(VirtufinHost, free_response));
        return give(text, out, out_len);
    }
    if (has_op(in, in_len, "log")) {
        host->log(host->engine_ptr, VIRTUFIN_LOG_ERROR, "probe says hi");
        return VIRTUFIN_OK;
    }
    if (has_op(in, in_len, "gateway")) {
        uint8_t* resp = NULL;
        int32_t resp_len = 0;
        const char* req = "{\"q\":1}";
        int32_t rc = host->gateway_call(host->engine_ptr, "svc", "Method", (const uint8_t*)req,
                                        (int32_t)strlen(req), &resp, &resp_len);
        if (rc != 0) {
            snprintf(text, sizeof text, "{\"type\":\"probe.gateway\",\"data\":{\"rc\":%d}}", rc);
            if (resp) host->free_response(resp);
        } else {
            snprintf(text, sizeof text, "{\"type\":\"probe.gateway\",\"data\":{\"rc\":0,"
                     "\"response\":%.*s}}", (int)resp_len, (const char*)resp);
            host->free_response(resp);
        }
        return give(text, out, out_len);
    }
    if (has_op(in, in_len, "call")) return call(host, in, in_len, out, out_len);
    if (has_op(in, in_len, "garbage")) return give("this is not json", out, out_len);
    if (has_op(in, in_len, "number")) return give("42", out, out_len);
    if (has_op(in, in_len, "fail")) {
        host->log(host->engine_ptr, VIRTUFIN_LOG_ERROR, "probe refused the event");
        return 7;
    }
    if (has_op(in, in_len, "crash")) raise(SIGSEGV);
    if (has_op(in, in_len, "hang")) sleep(30);
    if (has_op(in, in_len, "exit")) _exit(3);
    /* echo: copy the whole input event as the data of the output */
    size_t n = (size_t)in_len + 64;
    char* buf = malloc(n);
    int w = snprintf(buf, n, "{\"type\":\"probe.echo\",\"data\":%.*s}", (int)in_len,
                     (const char*)in);
    *out = (uint8_t*)buf;
    *out_len = w;
    live_buffers++;
    return VIRTUFIN_OK;
}

VIRTUFIN_EXPORT void FreeResult(uint8_t* out) {
    live_buffers--;
    free(out);
}
