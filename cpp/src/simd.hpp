// Internal to cpp/src: the SIMD row types of the hot kernels and their function multiversioning.
#pragma once

// The hot loops are built for baseline x86-64, x86-64-v3 (AVX2 + FMA) and x86-64-v4 (AVX-512),
// picked at load time, so the default build stays portable. Anything such a function calls in
// its loop must be always_inline, or it runs as baseline code.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CRVE_MULTIVERSION __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define CRVE_MULTIVERSION
#endif

#pragma GCC diagnostic ignored "-Wpsabi"  // the SIMD rows never cross a call

namespace crve {
typedef double Row4 __attribute__((vector_size(32)));
typedef double Row8 __attribute__((vector_size(64)));
}  // namespace crve
