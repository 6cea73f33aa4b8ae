// The emulated CUDA driver (libcuda.so.1): one sm_90 device whose memory is host memory and whose kernels are the
// host modules the emulated NVRTC builds. Declarations come from the real cuda.h, so a definition that does not
// match its documented signature does not compile. What it checks that a GPU would not tell: every device range a
// copy or library call touches lies in one live allocation; a kernel access past either end of an allocation or
// into a freed one faults on a guard page and is reported with the kernel, block and allocation; writes into the
// alignment slack around an allocation are found by canaries; launches beyond sm_90's limits are refused; a
// context must be current; handles are checked. Work is queued per stream and runs when the host synchronises
// (a stream sync, a device-to-host copy, a free), so a missing synchronisation shows as stale data, as on a GPU.
#include <cuda.h>

#include <dlfcn.h>
#include <elf.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "abi.h"
#include "internal.h"

#define API extern "C" __attribute__((visibility("default")))

namespace {

constexpr int kComputeMajor = 9, kComputeMinor = 0, kMultiprocessors = 132;
constexpr size_t kAlignment = 256;        // cuMemAlloc's documented alignment
constexpr unsigned char kCanary = 0xFD;   // fills the slack around each allocation
constexpr unsigned char kFresh = 0xFF;    // fills a new allocation
constexpr size_t kQuarantine = 4096;      // freed allocations kept unmapped (PROT_NONE) to catch late uses

size_t PageSize() {
    static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    return page;
}

size_t RoundUp(size_t v, size_t a) { return (v + a - 1) / a * a; }

std::string Format(const char* format, ...) __attribute__((format(printf, 1, 2)));
std::string Format(const char* format, ...) {
    char buffer[2048];
    va_list args;
    va_start(args, format);
    vsnprintf(buffer, sizeof buffer, format, args);
    va_end(args);
    return buffer;
}

struct Context;

// [map, map + mapped): a guard page, the data pages, a guard page. The data ends as close to the trailing guard
// page as the 256-byte alignment allows.
struct Allocation {
    uintptr_t base = 0;
    size_t bytes = 0;
    uintptr_t map = 0;
    size_t mapped = 0;
    uint64_t serial = 0;
    Context* context = nullptr;
    uintptr_t DataBegin() const { return map + PageSize(); }
    uintptr_t DataEnd() const { return map + mapped - PageSize(); }
};

struct Module;

struct Function {
    Module* module;
    const FrugalEmuKernel* kernel;
};

struct Module {
    Context* context;
    void* library;
    int fd;
    std::vector<std::unique_ptr<Function>> functions;
    FrugalEmuStacksFn stacks;
};

// One queued operation: a kernel launch, a staged host-to-device copy, or a library's work.
struct Work {
    enum Kind { Kernel, Upload, Library } kind;
    explicit Work(Kind k) : kind(k) {}
    // Kernel
    Function* function = nullptr;
    unsigned grid[3] = {}, block[3] = {};
    size_t shared = 0;
    std::vector<unsigned char> values;       // parameter values, copied at launch (also the staged upload)
    std::vector<size_t> offsets;
    // Upload
    uintptr_t destination = 0;
    // Library
    FrugalEmuWork library = {};
};

struct Stream {
    Context* context;
    unsigned flags;
    std::deque<Work> queue;
};

struct Context {
    int device = 0;
    int references = 0;
    CUresult sticky = CUDA_SUCCESS;
    std::vector<std::unique_ptr<Stream>> streams;
    std::vector<std::unique_ptr<Module>> modules;
    std::unique_ptr<Stream> legacy;          // stream 0
};

std::recursive_mutex g_lock;
bool g_initialized = false;
Context g_primary;
size_t g_total_bytes = 16ull << 30;
size_t g_used_bytes = 0;
uint64_t g_serial = 0;
std::map<uintptr_t, Allocation> g_live;      // by base
std::map<uintptr_t, Allocation> g_freed;     // by map start (quarantined, PROT_NONE)
std::deque<uintptr_t> g_freed_order;
std::string g_last_error;
thread_local Context* t_current = nullptr;

// ---- faults inside kernels ----

struct KernelGuard {
    sigjmp_buf jump;
    volatile sig_atomic_t active = 0;
    void* address = nullptr;
    int write = 0;
    int signal = 0;
};
thread_local KernelGuard* t_guard = nullptr;
struct sigaction g_previous_segv, g_previous_bus;

void Chain(const struct sigaction& previous, int sig, siginfo_t* info, void* context) {
    if (previous.sa_flags & SA_SIGINFO) {
        if (previous.sa_sigaction) previous.sa_sigaction(sig, info, context);
        return;
    }
    if (previous.sa_handler == SIG_IGN) return;
    if (previous.sa_handler == SIG_DFL) {
        signal(sig, SIG_DFL);   // the fault repeats on return and takes the default action
        return;
    }
    previous.sa_handler(sig);
}

void OnFault(int sig, siginfo_t* info, void* context) {
    KernelGuard* guard = t_guard;
    if (guard && guard->active) {
        guard->active = 0;
        guard->address = info->si_addr;
        guard->signal = sig;
#if defined(__x86_64__)
        guard->write = (static_cast<ucontext_t*>(context)->uc_mcontext.gregs[REG_ERR] & 2) != 0;
#endif
        siglongjmp(guard->jump, 1);
    }
    Chain(sig == SIGBUS ? g_previous_bus : g_previous_segv, sig, info, context);
}

void InstallFaultHandler() {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = OnFault;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&action.sa_mask);
    sigaction(SIGSEGV, &action, &g_previous_segv);
    sigaction(SIGBUS, &action, &g_previous_bus);
}

// ---- errors ----

const char* Name(CUresult status) {
    switch (status) {
        case CUDA_SUCCESS: return "CUDA_SUCCESS";
        case CUDA_ERROR_INVALID_VALUE: return "CUDA_ERROR_INVALID_VALUE";
        case CUDA_ERROR_OUT_OF_MEMORY: return "CUDA_ERROR_OUT_OF_MEMORY";
        case CUDA_ERROR_NOT_INITIALIZED: return "CUDA_ERROR_NOT_INITIALIZED";
        case CUDA_ERROR_DEINITIALIZED: return "CUDA_ERROR_DEINITIALIZED";
        case CUDA_ERROR_NO_DEVICE: return "CUDA_ERROR_NO_DEVICE";
        case CUDA_ERROR_INVALID_DEVICE: return "CUDA_ERROR_INVALID_DEVICE";
        case CUDA_ERROR_INVALID_IMAGE: return "CUDA_ERROR_INVALID_IMAGE";
        case CUDA_ERROR_INVALID_CONTEXT: return "CUDA_ERROR_INVALID_CONTEXT";
        case CUDA_ERROR_NO_BINARY_FOR_GPU: return "CUDA_ERROR_NO_BINARY_FOR_GPU";
        case CUDA_ERROR_INVALID_HANDLE: return "CUDA_ERROR_INVALID_HANDLE";
        case CUDA_ERROR_NOT_FOUND: return "CUDA_ERROR_NOT_FOUND";
        case CUDA_ERROR_ILLEGAL_ADDRESS: return "CUDA_ERROR_ILLEGAL_ADDRESS";
        case CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: return "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES";
        case CUDA_ERROR_LAUNCH_FAILED: return "CUDA_ERROR_LAUNCH_FAILED";
        case CUDA_ERROR_NOT_SUPPORTED: return "CUDA_ERROR_NOT_SUPPORTED";
        case CUDA_ERROR_INVALID_PTX: return "CUDA_ERROR_INVALID_PTX";
        case CUDA_ERROR_UNKNOWN: return "CUDA_ERROR_UNKNOWN";
        default: return nullptr;
    }
}

const char* Description(CUresult status) {
    switch (status) {
        case CUDA_SUCCESS: return "no error";
        case CUDA_ERROR_INVALID_VALUE: return "invalid argument";
        case CUDA_ERROR_OUT_OF_MEMORY: return "out of memory";
        case CUDA_ERROR_NOT_INITIALIZED: return "initialization error";
        case CUDA_ERROR_DEINITIALIZED: return "driver shutting down";
        case CUDA_ERROR_NO_DEVICE: return "no CUDA-capable device is detected";
        case CUDA_ERROR_INVALID_DEVICE: return "invalid device ordinal";
        case CUDA_ERROR_INVALID_IMAGE: return "device kernel image is invalid";
        case CUDA_ERROR_INVALID_CONTEXT: return "invalid device context";
        case CUDA_ERROR_NO_BINARY_FOR_GPU: return "no kernel image is available for execution on the device";
        case CUDA_ERROR_INVALID_HANDLE: return "invalid resource handle";
        case CUDA_ERROR_NOT_FOUND: return "named symbol not found";
        case CUDA_ERROR_ILLEGAL_ADDRESS: return "an illegal memory access was encountered";
        case CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: return "too many resources requested for launch";
        case CUDA_ERROR_LAUNCH_FAILED: return "unspecified launch failure";
        case CUDA_ERROR_NOT_SUPPORTED: return "operation not supported";
        case CUDA_ERROR_INVALID_PTX: return "a PTX JIT compilation failed";
        case CUDA_ERROR_UNKNOWN: return "unknown error";
        default: return nullptr;
    }
}

// A fault (or a refused call) explained: kept for frugal_emu_last_error and printed as a GPU sanitizer would.
void Report(const std::string& message) {
    g_last_error = message;
    fprintf(stderr, "frugal-cuda-emulator: %s\n", message.c_str());
    fflush(stderr);
}

CUresult Fail(CUresult status, const std::string& message) {
    Report(message);
    return status;
}

// Device entry points: an initialised driver and the one device, ordinal 0.
CUresult Known(CUdevice device) {
    if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
    return device == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE;
}

// Entry points that release resources need an initialised driver and a current context (a sticky error does not
// stop them).
CUresult Current(Context** context) {
    if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
    Context* current = t_current;
    if (!current || current->references == 0) return CUDA_ERROR_INVALID_CONTEXT;
    *context = current;
    return CUDA_SUCCESS;
}

// Every other entry point that needs a context: also no sticky error.
CUresult Ready(Context** context) {
    if (CUresult status = Current(context)) return status;
    return (*context)->sticky;
}

// ---- memory ----

// The allocation holding [p, p + bytes), or why there is none.
const Allocation* Find(uintptr_t p, size_t bytes, std::string* why, const char* what) {
    auto it = g_live.upper_bound(p);
    if (it != g_live.begin()) {
        const Allocation& a = std::prev(it)->second;
        if (p >= a.base && p < a.base + a.bytes) {
            if (p + bytes <= a.base + a.bytes) return &a;
            if (why)
                *why = Format("%s: [0x%lx, +%zu) runs %zu bytes past the end of the %zu-byte allocation at 0x%lx", what,
                              static_cast<unsigned long>(p), bytes, p + bytes - (a.base + a.bytes), a.bytes,
                              static_cast<unsigned long>(a.base));
            return nullptr;
        }
    }
    if (!why) return nullptr;
    auto freed = g_freed.upper_bound(p);
    if (freed != g_freed.begin()) {
        const Allocation& a = std::prev(freed)->second;
        if (p >= a.map && p < a.map + a.mapped) {
            *why = Format("%s: 0x%lx is in the %zu-byte allocation at 0x%lx, which was freed", what,
                          static_cast<unsigned long>(p), a.bytes, static_cast<unsigned long>(a.base));
            return nullptr;
        }
    }
    *why = Format("%s: 0x%lx (%zu bytes) is not in any live device allocation", what, static_cast<unsigned long>(p), bytes);
    return nullptr;
}

// What a faulting address was: past an allocation's end, before its start, freed, a fiber's stack guard, or nothing.
std::string Explain(uintptr_t address, const std::vector<std::pair<void*, void*>>& stacks) {
    for (const auto& [base, a] : g_live) {
        if (address >= a.map && address < a.DataBegin())
            return Format("at offset -%zu of the %zu-byte allocation at 0x%lx: before its start", static_cast<size_t>(a.base - address),
                          a.bytes, static_cast<unsigned long>(a.base));
        if (address >= a.DataEnd() && address < a.map + a.mapped)
            return Format("at offset +%zu of the %zu-byte allocation at 0x%lx: past its end", static_cast<size_t>(address - a.base),
                          a.bytes, static_cast<unsigned long>(a.base));
    }
    auto freed = g_freed.upper_bound(address);
    if (freed != g_freed.begin()) {
        const Allocation& a = std::prev(freed)->second;
        if (address >= a.map && address < a.map + a.mapped)
            return Format("in the %zu-byte allocation at 0x%lx, which was freed", a.bytes, static_cast<unsigned long>(a.base));
    }
    for (const auto& [lo, hi] : stacks)
        if (address >= reinterpret_cast<uintptr_t>(lo) && address < reinterpret_cast<uintptr_t>(hi))
            return "on a thread's stack guard page: the kernel's thread overflowed its stack";
    return "not in any device allocation (a null, host or stray pointer)";
}

// Whether the slack around `a` still holds the canary (else something wrote outside the allocation).
bool CanaryIntact(const Allocation& a, std::string* why) {
    auto check = [&](uintptr_t from, uintptr_t to, const char* where) {
        for (uintptr_t p = from; p < to; ++p)
            if (*reinterpret_cast<const unsigned char*>(p) != kCanary) {
                *why = Format("a write at offset %s%zu of the %zu-byte allocation at 0x%lx: %s", p < a.base ? "-" : "+",
                              static_cast<size_t>(p < a.base ? a.base - p : p - a.base), a.bytes, static_cast<unsigned long>(a.base),
                              where);
                return false;
            }
        return true;
    };
    return check(a.DataBegin(), a.base, "before its start") && check(a.base + a.bytes, a.DataEnd(), "past its end");
}

void Quarantine(Allocation a) {
    mprotect(reinterpret_cast<void*>(a.map), a.mapped, PROT_NONE);
    madvise(reinterpret_cast<void*>(a.map), a.mapped, MADV_DONTNEED);
    g_freed[a.map] = a;
    g_freed_order.push_back(a.map);
    if (g_freed_order.size() > kQuarantine) {
        auto oldest = g_freed.find(g_freed_order.front());
        munmap(reinterpret_cast<void*>(oldest->second.map), oldest->second.mapped);
        g_freed.erase(oldest);
        g_freed_order.pop_front();
    }
}

// ---- execution ----

void Drop(Work& work) {
    if (work.kind == Work::Library && work.library.destroy) work.library.destroy(work.library.state);
    work.library.destroy = nullptr;
}

// One launch shared by the threads that run its blocks: each takes the next block number until none is left or
// one of them failed.
struct BlockQueue {
    const FrugalEmuKernel* kernel;
    const Work* work;
    const void* const* params;
    unsigned long long total;
    std::atomic<unsigned long long> next{0};
    std::atomic<int> stop{0};
};

// What one thread saw: 0 all its blocks ran, 1 the module reported an error, 2 a fault (address, access).
struct BlockOutcome {
    int code = 0;
    unsigned where[3] = {0, 0, 0};
    void* address = nullptr;
    int write = 0;
    std::string message;
    std::vector<std::pair<void*, void*>> stacks;
};

__attribute__((noinline)) int RunBlocks(BlockQueue* queue, FrugalEmuLaunch* launch, KernelGuard* guard, volatile unsigned* where) {
    if (sigsetjmp(guard->jump, 1) != 0) return 2;
    guard->active = 1;
    const unsigned* grid = queue->work->grid;
    for (;;) {
        if (queue->stop.load(std::memory_order_relaxed)) break;
        unsigned long long taken = queue->next.fetch_add(1, std::memory_order_relaxed);
        if (taken >= queue->total) break;
        // Last block first: CUDA promises no order, so a kernel that relies on blocks running in index order fails.
        unsigned long long i = queue->total - 1 - taken;
        unsigned x = static_cast<unsigned>(i % grid[0]);
        unsigned y = static_cast<unsigned>(i / grid[0] % grid[1]);
        unsigned z = static_cast<unsigned>(i / grid[0] / grid[1]);
        where[0] = x, where[1] = y, where[2] = z;
        if (queue->kernel->run_block(launch, x, y, z)) {
            guard->active = 0;
            return 1;
        }
    }
    guard->active = 0;
    return 0;
}

// Runs blocks of `queue` on the calling thread with its own shared memory and fault guard.
void RunShare(BlockQueue* queue, Module* module, BlockOutcome* outcome) {
    std::vector<unsigned char> shared(queue->work->shared);
    FrugalEmuLaunch launch;
    memset(&launch, 0, sizeof launch);
    memcpy(launch.grid, queue->work->grid, sizeof launch.grid);
    memcpy(launch.block, queue->work->block, sizeof launch.block);
    launch.params = queue->params;
    launch.dynamic_shared = shared.data();
    launch.dynamic_shared_bytes = shared.size();
    KernelGuard guard;
    KernelGuard* outer = t_guard;
    t_guard = &guard;
    volatile unsigned where[3] = {0, 0, 0};
    outcome->code = RunBlocks(queue, &launch, &guard, where);
    t_guard = outer;
    for (int d = 0; d < 3; ++d) outcome->where[d] = where[d];
    if (outcome->code != 0) queue->stop.store(1);
    if (outcome->code == 1) outcome->message = launch.error;
    if (outcome->code == 2) {
        outcome->address = guard.address;
        outcome->write = guard.write;
        // Fiber stacks are per OS thread: ask on the thread that faulted.
        if (module->stacks) {
            void* lo[1024];
            void* hi[1024];
            int n = module->stacks(lo, hi, 1024);
            for (int k = 0; k < n; ++k) outcome->stacks.emplace_back(lo[k], hi[k]);
        }
    }
}

// Threads that run blocks beside the launching thread (FRUGAL_EMU_THREADS in all, default one per core). Blocks
// of a launch are independent, as CUDA requires, so they may run in any order and at once.
class BlockPool {
public:
    static BlockPool& Instance() {
        static BlockPool* pool = new BlockPool();   // never destroyed: workers may outlive static destructors
        return *pool;
    }

    void Run(BlockQueue* queue, Module* module, std::vector<BlockOutcome>* outcomes) {
        size_t helpers = std::min<size_t>(workers_, queue->total > 0 ? static_cast<size_t>(queue->total - 1) : 0);
        outcomes->assign(helpers + 1, BlockOutcome());
        {
            std::lock_guard<std::mutex> lock(mutex_);
            queue_ = queue;
            module_ = module;
            outcomes_ = outcomes;
            wanted_ = helpers;
            taken_ = 0;
            done_ = 0;
            ++generation_;
        }
        wake_.notify_all();
        RunShare(queue, module, &(*outcomes)[0]);
        std::unique_lock<std::mutex> lock(mutex_);
        finished_.wait(lock, [&] { return done_ == wanted_; });
        queue_ = nullptr;
    }

private:
    BlockPool() {
        unsigned n = std::thread::hardware_concurrency();
        if (const char* env = getenv("FRUGAL_EMU_THREADS")) n = static_cast<unsigned>(strtoul(env, nullptr, 10));
        workers_ = n > 1 ? n - 1 : 0;
        for (size_t i = 0; i < workers_; ++i) std::thread([this] { Work(); }).detach();
    }

    void Work() {
        unsigned long long seen = 0;
        for (;;) {
            std::unique_lock<std::mutex> lock(mutex_);
            wake_.wait(lock, [&] { return generation_ != seen && taken_ < wanted_; });
            seen = generation_;
            size_t slot = ++taken_;
            BlockQueue* queue = queue_;
            Module* module = module_;
            BlockOutcome* outcome = &(*outcomes_)[slot];
            lock.unlock();
            RunShare(queue, module, outcome);
            lock.lock();
            ++done_;
            if (done_ == wanted_) finished_.notify_all();
        }
    }

    std::mutex mutex_;
    std::condition_variable wake_, finished_;
    size_t workers_ = 0, wanted_ = 0, taken_ = 0, done_ = 0;
    unsigned long long generation_ = 0;
    BlockQueue* queue_ = nullptr;
    Module* module_ = nullptr;
    std::vector<BlockOutcome>* outcomes_ = nullptr;
};

// Runs one kernel launch; on a fault, a module error or a canary hit, the context's error becomes sticky and the
// message is reported.
CUresult RunKernel(Context* context, Work& work) {
    const FrugalEmuKernel* kernel = work.function->kernel;
    std::vector<const void*> params(static_cast<size_t>(kernel->param_count));
    for (size_t i = 0; i < params.size(); ++i) params[i] = work.values.data() + work.offsets[i];
    BlockQueue queue;
    queue.kernel = kernel;
    queue.work = &work;
    queue.params = params.data();
    queue.total = static_cast<unsigned long long>(work.grid[0]) * work.grid[1] * work.grid[2];
    std::vector<BlockOutcome> outcomes;
    BlockPool::Instance().Run(&queue, work.function->module, &outcomes);
    for (const BlockOutcome& o : outcomes) {
        if (o.code == 2) {
            uintptr_t address = reinterpret_cast<uintptr_t>(o.address);
            context->sticky = CUDA_ERROR_ILLEGAL_ADDRESS;
            Report(Format("kernel %s, block (%u, %u, %u) of grid (%u, %u, %u), blocks of (%u, %u, %u): invalid %s at 0x%lx: %s",
                          kernel->name, o.where[0], o.where[1], o.where[2], work.grid[0], work.grid[1], work.grid[2], work.block[0],
                          work.block[1], work.block[2], o.write ? "write" : "read", static_cast<unsigned long>(address),
                          Explain(address, o.stacks).c_str()));
            return context->sticky;
        }
    }
    for (const BlockOutcome& o : outcomes) {
        if (o.code == 1) {
            context->sticky = CUDA_ERROR_LAUNCH_FAILED;
            Report(Format("kernel %s: %s", kernel->name, o.message.c_str()));
            return context->sticky;
        }
    }
    // Canaries of the allocations the launch was given pointers to.
    for (size_t i = 0; i < params.size(); ++i) {
        if (kernel->param_sizes[i] != sizeof(void*)) continue;
        uintptr_t p;
        memcpy(&p, params[i], sizeof p);
        const Allocation* a = Find(p, 0, nullptr, "");
        std::string why;
        if (a && !CanaryIntact(*a, &why)) {
            context->sticky = CUDA_ERROR_ILLEGAL_ADDRESS;
            Report(Format("kernel %s (parameter %zu): %s", kernel->name, i, why.c_str()));
            return context->sticky;
        }
    }
    return CUDA_SUCCESS;
}

// Runs everything queued on `stream`, in order. After an error the rest is dropped and the error stays.
CUresult Flush(Stream* stream) {
    Context* context = stream->context;
    while (!stream->queue.empty()) {
        Work work = std::move(stream->queue.front());
        stream->queue.pop_front();
        if (context->sticky != CUDA_SUCCESS) {
            Drop(work);
            continue;
        }
        switch (work.kind) {
            case Work::Kernel:
                RunKernel(context, work);
                break;
            case Work::Upload: {
                std::string why;
                if (Find(work.destination, work.values.size(), &why, "cuMemcpyHtoDAsync_v2 destination")) {
                    memcpy(reinterpret_cast<void*>(work.destination), work.values.data(), work.values.size());
                } else {
                    context->sticky = CUDA_ERROR_ILLEGAL_ADDRESS;
                    Report(why);
                }
                break;
            }
            case Work::Library: {
                char error[1024] = "";
                if (work.library.run(work.library.state, error, sizeof error) != 0) {
                    context->sticky = CUDA_ERROR_ILLEGAL_ADDRESS;
                    Report(Format("%s: %s", work.library.what, error));
                }
                Drop(work);
                break;
            }
        }
    }
    return context->sticky;
}

CUresult FlushAll(Context* context) {
    if (context->legacy) Flush(context->legacy.get());
    for (auto& s : context->streams) Flush(s.get());
    return context->sticky;
}

Stream* Resolve(Context* context, CUstream stream) {
    if (!stream) {
        if (!context->legacy) context->legacy.reset(new Stream{context, 0, {}});
        return context->legacy.get();
    }
    for (auto& s : context->streams)
        if (reinterpret_cast<CUstream>(s.get()) == stream) return s.get();
    return nullptr;
}

Function* FindFunction(Context* context, CUfunction f) {
    for (auto& m : context->modules)
        for (auto& fn : m->functions)
            if (reinterpret_cast<CUfunction>(fn.get()) == f) return fn.get();
    return nullptr;
}

// Releases everything the primary context owned when its last reference goes.
void Destroy(Context* context) {
    FlushAll(context);
    for (auto& m : context->modules) {
        dlclose(m->library);
        close(m->fd);
    }
    context->modules.clear();
    context->streams.clear();
    context->legacy.reset();
    for (auto it = g_live.begin(); it != g_live.end();) {
        g_used_bytes -= it->second.bytes;
        Quarantine(it->second);
        it = g_live.erase(it);
    }
    context->sticky = CUDA_SUCCESS;
}

// The size of an ELF image from its headers (the driver is given only a pointer).
size_t ElfSize(const unsigned char* image) {
    Elf64_Ehdr header;
    memcpy(&header, image, sizeof header);
    size_t end = header.e_shoff + static_cast<size_t>(header.e_shnum) * header.e_shentsize;
    for (int i = 0; i < header.e_phnum; ++i) {
        Elf64_Phdr ph;
        memcpy(&ph, image + header.e_phoff + static_cast<size_t>(i) * header.e_phentsize, sizeof ph);
        end = std::max<size_t>(end, ph.p_offset + ph.p_filesz);
    }
    return std::max<size_t>(end, sizeof header);
}

}  // namespace

// ---- services for the emulated libraries ----

API int frugal_emu_check_range(CUdeviceptr p, size_t bytes, const char* what, char* why, size_t why_len) {
    std::lock_guard<std::recursive_mutex> lock(g_lock);
    if (bytes == 0) return 1;
    std::string reason;
    if (Find(static_cast<uintptr_t>(p), bytes, &reason, what)) return 1;
    if (why && why_len) snprintf(why, why_len, "%s", reason.c_str());
    return 0;
}

API CUresult frugal_emu_enqueue(CUstream stream, FrugalEmuWork work) {
    std::lock_guard<std::recursive_mutex> lock(g_lock);
    Context* context;
    CUresult status = Ready(&context);
    Stream* s = status == CUDA_SUCCESS ? Resolve(context, stream) : nullptr;
    if (status == CUDA_SUCCESS && !s) status = CUDA_ERROR_INVALID_HANDLE;
    if (status != CUDA_SUCCESS) {
        if (work.destroy) work.destroy(work.state);
        return status;
    }
    Work w(Work::Library);
    w.library = work;
    s->queue.push_back(std::move(w));
    return CUDA_SUCCESS;
}

API int frugal_emu_stream_valid(CUstream stream) {
    std::lock_guard<std::recursive_mutex> lock(g_lock);
    Context* context = t_current;
    return context && context->references > 0 && Resolve(context, stream) != nullptr;
}

API const char* frugal_emu_last_error(void) {
    std::lock_guard<std::recursive_mutex> lock(g_lock);
    return g_last_error.c_str();
}

// ---- the driver API ----

API CUresult cuInit(unsigned int flags) {
    std::lock_guard<std::recursive_mutex> lock(g_lock);
    if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
    if (!g_initialized) {
        if (const char* bytes = getenv("FRUGAL_EMU_MEMORY_BYTES")) g_total_bytes = strtoull(bytes, nullptr, 10);
        InstallFaultHandler();
        g_initialized = true;
    }
    return CUDA_SUCCESS;
}

API CUresult cuDriverGetVersion(int* version) {
    if (!version) return CUDA_ERROR_INVALID_VALUE;
    // The emulated libraries carry CUDA 12's sonames (libcublas.so.12, ...), so the driver says 12.8; every entry point
    // Frugal binds has the same declaration in the 11.8 headers it is built against (docs/cuda-bindings.md).
    *version = 12080;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetCount(int* count) {
    if (!count) return CUDA_ERROR_INVALID_VALUE;
    if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
    *count = 1;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGet(CUdevice* device, int ordinal) {
    if (!device) return CUDA_ERROR_INVALID_VALUE;
    if (CUresult status = Known(ordinal)) return status;
    *device = 0;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetName(char* name, int length, CUdevice device) {
    if (CUresult status = Known(device)) return status;
    if (!name || length <= 0) return CUDA_ERROR_INVALID_VALUE;
    snprintf(name, static_cast<size_t>(length), "Frugal emulated CUDA device (sm_%d%d, on the CPU)", kComputeMajor, kComputeMinor);
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetAttribute(int* value, CUdevice_attribute attribute, CUdevice device) {
    if (!value) return CUDA_ERROR_INVALID_VALUE;
    if (CUresult status = Known(device)) return status;
    switch (attribute) {
        case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *value = FRUGAL_EMU_MAX_THREADS_PER_BLOCK; break;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X: *value = FRUGAL_EMU_MAX_BLOCK_X; break;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y: *value = FRUGAL_EMU_MAX_BLOCK_Y; break;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z: *value = FRUGAL_EMU_MAX_BLOCK_Z; break;
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X: *value = static_cast<int>(FRUGAL_EMU_MAX_GRID_X); break;
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y: *value = FRUGAL_EMU_MAX_GRID_Y; break;
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z: *value = FRUGAL_EMU_MAX_GRID_Z; break;
        case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: *value = FRUGAL_EMU_MAX_SHARED_PER_BLOCK; break;
        case CU_DEVICE_ATTRIBUTE_WARP_SIZE: *value = FRUGAL_EMU_WARP_SIZE; break;
        case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *value = kMultiprocessors; break;
        case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *value = kComputeMajor; break;
        case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *value = kComputeMinor; break;
        default: return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}

API CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice device) {
    if (!bytes) return CUDA_ERROR_INVALID_VALUE;
    if (CUresult status = Known(device)) return status;
    *bytes = g_total_bytes;
    return CUDA_SUCCESS;
}

API CUresult cuDevicePrimaryCtxRetain(CUcontext* context, CUdevice device) {
    std::lock_guard<std::recursive_mutex> lock(g_lock);
    if (!context) return CUDA_ERROR_INVALID_VALUE;
    if (CUresult status = Known(device)) return status;
    g_primary.references++;
    *context = reinterpret_cast<CUcontext>(&g_primary);
    return CUDA_SUCCESS;
}

API CUresult cuDevicePrimaryCtxRelease_v2(CUdevice device) {
    std::lock_guard<std::recursive_mutex> lock(g_lock);
    if (CUresult status = Known(device)) return status;
    if (g_primary.references == 0) return CUDA_ERROR_INVALID_CONTEXT;
    if (--g_primary.references == 0) Destroy(&g_primary);
    return CUDA_SUCCESS;
}

API CUresult cuCtxSetCurrent(CUcontext context) {
    std::lock_guard<std::recursive_mutex> lock(g_lock);
    if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
    if (context && (reinterpret_cast<Context*>(context) != &g_primary || g_primary.references == 0))
        return CUDA_ERROR_INVALID_CONTEXT;
    t_current = reinterpret_cast<Context*>(context);
    return CUDA_SUCCESS;
}

API CUresult cuMemAlloc_v2(CUdeviceptr* pointer, size_t bytes) {
    std::lock_guard<std::recursive_mutex> lock(g_lock);
    Context* context;
    if (CUresult status = Ready(&context)) return status;
    if (!pointer || bytes == 0) return CUDA_ERROR_INVALID_VALUE;
    if (bytes > g_total_bytes - g_used_bytes) return CUDA_ERROR_OUT_OF_MEMORY;
    const size_t page = PageSize();
    const size_t data = RoundUp(RoundUp(bytes, kAlignment), page);
    const size_t mapped = data + 2 * page;
    void* map = mmap(nullptr, mapped, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (map == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
    if (mprotect(static_cast<char*>(map) + page, data, PROT_READ | PROT_WRITE) != 0) {
        munmap(map, mapped);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    Allocation a;
    a.map = reinterpret_cast<uintptr_t>(map);
    a.mapped = mapped;
    a.bytes = bytes;
    a.base = a.DataEnd() - RoundUp(bytes, kAlignment);
    a.serial = ++g_serial;
    a.context = context;
    // Fresh memory holds 0xFF bytes (NaN as F32, F64, F16 and BF16), not the zeros mmap gives: a GPU's memory is
    // not cleared, and a kernel reading what nobody wrote should show.
    memset(reinterpret_cast<void*>(a.base), kFresh, bytes);
    memset(reinterpret_cast<void*>(a.DataBegin()), kCanary, a.base - a.DataBegin());
    memset(reinterpret_cast<void*>(a.base + bytes), kCanary, a.DataEnd() - (a.base + bytes));
    g_live[a.base] = a;
    g_used_bytes += bytes;
    *pointer = static_cast<CUdeviceptr>(a.base);
    return CUDA_SUCCESS;
}

API CUresult cuMemFree_v2(CUdeviceptr pointer) {
    std::lock_guard<std::recursive_mutex> lock(g_lock);
    Context* context;
    if (CUresult status = Ready(&context)) return status;
    if (pointer == 0) return CUDA_SUCCESS;
    auto it = g_live.find(static_cast<uintptr_t>(pointer));
    if (it == g_live.end()) {
        std::string why;
        Find(static_cast<uintptr_t>(pointer), 1, &why, "cuMemFree_v2");
        return Fail(CUDA_ERROR_INVALID_VALUE, why + " (not the start of a live allocation)");
    }
    // Freeing waits for the work that may still use the memory, as cuMemFree's implicit synchronisation does.
    if (CUresult status = FlushAll(context)) return status;
    std::string why;
    if (!CanaryIntact(it->second, &why)) {
        context->sticky = CUDA_ERROR_ILLEGAL_ADDRESS;
        return Fail(context->sticky, "cuMemFree_v2: found " + why);
    }
    g_used_bytes -= it->second.bytes;
    Quarantine(it->second);
    g_live.erase(it);
    return CUDA_SUCCESS;
}

API CUresult cuMemGetInfo_v2(size_t* free, size_t* total) {
    std::lock_guard<std::recursive_mutex> lock(g_lock);
    Context* context;
    if (CUresult status = Ready(&context)) return status;
    if (!free || !total) return CUDA_ERROR_INVALID_VALUE;
    *free = g_total_bytes - g_used_bytes;
    *total = g_total_bytes;
    return CUDA_SUCCESS;
}

API CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr destination, const void* source, size_t bytes, CUstream stream) {
    std::lock_guard<std::recursive_mutex> lock(g_lock);
    Context* context;
    if (CUresult status = Ready(&context)) return status;
    Stream* s = Resolve(context, stream);
    if (!s) return CUDA_ERROR_INVALID_HANDLE;
    if (bytes == 0) return CUDA_SUCCESS;
    std::string why;
    if (!source) return Fail(CUDA_ERROR_INVALID_VALUE, "cuMemcpyHtoDAsync_v2: null source");
    if (!Find(static_cast<uintptr_t>(destination), bytes, &why, "cuMemcpyHtoDAsync_v2 destination"))
        return Fail(CUDA_ERROR_INVALID_VALUE, why);
    // Pageable memory is staged before the call returns; the copy into device memory happens in stream order.
    Work w(Work::Upload);
    w.destination = static_cast<uintptr_t>(destination);
    w.values.assign(static_cast<const unsigned char*>(source), static_cast<const unsigned char*>(source) + bytes);
    s->queue.push_back(std::move(w));
    return CUDA_SUCCESS;
}

API CUresult cuMemcpyDtoHAsync_v2(void* destination, CUdeviceptr source, size_t bytes, CUstream stream) {
    std::lock_guard<std::recursive_mutex> lock(g_lock);
    Context* context;
    if (CUresult status = Ready(&context)) return status;
    Stream* s = Resolve(context, stream);
    if (!s) return CUDA_ERROR_INVALID_HANDLE;
    if (bytes == 0) return CUDA_SUCCESS;
    std::string why;
    if (!destination) return Fail(CUDA_ERROR_INVALID_VALUE, "cuMemcpyDtoHAsync_v2: null destination");
    if (!Find(static_cast<uintptr_t>(source), bytes, &why, "cuMemcpyDtoHAsync_v2 source")) return Fail(CUDA_ERROR_INVALID_VALUE, why);
    // To pageable memory the copy is complete when the call returns: the work before it runs first.
    if (CUresult status = Flush(s)) return status;
    memcpy(destination, reinterpret_cast<const void*>(source), bytes);
    return CUDA_SUCCESS;
}

API CUresult cuStreamCreate(CUstream* stream, unsigned int flags) {
    std::lock_guard<std::recursive_mutex> lock(g_lock);
    Context* context;
    if (CUresult status = Ready(&context)) return status;
    if (!stream || (flags & ~static_cast<unsigned>(CU_STREAM_NON_BLOCKING))) return CUDA_ERROR_INVALID_VALUE;
    context->streams.emplace_back(new Stream{context, flags, {}});
    *stream = reinterpret_cast<CUstream>(context->streams.back().get());
    return CUDA_SUCCESS;
}

API CUresult cuStreamDestroy_v2(CUstream stream) {
    std::lock_guard<std::recursive_mutex> lock(g_lock);
    Context* context;
    if (CUresult status = Current(&context)) return status;
    for (auto it = context->streams.begin(); it != context->streams.end(); ++it) {
        if (reinterpret_cast<CUstream>(it->get()) != stream) continue;
        // Work still queued completes before the stream's resources go, as the driver documents.
        Flush(it->get());
        context->streams.erase(it);
        return CUDA_SUCCESS;
    }
    return CUDA_ERROR_INVALID_HANDLE;
}

API CUresult cuStreamSynchronize(CUstream stream) {
    std::lock_guard<std::recursive_mutex> lock(g_lock);
    Context* context;
    if (CUresult status = Ready(&context)) return status;
    Stream* s = Resolve(context, stream);
    if (!s) return CUDA_ERROR_INVALID_HANDLE;
    return Flush(s);
}

API CUresult cuModuleLoadData(CUmodule* module, const void* image) {
    std::lock_guard<std::recursive_mutex> lock(g_lock);
    Context* context;
    if (CUresult status = Ready(&context)) return status;
    if (!module || !image) return CUDA_ERROR_INVALID_VALUE;
    const unsigned char* bytes = static_cast<const unsigned char*>(image);
    if (memcmp(bytes, ELFMAG, SELFMAG) != 0)
        return Fail(CUDA_ERROR_INVALID_IMAGE, "cuModuleLoadData: the image is not ELF (PTX or fatbin images are not supported by the emulator)");
    Elf64_Ehdr header;
    memcpy(&header, bytes, sizeof header);
    if (header.e_ident[EI_CLASS] != ELFCLASS64 || header.e_machine != EM_X86_64 || header.e_type != ET_DYN)
        return Fail(CUDA_ERROR_NO_BINARY_FOR_GPU,
                    Format("cuModuleLoadData: ELF machine %u type %u is not an emulator module (a CUBIN for a real GPU?)", header.e_machine, header.e_type));
    int fd = memfd_create("frugal-emulated-module", MFD_CLOEXEC);
    if (fd < 0) return Fail(CUDA_ERROR_UNKNOWN, Format("cuModuleLoadData: memfd_create failed (errno %d)", errno));
    size_t size = ElfSize(bytes), written = 0;
    while (written < size) {
        ssize_t n = write(fd, bytes + written, size - written);
        if (n <= 0) {
            close(fd);
            return Fail(CUDA_ERROR_UNKNOWN, "cuModuleLoadData: could not stage the module");
        }
        written += static_cast<size_t>(n);
    }
    // The descriptor stays open while the module is loaded, so no two loaded modules share a path.
    std::string path = Format("/proc/self/fd/%d", fd);
    void* library = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!library) {
        close(fd);
        return Fail(CUDA_ERROR_INVALID_IMAGE, Format("cuModuleLoadData: %s", dlerror()));
    }
    auto kernels = reinterpret_cast<FrugalEmuKernelsFn>(dlsym(library, FRUGAL_EMU_KERNELS_SYMBOL));
    int count = 0;
    const FrugalEmuKernel* table = kernels ? kernels(FRUGAL_EMU_ABI_VERSION, &count) : nullptr;
    if (!table && count != 0) {
        dlclose(library);
        close(fd);
        return Fail(CUDA_ERROR_INVALID_IMAGE, "cuModuleLoadData: the module lacks a kernel table of ABI version " +
                                                  std::to_string(FRUGAL_EMU_ABI_VERSION));
    }
    if (!kernels) {
        dlclose(library);
        close(fd);
        return Fail(CUDA_ERROR_INVALID_IMAGE, "cuModuleLoadData: not a module of the emulated NVRTC (no " FRUGAL_EMU_KERNELS_SYMBOL ")");
    }
    auto m = std::make_unique<Module>();
    m->context = context;
    m->library = library;
    m->fd = fd;
    m->stacks = reinterpret_cast<FrugalEmuStacksFn>(dlsym(library, FRUGAL_EMU_STACKS_SYMBOL));
    for (int i = 0; i < count; ++i) m->functions.emplace_back(new Function{m.get(), &table[i]});
    *module = reinterpret_cast<CUmodule>(m.get());
    context->modules.push_back(std::move(m));
    return CUDA_SUCCESS;
}

API CUresult cuModuleUnload(CUmodule module) {
    std::lock_guard<std::recursive_mutex> lock(g_lock);
    Context* context;
    if (CUresult status = Current(&context)) return status;
    for (auto it = context->modules.begin(); it != context->modules.end(); ++it) {
        if (reinterpret_cast<CUmodule>(it->get()) != module) continue;
        FlushAll(context);   // queued launches of its kernels run first
        dlclose((*it)->library);
        close((*it)->fd);
        context->modules.erase(it);
        return CUDA_SUCCESS;
    }
    return CUDA_ERROR_INVALID_HANDLE;
}

API CUresult cuModuleGetFunction(CUfunction* function, CUmodule module, const char* name) {
    std::lock_guard<std::recursive_mutex> lock(g_lock);
    Context* context;
    if (CUresult status = Ready(&context)) return status;
    if (!function || !name) return CUDA_ERROR_INVALID_VALUE;
    for (auto& m : context->modules) {
        if (reinterpret_cast<CUmodule>(m.get()) != module) continue;
        for (auto& f : m->functions)
            if (strcmp(f->kernel->name, name) == 0) {
                *function = reinterpret_cast<CUfunction>(f.get());
                return CUDA_SUCCESS;
            }
        return CUDA_ERROR_NOT_FOUND;
    }
    return CUDA_ERROR_INVALID_HANDLE;
}

API CUresult cuLaunchKernel(CUfunction f, unsigned int gridX, unsigned int gridY, unsigned int gridZ, unsigned int blockX,
                            unsigned int blockY, unsigned int blockZ, unsigned int sharedBytes, CUstream stream, void** params,
                            void** extra) {
    std::lock_guard<std::recursive_mutex> lock(g_lock);
    Context* context;
    if (CUresult status = Ready(&context)) return status;
    Function* function = FindFunction(context, f);
    if (!function) return CUDA_ERROR_INVALID_HANDLE;
    Stream* s = Resolve(context, stream);
    if (!s) return CUDA_ERROR_INVALID_HANDLE;
    const FrugalEmuKernel* kernel = function->kernel;
    if (gridX == 0 || gridY == 0 || gridZ == 0 || blockX == 0 || blockY == 0 || blockZ == 0 || gridX > FRUGAL_EMU_MAX_GRID_X ||
        gridY > FRUGAL_EMU_MAX_GRID_Y || gridZ > FRUGAL_EMU_MAX_GRID_Z || blockX > FRUGAL_EMU_MAX_BLOCK_X ||
        blockY > FRUGAL_EMU_MAX_BLOCK_Y || blockZ > FRUGAL_EMU_MAX_BLOCK_Z ||
        static_cast<unsigned long long>(blockX) * blockY * blockZ > FRUGAL_EMU_MAX_THREADS_PER_BLOCK)
        return Fail(CUDA_ERROR_INVALID_VALUE,
                    Format("cuLaunchKernel(%s): grid (%u, %u, %u) of blocks (%u, %u, %u) exceeds sm_90's limits (blocks of at most "
                           "1024 threads, (1024, 1024, 64) per axis; grids of (2^31 - 1, 65535, 65535))",
                           kernel->name, gridX, gridY, gridZ, blockX, blockY, blockZ));
    if (sharedBytes > FRUGAL_EMU_MAX_SHARED_PER_BLOCK)
        return Fail(CUDA_ERROR_INVALID_VALUE, Format("cuLaunchKernel(%s): %u bytes of dynamic shared memory exceed the %d a block may use",
                                                     kernel->name, sharedBytes, FRUGAL_EMU_MAX_SHARED_PER_BLOCK));
    if (extra) return Fail(CUDA_ERROR_NOT_SUPPORTED, Format("cuLaunchKernel(%s): the emulator takes kernelParams, not extra", kernel->name));
    if (kernel->param_count > 0 && !params)
        return Fail(CUDA_ERROR_INVALID_VALUE, Format("cuLaunchKernel(%s): %d parameters but kernelParams is null", kernel->name, kernel->param_count));
    Work w(Work::Kernel);
    w.function = function;
    w.grid[0] = gridX, w.grid[1] = gridY, w.grid[2] = gridZ;
    w.block[0] = blockX, w.block[1] = blockY, w.block[2] = blockZ;
    w.shared = sharedBytes;
    size_t offset = 0;
    for (int i = 0; i < kernel->param_count; ++i) {
        offset = RoundUp(offset, std::max<size_t>(kernel->param_aligns[i], 1));
        w.offsets.push_back(offset);
        offset += kernel->param_sizes[i];
    }
    w.values.resize(offset + 16);
    // Each value is copied now: the caller's storage may be reused as soon as the call returns.
    for (int i = 0; i < kernel->param_count; ++i) {
        if (!params[i])
            return Fail(CUDA_ERROR_INVALID_VALUE, Format("cuLaunchKernel(%s): kernelParams[%d] is null", kernel->name, i));
        memcpy(w.values.data() + w.offsets[static_cast<size_t>(i)], params[i], kernel->param_sizes[i]);
    }
    s->queue.push_back(std::move(w));
    return CUDA_SUCCESS;
}

API CUresult cuGetErrorName(CUresult status, const char** name) {
    if (!name) return CUDA_ERROR_INVALID_VALUE;
    *name = Name(status);
    return *name ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

API CUresult cuGetErrorString(CUresult status, const char** text) {
    if (!text) return CUDA_ERROR_INVALID_VALUE;
    *text = Description(status);
    return *text ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}
