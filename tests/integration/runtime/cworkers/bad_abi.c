/* Test worker built for a future ABI: the host must refuse it at load. */
#include "virtufin_worker.h"

VIRTUFIN_EXPORT int32_t VirtufinAbiVersion(void) { return 2; }
VIRTUFIN_EXPORT int32_t Process(const VirtufinHost* h, const uint8_t* in, int32_t n,
                                uint8_t** out, int32_t* out_len) {
    (void)h; (void)in; (void)n; *out = 0; *out_len = 0;
    return 0;
}
VIRTUFIN_EXPORT void FreeResult(uint8_t* out) { (void)out; }
