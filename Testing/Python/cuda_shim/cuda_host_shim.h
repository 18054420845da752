// Test-only: compile a CUDA kernel source for the host, so CI can run it without a GPU.
//
// Maps the CUDA built-ins the projector uses onto plain C++: thread and block indices become
// thread-local variables that the launcher (host_launch.cpp) sets before calling the kernel once per
// thread; __ldg is a plain load; __uint_as_float reinterprets the bits. The kernel uses no shared
// memory, barriers or warp-level functions, so running its threads one after another is exact.
// The texture unit is not involved: the kernel reads voxels explicitly, on the device and here alike.
#pragma once

#include <math.h>
#include <string.h>

struct dim3 {
    unsigned int x, y, z;
};

extern thread_local dim3 threadIdx;
extern thread_local dim3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))

template <typename T>
static inline T __ldg(const T* address)
{
    return *address;
}

// the Monte Carlo's tallies: blocks run on several host threads
static inline unsigned long long atomicAdd(unsigned long long* address, unsigned long long value)
{
    return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
}

static inline float __uint_as_float(unsigned int bits)
{
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}
