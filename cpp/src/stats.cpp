#include "crve/stats.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "crve/parallel.hpp"

namespace crve {

// The one hot loop of the library (gram_update) is built for baseline x86-64, x86-64-v3
// (AVX2 + FMA) and x86-64-v4 (AVX-512), picked at load time, so the default build stays portable.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CRVE_MULTIVERSION __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define CRVE_MULTIVERSION
#endif

namespace {

// Gram kernel: acc (P x PP, row-major) += Z'Z for a block Z of n rows (n x PP, row-major, zero
// padded to PP columns). Each acc row stays in registers across the block; two accumulator sets
// (even/odd rows) hide the FMA latency.
template <int PP>
inline __attribute__((always_inline)) void gram_fixed(double* __restrict acc, const double* __restrict Z, index_t n,
                                                      index_t P) {
  for (index_t i = 0; i < P; ++i) {
    double a0[PP], a1[PP];
    for (int j = 0; j < PP; ++j) a0[j] = acc[i * PP + j], a1[j] = 0.0;
    index_t r = 0;
    for (; r + 2 <= n; r += 2) {
      const double* z0 = Z + r * PP;
      const double* z1 = z0 + PP;
      const double b0 = z0[i], b1 = z1[i];
      for (int j = 0; j < PP; ++j) a0[j] += b0 * z0[j];
      for (int j = 0; j < PP; ++j) a1[j] += b1 * z1[j];
    }
    if (r < n) {
      const double* z0 = Z + r * PP;
      const double b0 = z0[i];
      for (int j = 0; j < PP; ++j) a0[j] += b0 * z0[j];
    }
    for (int j = 0; j < PP; ++j) acc[i * PP + j] = a0[j] + a1[j];
  }
}

inline __attribute__((always_inline)) void gram_generic(double* __restrict acc, const double* __restrict Z, index_t n,
                                                        index_t P, index_t PP) {
  for (index_t r = 0; r < n; ++r) {
    const double* z = Z + r * PP;
    for (index_t i = 0; i < P; ++i) {
      const double b = z[i];
      double* __restrict a = acc + i * PP;
      for (index_t j = 0; j < PP; ++j) a[j] += b * z[j];
    }
  }
}

CRVE_MULTIVERSION void gram_update(double* acc, const double* Z, index_t n, index_t P, index_t PP) {
  switch (PP) {
    case 4: return gram_fixed<4>(acc, Z, n, P);
    case 8: return gram_fixed<8>(acc, Z, n, P);
    case 12: return gram_fixed<12>(acc, Z, n, P);
    case 16: return gram_fixed<16>(acc, Z, n, P);
    case 20: return gram_fixed<20>(acc, Z, n, P);
    case 24: return gram_fixed<24>(acc, Z, n, P);
    case 28: return gram_fixed<28>(acc, Z, n, P);
    case 32: return gram_fixed<32>(acc, Z, n, P);
    default: return gram_generic(acc, Z, n, P, PP);
  }
}

// Rank-one updates row by row into a square table (P x PP per cluster): for narrow designs
// (PP <= 8) whose chunk table stays in L1/L2 this beats sorting the rows into blocks.
#pragma GCC diagnostic ignored "-Wpsabi"  // the SIMD rows never cross a call
typedef double Row4 __attribute__((vector_size(32)));
typedef double Row8 __attribute__((vector_size(64)));
template <index_t PP> struct RowOf;
template <> struct RowOf<4> { using type = Row4; };
template <> struct RowOf<8> { using type = Row8; };

template <index_t K>
void scatter_rows_fixed(const MatrixView& X, const VectorView& y, const double* shift, const std::int64_t* codes,
                        index_t lo, index_t hi, double* table) {
  constexpr index_t PP = (K + 2 + 3) / 4 * 4;
  using Row = typename RowOf<PP>::type;
  const index_t P = K + 2, sq = P * PP;
  const double* col[K];
  index_t stride[K];
  for (index_t k = 0; k < K; ++k) col[k] = X.col[k], stride[k] = X.stride[k];
  for (index_t i = lo; i < hi; ++i) {
    // z built in a register: a store of scalars read back as a vector would stall forwarding.
    Row z = {};
    for (index_t k = 0; k < K; ++k) z[k] = col[k][i * stride[k]] - shift[k];
    z[K] = 1.0;
    z[K + 1] = y[i] - shift[K];
    double* t = table + codes[i] * sq;
    for (index_t a = 0; a < P; ++a) {
      Row r;
      std::memcpy(&r, t + a * PP, sizeof r);
      r += z[a] * z;
      std::memcpy(t + a * PP, &r, sizeof r);
    }
  }
}

CRVE_MULTIVERSION void scatter_rows(const MatrixView& X, const VectorView& y, const double* shift,
                                    const std::int64_t* codes, index_t lo, index_t hi, index_t K, double* table) {
  switch (K) {  // K known at compile time: z is assembled in registers
    case 1: return scatter_rows_fixed<1>(X, y, shift, codes, lo, hi, table);
    case 2: return scatter_rows_fixed<2>(X, y, shift, codes, lo, hi, table);
    case 3: return scatter_rows_fixed<3>(X, y, shift, codes, lo, hi, table);
    case 4: return scatter_rows_fixed<4>(X, y, shift, codes, lo, hi, table);
    case 5: return scatter_rows_fixed<5>(X, y, shift, codes, lo, hi, table);
    default: return scatter_rows_fixed<6>(X, y, shift, codes, lo, hi, table);
  }
}
constexpr index_t kScatterTableBytes = 1 << 17;  // chunk tables up to this size use scatter_rows

constexpr index_t kBlockRows = 64;         // rows per kernel call
constexpr index_t kPrefetchRows = 24;      // look-ahead of the gathers in the many-clusters mode
constexpr index_t kSegmentRows = 1 << 15;  // rows per task when a cluster is split
constexpr index_t kSubChunkRows = 8192;    // rows sorted locally in the few-clusters mode (at least)
constexpr index_t kSubChunkMax = 65536;    // ... and at most; in between, 8 rows per cluster on average

inline index_t padded(index_t P) { return (P + 3) / 4 * 4; }

// Fills rows of the block Z from raw rows (x - m, 1, y - m_y); padding columns stay zero.
// X held as one 2-D array (the usual case) is read through a single row pointer, with two
// prefetches per row; separate columns go through their own pointers.
struct RowGather {
  const MatrixView& X;
  const VectorView& y;
  const double* shift;
  index_t K, PP;
  index_t rs = 0, cs = 0;  // row and column strides when X.uniform()
  bool uniform = false;
  RowGather(const MatrixView& X_, const VectorView& y_, const double* shift_, index_t K_, index_t PP_)
      : X(X_), y(y_), shift(shift_), K(K_), PP(PP_) {
    uniform = X.uniform(rs, cs);
  }
  void operator()(index_t i, double* z) const {
    if (uniform) {
      const double* row = X.col[0] + i * rs;
      if (cs == 1) {
        for (index_t k = 0; k < K; ++k) z[k] = row[k] - shift[k];
      } else {
        for (index_t k = 0; k < K; ++k) z[k] = row[k * cs] - shift[k];
      }
    } else {
      const double* const* col = X.col.data();
      const index_t* stride = X.stride.data();
      for (index_t k = 0; k < K; ++k) z[k] = col[k][i * stride[k]] - shift[k];
    }
    z[K] = 1.0;
    z[K + 1] = y[i] - shift[K];
  }
  void prefetch(index_t i) const {  // the rows of a cluster are scattered: hide DRAM latency
    if (uniform && cs == 1) {
      const char* p = reinterpret_cast<const char*>(X.col[0] + i * rs);
      __builtin_prefetch(p);
      __builtin_prefetch(p + 64);
    } else {
      for (index_t k = 0; k < K; ++k) __builtin_prefetch(X.col[k] + i * X.stride[k]);
    }
    __builtin_prefetch(y.data + i * y.stride);
  }
};

// acc (square, P x PP) += Gram of the n rows at(0..n), in blocks of kBlockRows.
template <class At>
void accumulate_rows(const RowGather& gather, At at, index_t n, double* acc, std::vector<double>& Z, bool prefetch) {
  const index_t PP = gather.PP, P = gather.K + 2;
  Z.resize(kBlockRows * PP);
  for (index_t lo = 0; lo < n; lo += kBlockRows) {
    const index_t b = std::min(kBlockRows, n - lo);
    for (index_t r = 0; r < b; ++r) {
      if (prefetch && lo + r + kPrefetchRows < n) gather.prefetch(at(lo + r + kPrefetchRows));
      gather(at(lo + r), Z.data() + r * PP);
    }
    gram_update(acc, Z.data(), b, P, PP);
  }
}

// packed lower triangle += square (P x PP) accumulator.
void add_square_to_packed(double* packed, const double* acc, index_t P, index_t PP) {
  for (index_t i = 0; i < P; ++i)
    for (index_t j = 0; j <= i; ++j) packed[i * (i + 1) / 2 + j] += acc[i * PP + j];
}

}  // namespace

ClusterStats::ClusterStats(index_t K, index_t G, std::vector<double> shift)
    : K_(K), G_(G), shift_(std::move(shift)), packed_(static_cast<size_t>(G * (K + 2) * (K + 3) / 2), 0.0) {}

double ClusterStats::nobs() const {
  double n = 0;
  for (index_t g = 0; g < G_; ++g) n += count(g);
  return n;
}

Eigen::MatrixXd ClusterStats::block(index_t g) const {
  const index_t P = this->P();
  Eigen::MatrixXd Z(P, P);
  const double* a = gram(g);
  for (index_t i = 0; i < P; ++i)
    for (index_t j = 0; j <= i; ++j) Z(i, j) = Z(j, i) = a[i * (i + 1) / 2 + j];
  return Z;
}

ClusterStats ClusterStats::build(const MatrixView& X, const VectorView& y, const std::int64_t* codes,
                                 index_t n_slots, int threads, const BuildLimits& limits) {
  const double kTableBytes = limits.table_bytes, kOrderBytes = limits.order_bytes;
  const index_t N = X.rows, K = X.cols, P = K + 2, PP = padded(P);
  if (y.size != N) throw InputError(InputError::Other, -1, "y and X have different numbers of rows");
  if (N < 1) throw InputError(InputError::TooFewRows, -1, "no rows");
  std::vector<double> shift(K + 1);
  if (!limits.shift.empty()) {
    if (static_cast<index_t>(limits.shift.size()) != K + 1)
      throw InputError(InputError::Other, -1, "shift must hold K + 1 values");
    shift = limits.shift;
  } else {
    for (index_t k = 0; k < K; ++k) shift[k] = X(0, k);
    shift[K] = y[0];
  }
  ClusterStats out(K, n_slots, shift);
  RowGather gather{X, y, out.shift_.data(), K, PP};
  const index_t sq = P * PP;  // square accumulator size

  // Counts, and whether each cluster's rows are contiguous (then no permutation is needed).
  // With few slots, row chunks count in parallel (integer sums: any order gives the same).
  const index_t n_count = (n_slots <= 65536 && N >= 262144) ? 16 : 1;
  std::vector<std::vector<index_t>> counts(n_count, std::vector<index_t>(n_slots, 0));
  std::vector<index_t> chunk_runs(n_count, 0), bad(n_count, -1);
  parallel_tasks(n_count, threads, [&](index_t t) {
    index_t* cnt = counts[t].data();
    const index_t lo = N * t / n_count, hi = N * (t + 1) / n_count;
    index_t r = 0;
    for (index_t i = lo; i < hi; ++i) {
      const std::int64_t c = codes[i];
      if (c < 0 || c >= n_slots) {
        bad[t] = i;
        return;
      }
      ++cnt[c];
      r += (i == 0 || codes[i - 1] != c);
    }
    chunk_runs[t] = r;
  });
  for (index_t t = 0; t < n_count; ++t)
    if (bad[t] >= 0) throw InputError(InputError::BadCode, bad[t], "cluster code out of range");
  std::vector<index_t> count = std::move(counts[0]);
  index_t runs = chunk_runs[0];
  for (index_t t = 1; t < n_count; ++t) {
    for (index_t g = 0; g < n_slots; ++g) count[g] += counts[t][g];
    runs += chunk_runs[t];
  }
  index_t nonempty = 0;
  for (index_t g = 0; g < n_slots; ++g) nonempty += count[g] > 0;
  const bool grouped = runs == nonempty;

  // Few clusters, rows in any order: row chunks, each with its own table; inside a chunk rows
  // are grouped by a local counting sort, so X is read sequentially and the kernel sees blocks
  // of one cluster. The chunk count (a power of two up to 16, at least 16384 rows per chunk)
  // depends on N, G and K only; all tables together stay within the budget, which is a
  // sixteenth of the input (at most table_bytes).
  const double budget = std::min(kTableBytes, std::max(1.0 * (1 << 20), N * (K + 2) * 8.0 / 16));
  index_t n_chunks = 16;
  while (n_chunks > 1 && (n_chunks * 16384 > N || n_chunks * n_slots * sq * 8.0 > budget)) n_chunks /= 2;
  if (!grouped && n_chunks * n_slots * sq * 8.0 <= budget) {
    std::vector<std::vector<double>> table(n_chunks);
    parallel_tasks(n_chunks, threads, [&](index_t c) {
      table[c].assign(n_slots * sq, 0.0);
      const index_t lo = N * c / n_chunks, hi = N * (c + 1) / n_chunks;
      if (PP <= 8 && n_slots * sq * 8 <= kScatterTableBytes) {
        scatter_rows(X, y, out.shift_.data(), codes, lo, hi, K, table[c].data());
        return;
      }
      std::vector<double> Z;
      // Sub-chunks long enough that a cluster's rows come in blocks of about 8 or more: the
      // kernel's fixed cost per block would dominate with 1 to 4 rows per cluster.
      const index_t sub = std::clamp<index_t>(8 * n_slots, kSubChunkRows, kSubChunkMax);
      std::vector<index_t> start(n_slots + 1), rows(sub);
      for (index_t s0 = lo; s0 < hi; s0 += sub) {
        const index_t s1 = std::min(hi, s0 + sub);
        std::fill(start.begin(), start.end(), 0);
        for (index_t i = s0; i < s1; ++i) ++start[codes[i] + 1];
        for (index_t g = 0; g < n_slots; ++g) start[g + 1] += start[g];
        std::vector<index_t> pos(start.begin(), start.end() - 1);
        for (index_t i = s0; i < s1; ++i) rows[pos[codes[i]]++] = i;
        for (index_t g = 0; g < n_slots; ++g) {
          const index_t n = start[g + 1] - start[g];
          if (n == 0) continue;
          const index_t* rg = rows.data() + start[g];
          accumulate_rows(gather, [rg](index_t r) { return rg[r]; }, n, table[c].data() + g * sq, Z, false);
        }
      }
    });
    auto reduce_cluster = [&](index_t g) {  // chunk tables added in chunk order
      std::vector<double> acc(sq, 0.0);
      for (index_t c = 0; c < n_chunks; ++c) {
        const double* t = table[c].data() + g * sq;
        for (index_t e = 0; e < sq; ++e) acc[e] += t[e];
      }
      add_square_to_packed(out.gram(g), acc.data(), P, PP);
    };
    parallel_tasks(n_slots, threads, reduce_cluster, 256);
    return out;
  }

  // Many clusters, or rows already grouped by cluster: each cluster's rows are visited in place
  // (grouped input) or through a stable counting sort. The sort's row order (uint32 where N
  // allows) is built for one range of clusters at a time so that it stays within kOrderBytes.
  const index_t npack = out.npack();
  const bool narrow = N < (index_t(1) << 32);
  const index_t n_ranges =
      grouped ? 1 : std::max<index_t>(1, static_cast<index_t>(N * (narrow ? 4.0 : 8.0) / kOrderBytes) + 1);
  std::vector<index_t> start(n_slots + 1, 0);
  if (grouped) {
    for (index_t i = 0; i < N; ++i)
      if (i == 0 || codes[i - 1] != codes[i]) start[codes[i]] = i;
  }
  std::vector<std::uint32_t> order32;
  std::vector<std::int64_t> order64;
  index_t g_lo = 0;
  for (index_t range = 0; range < n_ranges; ++range) {
    // Clusters [g_lo, g_hi) hold about N / n_ranges rows.
    index_t g_hi = g_lo, rows = 0;
    const index_t target = N * (range + 1) / n_ranges;
    static_assert(sizeof(index_t) == 8, "");
    index_t before = 0;
    for (index_t g = 0; g < g_lo; ++g) before += count[g];
    while (g_hi < n_slots && (before + rows < target || range + 1 == n_ranges)) rows += count[g_hi++];
    if (!grouped) {
      start[g_lo] = 0;
      for (index_t g = g_lo; g < g_hi; ++g) start[g + 1] = start[g] + count[g];
      std::vector<index_t> pos(start.begin() + g_lo, start.begin() + g_hi);
      if (narrow) {
        order32.resize(rows);
        for (index_t i = 0; i < N; ++i)
          if (codes[i] >= g_lo && codes[i] < g_hi) order32[pos[codes[i] - g_lo]++] = static_cast<std::uint32_t>(i);
      } else {
        order64.resize(rows);
        for (index_t i = 0; i < N; ++i)
          if (codes[i] >= g_lo && codes[i] < g_hi) order64[pos[codes[i] - g_lo]++] = i;
      }
    }
    // Tasks: each cluster, split into segments of at most kSegmentRows rows. A cluster in one
    // segment is written in place; split clusters get partial sums added in segment order.
    struct Segment { index_t g, lo, n, part; };
    std::vector<Segment> seg;
    index_t n_parts = 0;
    for (index_t g = g_lo; g < g_hi; ++g) {
      if (count[g] == 0) continue;
      if (count[g] <= kSegmentRows) {
        seg.push_back({g, start[g], count[g], -1});
      } else {
        for (index_t lo = 0; lo < count[g]; lo += kSegmentRows)
          seg.push_back({g, start[g] + lo, std::min(kSegmentRows, count[g] - lo), n_parts++});
      }
    }
    std::vector<double> parts(n_parts * npack, 0.0);
    parallel_tasks(static_cast<index_t>(seg.size()), threads, [&](index_t t) {
      thread_local std::vector<double> Z, acc;
      acc.assign(sq, 0.0);
      const Segment& s = seg[t];
      if (grouped) {
        accumulate_rows(gather, [&s](index_t r) { return s.lo + r; }, s.n, acc.data(), Z, false);
      } else if (narrow) {
        const std::uint32_t* o = order32.data() + s.lo;
        accumulate_rows(gather, [o](index_t r) { return static_cast<index_t>(o[r]); }, s.n, acc.data(), Z, true);
      } else {
        const std::int64_t* o = order64.data() + s.lo;
        accumulate_rows(gather, [o](index_t r) { return o[r]; }, s.n, acc.data(), Z, true);
      }
      add_square_to_packed(s.part < 0 ? out.gram(s.g) : parts.data() + s.part * npack, acc.data(), P, PP);
    });
    for (const Segment& s : seg) {
      if (s.part < 0) continue;
      double* dst = out.gram(s.g);
      const double* src = parts.data() + s.part * npack;
      for (index_t e = 0; e < npack; ++e) dst[e] += src[e];
    }
    g_lo = g_hi;
  }
  return out;
}

void ClusterStats::add(const ClusterStats& other, const std::int64_t* map) {
  if (other.K_ != K_) throw InputError(InputError::Other, -1, "cannot add statistics with different numbers of columns");
  const index_t P = this->P(), np = npack();
  // other's rows re-expressed in this shift: z_new = z_old + delta * (the "1" entry).
  Eigen::VectorXd delta = Eigen::VectorXd::Zero(P);
  bool same = true;
  for (index_t k = 0; k <= K_; ++k) {
    const double d = other.shift_[k] - shift_[k];
    delta[k < K_ ? k : K_ + 1] = d;
    same = same && d == 0.0;
  }
  Eigen::MatrixXd S = Eigen::MatrixXd::Identity(P, P);
  S.col(K_) += delta;
  for (index_t h = 0; h < other.G_; ++h) {
    const index_t g = map[h];
    if (g < 0 || g >= G_) throw InputError(InputError::BadCode, h, "cluster map out of range");
    double* dst = gram(g);
    if (same) {
      const double* src = other.gram(h);
      for (index_t e = 0; e < np; ++e) dst[e] += src[e];
    } else {
      const Eigen::MatrixXd Z = S * other.block(h) * S.transpose();
      for (index_t i = 0; i < P; ++i)
        for (index_t j = 0; j <= i; ++j) dst[i * (i + 1) / 2 + j] += Z(i, j);
    }
  }
}

void ClusterStats::compact(const std::int64_t* keep, index_t n) {
  const index_t np = npack();
  for (index_t h = 0; h < n; ++h) {
    if (keep[h] < h || keep[h] >= G_ || (h > 0 && keep[h] <= keep[h - 1]))
      throw InputError(InputError::BadCode, h, "compact needs increasing cluster indices");
    if (keep[h] != h) std::memcpy(gram(h), gram(keep[h]), sizeof(double) * np);
  }
  G_ = n;
  packed_.resize(n * np);  // shrinks in place: no second copy of the statistics
}

index_t ClusterStats::nonfinite_column() const {
  const index_t P = this->P();
  std::vector<double> diag(P, 0.0);
  for (index_t g = 0; g < G_; ++g)
    for (index_t i = 0; i < P; ++i) diag[i] += gram(g)[i * (i + 1) / 2 + i];
  for (index_t i = 0; i < P; ++i)
    if (!std::isfinite(diag[i])) return i < K_ ? i : K_;
  return -1;
}

}  // namespace crve
