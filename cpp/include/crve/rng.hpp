// Bootstrap weights from a counter-based generator: the weight of bootstrap cluster g in draw b
// is a pure function of (seed, b, g), so any draw can be produced on any thread in any order and
// a seed gives identical draws on 1 or 64 threads (DESIGN.md 4).
//
// Philox4x32-10 (Salmon, Moraes, Dror & Shaw 2011, "Parallel random numbers: as easy as 1, 2,
// 3"; the Random123 reference) maps a 128-bit counter and a 64-bit key to 128 random bits.
// Counter = (b low, b high, block, stream), key = seed; each call serves 128 Rademacher signs,
// four Webb or Mammen weights (32 bits each) or two normals (64 bits each).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "views.hpp"

namespace crve {

struct Philox4x32 {
  std::uint32_t v[4];
};

inline Philox4x32 philox4x32_10(std::uint32_t c0, std::uint32_t c1, std::uint32_t c2, std::uint32_t c3,
                                std::uint32_t k0, std::uint32_t k1) {
  constexpr std::uint64_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  constexpr std::uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    const std::uint64_t p0 = M0 * c0, p1 = M1 * c2;
    const std::uint32_t hi0 = std::uint32_t(p0 >> 32), lo0 = std::uint32_t(p0);
    const std::uint32_t hi1 = std::uint32_t(p1 >> 32), lo1 = std::uint32_t(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += W0;
    k1 += W1;
  }
  return {{c0, c1, c2, c3}};
}

enum class WeightKind { Rademacher, Webb, Mammen, Normal };

/// Weights of G bootstrap clusters for draws [b0, b0 + nb): out[g + G * j] is the weight of
/// cluster g in draw b0 + j. With `enumerate` (Rademacher only) draw b is the sign vector of the
/// bits of b: v_g = 1 - 2 * bit_g(b), so draw 0 is all ones (the original sample) and draws
/// 0..2^G - 1 are every sign vector once.
struct WeightGenerator {
  WeightKind kind = WeightKind::Rademacher;
  std::uint64_t seed = 0;
  bool enumerate = false;
  index_t G = 0;

  void fill(index_t b0, index_t nb, double* out) const {
    for (index_t j = 0; j < nb; ++j) draw(b0 + j, out + G * j);
  }

  void draw(index_t b, double* v) const { draw_range(b, 0, G, v, 1); }

  /// Weights of clusters [g0, g1) of draw b into v[0], v[stride], ...; g0 a multiple of kAlign.
  /// Branch-free: random signs would defeat branch prediction.
  void draw_range(index_t b, index_t g0, index_t g1, double* v, index_t stride) const {
    const auto bb = static_cast<std::uint64_t>(b);
    if (enumerate) {
      for (index_t g = g0; g < g1; ++g) v[(g - g0) * stride] = sign((bb >> g) & 1u);
      return;
    }
    const std::uint32_t c0 = std::uint32_t(bb), c1 = std::uint32_t(bb >> 32);
    const std::uint32_t k0 = std::uint32_t(seed), k1 = std::uint32_t(seed >> 32);
    const auto stream = static_cast<std::uint32_t>(kind);
    const index_t per = kind == WeightKind::Rademacher ? 128 : kind == WeightKind::Normal ? 2 : 4;
    for (index_t lo = g0; lo < g1; lo += per) {
      const Philox4x32 r = philox4x32_10(c0, c1, std::uint32_t(lo / per), stream, k0, k1);
      const index_t n = std::min<index_t>(per, g1 - lo);
      double* out = v + (lo - g0) * stride;
      switch (kind) {
        case WeightKind::Rademacher:
          for (index_t i = 0; i < n; ++i) out[i * stride] = sign((r.v[i / 32] >> (i % 32)) & 1u);
          break;
        case WeightKind::Webb:
          for (index_t i = 0; i < n; ++i) out[i * stride] = webb(r.v[i]);
          break;
        case WeightKind::Mammen:
          for (index_t i = 0; i < n; ++i) out[i * stride] = mammen(r.v[i]);
          break;
        case WeightKind::Normal: {
          // Box-Muller from two 53-bit uniforms, u1 in (0, 1].
          const double u1 = (double(((std::uint64_t(r.v[0]) << 32 | r.v[1]) >> 11) + 1)) * 0x1p-53;
          const double u2 = double((std::uint64_t(r.v[2]) << 32 | r.v[3]) >> 11) * 0x1p-53;
          const double rad = std::sqrt(-2.0 * std::log(u1)), ang = 6.283185307179586 * u2;
          out[0] = rad * std::cos(ang);
          if (n > 1) out[stride] = rad * std::sin(ang);
          break;
        }
      }
    }
  }

  /// Draws [b0, b0 + nl) of clusters [g0, g1) in lane layout: out[(g - g0) * ld + j] is the
  /// weight of cluster g in draw b0 + j. nl a multiple of 8 (whole cache lines are written);
  /// scratch holds 8 (g1 - g0) doubles.
  void fill_lanes(index_t b0, index_t nl, index_t g0, index_t g1, double* out, index_t ld, double* scratch) const {
    const index_t n = g1 - g0;
    for (index_t j0 = 0; j0 < nl; j0 += 8) {
      for (index_t l = 0; l < 8; ++l) draw_range(b0 + j0 + l, g0, g1, scratch + l * n, 1);
      for (index_t c = 0; c < n; ++c)
        for (index_t l = 0; l < 8; ++l) out[c * ld + j0 + l] = scratch[l * n + c];
    }
  }

  /// fill_lanes for eight draws [b, b + 8) of Rademacher weights (not enumerated), written
  /// lane-parallel so that SIMD builds generate eight Philox streams at once: the same weights
  /// as draw_range.
  __attribute__((always_inline)) inline void rademacher_lanes8(index_t b, index_t g0, index_t g1, double* out,
                                                               index_t ld) const {
    constexpr std::uint64_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
    constexpr std::uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
    const auto stream = static_cast<std::uint32_t>(WeightKind::Rademacher);
    for (index_t lo = g0; lo < g1; lo += 128) {
      std::uint32_t c0[8], c1[8], c2[8], c3[8];
      for (int l = 0; l < 8; ++l) {
        const auto bb = static_cast<std::uint64_t>(b + l);
        c0[l] = std::uint32_t(bb);
        c1[l] = std::uint32_t(bb >> 32);
        c2[l] = std::uint32_t(lo / 128);
        c3[l] = stream;
      }
      std::uint32_t k0 = std::uint32_t(seed), k1 = std::uint32_t(seed >> 32);
      for (int round = 0; round < 10; ++round) {
        for (int l = 0; l < 8; ++l) {
          const std::uint64_t p0 = M0 * c0[l], p1 = M1 * c2[l];
          const std::uint32_t n0 = std::uint32_t(p1 >> 32) ^ c1[l] ^ k0, n2 = std::uint32_t(p0 >> 32) ^ c3[l] ^ k1;
          c1[l] = std::uint32_t(p1);
          c3[l] = std::uint32_t(p0);
          c0[l] = n0;
          c2[l] = n2;
        }
        k0 += W0;
        k1 += W1;
      }
      const std::uint32_t* word[4] = {c0, c1, c2, c3};
      const index_t n = std::min<index_t>(128, g1 - lo);
      for (index_t i = 0; i < n; ++i) {
        const std::uint32_t* w = word[i / 32];
        const int sh = static_cast<int>(i % 32);
        double* o = out + (lo - g0 + i) * ld;
        for (int l = 0; l < 8; ++l) o[l] = 1.0 - 2.0 * static_cast<double>((w[l] >> sh) & 1u);
      }
    }
  }

  /// Cluster ranges passed to draw_range start at multiples of this.
  static constexpr index_t kAlign = 128;

  /// Bit 0 -> +1, bit 1 -> -1.
  static double sign(std::uint32_t bit) { return 1.0 - 2.0 * static_cast<double>(bit); }

  /// Webb's six-point distribution: +-sqrt(1/2), +-1, +-sqrt(3/2), each with probability 1/6
  /// (Lemire's multiply-shift maps 32 bits to 0..5; bias below 2^-29).
  static double webb(std::uint32_t x) {
    static constexpr double values[6] = {-1.2247448713915890491, -1.0, -0.70710678118654752440,
                                         0.70710678118654752440, 1.0, 1.2247448713915890491};
    return values[(std::uint64_t(x) * 6u) >> 32];
  }

  /// Mammen's two-point distribution: -(sqrt5 - 1)/2 with probability (sqrt5 + 1)/(2 sqrt5),
  /// else (sqrt5 + 1)/2 (mean 0, variance 1, third moment 1).
  static double mammen(std::uint32_t x) {
    constexpr double s5 = 2.2360679774997896964;
    constexpr double p = (s5 + 1) / (2 * s5);
    static constexpr double values[2] = {(s5 + 1) / 2, -(s5 - 1) / 2};
    return values[(double(x) + 0.5) * 0x1p-32 < p];
  }
};

}  // namespace crve
