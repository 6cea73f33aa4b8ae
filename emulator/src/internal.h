// Services of the emulated driver (libcuda.so.1, src/driver.cpp) for the emulated libraries (cuBLAS, cuSPARSE),
// which link against it. Plain C.
#pragma once
#include <cuda.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

// Whether [p, p + bytes) lies inside one live device allocation. When not, writes why into `why` (NUL-terminated,
// naming `what`, the address, the allocation it falls in or near, and by how many bytes it misses) and returns 0.
// bytes == 0 is always inside. Thread-safe.
int frugal_emu_check_range(CUdeviceptr p, size_t bytes, const char* what, char* why, size_t why_len);

// Work queued on a stream by a library call. `run` executes it in stream order; it returns 0, or 1 with a
// message in `error` (e.g. an operand outside its allocation), which makes the context's error sticky
// (CUDA_ERROR_ILLEGAL_ADDRESS), as a fault on a GPU would. `destroy` frees `state` (called once, after run or
// when the work is dropped). `what` names the call (e.g. "cublasGemmStridedBatchedEx"); it must outlive the work.
typedef struct FrugalEmuWork {
    int (*run)(void* state, char* error, size_t error_len);
    void (*destroy)(void* state);
    void* state;
    const char* what;
} FrugalEmuWork;

// Queues `work` on `stream` (0: the legacy default stream). Requires a current context. Returns CUDA_SUCCESS, or
// an error (no current context, a destroyed stream, a sticky error) in which case `work` was destroyed.
CUresult frugal_emu_enqueue(CUstream stream, FrugalEmuWork work);

// Whether `stream` is 0 or a live stream of the emulated driver.
int frugal_emu_stream_valid(CUstream stream);

// The most recent fault report of the process (empty when none): what a compute-sanitizer would have printed.
const char* frugal_emu_last_error(void);

#ifdef __cplusplus
}
#endif
