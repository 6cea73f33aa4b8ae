// Checks of the emulated driver through its public API, with kernels compiled by the emulated NVRTC: each case
// runs in a child process (a fault leaves a context's error sticky, as on a GPU), prints its outcome, and the
// last line is "N passed, M failed".
#include <cuda.h>
#include <nvrtc.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

extern "C" const char* frugal_emu_last_error(void);

namespace {

const char* kSource = R"(
extern "C" __global__ void add_one(float* x, long long n) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i < n) x[i] += 1.0f;
}
extern "C" __global__ void read_at(const float* x, long long index, float* out) { *out = x[index]; }
extern "C" __global__ void write_at(float* x, long long index) { x[index] = 7.0f; }
extern "C" __global__ void block_sum(const float* x, float* out) {
    __shared__ float partial[256];
    partial[threadIdx.x] = x[blockIdx.x * 256 + threadIdx.x];
    __syncthreads();
    for (int s = 128; s > 0; s >>= 1) {
        if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = partial[0];
}
)";

#define EXPECT(condition)                                                                     \
    do {                                                                                      \
        if (!(condition)) {                                                                   \
            fprintf(stderr, "  %s:%d: expected %s\n", __FILE__, __LINE__, #condition);        \
            _exit(1);                                                                         \
        }                                                                                     \
    } while (0)

CUcontext g_context;
CUstream g_stream;
CUmodule g_module;

void Setup() {
    EXPECT(cuInit(0) == CUDA_SUCCESS);
    CUdevice device;
    EXPECT(cuDeviceGet(&device, 0) == CUDA_SUCCESS);
    EXPECT(cuDevicePrimaryCtxRetain(&g_context, device) == CUDA_SUCCESS);
    EXPECT(cuCtxSetCurrent(g_context) == CUDA_SUCCESS);
    EXPECT(cuStreamCreate(&g_stream, CU_STREAM_NON_BLOCKING) == CUDA_SUCCESS);
    nvrtcProgram program;
    EXPECT(nvrtcCreateProgram(&program, kSource, "driver_test.cu", 0, nullptr, nullptr) == NVRTC_SUCCESS);
    const char* options[] = {"--gpu-architecture=sm_90", "-std=c++17"};
    nvrtcResult compiled = nvrtcCompileProgram(program, 2, options);
    if (compiled != NVRTC_SUCCESS) {
        size_t size;
        nvrtcGetProgramLogSize(program, &size);
        std::string log(size, '\0');
        nvrtcGetProgramLog(program, log.data());
        fprintf(stderr, "  compile failed: %s\n", log.c_str());
        _exit(1);
    }
    size_t size;
    EXPECT(nvrtcGetCUBINSize(program, &size) == NVRTC_SUCCESS);
    std::vector<char> image(size);
    EXPECT(nvrtcGetCUBIN(program, image.data()) == NVRTC_SUCCESS);
    nvrtcDestroyProgram(&program);
    EXPECT(cuModuleLoadData(&g_module, image.data()) == CUDA_SUCCESS);
}

CUfunction Kernel(const char* name) {
    CUfunction f;
    EXPECT(cuModuleGetFunction(&f, g_module, name) == CUDA_SUCCESS);
    return f;
}

CUdeviceptr Upload(const std::vector<float>& values) {
    CUdeviceptr p;
    EXPECT(cuMemAlloc(&p, values.size() * sizeof(float)) == CUDA_SUCCESS);
    EXPECT(cuMemcpyHtoDAsync(p, values.data(), values.size() * sizeof(float), g_stream) == CUDA_SUCCESS);
    return p;
}

CUresult Launch(const char* name, unsigned grid, unsigned block, std::vector<void*> args) {
    return cuLaunchKernel(Kernel(name), grid, 1, 1, block, 1, 1, 0, g_stream, args.data(), nullptr);
}

bool LastErrorHas(const char* text) {
    const char* e = frugal_emu_last_error();
    if (strstr(e, text)) return true;
    fprintf(stderr, "  last error \"%s\" lacks \"%s\"\n", e, text);
    return false;
}

// A kernel reading one float at `index` of a `count`-float allocation; returns the synchronisation's status.
CUresult ReadAt(long long count, long long index) {
    CUdeviceptr x = Upload(std::vector<float>(static_cast<size_t>(count), 1.0f)), out = Upload({0.0f});
    EXPECT(Launch("read_at", 1, 1, {&x, &index, &out}) == CUDA_SUCCESS);
    return cuStreamSynchronize(g_stream);
}

const std::vector<std::pair<const char*, std::function<void()>>> kCases = {
    {"a kernel computes, and the result arrives after the copy back", [] {
         std::vector<float> host(1000);
         for (size_t i = 0; i < host.size(); ++i) host[i] = static_cast<float>(i);
         CUdeviceptr x = Upload(host);
         long long n = 1000;
         EXPECT(Launch("add_one", 4, 256, {&x, &n}) == CUDA_SUCCESS);
         std::vector<float> back(1000);
         EXPECT(cuMemcpyDtoHAsync(back.data(), x, 4000, g_stream) == CUDA_SUCCESS);
         for (size_t i = 0; i < back.size(); ++i) EXPECT(back[i] == static_cast<float>(i) + 1.0f);
     }},
    {"queued work runs at synchronisation, not at launch", [] {
         CUdeviceptr x = Upload(std::vector<float>(256, 1.0f));
         long long n = 256;
         EXPECT(Launch("add_one", 1, 256, {&x, &n}) == CUDA_SUCCESS);
         // Device memory is host memory here: before the sync the stream has not run, not even the upload.
         EXPECT(reinterpret_cast<const float*>(x)[0] != 2.0f);
         EXPECT(cuStreamSynchronize(g_stream) == CUDA_SUCCESS);
         EXPECT(reinterpret_cast<const float*>(x)[0] == 2.0f);
     }},
    {"__syncthreads and shared memory: a block reduction", [] {
         std::vector<float> host(512);
         for (size_t i = 0; i < host.size(); ++i) host[i] = static_cast<float>(i % 7);
         CUdeviceptr x = Upload(host), out = Upload({0.0f, 0.0f});
         EXPECT(Launch("block_sum", 2, 256, {&x, &out}) == CUDA_SUCCESS);
         float back[2];
         EXPECT(cuMemcpyDtoHAsync(back, out, sizeof back, g_stream) == CUDA_SUCCESS);
         float expected[2] = {0, 0};
         for (size_t i = 0; i < host.size(); ++i) expected[i / 256] += host[i];
         EXPECT(back[0] == expected[0] && back[1] == expected[1]);
     }},
    {"a read one element past the end faults, naming the allocation", [] {
         EXPECT(ReadAt(64, 64) == CUDA_ERROR_ILLEGAL_ADDRESS);
         EXPECT(LastErrorHas("read_at") && LastErrorHas("offset +256 of the 256-byte allocation") && LastErrorHas("past its end"));
     }},
    {"a read before the start of a page-sized allocation faults", [] {
         // The data ends at the trailing guard page; the leading guard is a page before, so a read just before the
         // start faults when the allocation fills whole pages (else the canary catches writes there, not reads).
         EXPECT(ReadAt(1024, -1) == CUDA_ERROR_ILLEGAL_ADDRESS);
         EXPECT(LastErrorHas("offset -4 of the 4096-byte allocation") && LastErrorHas("before its start"));
     }},
    {"a write before the start is found by the canary", [] {
         CUdeviceptr x = Upload(std::vector<float>(10, 1.0f));
         long long index = -2;
         EXPECT(Launch("write_at", 1, 1, {&x, &index}) == CUDA_SUCCESS);
         EXPECT(cuStreamSynchronize(g_stream) == CUDA_ERROR_ILLEGAL_ADDRESS);
         EXPECT(LastErrorHas("a write at offset -8 of the 40-byte allocation") && LastErrorHas("before its start"));
     }},
    {"a read inside the allocation is fine at both ends", [] {
         EXPECT(ReadAt(1000, 0) == CUDA_SUCCESS);
         EXPECT(ReadAt(1000, 999) == CUDA_SUCCESS);
     }},
    {"a write into the alignment slack is found by the canary", [] {
         CUdeviceptr x = Upload(std::vector<float>(10, 1.0f));   // 40 bytes in a 256-byte slot
         long long index = 12;
         EXPECT(Launch("write_at", 1, 1, {&x, &index}) == CUDA_SUCCESS);
         EXPECT(cuStreamSynchronize(g_stream) == CUDA_ERROR_ILLEGAL_ADDRESS);
         EXPECT(LastErrorHas("a write at offset +48 of the 40-byte allocation"));
     }},
    {"a freed buffer used by a kernel faults as freed", [] {
         CUdeviceptr x = Upload(std::vector<float>(64, 1.0f)), out = Upload({0.0f});
         EXPECT(cuStreamSynchronize(g_stream) == CUDA_SUCCESS);
         EXPECT(cuMemFree(x) == CUDA_SUCCESS);
         long long index = 3;
         EXPECT(Launch("read_at", 1, 1, {&x, &index, &out}) == CUDA_SUCCESS);
         EXPECT(cuStreamSynchronize(g_stream) == CUDA_ERROR_ILLEGAL_ADDRESS);
         EXPECT(LastErrorHas("which was freed"));
     }},
    {"a null pointer faults as outside every allocation", [] {
         CUdeviceptr null = 0, out = Upload({0.0f});
         long long index = 0;
         EXPECT(Launch("read_at", 1, 1, {&null, &index, &out}) == CUDA_SUCCESS);
         EXPECT(cuStreamSynchronize(g_stream) == CUDA_ERROR_ILLEGAL_ADDRESS);
         EXPECT(LastErrorHas("not in any device allocation"));
     }},
    {"after a fault the error is sticky", [] {
         EXPECT(ReadAt(4, 100) == CUDA_ERROR_ILLEGAL_ADDRESS);
         CUdeviceptr p;
         EXPECT(cuMemAlloc(&p, 16) == CUDA_ERROR_ILLEGAL_ADDRESS);
         EXPECT(cuStreamSynchronize(g_stream) == CUDA_ERROR_ILLEGAL_ADDRESS);
     }},
    {"launches beyond sm_90's limits are refused", [] {
         CUdeviceptr x = Upload(std::vector<float>(4, 0.0f));
         long long n = 4;
         void* args[] = {&x, &n};
         CUfunction f = Kernel("add_one");
         EXPECT(cuLaunchKernel(f, 1, 1, 1, 1025, 1, 1, 0, g_stream, args, nullptr) == CUDA_ERROR_INVALID_VALUE);
         EXPECT(cuLaunchKernel(f, 1, 1, 1, 32, 32, 2, 0, g_stream, args, nullptr) == CUDA_ERROR_INVALID_VALUE);
         EXPECT(cuLaunchKernel(f, 1, 1, 1, 1, 1, 65, 0, g_stream, args, nullptr) == CUDA_ERROR_INVALID_VALUE);
         EXPECT(cuLaunchKernel(f, 1, 65536, 1, 1, 1, 1, 0, g_stream, args, nullptr) == CUDA_ERROR_INVALID_VALUE);
         EXPECT(cuLaunchKernel(f, 0, 1, 1, 1, 1, 1, 0, g_stream, args, nullptr) == CUDA_ERROR_INVALID_VALUE);
         EXPECT(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 48 * 1024 + 1, g_stream, args, nullptr) == CUDA_ERROR_INVALID_VALUE);
         EXPECT(cuLaunchKernel(f, 1, 1, 1, 1024, 1, 1, 48 * 1024, g_stream, args, nullptr) == CUDA_SUCCESS);
         EXPECT(cuStreamSynchronize(g_stream) == CUDA_SUCCESS);
     }},
    {"copies outside an allocation are refused", [] {
         CUdeviceptr x = Upload(std::vector<float>(4, 0.0f));
         float host[5] = {};
         EXPECT(cuMemcpyHtoDAsync(x, host, sizeof host, g_stream) == CUDA_ERROR_INVALID_VALUE);
         EXPECT(cuMemcpyDtoHAsync(host, x + 4, 16, g_stream) == CUDA_ERROR_INVALID_VALUE);
         EXPECT(LastErrorHas("past the end"));
         EXPECT(cuMemcpyDtoHAsync(host, x, 16, g_stream) == CUDA_SUCCESS);
     }},
    {"a call without a current context is refused", [] {
         EXPECT(cuCtxSetCurrent(nullptr) == CUDA_SUCCESS);
         CUdeviceptr p;
         EXPECT(cuMemAlloc(&p, 16) == CUDA_ERROR_INVALID_CONTEXT);
         EXPECT(cuStreamSynchronize(g_stream) == CUDA_ERROR_INVALID_CONTEXT);
     }},
    {"memory accounting and out of memory", [] {
         size_t free0, total;
         EXPECT(cuMemGetInfo(&free0, &total) == CUDA_SUCCESS);
         CUdeviceptr p;
         EXPECT(cuMemAlloc(&p, 1000) == CUDA_SUCCESS);
         size_t free1;
         EXPECT(cuMemGetInfo(&free1, &total) == CUDA_SUCCESS);
         EXPECT(free0 - free1 == 1000);
         CUdeviceptr q;
         EXPECT(cuMemAlloc(&q, total) == CUDA_ERROR_OUT_OF_MEMORY);
         EXPECT(cuMemAlloc(&q, 0) == CUDA_ERROR_INVALID_VALUE);
         EXPECT(cuMemFree(p) == CUDA_SUCCESS);
         EXPECT(cuMemFree(p) == CUDA_ERROR_INVALID_VALUE);
     }},
    {"handles are checked", [] {
         CUfunction f;
         EXPECT(cuModuleGetFunction(&f, g_module, "no_such_kernel") == CUDA_ERROR_NOT_FOUND);
         char text[] = "not an image";
         CUmodule m;
         EXPECT(cuModuleLoadData(&m, text) == CUDA_ERROR_INVALID_IMAGE);
         CUstream s;
         EXPECT(cuStreamCreate(&s, 0) == CUDA_SUCCESS);
         EXPECT(cuStreamDestroy(s) == CUDA_SUCCESS);
         EXPECT(cuStreamSynchronize(s) == CUDA_ERROR_INVALID_HANDLE);
         EXPECT(cuModuleUnload(g_module) == CUDA_SUCCESS);
         EXPECT(cuModuleUnload(g_module) == CUDA_ERROR_INVALID_HANDLE);
     }},
    {"releasing the primary context frees its memory", [] {
         CUdeviceptr x = Upload(std::vector<float>(4, 0.0f));
         EXPECT(cuStreamSynchronize(g_stream) == CUDA_SUCCESS);
         EXPECT(cuDevicePrimaryCtxRelease(0) == CUDA_SUCCESS);
         CUcontext again;
         EXPECT(cuDevicePrimaryCtxRetain(&again, 0) == CUDA_SUCCESS);
         EXPECT(cuCtxSetCurrent(again) == CUDA_SUCCESS);
         EXPECT(cuMemFree(x) == CUDA_ERROR_INVALID_VALUE);
         EXPECT(LastErrorHas("which was freed"));
     }},
};

}  // namespace

int main() {
    int passed = 0, failed = 0;
    for (const auto& [name, body] : kCases) {
        fflush(stdout);
        pid_t child = fork();
        if (child == 0) {
            Setup();
            body();
            _exit(0);
        }
        int status = 0;
        waitpid(child, &status, 0);
        bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        printf("%s %s\n", ok ? "passed" : "FAILED", name);
        (ok ? passed : failed)++;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
