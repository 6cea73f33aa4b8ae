// The CUDA-semantics prelude of the emulated device: force-included (g++ -include) when the emulated NVRTC
// (src/nvrtc.cpp) compiles CUDA C for the host as C++17, so that a kernel source becomes a host shared object (a
// "module") implementing the ABI of frugal_emu_abi.h (src/abi.h).
//
// Execution model. The driver calls a kernel's run_block once per block; run_block runs every thread of the block
// as a fiber on the calling OS thread (blocks of one launch may run concurrently on several OS threads). A fiber
// runs threads one after the other until one blocks (at __syncthreads or a warp operation); then another fiber
// takes the next threads, and blocked threads resume when their barrier completes. A kernel that never
// synchronises therefore runs its whole block on one fiber stack with no context switch per thread.
// __shared__ variables are `static thread_local`: one instance per OS thread, which is one per running block.
// The current thread is found from the stack pointer: every fiber stack ends at a 128 KiB boundary, and the
// pointer to the thread running on it lies just below that boundary (no TLS access on the hot path).
//
// Compiled twice by the emulated NVRTC: with FRUGAL_EMU_SCAN defined (preprocessing only, to find the __global__
// functions: there __global__ stays a token and nothing is included), and for real.
#pragma once

#ifndef FRUGAL_EMULATED_CUDA
#define FRUGAL_EMULATED_CUDA 1
#endif
#ifndef __CUDA_ARCH__
#define __CUDA_ARCH__ 520
#endif
// ---- declaration specifiers ----
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
#define __constant__
#define __managed__
#define __grid_constant__
#define __shared__ static thread_local
#ifndef FRUGAL_EMU_SCAN
#define __global__
#endif

#ifdef FRUGAL_EMU_SCAN
#define __noinline__
#ifndef __CUDACC__
#define __CUDACC__ 1
#endif
#else

#include <math.h>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <climits>
#include <cstdarg>
#include <limits>
#include <type_traits>
#include <utility>
#include <dlfcn.h>
#include <pthread.h>
#include <sys/mman.h>
#include "frugal_emu_abi.h"

// After the standard headers, which use __noinline__ themselves inside __attribute__ (and test __CUDACC__).
#define __noinline__ __attribute__((noinline))
#ifndef __CUDACC__
#define __CUDACC__ 1
#endif

// ---- vector types ----
#define FRUGAL_EMU_VEC(T, N, A1, A2, A3, A4)                                                                       \
    struct __attribute__((aligned(A1))) N##1 { T x; };                                                             \
    struct __attribute__((aligned(A2))) N##2 { T x, y; };                                                          \
    struct __attribute__((aligned(A3))) N##3 { T x, y, z; };                                                       \
    struct __attribute__((aligned(A4))) N##4 { T x, y, z, w; };                                                    \
    static inline N##1 make_##N##1(T x) { N##1 r; r.x = x; return r; }                                             \
    static inline N##2 make_##N##2(T x, T y) { N##2 r; r.x = x; r.y = y; return r; }                               \
    static inline N##3 make_##N##3(T x, T y, T z) { N##3 r; r.x = x; r.y = y; r.z = z; return r; }                \
    static inline N##4 make_##N##4(T x, T y, T z, T w) { N##4 r; r.x = x; r.y = y; r.z = z; r.w = w; return r; }
FRUGAL_EMU_VEC(signed char, char, 1, 2, 1, 4)
FRUGAL_EMU_VEC(unsigned char, uchar, 1, 2, 1, 4)
FRUGAL_EMU_VEC(short, short, 2, 4, 2, 8)
FRUGAL_EMU_VEC(unsigned short, ushort, 2, 4, 2, 8)
FRUGAL_EMU_VEC(int, int, 4, 8, 4, 16)
FRUGAL_EMU_VEC(unsigned int, uint, 4, 8, 4, 16)
FRUGAL_EMU_VEC(long, long, 8, 16, 8, 16)
FRUGAL_EMU_VEC(unsigned long, ulong, 8, 16, 8, 16)
FRUGAL_EMU_VEC(long long, longlong, 8, 16, 8, 16)
FRUGAL_EMU_VEC(unsigned long long, ulonglong, 8, 16, 8, 16)
FRUGAL_EMU_VEC(float, float, 4, 8, 4, 16)
FRUGAL_EMU_VEC(double, double, 8, 16, 8, 16)
#undef FRUGAL_EMU_VEC

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};

static constexpr int warpSize = 32;

// ---- the execution engine ----
namespace frugal_emu {

enum : unsigned { T_RUNNING, T_SYNC, T_WARP, T_EXITED, T_RUNNABLE };
enum WarpKind : int {
    W_SHFL, W_SHFL_UP, W_SHFL_DOWN, W_SHFL_XOR, W_BALLOT, W_ANY, W_ALL, W_SYNCWARP, W_MATCH_ANY, W_MATCH_ALL,
    W_RED_ADD, W_RED_MIN_U, W_RED_MAX_U, W_RED_MIN_S, W_RED_MAX_S, W_RED_AND, W_RED_OR, W_RED_XOR, W_ACTIVEMASK
};
static inline const char* warp_op_name(int k) {
    static const char* const names[] = {
        "__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync", "__ballot_sync", "__any_sync",
        "__all_sync", "__syncwarp", "__match_any_sync", "__match_all_sync", "__reduce_add_sync",
        "__reduce_min_sync", "__reduce_max_sync", "__reduce_min_sync", "__reduce_max_sync", "__reduce_and_sync",
        "__reduce_or_sync", "__reduce_xor_sync", "__activemask"};
    return k >= 0 && k < (int)(sizeof(names) / sizeof(names[0])) ? names[k] : "warp operation";
}

constexpr size_t kSlot = 128 * 1024;      // alignment of a stack's top
constexpr size_t kStack = 64 * 1024;      // usable stack
constexpr size_t kGuard = 4096;           // PROT_NONE page below each stack
constexpr unsigned kMaxFibers = FRUGAL_EMU_MAX_THREADS_PER_BLOCK;
constexpr unsigned kMaxThreads = FRUGAL_EMU_MAX_THREADS_PER_BLOCK;

struct Block;
struct Fiber;
struct Pool;

struct Thread {
    uint3 tid;
    unsigned linear;
    unsigned state;
    Block* block;
    Fiber* fiber;
    int wkind;
    unsigned wmask;
    int warg;
    int wwidth;
    unsigned long long wval;
    unsigned long long wres;
};

struct Fiber {
    void* sp;    // saved stack pointer while switched out
    char* top;   // end of the stack (kSlot-aligned); the Thread* slot is at top - 16
};

struct Block {
    FrugalEmuLaunch* launch;
    const char* kernel;
    void (*body)(FrugalEmuLaunch*);
    uint3 bid;
    dim3 bdim, gdim;
    unsigned n, next_start, live, at_sync, warp_waiting, am_waiting;
    unsigned sx, sy, sz;  // coordinates of thread next_start
    unsigned sync_count;
    unsigned used_fibers;
    Pool* pool;
    Thread* threads;
    Thread** runq;
    unsigned rq_head, rq_tail;
    void* sched_sp;
    int failed;
    unsigned mxcsr;
    unsigned short fpucw;
};

struct Pool {
    Pool* next;
    unsigned fiber_count;
    Fiber fibers[kMaxFibers];
    char* chunks[kMaxFibers];  // mmap'ed chunks of stack slots
    size_t chunk_bytes[kMaxFibers];
    unsigned chunk_count;
    Thread threads[kMaxThreads];
    Thread* runq[kMaxThreads];
    Block block;
};

// Every pool of this module (one per OS thread that ran a block), freed when the module is unloaded.
static pthread_mutex_t g_pools_lock = PTHREAD_MUTEX_INITIALIZER;
static Pool* g_pools = nullptr;
static thread_local Pool* tl_pool = nullptr;

__attribute__((destructor)) static void unload_pools() {
    pthread_mutex_lock(&g_pools_lock);
    for (Pool* p = g_pools; p;) {
        Pool* next = p->next;
        for (unsigned i = 0; i < p->chunk_count; ++i) munmap(p->chunks[i], p->chunk_bytes[i]);
        free(p);
        p = next;
    }
    g_pools = nullptr;
    pthread_mutex_unlock(&g_pools_lock);
}

static Pool* pool() {
    Pool* p = tl_pool;
    if (__builtin_expect(p != nullptr, 1)) return p;
    p = (Pool*)calloc(1, sizeof(Pool));
    if (!p) return nullptr;
    pthread_mutex_lock(&g_pools_lock);
    p->next = g_pools;
    g_pools = p;
    pthread_mutex_unlock(&g_pools_lock);
    tl_pool = p;
    return p;
}

// Makes fibers [fiber_count, fiber_count + k) exist. Each stack slot is kSlot bytes, kSlot-aligned; its top kStack
// bytes are the stack, the rest PROT_NONE (the guard page and unused address space).
static bool grow_fibers(Pool* p, unsigned want) {
    while (p->fiber_count < want) {
        unsigned k = want - p->fiber_count;
        if (k < 16) k = 16;
        if (p->fiber_count + k > kMaxFibers) k = kMaxFibers - p->fiber_count;
        size_t bytes = (size_t)(k + 1) * kSlot;
        void* m = mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) return false;
        char* base = (char*)(((uintptr_t)m + kSlot - 1) & ~(uintptr_t)(kSlot - 1));
        for (unsigned i = 0; i < k; ++i) {
            char* top = base + (size_t)(i + 1) * kSlot;
            if (mprotect(top - kStack, kStack, PROT_READ | PROT_WRITE) != 0) {
                munmap(m, bytes);
                return false;
            }
            Fiber& f = p->fibers[p->fiber_count + i];
            f.top = top;
            f.sp = nullptr;
        }
        p->chunks[p->chunk_count] = (char*)m;
        p->chunk_bytes[p->chunk_count++] = bytes;
        p->fiber_count += k;
    }
    return true;
}

// ---- context switch: saves callee-saved registers, MXCSR and the x87 control word on the current stack, stores
// the stack pointer in *save and continues on `to` (a stack saved the same way, or prepared by start_fiber). ----
__attribute__((naked, noinline)) static void switch_ctx(void** /*save*/, void* /*to*/) {
    __asm__ volatile(
        "pushq %rbp\n\t"
        "pushq %rbx\n\t"
        "pushq %r12\n\t"
        "pushq %r13\n\t"
        "pushq %r14\n\t"
        "pushq %r15\n\t"
        "subq $16, %rsp\n\t"
        "stmxcsr (%rsp)\n\t"
        "fnstcw 4(%rsp)\n\t"
        "movq %rsp, (%rdi)\n\t"
        "movq %rsi, %rsp\n\t"
        "ldmxcsr (%rsp)\n\t"
        "fldcw 4(%rsp)\n\t"
        "addq $16, %rsp\n\t"
        "popq %r15\n\t"
        "popq %r14\n\t"
        "popq %r13\n\t"
        "popq %r12\n\t"
        "popq %rbx\n\t"
        "popq %rbp\n\t"
        "ret\n\t");
}

// First code of a fiber: calls r12(rbx) (fiber_main(fiber)), which never returns.
__attribute__((naked, noinline)) static void fiber_trampoline() {
    __asm__ volatile(
        "movq %rbx, %rdi\n\t"
        "callq *%r12\n\t"
        "ud2\n\t");
}

__attribute__((always_inline)) static inline Thread* current_thread() {
    uintptr_t sp;
    __asm__("movq %%rsp, %0" : "=r"(sp));
    return *(Thread**)((sp | (kSlot - 1)) + 1 - 16);
}


static inline void push_runnable(Block* b, Thread* t) {
    t->state = T_RUNNABLE;
    b->runq[b->rq_tail++ % kMaxThreads] = t;
}

static inline uint3 coords_of(const Block* b, unsigned linear) {
    uint3 r;
    r.x = linear % b->bdim.x;
    r.y = (linear / b->bdim.x) % b->bdim.y;
    r.z = linear / (b->bdim.x * b->bdim.y);
    return r;
}

// Writes "kernel 'K' block (x,y,z) thread (x,y,z): <message>" into launch->error and marks the block failed.
__attribute__((format(printf, 3, 4))) static void set_error(Block* b, const Thread* t, const char* fmt, ...) {
    if (b->failed) return;
    b->failed = 1;
    char* e = b->launch->error;
    size_t cap = sizeof(b->launch->error);
    int n;
    if (t)
        n = snprintf(e, cap, "kernel '%s' block (%u,%u,%u) thread (%u,%u,%u): ", b->kernel, b->bid.x, b->bid.y,
                     b->bid.z, t->tid.x, t->tid.y, t->tid.z);
    else
        n = snprintf(e, cap, "kernel '%s' block (%u,%u,%u): ", b->kernel, b->bid.x, b->bid.y, b->bid.z);
    if (n < 0) n = 0;
    if ((size_t)n < cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e + n, cap - n, fmt, ap);
        va_end(ap);
    }
}

// Ends the launch from inside a fiber: the fiber is abandoned (its stack is reused by a later block).
[[noreturn]] static void abort_fiber(Thread* t) {
    void* dead;
    switch_ctx(&dead, t->block->sched_sp);
    __builtin_unreachable();
}

// Completes a __syncthreads: every thread waiting at it continues (`self`, when not null, is running already).
static void release_sync(Block* b, Thread* self) {
    // wres: the predicate count in the low half, the number of threads that arrived in the high half.
    unsigned long long result = b->sync_count | (unsigned long long)b->at_sync << 32;
    b->sync_count = 0;
    b->at_sync = 0;
    for (unsigned i = 0, e = b->next_start; i < e; ++i) {
        Thread* o = &b->threads[i];
        if (o->state != T_SYNC) continue;
        o->wres = result;
        if (o == self)
            o->state = T_RUNNING;
        else
            push_runnable(b, o);
    }
}

// A thread exited while lanes of its warp wait at a warp operation: an error if one of them names it.
static void check_exit(Block* b, Thread* t) {
    unsigned base = t->linear & ~31u, lane = t->linear & 31u;
    unsigned end = base + 32 < b->next_start ? base + 32 : b->next_start;
    for (unsigned i = base; i < end; ++i) {
        Thread* o = &b->threads[i];
        if (o->state == T_WARP && (o->wmask >> lane & 1u)) {
            set_error(b, o, "%s(mask 0x%08x): lane %u (thread (%u,%u,%u)) exited without reaching it",
                      warp_op_name(o->wkind), o->wmask, lane, t->tid.x, t->tid.y, t->tid.z);
            return;
        }
    }
}

// __activemask: a lane waits until no lane of its warp can still run (each exited or blocked); then the lanes
// waiting at __activemask continue with the mask of those lanes (the converged lanes, as on hardware).
static void try_activemask(Block* b, unsigned base, Thread* self) {
    unsigned end = base + 32 < b->n ? base + 32 : b->n;
    if (end > b->next_start) return;  // lanes not started yet
    unsigned m = 0;
    for (unsigned i = base; i < end; ++i) {
        const Thread* o = &b->threads[i];
        if (o->state == T_RUNNING || o->state == T_RUNNABLE) return;
        if (o->state == T_WARP && o->wkind == W_ACTIVEMASK) m |= 1u << (i - base);
    }
    for (unsigned l = 0; l < 32; ++l) {
        if (!(m >> l & 1u)) continue;
        Thread* o = &b->threads[base + l];
        o->wres = m;
        --b->warp_waiting;
        --b->am_waiting;
        if (o == self)
            o->state = T_RUNNING;
        else
            push_runnable(b, o);
    }
}

static void* next_sp(Block* b);

static void fiber_main(Fiber* f) {
    Block* b = &tl_pool->block;
    Thread** slot = (Thread**)(f->top - 16);
    for (;;) {
        if (b->failed) break;
        unsigned i = b->next_start;
        if (i >= b->n) break;
        b->next_start = i + 1;
        Thread* t = &b->threads[i];
        t->tid.x = b->sx;
        t->tid.y = b->sy;
        t->tid.z = b->sz;
        if (++b->sx == b->bdim.x) {
            b->sx = 0;
            if (++b->sy == b->bdim.y) {
                b->sy = 0;
                ++b->sz;
            }
        }
        t->linear = i;
        t->state = T_RUNNING;
        t->block = b;
        t->fiber = f;
        *slot = t;
        b->body(b->launch);
        t->state = T_EXITED;
        --b->live;
        if (b->warp_waiting) {
            check_exit(b, t);
            if (b->failed) break;
            if (b->am_waiting) try_activemask(b, t->linear & ~31u, nullptr);
        }
        if (b->at_sync && b->at_sync == b->live) release_sync(b, nullptr);
    }
    void* dead;
    switch_ctx(&dead, next_sp(b));
    __builtin_unreachable();
}

static void start_fiber(Block* b, Fiber* f) {
    void** sp = (void**)(f->top - 120);  // sp % 16 == 8: after `ret`, rsp % 16 == 0 as before a call
    unsigned* fp = (unsigned*)sp;
    fp[0] = b->mxcsr;
    fp[1] = b->fpucw;
    sp[2] = nullptr;                        // r15
    sp[3] = nullptr;                        // r14
    sp[4] = nullptr;                        // r13
    sp[5] = (void*)&fiber_main;             // r12
    sp[6] = (void*)f;                       // rbx
    sp[7] = nullptr;                        // rbp
    sp[8] = (void*)&fiber_trampoline;       // return address
    f->sp = sp;
}

// Where a fiber that cannot go on continues: a runnable thread, else a new fiber for the next unstarted
// threads, else the scheduler (which then finds the block done, failed or deadlocked).
static void* next_sp(Block* b) {
    if (b->failed) return b->sched_sp;
    if (b->rq_head != b->rq_tail) {
        Thread* t = b->runq[b->rq_head++ % kMaxThreads];
        t->state = T_RUNNING;
        return t->fiber->sp;
    }
    if (b->next_start < b->n) {
        Pool* p = b->pool;
        if (b->used_fibers >= p->fiber_count && !grow_fibers(p, b->used_fibers + 1)) {
            set_error(b, nullptr, "cannot map a fiber stack (%u in use)", b->used_fibers);
            return b->sched_sp;
        }
        Fiber* f = &p->fibers[b->used_fibers++];
        start_fiber(b, f);
        return f->sp;
    }
    return b->sched_sp;
}

static inline void block_here(Thread* t) { switch_ctx(&t->fiber->sp, next_sp(t->block)); }

static void report_deadlock(Block* b) {
    const Thread* first = nullptr;
    unsigned syncs = 0, warps = 0;
    for (unsigned i = 0; i < b->next_start; ++i) {
        const Thread* o = &b->threads[i];
        if (o->state == T_SYNC) ++syncs;
        if (o->state == T_WARP) ++warps;
        if (!first && (o->state == T_SYNC || o->state == T_WARP)) first = o;
    }
    if (!first) {
        set_error(b, nullptr, "deadlock: %u threads neither exited nor wait at a barrier", b->live);
        return;
    }
    if (first->state == T_SYNC) {
        set_error(b, first,
                  "deadlock at __syncthreads: %u of the %u live threads of the block arrived; %u wait at warp "
                  "operations instead",
                  syncs, b->live, warps);
        return;
    }
    unsigned base = first->linear & ~31u;
    const Thread* missing = nullptr;
    for (unsigned l = 0; l < 32; ++l) {
        if (!(first->wmask >> l & 1u)) continue;
        const Thread* o = &b->threads[base + l];
        if (o->state != T_WARP) { missing = o; break; }
    }
    if (missing)
        set_error(b, first,
                  "deadlock at %s(mask 0x%08x): lane %u (thread (%u,%u,%u)) waits at %s instead; %u threads wait at "
                  "__syncthreads, %u at warp operations",
                  warp_op_name(first->wkind), first->wmask, missing->linear & 31u, missing->tid.x, missing->tid.y,
                  missing->tid.z, missing->state == T_SYNC ? "__syncthreads" : "another warp operation", syncs, warps);
    else
        set_error(b, first, "deadlock at %s(mask 0x%08x): %u threads wait at __syncthreads, %u at warp operations",
                  warp_op_name(first->wkind), first->wmask, syncs, warps);
}

// run_block of every kernel: runs threads of block (x, y, z) as fibers until all exited or the launch failed.
static int run_block(FrugalEmuLaunch* launch, unsigned x, unsigned y, unsigned z, const char* kernel,
                     void (*body)(FrugalEmuLaunch*)) {
    Pool* p = pool();
    unsigned long long n64 = (unsigned long long)launch->block[0] * launch->block[1] * launch->block[2];
    if (!p || n64 == 0 || n64 > kMaxThreads) {
        snprintf(launch->error, sizeof(launch->error), "kernel '%s' block (%u,%u,%u): %s", kernel, x, y, z,
                 !p ? "out of memory for the fiber pool" : "the block has no threads or more than 1024");
        return 1;
    }
    Block* b = &p->block;
    b->launch = launch;
    b->kernel = kernel;
    b->body = body;
    b->bid = uint3{x, y, z};
    b->bdim = dim3(launch->block[0], launch->block[1], launch->block[2]);
    b->gdim = dim3(launch->grid[0], launch->grid[1], launch->grid[2]);
    b->n = (unsigned)n64;
    b->next_start = 0;
    b->live = b->n;
    b->at_sync = 0;
    b->warp_waiting = 0;
    b->am_waiting = 0;
    b->sx = b->sy = b->sz = 0;
    b->sync_count = 0;
    b->threads = p->threads;
    b->runq = p->runq;
    b->rq_head = b->rq_tail = 0;
    b->failed = 0;
    {
        unsigned m;
        unsigned short cw;
        __asm__ volatile("stmxcsr %0" : "=m"(m));
        __asm__ volatile("fnstcw %0" : "=m"(cw));
        b->mxcsr = m;
        b->fpucw = cw;
    }
    b->used_fibers = 0;
    b->pool = p;
    for (;;) {
        void* sp = next_sp(b);
        if (sp != b->sched_sp) {
            switch_ctx(&b->sched_sp, sp);
            continue;
        }
        if (!b->failed && b->live != 0) report_deadlock(b);
        break;
    }
    b->launch = nullptr;
    return b->failed ? 1 : 0;
}

// ---- barriers ----
static inline unsigned long long syncthreads(int pred) {
    Thread* t = current_thread();
    Block* b = t->block;
    b->sync_count += pred != 0;
    t->state = T_SYNC;
    if (++b->at_sync == b->live) {
        release_sync(b, t);
        return t->wres;
    }
    if (b->am_waiting) try_activemask(b, t->linear & ~31u, nullptr);
    block_here(t);
    return t->wres;
}

static void complete_warp(Block* b, unsigned base, unsigned mask, Thread* self) {
    Thread* lanes = b->threads + base;
    for (unsigned l = 0; l < 32; ++l) {
        if (!(mask >> l & 1u)) continue;
        Thread* o = &lanes[l];
        unsigned long long r = 0;
        int w = o->wwidth;
        if (w < 1 || w > 32 || (w & (w - 1))) w = 32;
        unsigned seg = l & ~(unsigned)(w - 1);
        int src = -1;
        switch (o->wkind) {
            case W_SHFL: src = (int)(seg + ((unsigned)o->warg & (unsigned)(w - 1))); break;
            case W_SHFL_UP: src = (int)l - o->warg; if (src < (int)seg) src = (int)l; break;
            case W_SHFL_DOWN: src = (int)l + o->warg; if (src >= (int)(seg + w)) src = (int)l; break;
            case W_SHFL_XOR: src = (int)(l ^ (unsigned)o->warg); if (src >= (int)(seg + w)) src = (int)l; break;
            case W_BALLOT: case W_ANY: case W_ALL: {
                unsigned bal = 0;
                for (unsigned k = 0; k < 32; ++k)
                    if ((mask >> k & 1u) && lanes[k].wval) bal |= 1u << k;
                r = o->wkind == W_BALLOT ? bal : o->wkind == W_ANY ? (bal != 0) : (bal == mask);
                break;
            }
            case W_SYNCWARP: break;
            case W_MATCH_ANY: case W_MATCH_ALL: {
                unsigned same = 0;
                for (unsigned k = 0; k < 32; ++k)
                    if ((mask >> k & 1u) && lanes[k].wval == o->wval) same |= 1u << k;
                r = o->wkind == W_MATCH_ANY ? same : (same == mask ? mask : 0);
                break;
            }
            default: {
                unsigned long long acc = 0;
                bool first = true;
                for (unsigned k = 0; k < 32; ++k) {
                    if (!(mask >> k & 1u)) continue;
                    unsigned v = (unsigned)lanes[k].wval;
                    if (first) { acc = v; first = false; continue; }
                    unsigned a = (unsigned)acc;
                    switch (o->wkind) {
                        case W_RED_ADD: a += v; break;
                        case W_RED_MIN_U: a = v < a ? v : a; break;
                        case W_RED_MAX_U: a = v > a ? v : a; break;
                        case W_RED_MIN_S: a = (int)v < (int)a ? v : a; break;
                        case W_RED_MAX_S: a = (int)v > (int)a ? v : a; break;
                        case W_RED_AND: a &= v; break;
                        case W_RED_OR: a |= v; break;
                        default: a ^= v; break;
                    }
                    acc = a;
                }
                r = acc;
                break;
            }
        }
        if (src >= 0) {
            // A source lane outside the mask (or outside the block) is undefined on hardware: the lane keeps its value.
            if (src < 32 && (mask >> src & 1u))
                r = lanes[src].wval;
            else
                r = o->wval;
        }
        o->wres = r;
    }
    for (unsigned l = 0; l < 32; ++l) {
        if (!(mask >> l & 1u)) continue;
        Thread* o = &lanes[l];
        --b->warp_waiting;
        if (o == self)
            o->state = T_RUNNING;
        else
            push_runnable(b, o);
    }
}

static unsigned long long warp_op(int kind, unsigned mask, unsigned long long val, int arg, int width) {
    Thread* t = current_thread();
    Block* b = t->block;
    unsigned base = t->linear & ~31u, lane = t->linear & 31u;
    if (!(mask >> lane & 1u)) {
        set_error(b, t, "%s(mask 0x%08x): the calling lane %u is not in the mask", warp_op_name(kind), mask, lane);
        abort_fiber(t);
    }
    bool all = true;
    for (unsigned l = 0; l < 32; ++l) {
        if (!(mask >> l & 1u) || l == lane) continue;
        unsigned idx = base + l;
        if (idx >= b->n) {
            set_error(b, t, "%s(mask 0x%08x): lane %u does not exist (the block has %u threads)", warp_op_name(kind),
                      mask, l, b->n);
            abort_fiber(t);
        }
        if (idx >= b->next_start) { all = false; continue; }
        Thread* o = &b->threads[idx];
        if (o->state == T_EXITED) {
            set_error(b, t, "%s(mask 0x%08x): lane %u (thread (%u,%u,%u)) has exited", warp_op_name(kind), mask, l,
                      o->tid.x, o->tid.y, o->tid.z);
            abort_fiber(t);
        }
        if (o->state == T_WARP && o->wkind == W_ACTIVEMASK) {
            all = false;
        } else if (o->state == T_WARP) {
            if (o->wkind != kind || o->wmask != mask) {
                set_error(b, t, "%s(mask 0x%08x) while lane %u (thread (%u,%u,%u)) waits at %s(mask 0x%08x)",
                          warp_op_name(kind), mask, l, o->tid.x, o->tid.y, o->tid.z, warp_op_name(o->wkind), o->wmask);
                abort_fiber(t);
            }
        } else {
            all = false;
        }
    }
    t->wkind = kind;
    t->wmask = mask;
    t->wval = val;
    t->warg = arg;
    t->wwidth = width;
    t->state = T_WARP;
    ++b->warp_waiting;
    if (all) {
        complete_warp(b, base, mask, t);
        return t->wres;
    }
    if (b->am_waiting) try_activemask(b, base, nullptr);
    block_here(t);
    return t->wres;
}

template <class T> static inline T warp_value(int kind, unsigned mask, T var, int arg, int width) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "warp shuffles take values of 1 to 8 bytes");
    unsigned long long bits = 0;
    memcpy(&bits, &var, sizeof(T));
    bits = warp_op(kind, mask, bits, arg, width);
    T r;
    memcpy(&r, &bits, sizeof(T));
    return r;
}

static inline unsigned active_mask() {
    Thread* t = current_thread();
    Block* b = t->block;
    t->wkind = W_ACTIVEMASK;
    t->wmask = 0;
    t->state = T_WARP;
    ++b->warp_waiting;
    ++b->am_waiting;
    try_activemask(b, t->linear & ~31u, t);
    if (t->state != T_RUNNING) block_here(t);
    return (unsigned)t->wres;
}

static inline void* dynamic_shared() { return current_thread()->block->launch->dynamic_shared; }

[[noreturn]] static inline void trap(const char* what) {
    Thread* t = current_thread();
    set_error(t->block, t, "%s", what);
    abort_fiber(t);
}

// ---- registration (used by the footer the emulated NVRTC appends) ----
template <class Sig, Sig* F> struct Entry;
template <class... A, void (*F)(A...)> struct Entry<void(A...), F> {
    static constexpr size_t sizes[sizeof...(A) + 1] = {sizeof(A)..., 0};
    static constexpr size_t aligns[sizeof...(A) + 1] = {alignof(A)..., 0};
    static const char* name;
    static void body(FrugalEmuLaunch* l);
    static int run(FrugalEmuLaunch* l, unsigned x, unsigned y, unsigned z) { return run_block(l, x, y, z, name, &body); }
};

template <class T> struct Param {
    alignas(T) unsigned char bytes[sizeof(T)];
    __attribute__((always_inline)) explicit Param(const void* p) { memcpy(bytes, p, sizeof(T)); }
    __attribute__((always_inline)) const T& get() const { return *reinterpret_cast<const T*>(bytes); }
};

template <class... A, size_t... I>
__attribute__((always_inline)) static inline void invoke(void (*f)(A...), const void* const* p, std::index_sequence<I...>) {
    f(Param<A>(p[I]).get()...);
}

template <class... A, void (*F)(A...)> void Entry<void(A...), F>::body(FrugalEmuLaunch* l) {
    invoke(F, l->params, std::index_sequence_for<A...>{});
}
template <class... A, void (*F)(A...)> const char* Entry<void(A...), F>::name = "";

// The name under which the driver finds a kernel: its symbol (the mangled name for C++ linkage), else `plain`.
static const char* symbol_name(void* fn, const char* plain) {
    Dl_info info;
    if (dladdr(fn, &info) && info.dli_sname && info.dli_saddr == fn) return info.dli_sname;
    return plain;
}

template <class Sig, Sig* F> static FrugalEmuKernel kernel(const char* plain) {
    using E = Entry<Sig, F>;
    E::name = symbol_name((void*)F, plain);
    FrugalEmuKernel k;
    k.name = E::name;
    k.param_count = (int)(sizeof(E::sizes) / sizeof(E::sizes[0])) - 1;
    k.param_sizes = E::sizes;
    k.param_aligns = E::aligns;
    k.run_block = &E::run;
    return k;
}

}  // namespace frugal_emu

// Lists the fiber stacks (guard page included) of this module on the calling OS thread.
extern "C" __attribute__((visibility("default"), used)) int frugal_emu_fiber_stacks(void** lo, void** hi, int max) {
    frugal_emu::Pool* p = frugal_emu::tl_pool;
    if (!p) return 0;
    int n = 0;
    for (unsigned i = 0; i < p->fiber_count && n < max; ++i, ++n) {
        lo[n] = p->fibers[i].top - frugal_emu::kStack - frugal_emu::kGuard;
        hi[n] = p->fibers[i].top;
    }
    return n;
}

// Footer helpers: FRUGAL_EMU_KERNEL(name) per kernel, then FRUGAL_EMU_MODULE(table) or FRUGAL_EMU_EMPTY_MODULE.
#define FRUGAL_EMU_KERNEL(name) ::frugal_emu::kernel<decltype(name), &name>(#name)
#define FRUGAL_EMU_MODULE(...)                                                                                       \
    extern "C" __attribute__((visibility("default"), used)) const FrugalEmuKernel* frugal_emu_kernels(int abi,      \
                                                                                                      int* count) { \
        static const FrugalEmuKernel table[] = {__VA_ARGS__};                                                        \
        if (abi != FRUGAL_EMU_ABI_VERSION) {                                                                         \
            if (count) *count = 0;                                                                                   \
            return nullptr;                                                                                          \
        }                                                                                                            \
        if (count) *count = (int)(sizeof(table) / sizeof(table[0]));                                                 \
        return table;                                                                                                \
    }
#define FRUGAL_EMU_EMPTY_MODULE                                                                                      \
    extern "C" __attribute__((visibility("default"), used)) const FrugalEmuKernel* frugal_emu_kernels(int abi,      \
                                                                                                      int* count) { \
        static const FrugalEmuKernel none = {"", 0, nullptr, nullptr, nullptr};                                      \
        if (count) *count = 0;                                                                                       \
        return abi == FRUGAL_EMU_ABI_VERSION ? &none : nullptr;                                                      \
    }

// ---- built-in variables ----
#define threadIdx (static_cast<const uint3&>(::frugal_emu::current_thread()->tid))
#define blockIdx (static_cast<const uint3&>(::frugal_emu::current_thread()->block->bid))
#define blockDim (static_cast<const dim3&>(::frugal_emu::current_thread()->block->bdim))
#define gridDim (static_cast<const dim3&>(::frugal_emu::current_thread()->block->gdim))

// ---- synchronisation and warp operations ----
static inline void __syncthreads() { ::frugal_emu::syncthreads(0); }
static inline int __syncthreads_count(int pred) { return (int)(unsigned)::frugal_emu::syncthreads(pred); }
static inline int __syncthreads_and(int pred) {
    unsigned long long r = ::frugal_emu::syncthreads(pred);
    return (unsigned)r == (unsigned)(r >> 32);
}
static inline int __syncthreads_or(int pred) { return (unsigned)::frugal_emu::syncthreads(pred) != 0; }
static inline void __syncwarp(unsigned mask = 0xffffffffu) { ::frugal_emu::warp_op(::frugal_emu::W_SYNCWARP, mask, 0, 0, 32); }
template <class T> static inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = 32) {
    return ::frugal_emu::warp_value(::frugal_emu::W_SHFL, mask, var, srcLane, width);
}
template <class T> static inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32) {
    return ::frugal_emu::warp_value(::frugal_emu::W_SHFL_UP, mask, var, (int)delta, width);
}
template <class T> static inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32) {
    return ::frugal_emu::warp_value(::frugal_emu::W_SHFL_DOWN, mask, var, (int)delta, width);
}
template <class T> static inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = 32) {
    return ::frugal_emu::warp_value(::frugal_emu::W_SHFL_XOR, mask, var, laneMask, width);
}
static inline unsigned __ballot_sync(unsigned mask, int pred) {
    return (unsigned)::frugal_emu::warp_op(::frugal_emu::W_BALLOT, mask, pred != 0, 0, 32);
}
static inline int __any_sync(unsigned mask, int pred) { return (int)::frugal_emu::warp_op(::frugal_emu::W_ANY, mask, pred != 0, 0, 32); }
static inline int __all_sync(unsigned mask, int pred) { return (int)::frugal_emu::warp_op(::frugal_emu::W_ALL, mask, pred != 0, 0, 32); }
static inline unsigned __activemask() { return ::frugal_emu::active_mask(); }
template <class T> static inline unsigned __match_any_sync(unsigned mask, T value) {
    return (unsigned)::frugal_emu::warp_op(::frugal_emu::W_MATCH_ANY, mask, (unsigned long long)value, 0, 32);
}
template <class T> static inline unsigned __match_all_sync(unsigned mask, T value, int* pred) {
    unsigned r = (unsigned)::frugal_emu::warp_op(::frugal_emu::W_MATCH_ALL, mask, (unsigned long long)value, 0, 32);
    *pred = r != 0;
    return r;
}
static inline unsigned __reduce_add_sync(unsigned mask, unsigned v) { return (unsigned)::frugal_emu::warp_op(::frugal_emu::W_RED_ADD, mask, v, 0, 32); }
static inline int __reduce_add_sync(unsigned mask, int v) { return (int)::frugal_emu::warp_op(::frugal_emu::W_RED_ADD, mask, (unsigned)v, 0, 32); }
static inline unsigned __reduce_min_sync(unsigned mask, unsigned v) { return (unsigned)::frugal_emu::warp_op(::frugal_emu::W_RED_MIN_U, mask, v, 0, 32); }
static inline int __reduce_min_sync(unsigned mask, int v) { return (int)::frugal_emu::warp_op(::frugal_emu::W_RED_MIN_S, mask, (unsigned)v, 0, 32); }
static inline unsigned __reduce_max_sync(unsigned mask, unsigned v) { return (unsigned)::frugal_emu::warp_op(::frugal_emu::W_RED_MAX_U, mask, v, 0, 32); }
static inline int __reduce_max_sync(unsigned mask, int v) { return (int)::frugal_emu::warp_op(::frugal_emu::W_RED_MAX_S, mask, (unsigned)v, 0, 32); }
static inline unsigned __reduce_and_sync(unsigned mask, unsigned v) { return (unsigned)::frugal_emu::warp_op(::frugal_emu::W_RED_AND, mask, v, 0, 32); }
static inline unsigned __reduce_or_sync(unsigned mask, unsigned v) { return (unsigned)::frugal_emu::warp_op(::frugal_emu::W_RED_OR, mask, v, 0, 32); }
static inline unsigned __reduce_xor_sync(unsigned mask, unsigned v) { return (unsigned)::frugal_emu::warp_op(::frugal_emu::W_RED_XOR, mask, v, 0, 32); }

static inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
[[noreturn]] static inline void __trap() { ::frugal_emu::trap("__trap() called"); }
[[noreturn]] static inline void __brkpt() { ::frugal_emu::trap("__brkpt() called"); }
static inline void __nanosleep(unsigned) {}
static inline long long clock64() { return (long long)__builtin_ia32_rdtsc(); }

// ---- atomics (real ones: blocks of a launch run on several OS threads) ----
#define FRUGAL_EMU_ATOMIC_FETCH(NAME, OP, T) \
    static inline T NAME(T* a, T v) { return __atomic_fetch_##OP(a, v, __ATOMIC_SEQ_CST); }
FRUGAL_EMU_ATOMIC_FETCH(atomicAdd, add, int)
FRUGAL_EMU_ATOMIC_FETCH(atomicAdd, add, unsigned int)
FRUGAL_EMU_ATOMIC_FETCH(atomicAdd, add, unsigned long long)
FRUGAL_EMU_ATOMIC_FETCH(atomicSub, sub, int)
FRUGAL_EMU_ATOMIC_FETCH(atomicSub, sub, unsigned int)
FRUGAL_EMU_ATOMIC_FETCH(atomicAnd, and, int)
FRUGAL_EMU_ATOMIC_FETCH(atomicAnd, and, unsigned int)
FRUGAL_EMU_ATOMIC_FETCH(atomicAnd, and, unsigned long long)
FRUGAL_EMU_ATOMIC_FETCH(atomicOr, or, int)
FRUGAL_EMU_ATOMIC_FETCH(atomicOr, or, unsigned int)
FRUGAL_EMU_ATOMIC_FETCH(atomicOr, or, unsigned long long)
FRUGAL_EMU_ATOMIC_FETCH(atomicXor, xor, int)
FRUGAL_EMU_ATOMIC_FETCH(atomicXor, xor, unsigned int)
FRUGAL_EMU_ATOMIC_FETCH(atomicXor, xor, unsigned long long)
#undef FRUGAL_EMU_ATOMIC_FETCH
#define FRUGAL_EMU_ATOMIC_EXCH(T) \
    static inline T atomicExch(T* a, T v) { return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST); }
FRUGAL_EMU_ATOMIC_EXCH(int)
FRUGAL_EMU_ATOMIC_EXCH(unsigned int)
FRUGAL_EMU_ATOMIC_EXCH(unsigned long long)
#undef FRUGAL_EMU_ATOMIC_EXCH
#define FRUGAL_EMU_ATOMIC_CAS(T)                                              \
    static inline T atomicCAS(T* a, T compare, T v) {                         \
        __atomic_compare_exchange_n(a, &compare, v, false, __ATOMIC_SEQ_CST, \
                                    __ATOMIC_SEQ_CST);                        \
        return compare;                                                       \
    }
FRUGAL_EMU_ATOMIC_CAS(int)
FRUGAL_EMU_ATOMIC_CAS(unsigned int)
FRUGAL_EMU_ATOMIC_CAS(unsigned long long)
FRUGAL_EMU_ATOMIC_CAS(unsigned short)
#undef FRUGAL_EMU_ATOMIC_CAS
namespace frugal_emu {
// Atomic read-modify-write of *a through compare-and-swap on its bits: *a = f(old); returns old.
template <class T, class Bits, class F> static inline T atomic_update(T* a, F f) {
    static_assert(sizeof(T) == sizeof(Bits), "bit width");
    Bits* p = reinterpret_cast<Bits*>(a);
    Bits old = __atomic_load_n(p, __ATOMIC_RELAXED), next;
    T ov, nv;
    do {
        memcpy(&ov, &old, sizeof(T));
        nv = f(ov);
        memcpy(&next, &nv, sizeof(T));
    } while (!__atomic_compare_exchange_n(p, &old, next, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
    return ov;
}
}  // namespace frugal_emu
static inline float atomicAdd(float* a, float v) {
    return ::frugal_emu::atomic_update<float, unsigned int>(a, [v](float o) { return o + v; });
}
static inline double atomicAdd(double* a, double v) {
    return ::frugal_emu::atomic_update<double, unsigned long long>(a, [v](double o) { return o + v; });
}
static inline float atomicExch(float* a, float v) {
    return ::frugal_emu::atomic_update<float, unsigned int>(a, [v](float) { return v; });
}
#define FRUGAL_EMU_ATOMIC_MINMAX(T, B)                                                                             \
    static inline T atomicMax(T* a, T v) {                                                                         \
        return ::frugal_emu::atomic_update<T, B>(a, [v](T o) { return v > o ? v : o; });                           \
    }                                                                                                              \
    static inline T atomicMin(T* a, T v) {                                                                         \
        return ::frugal_emu::atomic_update<T, B>(a, [v](T o) { return v < o ? v : o; });                           \
    }
FRUGAL_EMU_ATOMIC_MINMAX(int, unsigned int)
FRUGAL_EMU_ATOMIC_MINMAX(unsigned int, unsigned int)
FRUGAL_EMU_ATOMIC_MINMAX(long long, unsigned long long)
FRUGAL_EMU_ATOMIC_MINMAX(unsigned long long, unsigned long long)
#undef FRUGAL_EMU_ATOMIC_MINMAX
static inline unsigned int atomicInc(unsigned int* a, unsigned int m) {
    return ::frugal_emu::atomic_update<unsigned int, unsigned int>(a, [m](unsigned int o) { return o >= m ? 0u : o + 1; });
}
static inline unsigned int atomicDec(unsigned int* a, unsigned int m) {
    return ::frugal_emu::atomic_update<unsigned int, unsigned int>(
        a, [m](unsigned int o) { return (o == 0 || o > m) ? m : o - 1; });
}
#define atomicAdd_block atomicAdd
#define atomicAdd_system atomicAdd
#define atomicSub_block atomicSub
#define atomicSub_system atomicSub
#define atomicExch_block atomicExch
#define atomicExch_system atomicExch
#define atomicMin_block atomicMin
#define atomicMin_system atomicMin
#define atomicMax_block atomicMax
#define atomicMax_system atomicMax
#define atomicCAS_block atomicCAS
#define atomicCAS_system atomicCAS
#define atomicAnd_block atomicAnd
#define atomicOr_block atomicOr
#define atomicXor_block atomicXor

// ---- loads and stores with cache hints ----
template <class T> static inline T __ldg(const T* p) { return *p; }
template <class T> static inline T __ldcg(const T* p) { return *p; }
template <class T> static inline T __ldca(const T* p) { return *p; }
template <class T> static inline T __ldcs(const T* p) { return *p; }
template <class T> static inline T __ldlu(const T* p) { return *p; }
template <class T> static inline T __ldcv(const T* p) { return *p; }
template <class T> static inline void __stwb(T* p, T v) { *p = v; }
template <class T> static inline void __stcg(T* p, T v) { *p = v; }
template <class T> static inline void __stcs(T* p, T v) { *p = v; }
template <class T> static inline void __stwt(T* p, T v) { *p = v; }

// ---- min and max: CUDA's overloads follow the usual arithmetic conversions; floating point as fmax/fmin ----
template <class A, class B, class = std::enable_if_t<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value>>
static inline std::common_type_t<decltype(+A()), decltype(+B())> min(A a, B b) {
    using R = std::common_type_t<decltype(+A()), decltype(+B())>;
    if constexpr (std::is_floating_point<R>::value) return std::fmin((R)a, (R)b);
    else return (R)a < (R)b ? (R)a : (R)b;
}
template <class A, class B, class = std::enable_if_t<std::is_arithmetic<A>::value && std::is_arithmetic<B>::value>>
static inline std::common_type_t<decltype(+A()), decltype(+B())> max(A a, B b) {
    using R = std::common_type_t<decltype(+A()), decltype(+B())>;
    if constexpr (std::is_floating_point<R>::value) return std::fmax((R)a, (R)b);
    else return (R)a > (R)b ? (R)a : (R)b;
}
static inline long long llmin(long long a, long long b) { return a < b ? a : b; }
static inline long long llmax(long long a, long long b) { return a > b ? a : b; }
static inline unsigned int umin(unsigned int a, unsigned int b) { return a < b ? a : b; }
static inline unsigned int umax(unsigned int a, unsigned int b) { return a > b ? a : b; }
static inline unsigned long long ullmin(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
static inline unsigned long long ullmax(unsigned long long a, unsigned long long b) { return a > b ? a : b; }

// ---- math beyond <cmath> ----
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
static inline float rcbrtf(float x) { return 1.0f / cbrtf(x); }
static inline double rcbrt(double x) { return 1.0 / cbrt(x); }
static inline float sinpif(float x) { return sinf((float)M_PI * x); }
static inline float cospif(float x) { return cosf((float)M_PI * x); }
static inline double sinpi(double x) { return sin(M_PI * x); }
static inline double cospi(double x) { return cos(M_PI * x); }
static inline void sincospif(float x, float* s, float* c) { *s = sinpif(x); *c = cospif(x); }
static inline void sincospi(double x, double* s, double* c) { *s = sinpi(x); *c = cospi(x); }
static inline float normcdff(float x) { return 0.5f * erfcf(-x * (float)M_SQRT1_2); }
static inline double normcdf(double x) { return 0.5 * erfc(-x * M_SQRT1_2); }
static inline float saturatef(float x) { return x != x ? 0.0f : x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x; }
static inline float __saturatef(float x) { return saturatef(x); }
// glibc declares these names itself (its internal aliases): macros, so that CUDA's meaning wins.
#define __expf(x) expf(x)
#define __exp10f(x) exp10f(x)
#define __logf(x) logf(x)
#define __log2f(x) log2f(x)
#define __log10f(x) log10f(x)
#define __powf(x, y) powf(x, y)
#define __sinf(x) sinf(x)
#define __cosf(x) cosf(x)
#define __tanf(x) tanf(x)
#define __sincosf(x, s, c) sincosf(x, s, c)
static inline float __fdividef(float a, float b) { return a / b; }
static inline float __frcp_rn(float x) { return 1.0f / x; }
static inline double __drcp_rn(double x) { return 1.0 / x; }
static inline float __fsqrt_rn(float x) { return sqrtf(x); }
static inline double __dsqrt_rn(double x) { return sqrt(x); }
static inline float __frsqrt_rn(float x) { return 1.0f / sqrtf(x); }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __ddiv_rn(double a, double b) { return a / b; }
static inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }

// ---- bit casts and conversions ----
namespace frugal_emu {
template <class To, class From> static inline To bits(From f) {
    static_assert(sizeof(To) == sizeof(From), "bit cast");
    To t;
    memcpy(&t, &f, sizeof(To));
    return t;
}
// Rounds with `mode` (nearbyint: the current mode, round-to-nearest-even; trunc; ceil; floor) and saturates as
// CUDA's conversions do (NaN to 0).
template <class I, class F, class R> static inline I to_int(F x, R round) {
    if (x != x) return 0;
    F r = round(x);
    if (r <= (F)std::numeric_limits<I>::min()) return std::numeric_limits<I>::min();
    if (r >= (F)std::numeric_limits<I>::max()) return std::numeric_limits<I>::max();
    return (I)r;
}
}  // namespace frugal_emu
static inline int __float_as_int(float f) { return ::frugal_emu::bits<int>(f); }
static inline unsigned int __float_as_uint(float f) { return ::frugal_emu::bits<unsigned int>(f); }
static inline float __int_as_float(int i) { return ::frugal_emu::bits<float>(i); }
static inline float __uint_as_float(unsigned int u) { return ::frugal_emu::bits<float>(u); }
static inline long long __double_as_longlong(double d) { return ::frugal_emu::bits<long long>(d); }
static inline double __longlong_as_double(long long i) { return ::frugal_emu::bits<double>(i); }
static inline int __double2hiint(double d) { return (int)(__double_as_longlong(d) >> 32); }
static inline int __double2loint(double d) { return (int)__double_as_longlong(d); }
static inline double __hiloint2double(int hi, int lo) {
    return __longlong_as_double((long long)(((unsigned long long)(unsigned)hi << 32) | (unsigned)lo));
}
#define FRUGAL_EMU_CVT(F, FN, I, IN)                                                                                   \
    static inline I __##FN##2##IN##_rn(F x) { return ::frugal_emu::to_int<I>(x, [](F v) { return std::nearbyint(v); }); } \
    static inline I __##FN##2##IN##_rz(F x) { return ::frugal_emu::to_int<I>(x, [](F v) { return std::trunc(v); }); }     \
    static inline I __##FN##2##IN##_ru(F x) { return ::frugal_emu::to_int<I>(x, [](F v) { return std::ceil(v); }); }      \
    static inline I __##FN##2##IN##_rd(F x) { return ::frugal_emu::to_int<I>(x, [](F v) { return std::floor(v); }); }
FRUGAL_EMU_CVT(float, float, int, int)
FRUGAL_EMU_CVT(float, float, unsigned int, uint)
FRUGAL_EMU_CVT(float, float, long long, ll)
FRUGAL_EMU_CVT(float, float, unsigned long long, ull)
FRUGAL_EMU_CVT(double, double, int, int)
FRUGAL_EMU_CVT(double, double, unsigned int, uint)
FRUGAL_EMU_CVT(double, double, long long, ll)
FRUGAL_EMU_CVT(double, double, unsigned long long, ull)
#undef FRUGAL_EMU_CVT
static inline float __double2float_rn(double x) { return (float)x; }
static inline float __int2float_rn(int x) { return (float)x; }
static inline float __uint2float_rn(unsigned int x) { return (float)x; }
static inline float __ll2float_rn(long long x) { return (float)x; }
static inline float __ull2float_rn(unsigned long long x) { return (float)x; }
static inline double __int2double_rn(int x) { return (double)x; }
static inline double __uint2double_rn(unsigned int x) { return (double)x; }
static inline double __ll2double_rn(long long x) { return (double)x; }
static inline double __ull2double_rn(unsigned long long x) { return (double)x; }

// ---- integer intrinsics ----
static inline int __popc(unsigned int x) { return __builtin_popcount(x); }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
static inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline int __ffsll(long long x) { return __builtin_ffsll(x); }
static inline unsigned int __brev(unsigned int x) {
    x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
    x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
    x = ((x >> 4) & 0x0F0F0F0Fu) | ((x & 0x0F0F0F0Fu) << 4);
    return __builtin_bswap32(x);
}
static inline unsigned long long __brevll(unsigned long long x) {
    return ((unsigned long long)__brev((unsigned)x) << 32) | __brev((unsigned)(x >> 32));
}
static inline unsigned int __byte_perm(unsigned int x, unsigned int y, unsigned int s) {
    unsigned long long v = ((unsigned long long)y << 32) | x;
    unsigned r = 0;
    for (int i = 0; i < 4; ++i) r |= (unsigned)((v >> (((s >> (4 * i)) & 7) * 8)) & 0xFF) << (8 * i);
    return r;
}
static inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
static inline unsigned int __umulhi(unsigned int a, unsigned int b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
static inline long long __mul64hi(long long a, long long b) { return (long long)(((__int128)a * b) >> 64); }
static inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
static inline int __mul24(int a, int b) { return (int)((unsigned)(a << 8 >> 8) * (unsigned)(b << 8 >> 8)); }
static inline unsigned int __umul24(unsigned int a, unsigned int b) { return (a & 0xFFFFFFu) * (b & 0xFFFFFFu); }
static inline unsigned int __sad(int a, int b, unsigned int c) { return c + (unsigned)(a > b ? a - b : b - a); }
static inline unsigned int __usad(unsigned int a, unsigned int b, unsigned int c) { return c + (a > b ? a - b : b - a); }
static inline int __hadd(int a, int b) { return (int)(((long long)a + b) >> 1); }
static inline int __rhadd(int a, int b) { return (int)(((long long)a + b + 1) >> 1); }
static inline unsigned int __uhadd(unsigned int a, unsigned int b) { return (unsigned)(((unsigned long long)a + b) >> 1); }
static inline unsigned int __urhadd(unsigned int a, unsigned int b) { return (unsigned)(((unsigned long long)a + b + 1) >> 1); }
static inline unsigned int __funnelshift_l(unsigned int lo, unsigned int hi, unsigned int s) {
    return (unsigned)((((unsigned long long)hi << 32 | lo) << (s & 31)) >> 32);
}
static inline unsigned int __funnelshift_r(unsigned int lo, unsigned int hi, unsigned int s) {
    return (unsigned)(((unsigned long long)hi << 32 | lo) >> (s & 31));
}
static inline unsigned int __funnelshift_lc(unsigned int lo, unsigned int hi, unsigned int s) {
    return s >= 32 ? lo : __funnelshift_l(lo, hi, s);
}
static inline unsigned int __funnelshift_rc(unsigned int lo, unsigned int hi, unsigned int s) {
    return s >= 32 ? hi : __funnelshift_r(lo, hi, s);
}

// ---- inline PTX: the emulated NVRTC rewrites `asm("op %0, %1;" : "=x"(a) : "y"(b))` into
// frugal_emu_ptx::op(a, b) (dots as underscores; %%reg into frugal_emu_ptx::sreg_reg()) ----
namespace frugal_emu_ptx {
static inline float half_to_float(unsigned short h) {
    unsigned sign = (unsigned)(h & 0x8000u) << 16, e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
    unsigned u;
    if (e == 0x1F) u = sign | 0x7F800000u | (m << 13);
    else if (e != 0) u = sign | ((e + 112) << 23) | (m << 13);
    else if (m == 0) u = sign;
    else {
        int s = __builtin_clz(m) - 21;  // normalise the subnormal
        m = (m << s) & 0x3FFu;
        u = sign | ((unsigned)(113 - s) << 23) | (m << 13);
    }
    return ::frugal_emu::bits<float>(u);
}
// Round to nearest even, as PTX cvt.rn.f16.f64 (NaN to the canonical 0x7FFF).
static inline unsigned short double_to_half(double v) {
    unsigned long long u = ::frugal_emu::bits<unsigned long long>(v);
    unsigned short sign = (unsigned short)((u >> 48) & 0x8000u);
    int e = (int)((u >> 52) & 0x7FF);
    unsigned long long m = u & ((1ull << 52) - 1);
    if (e == 0x7FF) return m ? 0x7FFF : (unsigned short)(sign | 0x7C00u);
    if (e == 0) return sign;  // double subnormals are far below half's
    e -= 1023;
    if (e > 15) return (unsigned short)(sign | 0x7C00u);
    if (e < -26) return sign;
    m |= 1ull << 52;
    int shift = e >= -14 ? 42 : 42 + (-14 - e);
    unsigned long long r = m >> shift, rem = m & ((1ull << shift) - 1), halfway = 1ull << (shift - 1);
    if (rem > halfway || (rem == halfway && (r & 1))) ++r;
    unsigned long long out = e >= -14 ? ((unsigned long long)(e + 14) << 10) + r : r;
    if (out >= 0x7C00u) return (unsigned short)(sign | 0x7C00u);
    return (unsigned short)(sign | out);
}
static inline unsigned short float_to_bf16(float f) {
    unsigned u = ::frugal_emu::bits<unsigned>(f);
    if (f != f) return 0x7FFF;
    return (unsigned short)((u + 0x7FFFu + ((u >> 16) & 1)) >> 16);
}
template <class D, class S> static inline void put(D& d, S s) {
    static_assert(sizeof(D) == sizeof(S), "inline PTX operand of the wrong size");
    memcpy(&d, &s, sizeof(D));
}
template <class S> static inline unsigned short u16(S s) {
    static_assert(sizeof(S) == 2, "16-bit PTX operand expected");
    unsigned short h;
    memcpy(&h, &s, 2);
    return h;
}
template <class D, class S> static inline void cvt_f32_f16(D& d, S h) { put(d, half_to_float(u16(h))); }
template <class D, class S> static inline void cvt_f64_f16(D& d, S h) { put(d, (double)half_to_float(u16(h))); }
template <class D> static inline void cvt_rn_f16_f32(D& d, float f) { put(d, double_to_half((double)f)); }
template <class D> static inline void cvt_rn_f16_f64(D& d, double v) { put(d, double_to_half(v)); }
template <class D> static inline void cvt_rn_bf16_f32(D& d, float f) { put(d, float_to_bf16(f)); }
template <class D, class S> static inline void cvt_f32_bf16(D& d, S h) { put(d, ::frugal_emu::bits<float>((unsigned)u16(h) << 16)); }
template <class D, class S> static inline void mov_b16(D& d, S s) { put(d, s); }
template <class D, class S> static inline void mov_b32(D& d, S s) { put(d, s); }
template <class D, class S> static inline void mov_b64(D& d, S s) { put(d, s); }
template <class D, class S> static inline void mov_u32(D& d, S s) { d = (D)s; }
template <class D, class S> static inline void mov_s32(D& d, S s) { d = (D)s; }
template <class D, class S> static inline void mov_u64(D& d, S s) { d = (D)s; }
template <class D, class S> static inline void mov_s64(D& d, S s) { d = (D)s; }
template <class D, class S> static inline void mov_f32(D& d, S s) { d = (D)s; }
template <class D, class S> static inline void mov_f64(D& d, S s) { d = (D)s; }
static inline void membar_gl() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void membar_cta() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void membar_sys() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void fence_sc_gpu() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void fence_acq_rel_gpu() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
[[noreturn]] static inline void trap() { ::frugal_emu::trap("inline PTX trap executed"); }
[[noreturn]] static inline void brkpt() { ::frugal_emu::trap("inline PTX brkpt executed"); }
template <class S> static inline void nanosleep_u32(S) {}
static inline unsigned sreg_laneid() { return ::frugal_emu::current_thread()->linear & 31u; }
static inline unsigned sreg_warpid() { return ::frugal_emu::current_thread()->linear >> 5; }
static inline unsigned sreg_smid() { return 0; }
static inline unsigned sreg_nsmid() { return 1; }
static inline unsigned sreg_lanemask_lt() { return (1u << sreg_laneid()) - 1u; }
static inline unsigned sreg_lanemask_le() { return (2u << sreg_laneid()) - 1u; }
static inline unsigned sreg_lanemask_eq() { return 1u << sreg_laneid(); }
static inline unsigned sreg_lanemask_ge() { return ~sreg_lanemask_lt(); }
static inline unsigned sreg_lanemask_gt() { return ~sreg_lanemask_le(); }
static inline unsigned sreg_clock() { return (unsigned)__builtin_ia32_rdtsc(); }
static inline unsigned long long sreg_clock64() { return __builtin_ia32_rdtsc(); }
}  // namespace frugal_emu_ptx

#endif  // !FRUGAL_EMU_SCAN
