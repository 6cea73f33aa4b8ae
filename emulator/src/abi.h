// The contract between the emulated driver (libcuda.so.1, src/driver.cpp) and a kernel module: the shared object
// the emulated NVRTC (src/nvrtc.cpp) builds from CUDA C with include/frugal_emu_cuda.h and returns as the "CUBIN".
// Plain C so that both sides agree whatever the compiler.
#pragma once
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FRUGAL_EMU_ABI_VERSION 1

// Limits of the emulated device (an sm_90 GPU as CUDA documents it).
#define FRUGAL_EMU_MAX_THREADS_PER_BLOCK 1024
#define FRUGAL_EMU_MAX_BLOCK_X 1024
#define FRUGAL_EMU_MAX_BLOCK_Y 1024
#define FRUGAL_EMU_MAX_BLOCK_Z 64
#define FRUGAL_EMU_MAX_GRID_X 2147483647u
#define FRUGAL_EMU_MAX_GRID_Y 65535u
#define FRUGAL_EMU_MAX_GRID_Z 65535u
// Shared memory per block without cuFuncSetAttribute's opt-in (which Frugal does not use).
#define FRUGAL_EMU_MAX_SHARED_PER_BLOCK (48 * 1024)
#define FRUGAL_EMU_WARP_SIZE 32

// One launch as the driver hands it to the module: geometry, the copied parameter values and the dynamic shared
// memory. The module writes a message into `error` (NUL-terminated) when the launch goes wrong in a way a GPU would
// hang on or leave undefined (a warp shuffle whose mask names an exited lane, a barrier deadlock, ...).
typedef struct FrugalEmuLaunch {
    unsigned grid[3];
    unsigned block[3];
    // Each parameter's value, copied at cuLaunchKernel time: params[i] points to param_sizes[i] bytes.
    const void* const* params;
    // Dynamic shared memory of the launch (`extern __shared__`), `dynamic_shared_bytes` long, zeroed by nobody.
    void* dynamic_shared;
    size_t dynamic_shared_bytes;
    char error[1024];
} FrugalEmuLaunch;

// One __global__ function of a module.
typedef struct FrugalEmuKernel {
    const char* name;
    int param_count;
    const size_t* param_sizes;
    const size_t* param_aligns;
    // Runs every thread of block (x, y, z) of `launch` to completion. Returns 0, or 1 with launch->error set.
    // The driver calls it once per block, on one OS thread at a time per block (blocks may run on several threads).
    int (*run_block)(FrugalEmuLaunch* launch, unsigned x, unsigned y, unsigned z);
} FrugalEmuKernel;

// Exported by every module: its kernels, when `abi_version` is FRUGAL_EMU_ABI_VERSION (else NULL).
typedef const FrugalEmuKernel* (*FrugalEmuKernelsFn)(int abi_version, int* count);
#define FRUGAL_EMU_KERNELS_SYMBOL "frugal_emu_kernels"

// Exported by every module: the stack ranges of the fibers it runs on the calling OS thread, so that the driver's
// fault handler can tell a kernel's stack overflow from a bad pointer. Writes up to `max` [lo, hi) pairs.
typedef int (*FrugalEmuStacksFn)(void** lo, void** hi, int max);
#define FRUGAL_EMU_STACKS_SYMBOL "frugal_emu_fiber_stacks"

#ifdef __cplusplus
}
#endif
