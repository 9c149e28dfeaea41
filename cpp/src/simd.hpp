// Internal to cpp/src: the SIMD row types of the hot kernels and their function multiversioning.
#pragma once
#include <cstring>

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
// A read prefetch of the line holding p. GCC 12's tree DCE deletes __builtin_prefetch calls that
// sit under a branch on a loaded value (all of RowGather::prefetch vanished), so on x86-64 the
// instruction is written as volatile asm, which no pass may remove.
inline __attribute__((always_inline)) void prefetch_read(const void* p) {
#if defined(__GNUC__) && defined(__x86_64__)
  asm volatile("prefetcht0 %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p);
#endif
}

typedef double Row4 __attribute__((vector_size(32)));
typedef double Row8 __attribute__((vector_size(64)));  // one AVX-512 register, two AVX2 ones, ...

// Unaligned loads and stores of eight doubles.
inline __attribute__((always_inline)) Row8 load8(const double* p) {
  Row8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline __attribute__((always_inline)) void store8(double* p, Row8 v) { std::memcpy(p, &v, sizeof v); }
}  // namespace crve
