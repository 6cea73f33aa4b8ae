// Tests of the emulated NVRTC (libnvrtc.so.12) and the CUDA prelude (frugal_emu_cuda.h): compiles the project's
// kernels and small test kernels through the library's C API, loads the returned modules and runs their blocks
// through the module ABI (abi.h) the way the emulated driver does.
//
// usage: prelude_test <libnvrtc.so.12> <kernels dir>
#include <nvrtc.h>

#include <dirent.h>
#include <signal.h>
#include <ucontext.h>
#include <dlfcn.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "abi.h"

namespace {

int g_passed = 0, g_failed = 0;

#define CHECK(cond, ...)                                       \
    do {                                                       \
        if (cond) {                                            \
            ++g_passed;                                        \
        } else {                                               \
            ++g_failed;                                        \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            printf(__VA_ARGS__);                               \
            printf("\n");                                      \
        }                                                      \
    } while (0)

struct Api {
    decltype(&nvrtcVersion) version;
    decltype(&nvrtcCreateProgram) create;
    decltype(&nvrtcCompileProgram) compile;
    decltype(&nvrtcGetProgramLogSize) log_size;
    decltype(&nvrtcGetProgramLog) log;
    decltype(&nvrtcGetCUBINSize) cubin_size;
    decltype(&nvrtcGetCUBIN) cubin;
    decltype(&nvrtcDestroyProgram) destroy;
    decltype(&nvrtcGetErrorString) error_string;
} api;

std::string read_text(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

struct Compiled {
    nvrtcResult status = NVRTC_ERROR_INTERNAL_ERROR;
    std::string log;
    std::string cubin;
};

Compiled compile(const std::string& name, const std::string& source,
                 const std::map<std::string, std::string>& headers = {},
                 std::vector<std::string> options = {"--gpu-architecture=sm_90", "-std=c++17"}) {
    Compiled c;
    std::vector<const char*> texts, names, opts;
    for (auto& h : headers) {
        names.push_back(h.first.c_str());
        texts.push_back(h.second.c_str());
    }
    for (auto& o : options) opts.push_back(o.c_str());
    nvrtcProgram p = nullptr;
    nvrtcResult r = api.create(&p, source.c_str(), name.c_str(), (int)texts.size(), texts.data(), names.data());
    if (r != NVRTC_SUCCESS) {
        c.status = r;
        c.log = "nvrtcCreateProgram failed";
        return c;
    }
    c.status = api.compile(p, (int)opts.size(), opts.data());
    size_t n = 0;
    if (api.log_size(p, &n) == NVRTC_SUCCESS && n > 0) {
        c.log.resize(n);
        api.log(p, &c.log[0]);
        c.log.resize(n - 1);
    }
    if (c.status == NVRTC_SUCCESS) {
        size_t size = 0;
        if (api.cubin_size(p, &size) == NVRTC_SUCCESS) {
            c.cubin.resize(size);
            api.cubin(p, &c.cubin[0]);
        }
    }
    api.destroy(&p);
    return c;
}

struct Module {
    void* handle = nullptr;
    const FrugalEmuKernel* kernels = nullptr;
    int count = 0;
    FrugalEmuStacksFn stacks = nullptr;
    const FrugalEmuKernel* find(const char* name) const {
        for (int i = 0; i < count; ++i)
            if (!strcmp(kernels[i].name, name)) return &kernels[i];
        return nullptr;
    }
};

Module load(const std::string& image, const std::string& what) {
    Module m;
    int fd = memfd_create(what.c_str(), MFD_CLOEXEC);
    if (fd < 0 || write(fd, image.data(), image.size()) != (ssize_t)image.size()) {
        printf("cannot write %s to a memfd\n", what.c_str());
        return m;
    }
    std::string path = "/proc/self/fd/" + std::to_string(fd);
    // The memfd stays open: glibc's dlopen recognises an already loaded object by its path, and a closed fd's
    // number (hence "/proc/self/fd/N") would be reused by the next module.
    m.handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!m.handle) {
        printf("dlopen %s: %s\n", what.c_str(), dlerror());
        return m;
    }
    auto fn = (FrugalEmuKernelsFn)dlsym(m.handle, FRUGAL_EMU_KERNELS_SYMBOL);
    m.stacks = (FrugalEmuStacksFn)dlsym(m.handle, FRUGAL_EMU_STACKS_SYMBOL);
    if (fn) {
        m.kernels = fn(FRUGAL_EMU_ABI_VERSION, &m.count);
        int dummy = -1;
        if (fn(FRUGAL_EMU_ABI_VERSION + 1, &dummy) != nullptr) printf("frugal_emu_kernels accepted a wrong ABI version\n");
    }
    return m;
}

// Parameter values for a launch, each copied into its own buffer (deliberately misaligned by one byte for
// the odd-numbered ones, to check that the module does not rely on the driver's alignment).
struct Params {
    std::vector<std::vector<unsigned char>> storage;
    std::vector<const void*> ptrs;
    template <class T> Params& add(const T& v) {
        storage.emplace_back(sizeof(T) + 1);
        size_t off = storage.size() % 2;
        memcpy(storage.back().data() + off, &v, sizeof(T));
        return *this;
    }
    const void* const* get() {
        ptrs.clear();
        for (size_t i = 0; i < storage.size(); ++i) ptrs.push_back(storage[i].data() + (i + 1) % 2);
        return ptrs.data();
    }
};

struct Launch {
    FrugalEmuLaunch l;
    std::vector<unsigned char> shared;
    Launch(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, Params& p,
           size_t dyn = 0) {
        memset(&l, 0, sizeof l);
        l.grid[0] = gx; l.grid[1] = gy; l.grid[2] = gz;
        l.block[0] = bx; l.block[1] = by; l.block[2] = bz;
        l.params = p.get();
        shared.resize(dyn);
        l.dynamic_shared = dyn ? shared.data() : nullptr;
        l.dynamic_shared_bytes = dyn;
    }
};

// Runs every block in order on this thread. Returns 0 or the first failure (message in launch.l.error).
int run(const FrugalEmuKernel* k, Launch& launch) {
    for (unsigned z = 0; z < launch.l.grid[2]; ++z)
        for (unsigned y = 0; y < launch.l.grid[1]; ++y)
            for (unsigned x = 0; x < launch.l.grid[0]; ++x)
                if (k->run_block(&launch.l, x, y, z)) return 1;
    return 0;
}

// Runs blocks of a 1-D grid on `threads` OS threads, each with its own launch copy (as the driver would for
// concurrently running blocks: one error buffer each).
int run_parallel(const FrugalEmuKernel* k, Launch& launch, unsigned threads) {
    std::atomic<unsigned> next{0};
    std::atomic<int> failed{0};
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t)
        pool.emplace_back([&] {
            FrugalEmuLaunch mine = launch.l;
            for (unsigned b; (b = next++) < launch.l.grid[0];)
                if (k->run_block(&mine, b, 0, 0)) {
                    failed = 1;
                    memcpy(launch.l.error, mine.error, sizeof mine.error);
                    return;
                }
        });
    for (auto& t : pool) t.join();
    return failed;
}

const char* kTestKernels = R"CUDA(
extern "C" __global__ void block_sum(const float* x, float* out) {
    __shared__ float s[256];
    unsigned t = threadIdx.x;
    s[t] = x[blockIdx.x * blockDim.x + t];
    __syncthreads();
    for (unsigned stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (t < stride) s[t] += s[t + stride];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = s[0];
}

extern "C" __global__ void warp_sums(const int* x, int* down, int* butterfly, unsigned* ballots, double* dsum,
                                     long long* lsum) {
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    int v = x[i];
    int d = v;
    for (int o = 16; o > 0; o >>= 1) d += __shfl_down_sync(0xffffffffu, d, o);
    int b = v;
    for (int o = 1; o < 32; o <<= 1) b += __shfl_xor_sync(0xffffffffu, b, o);
    double dv = v * 0.5;
    for (int o = 16; o > 0; o >>= 1) dv += __shfl_down_sync(0xffffffffu, dv, o);
    long long lv = (long long)v << 33;
    for (int o = 16; o > 0; o >>= 1) lv += __shfl_xor_sync(0xffffffffu, lv, o);
    unsigned bal = __ballot_sync(0xffffffffu, v & 1);
    int up = __shfl_up_sync(0xffffffffu, v, 1);
    int bcast = __shfl_sync(0xffffffffu, v, 3);
    int any = __any_sync(0xffffffffu, v == 7), all = __all_sync(0xffffffffu, v >= 0);
    if ((threadIdx.x & 31) == 0) {
        down[i / 32] = d;
        dsum[i / 32] = dv;
        ballots[i / 32] = bal;
    }
    lsum[i] = lv;
    butterfly[i] = b * 1000 + (up & 0xff) * 0 + (bcast == x[(i & ~31u) + 3]) * 100 + any * 10 + all;
}

extern "C" __global__ void count_atomics(int* counter, float* fsum, unsigned long long* usum, double* dsum,
                                         int* mx) {
    atomicAdd(counter, 1);
    atomicAdd(fsum, 1.0f);
    atomicAdd(usum, 2ull);
    atomicAdd(dsum, 0.5);
    atomicMax(mx, (int)(blockIdx.x * blockDim.x + threadIdx.x));
}

extern "C" __global__ void index3d(unsigned* out) {
    unsigned bx = blockIdx.x, by = blockIdx.y, bz = blockIdx.z;
    unsigned tx = threadIdx.x, ty = threadIdx.y, tz = threadIdx.z;
    unsigned gx = bx * blockDim.x + tx, gy = by * blockDim.y + ty, gz = bz * blockDim.z + tz;
    unsigned W = gridDim.x * blockDim.x, H = gridDim.y * blockDim.y;
    unsigned lin = (gz * H + gy) * W + gx;
    out[lin] = (bx | by << 4 | bz << 8) << 16 | (tx | ty << 4 | tz << 8);
}

extern "C" __global__ void dyn_shared_reverse(const int* x, int* y, int n) {
    extern __shared__ int buf[];
    int t = threadIdx.x;
    if (t < n) buf[t] = x[t];
    __syncthreads();
    if (t < n) y[t] = buf[n - 1 - t];
}

extern "C" __global__ void shfl_after_exit(int* y) {
    if (threadIdx.x >= 16) return;
    y[threadIdx.x] = __shfl_down_sync(0xffffffffu, (int)threadIdx.x, 1);
}

extern "C" __global__ void deadlock(int* y) {
    if (threadIdx.x == 0) {
        y[0] = __shfl_sync(0x3u, 1, 1);
    } else {
        __syncthreads();
    }
}

extern "C" __global__ void mixed_ops(int* y) {
    if (threadIdx.x == 0) y[0] = __shfl_sync(0x3u, 1, 0);
    else y[1] = (int)__ballot_sync(0x3u, 1);
}

extern "C" __global__ void trivial(float* y) {
    y[blockIdx.x * blockDim.x + threadIdx.x] = 1.0f;
}

extern "C" __global__ void syncthreads_count(const int* x, int* y) {
    int c = __syncthreads_count(x[threadIdx.x]);
    int o = __syncthreads_or(threadIdx.x == 5);
    int a = __syncthreads_and(threadIdx.x < 1000);
    if (threadIdx.x == 0) { y[0] = c; y[1] = o; y[2] = a; }
}

// Early exits do not block a barrier: exited threads count as arrived.
extern "C" __global__ void exit_then_sync(int* y) {
    __shared__ int s;
    if (threadIdx.x == 0) s = 42;
    if (threadIdx.x >= 64) return;
    __syncthreads();
    y[threadIdx.x] = s;
}


#define TILE 4
__constant__ float kTable[4] = {1.0f, 2.0f, 3.0f, 4.0f};
__device__ int g_counter;
struct __align__(16) Pair { float a, b; };
template <typename T> __device__ __noinline__ T twice(T v) { return v + v; }
extern "C" __global__ void __launch_bounds__(1024) big_block(int* __restrict__ y) {
    __shared__ int s[1024];
    __shared__ Pair pairs[2];
    s[threadIdx.x] = threadIdx.x;
    if (threadIdx.x < 2) { pairs[threadIdx.x].a = 1.0f; pairs[threadIdx.x].b = kTable[threadIdx.x + 2]; }
    __syncthreads();
    int sum = 0;
#pragma unroll
    for (int k = 0; k < TILE; ++k) sum += s[(threadIdx.x + k) % 1024];
    __syncthreads();
    s[threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.x == 0) {
        long long t = 0;
        for (int k = 0; k < 1024; ++k) t += s[k];
        y[0] = (int)t + twice(VALUE) + (int)pairs[1].b + (int)(alignof(Pair) == 16) * 1000000;
        atomicAdd(&g_counter, 1);
        y[1] = g_counter;
    }
}

extern "C" __global__ void warp_misc(int* y) {
    int lane = threadIdx.x & 31;
    y[threadIdx.x] = __shfl_sync(0xffffffffu, lane * 10, 1, 16);                // lane 1 of each 16-lane segment
    y[64 + threadIdx.x] = __shfl_up_sync(0xffffffffu, lane, 2, 8);              // within 8-lane segments
    y[128 + threadIdx.x] = (int)__match_any_sync(0xffffffffu, lane / 4);
    y[192 + threadIdx.x] = (int)__reduce_add_sync(0xffffffffu, (unsigned)lane);
    __syncwarp();
    if (lane >= 20) return;
    unsigned active = __activemask();
    y[256 + threadIdx.x] = (int)active;
    if (lane < 16) y[320 + threadIdx.x] = __shfl_xor_sync(active & 0xFFFFu, lane, 1);
}

extern "C" __global__ void math_intrinsics(float* f, int* i, double* d) {
    f[0] = __expf(1.0f); f[1] = rsqrtf(4.0f); f[2] = __fdividef(1.0f, 4.0f); f[3] = __saturatef(1.5f);
    f[4] = fmaxf(1.0f, 2.0f); f[5] = max(1.5f, -2.0f); f[6] = __int_as_float(0x3f800000); f[7] = tanhf(0.0f);
    i[0] = __popc(0xF0F0u); i[1] = __clz(1); i[2] = __ffs(8); i[3] = __float2int_rn(2.5f); i[4] = __float2int_rz(-2.7f);
    i[5] = min(3, 7); i[6] = (int)max(2u, 5u); i[7] = __float_as_int(1.0f); i[8] = __float2int_rn(1e20f);
    d[0] = __longlong_as_double(__double_as_longlong(1.25)); d[1] = rint(2.5); d[2] = pow(2.0, 10.0);
    float4 v = make_float4(1, 2, 3, 4); int2 p = make_int2(5, 6); dim3 g(2); (void)g;
    f[8] = v.w + p.y + warpSize + __ldg(&f[4]);
}
)CUDA";

void test_project_kernels(const std::string& kdir) {
    // Every header of the directory, as the engine's kernel cache passes them.
    std::map<std::string, std::string> headers;
    std::vector<std::string> files;
    if (DIR* d = opendir(kdir.c_str())) {
        while (dirent* e = readdir(d)) {
            std::string n = e->d_name;
            if (n.size() > 3 && n.compare(n.size() - 3, 3, ".cu") == 0) files.push_back(n);
            if (n.size() > 4 && n.compare(n.size() - 4, 4, ".cuh") == 0) headers[n] = read_text(kdir + "/" + n);
        }
        closedir(d);
    }
    std::sort(files.begin(), files.end());
    CHECK(files.size() >= 10, "found %zu kernel files in %s", files.size(), kdir.c_str());
    std::map<std::string, Module> modules;
    for (auto& f : files) {
        auto t0 = std::chrono::steady_clock::now();
        Compiled c = compile(f, read_text(kdir + "/" + f), headers);
        double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        CHECK(c.status == NVRTC_SUCCESS, "%s: %s\n%s", f.c_str(), api.error_string(c.status), c.log.c_str());
        if (c.status != NVRTC_SUCCESS) continue;
        CHECK(c.cubin.size() > 4 && !memcmp(c.cubin.data(), "\x7f" "ELF", 4), "%s: not an ELF image", f.c_str());
        Module m = load(c.cubin, f);
        CHECK(m.handle && m.count > 0, "%s: %d kernels registered", f.c_str(), m.count);
        // The source's __global__ definitions must all be registered: count "__global__" in the macro-free
        // files at least as a lower bound (macros produce more).
        printf("  %-16s %3d kernels, %6zu KiB, %.1f s\n", f.c_str(), m.count, c.cubin.size() / 1024, s);
        modules[f] = m;
    }

    // cast.cu: inline PTX (half conversions) through the rewrite.
    if (modules.count("cast.cu")) {
        const FrugalEmuKernel* k = modules["cast.cu"].find("cast");
        CHECK(k && k->param_count == 5, "cast registered with 5 parameters");
        if (k) {
            unsigned short halves[4] = {0x3C00, 0xC000, 0x7C00, 0x0001};
            float out[4] = {};
            Params p;
            p.add((const unsigned char*)halves).add(2 /*F16*/).add((unsigned char*)out).add(0 /*F32*/).add(4LL);
            Launch l(1, 1, 1, 32, 1, 1, p);
            CHECK(run(k, l) == 0, "%s", l.l.error);
            CHECK(out[0] == 1.0f && out[1] == -2.0f && std::isinf(out[2]) && out[3] == std::ldexp(1.0f, -24),
                  "half->float: %g %g %g %g", out[0], out[1], out[2], out[3]);
            float in[3] = {0.1f, 65520.0f, 1e-8f};
            unsigned short h[3] = {};
            Params q;
            q.add((const unsigned char*)in).add(0).add((unsigned char*)h).add(2).add(3LL);
            Launch l2(1, 1, 1, 32, 1, 1, q);
            CHECK(run(k, l2) == 0, "%s", l2.l.error);
            CHECK(h[0] == 0x2E66 && h[1] == 0x7C00 && h[2] == 0x0000, "float->half: %04x %04x %04x", h[0], h[1], h[2]);
        }
    }
    // rows.cu: softmax over a 256-thread block (block_reduce: shuffles, __shared__, __syncthreads).
    if (modules.count("rows.cu")) {
        const FrugalEmuKernel* k = modules["rows.cu"].find("softmax_f32");
        CHECK(k != nullptr, "softmax_f32 registered");
        if (k) {
            const long long rows = 3, cols = 1000;
            std::vector<float> x(rows * cols), y(rows * cols);
            for (size_t i = 0; i < x.size(); ++i) x[i] = (float)((i * 37) % 101) / 17.0f;
            Params p;
            p.add((const float*)x.data()).add(y.data()).add(rows).add(cols).add(0);
            Launch l(2, 1, 1, 256, 1, 1, p);
            CHECK(run(k, l) == 0, "%s", l.l.error);
            double worst = 0;
            for (long long r = 0; r < rows; ++r) {
                double m = -1e30, s = 0;
                for (long long c = 0; c < cols; ++c) m = std::max(m, (double)x[r * cols + c]);
                for (long long c = 0; c < cols; ++c) s += std::exp(x[r * cols + c] - m);
                for (long long c = 0; c < cols; ++c)
                    worst = std::max(worst, std::fabs(std::exp(x[r * cols + c] - m) / s - y[r * cols + c]));
            }
            CHECK(worst < 1e-6, "softmax max error %g", worst);
        }
    }
    // quant.cu: quant_matmul uses 2-D __shared__ tiles and __syncthreads in a 16x16 block.
    for (auto& m : modules) {
        for (int i = 0; i < m.second.count; ++i) {
            const FrugalEmuKernel& k = m.second.kernels[i];
            bool ok = k.name && *k.name && k.run_block && k.param_count >= 0;
            for (int j = 0; j < k.param_count && ok; ++j) ok = k.param_sizes[j] > 0 && k.param_aligns[j] > 0;
            CHECK(ok, "%s: kernel %d well formed", m.first.c_str(), i);
        }
    }
    if (modules.count("elementwise.cu")) {
        const FrugalEmuKernel* k = modules["elementwise.cu"].find("fill_b8");
        CHECK(k && k->param_count == 4 && k->param_sizes[1] == 136 && k->param_aligns[1] == 8,
              "fill_b8(T*, Strided, T, i64): sizes");
    }
}

void test_own_kernels() {
    Compiled c = compile("tests.cu", kTestKernels, {},
                         {"--gpu-architecture=sm_90", "-std=c++17", "-DVALUE=21", "--ptxas-options=-v", "-lineinfo"});
    CHECK(c.status == NVRTC_SUCCESS, "test kernels: %s\n%s", api.error_string(c.status), c.log.c_str());
    if (c.status != NVRTC_SUCCESS) return;
    Module m = load(c.cubin, "tests.cu");
    CHECK(m.count == 14, "test kernels registered: %d", m.count);

    if (auto k = m.find("block_sum")) {
        const int blocks = 5;
        std::vector<float> x(blocks * 256), out(blocks);
        for (size_t i = 0; i < x.size(); ++i) x[i] = (float)(i % 13);
        Params p;
        p.add((const float*)x.data()).add(out.data());
        Launch l(blocks, 1, 1, 256, 1, 1, p);
        CHECK(run(k, l) == 0, "%s", l.l.error);
        bool ok = true;
        for (int b = 0; b < blocks; ++b) {
            float s = 0;
            for (int t = 0; t < 256; ++t) s += x[b * 256 + t];
            ok &= s == out[b];
        }
        CHECK(ok, "block_sum");
        // Concurrently on 4 OS threads (thread_local __shared__ per block).
        std::fill(out.begin(), out.end(), 0.0f);
        std::vector<float> big(64 * 256), bout(64);
        for (size_t i = 0; i < big.size(); ++i) big[i] = (float)(i % 7);
        Params q;
        q.add((const float*)big.data()).add(bout.data());
        Launch l2(64, 1, 1, 256, 1, 1, q);
        CHECK(run_parallel(k, l2, 4) == 0, "%s", l2.l.error);
        ok = true;
        for (int b = 0; b < 64; ++b) {
            float s = 0;
            for (int t = 0; t < 256; ++t) s += big[b * 256 + t];
            ok &= s == bout[b];
        }
        CHECK(ok, "block_sum on 4 OS threads");
    } else CHECK(false, "block_sum missing");

    if (auto k = m.find("warp_sums")) {
        const int n = 128;
        std::vector<int> x(n), down(n / 32), bfly(n);
        std::vector<unsigned> bal(n / 32);
        std::vector<double> ds(n / 32);
        std::vector<long long> ls(n);
        for (int i = 0; i < n; ++i) x[i] = (i * 7 + 3) % 11;
        Params p;
        p.add((const int*)x.data()).add(down.data()).add(bfly.data()).add(bal.data()).add(ds.data()).add(ls.data());
        Launch l(2, 1, 1, 64, 1, 1, p);
        CHECK(run(k, l) == 0, "%s", l.l.error);
        bool ok = true;
        for (int w = 0; w < n / 32; ++w) {
            int s = 0, any = 0, all = 1;
            unsigned b = 0;
            for (int j = 0; j < 32; ++j) {
                s += x[w * 32 + j];
                if (x[w * 32 + j] & 1) b |= 1u << j;
                any |= x[w * 32 + j] == 7;
            }
            ok &= down[w] == s && bal[w] == b && ds[w] == s * 0.5;
            for (int j = 0; j < 32; ++j) {
                ok &= bfly[w * 32 + j] == s * 1000 + 100 + any * 10 + all;
                ok &= ls[w * 32 + j] == (long long)s << 33;
            }
            if (!ok) { printf("  warp %d: down %d want %d, ballot %08x want %08x, bfly %d\n", w, down[w], s, bal[w], b, bfly[w * 32]); break; }
        }
        CHECK(ok, "warp shuffles, ballot, any/all");
    } else CHECK(false, "warp_sums missing");

    if (auto k = m.find("count_atomics")) {
        int counter = 0, mx = -1;
        float fsum = 0;
        unsigned long long usum = 0;
        double dsum = 0;
        Params p;
        p.add(&counter).add(&fsum).add(&usum).add(&dsum).add(&mx);
        Launch l(256, 1, 1, 128, 1, 1, p);
        CHECK(run_parallel(k, l, 4) == 0, "%s", l.l.error);
        CHECK(counter == 256 * 128 && fsum == 256.0f * 128 && usum == 2ull * 256 * 128 && dsum == 0.5 * 256 * 128 &&
                  mx == 256 * 128 - 1,
              "atomics across blocks on 4 threads: %d %g %llu %g %d", counter, fsum, usum, dsum, mx);
    } else CHECK(false, "count_atomics missing");

    if (auto k = m.find("index3d")) {
        const unsigned GX = 3, GY = 2, GZ = 2, BX = 4, BY = 3, BZ = 2;
        std::vector<unsigned> out(GX * GY * GZ * BX * BY * BZ, 0xFFFFFFFFu);
        Params p;
        p.add(out.data());
        Launch l(GX, GY, GZ, BX, BY, BZ, p);
        CHECK(run(k, l) == 0, "%s", l.l.error);
        bool ok = true;
        for (unsigned bz = 0; bz < GZ; ++bz) for (unsigned by = 0; by < GY; ++by) for (unsigned bx = 0; bx < GX; ++bx)
        for (unsigned tz = 0; tz < BZ; ++tz) for (unsigned ty = 0; ty < BY; ++ty) for (unsigned tx = 0; tx < BX; ++tx) {
            unsigned gx = bx * BX + tx, gy = by * BY + ty, gz = bz * BZ + tz;
            unsigned lin = (gz * GY * BY + gy) * GX * BX + gx;
            ok &= out[lin] == ((bx | by << 4 | bz << 8) << 16 | (tx | ty << 4 | tz << 8));
        }
        CHECK(ok, "3-D grid and block indexing");
    } else CHECK(false, "index3d missing");

    if (auto k = m.find("dyn_shared_reverse")) {
        const int n = 100;
        std::vector<int> x(n), y(n);
        for (int i = 0; i < n; ++i) x[i] = i * 3;
        Params p;
        p.add((const int*)x.data()).add(y.data()).add(n);
        Launch l(1, 1, 1, 128, 1, 1, p, n * sizeof(int));
        CHECK(run(k, l) == 0, "%s", l.l.error);
        bool ok = true;
        for (int i = 0; i < n; ++i) ok &= y[i] == x[n - 1 - i];
        CHECK(ok, "dynamic shared memory");
    } else CHECK(false, "dyn_shared_reverse missing");

    if (auto k = m.find("shfl_after_exit")) {
        std::vector<int> y(32);
        Params p;
        p.add(y.data());
        Launch l(1, 1, 1, 32, 1, 1, p);
        int rc = run(k, l);
        CHECK(rc == 1 && strstr(l.l.error, "shfl_after_exit") && strstr(l.l.error, "__shfl_down_sync") &&
                  strstr(l.l.error, "exited"),
              "shuffle with exited lanes: rc %d, '%s'", rc, l.l.error);
        printf("  error message: %s\n", l.l.error);
        // The module stays usable after an aborted block.
        Launch l2(1, 1, 1, 16, 1, 1, p);
        rc = run(k, l2);
        CHECK(rc == 1 && strstr(l2.l.error, "does not exist"), "lanes beyond the block: '%s'", l2.l.error);
    } else CHECK(false, "shfl_after_exit missing");

    if (auto k = m.find("deadlock")) {
        std::vector<int> y(4);
        Params p;
        p.add(y.data());
        Launch l(1, 1, 1, 64, 1, 1, p);
        int rc = run(k, l);
        CHECK(rc == 1 && strstr(l.l.error, "deadlock") && strstr(l.l.error, "'deadlock'"), "deadlock: rc %d, '%s'", rc,
              l.l.error);
        printf("  error message: %s\n", l.l.error);
    } else CHECK(false, "deadlock missing");

    if (auto k = m.find("mixed_ops")) {
        std::vector<int> y(4);
        Params p;
        p.add(y.data());
        Launch l(1, 1, 1, 32, 1, 1, p);
        int rc = run(k, l);
        CHECK(rc == 1 && strstr(l.l.error, "__ballot_sync") && strstr(l.l.error, "__shfl_sync"),
              "different warp operations: rc %d, '%s'", rc, l.l.error);
        printf("  error message: %s\n", l.l.error);
    } else CHECK(false, "mixed_ops missing");

    if (auto k = m.find("syncthreads_count")) {
        std::vector<int> x(96), y(3);
        for (int i = 0; i < 96; ++i) x[i] = i % 3 == 0;
        Params p;
        p.add((const int*)x.data()).add(y.data());
        Launch l(1, 1, 1, 96, 1, 1, p);
        CHECK(run(k, l) == 0, "%s", l.l.error);
        CHECK(y[0] == 32 && y[1] == 1 && y[2] == 1, "__syncthreads_count/or/and: %d %d %d", y[0], y[1], y[2]);
    } else CHECK(false, "syncthreads_count missing");

    if (auto k = m.find("exit_then_sync")) {
        std::vector<int> y(64);
        Params p;
        p.add(y.data());
        Launch l(1, 1, 1, 256, 1, 1, p);
        CHECK(run(k, l) == 0, "%s", l.l.error);
        bool ok = true;
        for (int v : y) ok &= v == 42;
        CHECK(ok, "exited threads count as arrived at __syncthreads");
    } else CHECK(false, "exit_then_sync missing");

    if (auto k = m.find("math_intrinsics")) {
        float f[9] = {};
        int i[9] = {};
        double d[3] = {};
        Params p;
        p.add((float*)f).add((int*)i).add((double*)d);
        Launch l(1, 1, 1, 1, 1, 1, p);
        CHECK(run(k, l) == 0, "%s", l.l.error);
        CHECK(std::fabs(f[0] - 2.7182817f) < 1e-6f && f[1] == 0.5f && f[2] == 0.25f && f[3] == 1.0f && f[4] == 2.0f &&
                  f[5] == 1.5f && f[6] == 1.0f && f[7] == 0.0f && f[8] == 4 + 6 + 32 + 2,
              "float intrinsics: %g %g %g %g %g %g %g %g %g", f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8]);
        CHECK(i[0] == 8 && i[1] == 31 && i[2] == 4 && i[3] == 2 && i[4] == -2 && i[5] == 3 && i[6] == 5 &&
                  i[7] == 0x3f800000 && i[8] == 2147483647,
              "int intrinsics: %d %d %d %d %d %d %d %x %d", i[0], i[1], i[2], i[3], i[4], i[5], i[6], i[7], i[8]);
        CHECK(d[0] == 1.25 && d[1] == 2.0 && d[2] == 1024.0, "double: %g %g %g", d[0], d[1], d[2]);
    } else CHECK(false, "math_intrinsics missing");


    if (auto k = m.find("big_block")) {
        std::vector<int> y(2);
        Params p;
        p.add(y.data());
        Launch l(3, 1, 1, 1024, 1, 1, p);
        CHECK(run(k, l) == 0, "%s", l.l.error);
        long long want = 0;
        for (int t = 0; t < 1024; ++t)
            for (int k2 = 0; k2 < 4; ++k2) want += (t + k2) % 1024;
        CHECK(y[0] == (int)want + 42 + 4 + 1000000 && y[1] == 3, "1024-thread block, -D, qualifiers: %d (want %lld) %d",
              y[0], want + 42 + 4 + 1000000, y[1]);
    } else CHECK(false, "big_block missing");

    if (auto k = m.find("warp_misc")) {
        std::vector<int> y(384, -1);
        Params p;
        p.add(y.data());
        Launch l(1, 1, 1, 64, 1, 1, p);
        CHECK(run(k, l) == 0, "%s", l.l.error);
        bool ok = true;
        for (int t = 0; t < 64; ++t) {
            int lane = t & 31;
            ok &= y[t] == ((lane & ~15) + 1) * 10;
            ok &= y[64 + t] == ((lane & 7) >= 2 ? lane - 2 : lane);
            ok &= y[128 + t] == (int)(0xFu << (lane & ~3));
            ok &= y[192 + t] == 496;
            if (lane < 20) {
                ok &= y[256 + t] == 0xFFFFF;
                ok &= y[320 + t] == (lane < 16 ? lane ^ 1 : -1);
            } else {
                ok &= y[256 + t] == -1;
            }
            if (!ok) { printf("  thread %d: %d %d %d %d %d %d\n", t, y[t], y[64 + t], y[128 + t], y[192 + t], y[256 + t], y[320 + t]); break; }
        }
        CHECK(ok, "shuffle widths, __match_any_sync, __reduce_add_sync, __activemask, __syncwarp");
    } else CHECK(false, "warp_misc missing");

    if (auto k = m.find("block_sum")) {
        const unsigned GX = 4096, BX = 256;
        std::vector<float> x(GX * BX, 1.0f), out(GX);
        Params p;
        p.add((const float*)x.data()).add(out.data());
        Launch l(GX, 1, 1, BX, 1, 1, p);
        auto t0 = std::chrono::steady_clock::now();
        int rc = run(k, l);
        double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        CHECK(rc == 0 && out[GX - 1] == 256.0f, "%s", l.l.error);
        printf("  block_sum (9 __syncthreads per thread), 4096x256 launch: %.1f ms, %.1f ns/thread\n", sec * 1e3,
               sec * 1e9 / (GX * BX));
    }

    if (m.stacks) {
        void* lo[2048];
        void* hi[2048];
        int n = m.stacks(lo, hi, 2048);
        bool ok = n > 0;
        for (int j = 0; j < n && ok; ++j) ok = (char*)hi[j] - (char*)lo[j] == 68 * 1024;
        CHECK(ok, "frugal_emu_fiber_stacks: %d stacks", n);
    } else CHECK(false, "frugal_emu_fiber_stacks missing");

    if (auto k = m.find("trivial")) {
        const unsigned GX = 4096, BX = 256;
        std::vector<float> y(GX * BX);
        Params p;
        p.add(y.data());
        Launch warm(16, 1, 1, BX, 1, 1, p);
        run(k, warm);
        double best = 1e30;
        for (int rep = 0; rep < 3; ++rep) {
            Launch l(GX, 1, 1, BX, 1, 1, p);
            auto t0 = std::chrono::steady_clock::now();
            int rc = run(k, l);
            double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            CHECK(rc == 0, "%s", l.l.error);
            best = std::min(best, s);
        }
        bool ok = true;
        for (float v : y) ok &= v == 1.0f;
        CHECK(ok, "trivial kernel wrote every element");
        printf("  trivial kernel, 4096x256 launch on one OS thread: %.2f ms, %.1f ns/thread\n", best * 1e3,
               best * 1e9 / (GX * BX));
    }
}

void test_errors() {
    // A compile error: the real NVRTC's diagnostics in the log.
    Compiled c = compile("bad.cu", "extern \"C\" __global__ void bad(float* y) { y[0] = undeclared_thing; }\n");
    CHECK(c.status == NVRTC_ERROR_COMPILATION, "bad kernel status %d", c.status);
    CHECK(c.log.find("undeclared_thing") != std::string::npos && c.log.find("real NVRTC") != std::string::npos,
          "log: %s", c.log.c_str());
    printf("  compile error log: %s", c.log.c_str());

    // Inline PTX that is not emulated: the host compilation fails with a log saying so.
    Compiled ptx = compile("ptx.cu",
                           "extern \"C\" __global__ void k(unsigned* y) { unsigned r;"
                           " asm volatile(\"vote.sync.ballot.b32 %0, 1, 0xffffffff;\" : \"=r\"(r)); y[0] = r; }\n");
    CHECK(ptx.status == NVRTC_ERROR_COMPILATION && ptx.log.find("host compilation failed") != std::string::npos &&
              ptx.log.find("vote_sync_ballot_b32") != std::string::npos,
          "unemulated PTX: %d %s", ptx.status, ptx.log.c_str());
    Compiled multi = compile("multi.cu",
                             "extern \"C\" __global__ void k(unsigned* y) { unsigned r;"
                             " asm(\"{ .reg .u32 t; mov.u32 t, 1; mov.u32 %0, t; }\" : \"=r\"(r)); y[0] = r; }\n");
    CHECK(multi.status == NVRTC_ERROR_COMPILATION && multi.log.find("not emulated") != std::string::npos,
          "multi-instruction PTX: %d %s", multi.status, multi.log.c_str());
    // Concurrent compilations.
    {
        std::vector<std::thread> ts;
        std::atomic<int> good{0};
        for (int t = 0; t < 4; ++t)
            ts.emplace_back([&, t] {
                std::string src = "extern \"C\" __global__ void k" + std::to_string(t) + "(int* y) { y[threadIdx.x] = " +
                                  std::to_string(t) + "; }\n";
                Compiled cc = compile("c" + std::to_string(t) + ".cu", src);
                if (cc.status == NVRTC_SUCCESS && cc.cubin.size() > 4) ++good;
            });
        for (auto& t : ts) t.join();
        CHECK(good == 4, "concurrent compilations: %d of 4", good.load());
    }
    // Rejected options are NVRTC's.
    Compiled o = compile("opt.cu", "extern \"C\" __global__ void k() {}\n", {}, {"--no-such-option"});
    CHECK(o.status == NVRTC_ERROR_INVALID_OPTION, "bad option status %d: %s", o.status, o.log.c_str());
    // An empty module.
    Compiled e = compile("empty.cu", "__device__ int f(int x) { return x + 1; }\n");
    CHECK(e.status == NVRTC_SUCCESS, "empty module: %s", e.log.c_str());
    if (e.status == NVRTC_SUCCESS) {
        Module m = load(e.cubin, "empty");
        CHECK(m.handle && m.count == 0, "empty module: %d kernels", m.count);
    }
    // Handles.
    nvrtcProgram p = nullptr;
    CHECK(api.create(&p, "extern \"C\" __global__ void k() {}", "x.cu", 0, nullptr, nullptr) == NVRTC_SUCCESS, "create");
    nvrtcProgram q = p;
    CHECK(api.destroy(&p) == NVRTC_SUCCESS && p == nullptr, "destroy");
    size_t n;
    CHECK(api.log_size(q, &n) == NVRTC_ERROR_INVALID_PROGRAM, "destroyed handle rejected");
    CHECK(api.destroy(&q) == NVRTC_ERROR_INVALID_PROGRAM, "double destroy rejected");
    CHECK(api.compile((nvrtcProgram)&n, 0, nullptr) == NVRTC_ERROR_INVALID_PROGRAM, "unknown handle rejected");
    int major = 0, minor = 0;
    CHECK(api.version(&major, &minor) == NVRTC_SUCCESS && major >= 11, "version %d.%d", major, minor);
    printf("  nvrtcVersion: %d.%d\n", major, minor);
    // C++ linkage: registered under the mangled name; a C++ kernel and a namespace-scope dynamic shared array.
    Compiled cpp = compile("cpp.cu",
                           "extern __shared__ float dyn[];\n"
                           "__global__ void scale(float* y, float a) { dyn[threadIdx.x] = a; __syncthreads();"
                           " y[threadIdx.x] = dyn[blockDim.x - 1 - threadIdx.x] * (float)threadIdx.x; }\n");
    CHECK(cpp.status == NVRTC_SUCCESS, "C++ linkage kernel: %s", cpp.log.c_str());
    if (cpp.status == NVRTC_SUCCESS) {
        Module m = load(cpp.cubin, "cpp");
        const FrugalEmuKernel* k = m.find("_Z5scalePff");
        CHECK(k != nullptr, "mangled name _Z5scalePff: %s", m.count ? m.kernels[0].name : "(none)");
        if (k) {
            float y[8] = {};
            Params pp;
            pp.add((float*)y).add(2.0f);
            Launch l(1, 1, 1, 8, 1, 1, pp, 8 * sizeof(float));
            CHECK(run(k, l) == 0 && y[3] == 6.0f, "namespace-scope extern __shared__: %s %g", l.l.error, y[3]);
        }
    }
}

}  // namespace

// A crash report (the fault address and where, with the module's symbol) instead of a bare segfault.
void on_fault(int sig, siginfo_t* info, void* ctx) {
    ucontext_t* uc = (ucontext_t*)ctx;
    void* pc = (void*)uc->uc_mcontext.gregs[REG_RIP];
    Dl_info dl;
    char buf[512];
    int n = snprintf(buf, sizeof buf, "\nsignal %d at address %p, pc %p (%s+%#lx), rsp %p\n", sig, info->si_addr, pc,
                     dladdr(pc, &dl) && dl.dli_sname ? dl.dli_sname : "?",
                     dladdr(pc, &dl) && dl.dli_saddr ? (long)((char*)pc - (char*)dl.dli_saddr) : 0L,
                     (void*)uc->uc_mcontext.gregs[REG_RSP]);
    if (write(2, buf, (size_t)n) < 0) {}
    _exit(3);
}

int main(int argc, char** argv) {
    {
        static char altstack[65536];
        stack_t ss = {};
        ss.ss_sp = altstack;
        ss.ss_size = sizeof altstack;
        sigaltstack(&ss, nullptr);
        struct sigaction sa = {};
        sa.sa_sigaction = on_fault;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigaction(SIGSEGV, &sa, nullptr);
        sigaction(SIGBUS, &sa, nullptr);
        sigaction(SIGILL, &sa, nullptr);
    }
    setvbuf(stdout, nullptr, _IONBF, 0);
    if (argc < 3) {
        fprintf(stderr, "usage: %s <libnvrtc.so.12> <kernels dir>\n", argv[0]);
        return 2;
    }
    void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "dlopen %s: %s\n", argv[1], dlerror());
        return 2;
    }
#define SYM(field, name) api.field = (decltype(api.field))dlsym(lib, name)
    SYM(version, "nvrtcVersion");
    SYM(create, "nvrtcCreateProgram");
    SYM(compile, "nvrtcCompileProgram");
    SYM(log_size, "nvrtcGetProgramLogSize");
    SYM(log, "nvrtcGetProgramLog");
    SYM(cubin_size, "nvrtcGetCUBINSize");
    SYM(cubin, "nvrtcGetCUBIN");
    SYM(destroy, "nvrtcDestroyProgram");
    SYM(error_string, "nvrtcGetErrorString");
    if (!api.version || !api.create || !api.compile || !api.log_size || !api.log || !api.cubin_size || !api.cubin ||
        !api.destroy || !api.error_string) {
        fprintf(stderr, "%s lacks NVRTC entry points\n", argv[1]);
        return 2;
    }
    printf("project kernels:\n");
    test_project_kernels(argv[2]);
    printf("test kernels:\n");
    test_own_kernels();
    printf("errors:\n");
    test_errors();
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
