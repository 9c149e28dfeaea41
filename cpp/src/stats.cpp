#include "crve/stats.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "crve/parallel.hpp"
#include "simd.hpp"

namespace crve {

// The hot loops (gram_update, the staging copies) are multiversioned (simd.hpp).

namespace {

// Gram kernels: acc (P x PP, row-major) += Z'Z for a block Z of n rows (n x PP, row-major, zero
// padded to PP columns). Only the lower triangle (j <= i) is needed.

// Narrow rows (PP = 4): the four accumulator rows stay in registers across the block (four
// independent FMA chains), each row of Z loaded once. Every entry is summed over the rows in
// order, as in the tiled kernels below, so where leaving a zero lane out of a staged copy
// narrows its rows from 8 doubles to 4, the entries come out bit for bit as with the lane.
inline __attribute__((always_inline)) void gram_narrow(double* __restrict acc, const double* __restrict Z, index_t n,
                                                       index_t P, bool fresh) {
  Row4 a[4];
  for (index_t i = 0; i < 4; ++i) {
    if (i < P && !fresh) std::memcpy(&a[i], acc + i * 4, sizeof(Row4));
    else a[i] = Row4{};
  }
  for (index_t r = 0; r < n; ++r) {
    Row4 z;
    std::memcpy(&z, Z + r * 4, sizeof z);
    for (int i = 0; i < 4; ++i) a[i] += z[i] * z;
  }
  for (index_t i = 0; i < P; ++i) std::memcpy(acc + i * 4, &a[i], sizeof(Row4));
}

// Register tile: acc rows [i0, i0 + TI) times column groups [0, NV) of 8 and, with T4, one more
// group of 4 (together the columns j <= i of the tile's rows), TI x (NV + T4) independent
// accumulators (8 or more: FMA latency hidden), each row of Z loaded once per tile. Rows i >= P of
// the tile (padding, z_i = 0) are computed but not stored.
template <int TI, int NV, bool T4 = false>
inline __attribute__((always_inline)) void gram_tile(double* __restrict acc, const double* __restrict Z, index_t n,
                                                     index_t PP, index_t i0, index_t P, bool fresh) {
  Row8 a[TI][NV];
  Row4 c[TI];
  for (int t = 0; t < TI; ++t) {
    const bool load = i0 + t < P && !fresh;
    for (int v = 0; v < NV; ++v) {
      if (load) std::memcpy(&a[t][v], acc + (i0 + t) * PP + 8 * v, sizeof(Row8));
      else a[t][v] = Row8{};
    }
    if (T4 && load) std::memcpy(&c[t], acc + (i0 + t) * PP + 8 * NV, sizeof(Row4));
    else c[t] = Row4{};
  }
  for (index_t r = 0; r < n; ++r) {
    const double* z = Z + r * PP;
    Row8 zv[NV];
    Row4 z4{};
    for (int v = 0; v < NV; ++v) std::memcpy(&zv[v], z + 8 * v, sizeof(Row8));
    if (T4) std::memcpy(&z4, z + 8 * NV, sizeof(Row4));
    for (int t = 0; t < TI; ++t) {
      const double b = z[i0 + t];
      for (int v = 0; v < NV; ++v) a[t][v] += b * zv[v];
      if (T4) c[t] += b * z4;
    }
  }
  for (int t = 0; t < TI && i0 + t < P; ++t) {
    for (int v = 0; v < NV; ++v) std::memcpy(acc + (i0 + t) * PP + 8 * v, &a[t][v], sizeof(Row8));
    if (T4) std::memcpy(acc + (i0 + t) * PP + 8 * NV, &c[t], sizeof(Row4));
  }
}

// PP a multiple of 4 from 8 to 32: rows 0-7 in one tile of eight (one column group), then tiles
// of four rows over the columns up to their last row (groups of eight, then one of four).
template <int PP>
inline __attribute__((always_inline)) void gram_tiled(double* __restrict acc, const double* __restrict Z, index_t n,
                                                      index_t P, bool fresh) {
  gram_tile<8, 1>(acc, Z, n, PP, 0, P, fresh);
  for (index_t i0 = 8; i0 < P; i0 += 4) {
    switch (i0 / 4) {  // the tile's columns: 0 .. i0 + 3
      case 2: gram_tile<4, 1, true>(acc, Z, n, PP, i0, P, fresh); break;
      case 3: gram_tile<4, 2>(acc, Z, n, PP, i0, P, fresh); break;
      case 4: if constexpr (PP >= 20) gram_tile<4, 2, true>(acc, Z, n, PP, i0, P, fresh); break;
      case 5: if constexpr (PP >= 24) gram_tile<4, 3>(acc, Z, n, PP, i0, P, fresh); break;
      case 6: if constexpr (PP >= 28) gram_tile<4, 3, true>(acc, Z, n, PP, i0, P, fresh); break;
      default: if constexpr (PP >= 32) gram_tile<4, 4>(acc, Z, n, PP, i0, P, fresh); break;
    }
  }
}

inline __attribute__((always_inline)) void gram_generic(double* __restrict acc, const double* __restrict Z, index_t n,
                                                        index_t P, index_t PP, bool fresh) {
  if (fresh)
    for (index_t i = 0; i < P; ++i) std::fill(acc + i * PP, acc + i * PP + i + 1, 0.0);
  for (index_t r = 0; r < n; ++r) {
    const double* z = Z + r * PP;
    for (index_t i = 0; i < P; ++i) {
      const double b = z[i];
      double* __restrict a = acc + i * PP;
      for (index_t j = 0; j <= i; ++j) a[j] += b * z[j];
    }
  }
}

// fresh: acc starts from zero (its old contents are not read).
CRVE_MULTIVERSION void gram_update(double* acc, const double* Z, index_t n, index_t P, index_t PP, bool fresh) {
  switch (PP) {
    case 4: return gram_narrow(acc, Z, n, P, fresh);
    case 8: return gram_tiled<8>(acc, Z, n, P, fresh);
    case 12: return gram_tiled<12>(acc, Z, n, P, fresh);
    case 16: return gram_tiled<16>(acc, Z, n, P, fresh);
    case 20: return gram_tiled<20>(acc, Z, n, P, fresh);
    case 24: return gram_tiled<24>(acc, Z, n, P, fresh);
    case 28: return gram_tiled<28>(acc, Z, n, P, fresh);
    case 32: return gram_tiled<32>(acc, Z, n, P, fresh);
    default: return gram_generic(acc, Z, n, P, PP, fresh);
  }
}

// Rank-one updates row by row into a square table (P x PP per cluster): for narrow designs
// (PP <= 8) whose chunk table stays in L1/L2 this beats sorting the rows into blocks.
template <index_t PP> struct RowOf;
template <> struct RowOf<4> { using type = Row4; };
template <> struct RowOf<8> { using type = Row8; };

template <index_t K>
inline __attribute__((always_inline)) void scatter_rows_fixed(const MatrixView& X, const VectorView& y, const double* shift, const std::int64_t* codes,
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
constexpr index_t kTaskRows = 8192;        // rows per task of whole small clusters (at most)
constexpr index_t kSubChunkRows = 8192;    // rows staged at a time in the few-clusters mode: at least
                                           // this, more where 8 rows per cluster need more (see below)
constexpr index_t kBlocksAhead = 2;        // blocks of statistics fetched ahead when adding into them
constexpr index_t kCheckRows = 2048;       // rows checked for NaN / inf at a time (staged mode)

// Row width of the blocks: 4, or a multiple of 8 (the tiled kernel's column groups).
inline index_t padded(index_t P) { return P <= 4 ? 4 : (P + 7) / 8 * 8; }
// Row width of the staged copy: a multiple of 4 (its traffic to memory is what costs there).
inline index_t padded4(index_t P) { return (P + 3) / 4 * 4; }

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
      // Every cache line the row touches: an 88-byte row can span three.
      const char* p = reinterpret_cast<const char*>(X.col[0] + i * rs);
      const char* last = p + (K - 1) * sizeof(double);
      for (; p <= last; p += 64) prefetch_read(p);
      prefetch_read(last);
    } else {
      for (index_t k = 0; k < K; ++k) prefetch_read(X.col[k] + i * X.stride[k]);
    }
    prefetch_read(y.data + i * y.stride);
  }
};

// acc (square, P x PP) += Gram of the n rows at(0..n), in blocks of kBlockRows. Rows at(r) for
// r < ahead (>= n: the look-ahead runs on into the next clusters' rows) are prefetched
// kPrefetchRows early; ahead = 0 turns prefetching off (rows read in order). fresh: acc = instead of +=.
template <class At>
void accumulate_rows(const RowGather& gather, At at, index_t n, double* acc, std::vector<double>& Z, index_t ahead,
                     bool fresh) {
  const index_t PP = gather.PP, P = gather.K + 2;
  Z.resize(kBlockRows * PP);
  for (index_t lo = 0; lo < n; lo += kBlockRows) {
    const index_t b = std::min(kBlockRows, n - lo);
    for (index_t r = 0; r < b; ++r) {
      if (lo + r + kPrefetchRows < ahead) gather.prefetch(at(lo + r + kPrefetchRows));
      gather(at(lo + r), Z.data() + r * PP);
    }
    gram_update(acc, Z.data(), b, P, PP, fresh && lo == 0);
  }
}

// packed lower triangle = square (P x PP) accumulator.
void square_to_packed(double* packed, const double* acc, index_t P, index_t PP) {
  for (index_t i = 0; i < P; ++i)
    for (index_t j = 0; j <= i; ++j) packed[i * (i + 1) / 2 + j] = acc[i * PP + j];
}
// packed lower triangle += square (P x PP) accumulator.
void add_packed(double* packed, const double* acc, index_t P, index_t PP) {
  for (index_t i = 0; i < P; ++i)
    for (index_t j = 0; j <= i; ++j) packed[i * (i + 1) / 2 + j] += acc[i * PP + j];
}

// True when every value of X and y in rows [lo, hi) is finite: x * 0 is 0 for finite x, NaN
// otherwise. Eight partial sums keep the loop vectorised.
CRVE_MULTIVERSION bool rows_finite(const MatrixView& X, const VectorView& y, index_t lo, index_t hi) {
  double s = 0.0;
  auto column = [&](const double* p, index_t stride) {
    if (stride == 0) {
      s += p[0] * 0.0;
      return;
    }
    double a[8] = {};
    index_t i = lo;
    if (stride == 1) {
      for (; i + 8 <= hi; i += 8)
        for (int j = 0; j < 8; ++j) a[j] += p[i + j] * 0.0;
    }
    for (; i < hi; ++i) a[0] += p[i * stride] * 0.0;
    for (double v : a) s += v;
  };
  for (index_t k = 0; k < X.cols; ++k) column(X.col[k], X.stride[k]);
  column(y.data, y.stride);
  return s == 0.0;
}

// Staged mode: rows[r] (PP doubles) goes to stage + at[codes[r]]++ * PP, r < n; the destination
// lines are prefetched for writing 16 rows ahead.
CRVE_MULTIVERSION void scatter_block(const double* rows, index_t n, index_t PP, const std::int64_t* codes,
                                     index_t* at, double* stage) {
  for (index_t r = 0; r < n; ++r) {
    if (r + 16 < n) {
      const double* ahead = stage + at[codes[r + 16]] * PP;
      __builtin_prefetch(ahead, 1);
      __builtin_prefetch(ahead + PP - 1, 1);
    }
    double* dst = stage + at[codes[r]]++ * PP;
    const double* src = rows + r * PP;
    index_t v = 0;
    for (; v + 8 <= PP; v += 8) {
      Row8 t;
      std::memcpy(&t, src + v, sizeof t);
      std::memcpy(dst + v, &t, sizeof t);
    }
    if (v < PP) {  // PP = 8 m + 4
      Row4 t;
      std::memcpy(&t, src + v, sizeof t);
      std::memcpy(dst + v, &t, sizeof t);
    }
  }
}

// Staged mode with every lane a contiguous column or a broadcast scalar (record batches): the
// rows are read column by column, eight at a time, and transposed in registers, so each row is
// written whole, straight to its place in the stage, with one or two vector stores; the NaN / inf
// check rides on the same loads. (The general path assembles rows one value at a time into a
// block, checks the columns in a pass of their own and then copies each row.)
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#define CRVE_STAGE_COLUMNS 1
constexpr int kStageLanes = 32;  // widest staged row this path takes (PPS)
constexpr index_t kColumnAhead = 64;  // rows of each column fetched ahead (256: no better)
struct StageLanes {              // lane l of row i: base[l][i * step[l]] - shift[l]
  const double* base[kStageLanes];
  index_t step[kStageLanes];     // 1 (a column) or 0 (a scalar; base points to eight copies)
  double shift[kStageLanes];
  double fill[kStageLanes][8];   // the eight copies of broadcast lanes (padding: zeros)
};

// v[0..7]: eight lanes of rows 0-7 (v[l][r]) -> v[r]: those lanes of row r.
inline __attribute__((always_inline)) void transpose8(Row8* v) {
  Row8 t[8], u[8];
  for (int k = 0; k < 8; k += 2) {
    t[k] = __builtin_shufflevector(v[k], v[k + 1], 0, 8, 2, 10, 4, 12, 6, 14);
    t[k + 1] = __builtin_shufflevector(v[k], v[k + 1], 1, 9, 3, 11, 5, 13, 7, 15);
  }
  for (int k = 0; k < 8; k += 4)
    for (int h = 0; h < 2; ++h) {
      u[k + h] = __builtin_shufflevector(t[k + h], t[k + h + 2], 0, 1, 8, 9, 4, 5, 12, 13);
      u[k + h + 2] = __builtin_shufflevector(t[k + h], t[k + h + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    }
  for (int r = 0; r < 4; ++r) {
    v[r] = __builtin_shufflevector(u[r], u[r + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    v[r + 4] = __builtin_shufflevector(u[r], u[r + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}

// v[0..3]: four lanes of rows 0-7 -> v[r]: those lanes of rows r (low half) and r + 4 (high half).
inline __attribute__((always_inline)) void transpose4x8(Row8* v) {
  const Row8 t0 = __builtin_shufflevector(v[0], v[1], 0, 8, 2, 10, 4, 12, 6, 14);
  const Row8 t1 = __builtin_shufflevector(v[0], v[1], 1, 9, 3, 11, 5, 13, 7, 15);
  const Row8 t2 = __builtin_shufflevector(v[2], v[3], 0, 8, 2, 10, 4, 12, 6, 14);
  const Row8 t3 = __builtin_shufflevector(v[2], v[3], 1, 9, 3, 11, 5, 13, 7, 15);
  v[0] = __builtin_shufflevector(t0, t2, 0, 1, 8, 9, 4, 5, 12, 13);
  v[1] = __builtin_shufflevector(t1, t3, 0, 1, 8, 9, 4, 5, 12, 13);
  v[2] = __builtin_shufflevector(t0, t2, 2, 3, 10, 11, 6, 7, 14, 15);
  v[3] = __builtin_shufflevector(t1, t3, 2, 3, 10, 11, 6, 7, 14, 15);
}

// Rows [lo, hi) to stage + at[codes[i]]++ * PPS; false (and staging stopped) at the first block
// of kCheckRows rows holding a NaN or inf.
template <int PPS>
inline __attribute__((always_inline)) bool stage_columns_fixed(const StageLanes& L, const std::int64_t* codes,
                                                               index_t lo, index_t hi, index_t* at, double* stage,
                                                               index_t check_rows) {
  constexpr int NG = PPS / 8;            // groups of eight lanes
  constexpr bool T4 = PPS % 8 == 4;      // and one of four
  Row8 chk{};
  index_t i = lo;
  for (index_t b1 = std::min(hi, lo + check_rows);; b1 = std::min(hi, b1 + check_rows)) {
    for (; i + 8 <= b1; i += 8) {
      Row8 v[8 * NG + 4 * T4];
      for (int l = 0; l < 8 * NG + 4 * T4; ++l) {
        prefetch_read(L.base[l] + (i + kColumnAhead) * L.step[l]);
        const Row8 x = load8(L.base[l] + i * L.step[l]);
        chk += x * 0.0;  // 0 for finite x, NaN otherwise
        v[l] = x - L.shift[l];
      }
      if (i + 24 <= hi)  // the destinations of the group after next, for writing
        for (int r = 16; r < 24; ++r) {
          const double* ahead = stage + at[codes[i + r]] * PPS;
          __builtin_prefetch(ahead, 1);
          __builtin_prefetch(ahead + PPS - 1, 1);
        }
      for (int g = 0; g < NG; ++g) transpose8(v + 8 * g);
      if (T4) transpose4x8(v + 8 * NG);
      for (int r = 0; r < 8; ++r) {
        double* dst = stage + at[codes[i + r]]++ * PPS;
        for (int g = 0; g < NG; ++g) store8(dst + 8 * g, v[8 * g + r]);
        if (T4) std::memcpy(dst + 8 * NG, reinterpret_cast<const double*>(&v[8 * NG + r % 4]) + 4 * (r / 4),
                            4 * sizeof(double));
      }
    }
    if (b1 == hi) {
      for (; i < hi; ++i) {  // the last rows, one at a time
        double* dst = stage + at[codes[i]]++ * PPS;
        for (int l = 0; l < PPS; ++l) {
          const double x = L.base[l][i * L.step[l]];
          chk[0] += x * 0.0;
          dst[l] = x - L.shift[l];
        }
      }
    }
    double s = 0.0;
    for (int r = 0; r < 8; ++r) s += chk[r];
    if (s != 0.0) return false;
    if (b1 == hi) return true;
  }
}

CRVE_MULTIVERSION bool stage_columns(const StageLanes& L, index_t PPS, const std::int64_t* codes, index_t lo,
                                     index_t hi, index_t* at, double* stage, index_t check_rows) {
  switch (PPS) {
    case 4: return stage_columns_fixed<4>(L, codes, lo, hi, at, stage, check_rows);
    case 8: return stage_columns_fixed<8>(L, codes, lo, hi, at, stage, check_rows);
    case 12: return stage_columns_fixed<12>(L, codes, lo, hi, at, stage, check_rows);
    case 16: return stage_columns_fixed<16>(L, codes, lo, hi, at, stage, check_rows);
    case 20: return stage_columns_fixed<20>(L, codes, lo, hi, at, stage, check_rows);
    case 24: return stage_columns_fixed<24>(L, codes, lo, hi, at, stage, check_rows);
    case 28: return stage_columns_fixed<28>(L, codes, lo, hi, at, stage, check_rows);
    default: return stage_columns_fixed<32>(L, codes, lo, hi, at, stage, check_rows);
  }
}
#endif

}  // namespace

void* bulk_allocate(std::size_t bytes) {
  constexpr std::size_t kHuge = std::size_t(1) << 21, kHugeFrom = std::size_t(4) << 20;
  void* p = nullptr;
  if (bytes >= kHugeFrom) {
    if (posix_memalign(&p, kHuge, (bytes + kHuge - 1) / kHuge * kHuge) != 0) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    madvise(p, bytes, MADV_HUGEPAGE);  // advice only: ignored where huge pages are off
#endif
  } else {
    p = std::malloc(bytes == 0 ? 1 : bytes);
    if (p == nullptr) throw std::bad_alloc();
  }
  return p;
}

ClusterStats::ClusterStats(index_t K, index_t G, std::vector<double> shift)
    : K_(K), G_(G), shift_(std::move(shift)), packed_(static_cast<size_t>(G * (K + 2) * (K + 3) / 2), 0.0) {}

ClusterStats::ClusterStats(index_t K, index_t G, std::vector<double> shift, Uninitialised)
    : K_(K), G_(G), shift_(std::move(shift)), packed_(static_cast<size_t>(G * (K + 2) * (K + 3) / 2)) {}

index_t ClusterStats::stage_doubles(index_t N, index_t K) { return N * padded(K + 2); }

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
                                 index_t n_slots, int threads, const BuildLimits& limits,
                                 std::vector<index_t>* kept) {
  ClusterStats out;
  BuildLimits own = limits;
  own.check_finite = false;
  build_impl(X, y, codes, n_slots, threads, own, out, nullptr, kept);
  out.total_ = out.sum_blocks(threads);
  return out;
}

bool ClusterStats::add_rows(const MatrixView& X, const VectorView& y, const std::int64_t* codes, index_t n_slots,
                            const std::int64_t* map, int threads, const BuildLimits& limits) {
  if (X.cols != K_) throw InputError(InputError::Other, -1, "the rows have a different number of columns");
  BuildLimits own = limits;
  own.shift = shift_;
  forget_total();
  return build_impl(X, y, codes, n_slots, threads, own, *this, map, nullptr);
}

bool ClusterStats::build_impl(const MatrixView& X, const VectorView& y, const std::int64_t* codes, index_t n_slots,
                              int threads, const BuildLimits& limits, ClusterStats& out, const std::int64_t* map,
                              std::vector<index_t>* kept) {
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
  RowGather gather{X, y, shift.data(), K, PP};
  const index_t sq = P * PP;  // square accumulator size

  // Counts per row chunk, and whether each cluster's rows are contiguous (then no permutation is
  // needed). The chunks (a power of two up to 16, at least 16384 rows each, their count arrays
  // together within an eighth of the codes' size or 1 MB) depend on N and G only; integer sums
  // come out the same in any order. The chunk counts also place rows in the counting sort below.
  index_t n_count = 1;
  while (n_count < 16 && 2 * n_count * 16384 <= N &&
         2.0 * n_count * n_slots * sizeof(index_t) <= std::max<double>(1 << 20, N))
    n_count *= 2;
  std::vector<std::vector<index_t>> counts(n_count);
  std::vector<index_t> chunk_runs(n_count, 0), bad(n_count, -1);
  parallel_tasks(n_count, threads, [&](index_t t) {
    counts[t].assign(n_slots, 0);
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
  std::vector<index_t> count(counts[0]);
  index_t runs = chunk_runs[0];
  for (index_t t = 1; t < n_count; ++t) {
    for (index_t g = 0; g < n_slots; ++g) count[g] += counts[t][g];
    runs += chunk_runs[t];
  }
  index_t nonempty = 0;
  for (index_t g = 0; g < n_slots; ++g) nonempty += count[g] > 0;
  const bool grouped = runs == nonempty;

  // The output: a slot's statistics go to dest[slot]; with drop_empty, empty slots get none and
  // the others keep their order. Every kept cluster is written exactly once below. Adding into
  // existing statistics (map given), dest = map for the slots with rows, which must be distinct:
  // each cluster is then added to exactly once, so no two tasks touch the same block.
  std::vector<index_t> dest(n_slots);
  const bool adding = map != nullptr;
  if (adding) {
    std::vector<char> used(out.G_, 0);
    for (index_t g = 0; g < n_slots; ++g) {
      dest[g] = -1;
      if (count[g] == 0) continue;
      if (map[g] < 0 || map[g] >= out.G_ || used[map[g]])
        throw InputError(InputError::BadCode, g, "cluster map out of range or not one to one");
      used[map[g]] = 1;
      dest[g] = map[g];
    }
  } else {
    index_t n_out = 0;
    for (index_t g = 0; g < n_slots; ++g) dest[g] = (limits.drop_empty && count[g] == 0) ? -1 : n_out++;
    if (kept) {
      kept->clear();
      for (index_t g = 0; g < n_slots; ++g)
        if (dest[g] >= 0) kept->push_back(g);
    }
    out = ClusterStats(K, n_out, shift, Uninitialised{});
  }
  auto dst_of = [&](index_t g) { return dest[g] < 0 ? nullptr : out.gram(dest[g]); };
  // A cluster's square accumulator into its packed block: stored, or added when adding.
  auto put = [&](double* dst, const double* acc) {
    if (adding) add_packed(dst, acc, P, PP); else square_to_packed(dst, acc, P, PP);
  };

  // Few clusters, rows in any order: row chunks, each with its own table; inside a chunk rows
  // are grouped by a local counting sort, so X is read sequentially and the kernel sees blocks
  // of one cluster. The chunk count (a power of two up to 16, at least 16384 rows per chunk)
  // depends on N, G and K only; all tables together stay within the budget, which is a
  // sixteenth of the input (at most table_bytes). Tables hold packed blocks, except for narrow
  // designs whose tables are small enough for rank-one updates (square rows of PP doubles).
  // Building new statistics, chunk 0's packed table is the output itself (only the others cost
  // memory); the mode needs one table's worth of budget all the same.
  const double budget = std::min(kTableBytes, std::max(1.0 * (1 << 20), N * (K + 2) * 8.0 / 16));
  auto chunks_for = [&](index_t entry, bool first_is_output) {
    index_t n = 16;
    while (n > 1 && (n * 16384 > N || (n - first_is_output) * n_slots * entry * 8.0 > budget)) n /= 2;
    return n;
  };
  // Doubles per cluster in a table: square blocks (the kernel adds into them in place) where
  // they fit as many chunks as packed ones would, else packed (each block's Gram added in).
  const bool scatter = PP <= 8 && n_slots * sq * 8 <= kScatterTableBytes;
  const index_t n_square = chunks_for(sq, false);
  const bool square = scatter || (n_square * n_slots * sq * 8.0 <= budget && n_square == chunks_for(out.npack(), !adding));
  const index_t entry = square ? sq : out.npack();
  const bool into_out = !square && !adding;  // chunk 0 accumulates straight into the output
  const index_t n_chunks = chunks_for(entry, into_out);
  // A cache-resident input takes the counting sort (except the narrow scatter mode): gathers from
  // cache are as fast as the staged copies, and its one row order (4 bytes a row) is smaller than
  // the tables plus a staging buffer per thread (at least 1 MB, 10% of a 1e5-row input).
  const bool resident = limits.stage == nullptr && N * (K + 2) * 8.0 <= limits.resident_bytes && !scatter;
  const bool table_mode = !grouped && !resident && n_slots * entry * 8.0 <= budget &&
                          (n_chunks - into_out) * n_slots * entry * 8.0 <= budget;
  // Staged (many clusters, rows in any order, and the caller lends scratch: streaming batches):
  // the counting sort below writes each row's z itself, not its index, so X is read once in
  // order and the kernel then reads the copy sequentially; random reads of up to K + 1 cache
  // lines per row (X held as separate columns) become random writes of two.
  const bool staged = !grouped && !table_mode && limits.stage != nullptr && limits.stage_size >= N * PP;
  // The staged copy holds only z's live lanes, PS of them in rows of PPS doubles: a column given as
  // a broadcast scalar equal to its shift (a streamed batch's intercept) is zero in every row, so
  // it is left out of the copy and its entries of every block are zero (stage_lane: each kept
  // lane's place in z). Its kernel works on the statistics of [X_live, 1, y].
  std::vector<index_t> stage_lane;
  MatrixView X_live;
  std::vector<double> shift_live;
  X_live.rows = N;
  for (index_t k = 0; k < K; ++k) {
    if (staged && X.stride[k] == 0 && X.col[k][0] == shift[k]) continue;
    stage_lane.push_back(k);
    X_live.add_column(X.col[k], X.stride[k]);
    shift_live.push_back(shift[k]);
  }
  stage_lane.push_back(K);
  stage_lane.push_back(K + 1);
  shift_live.push_back(shift[K]);
  const index_t PS = static_cast<index_t>(stage_lane.size()), PPS = staged ? padded4(PS) : PP;
  const RowGather stage_gather{X_live, y, shift_live.data(), PS - 2, PPS};
  const bool lanes_from_first = stage_lane.back() - stage_lane.front() == PS - 1;
  // A staged cluster's square accumulator (PS x PPS) into its packed block.
  auto put_staged = [&](double* dst, const double* acc) {
    if (PS == P && PPS == PP) return put(dst, acc);
    if (!adding) std::fill(dst, dst + out.npack(), 0.0);
    for (index_t i = 0; i < PS; ++i) {
      double* row = dst + stage_lane[i] * (stage_lane[i] + 1) / 2;
      const double* a = acc + i * PPS;
      if (lanes_from_first) {  // kept lanes contiguous (the intercept is the first column)
        row += stage_lane[0];
        for (index_t j = 0; j <= i; ++j) row[j] += a[j];
      } else {
        for (index_t j = 0; j <= i; ++j) row[stage_lane[j]] += a[j];
      }
    }
  };
  // check_finite: nothing is written if a value is NaN or inf (staged: checked while copying).
  if (limits.check_finite && !staged) {
    std::vector<char> ok(n_count, 1);
    parallel_tasks(n_count, threads, [&](index_t t) { ok[t] = rows_finite(X, y, N * t / n_count, N * (t + 1) / n_count); });
    for (char o : ok)
      if (!o) return false;
  }
  if (table_mode) {
    std::vector<std::vector<double>> table(n_chunks);
    auto block_of = [&](index_t c, index_t g) {  // chunk c's block of slot g
      return into_out && c == 0 ? dst_of(g) : table[c].data() + g * entry;
    };
    parallel_tasks(n_chunks, threads, [&](index_t c) {
      if (into_out && c == 0) {
        for (index_t g = 0; g < n_slots; ++g)
          if (dest[g] >= 0) std::fill(dst_of(g), dst_of(g) + entry, 0.0);
      } else {
        table[c].assign(n_slots * entry, 0.0);
      }
      const index_t lo = N * c / n_chunks, hi = N * (c + 1) / n_chunks;
      if (scatter) {
        scatter_rows(X, y, out.shift_.data(), codes, lo, hi, K, table[c].data());
        return;
      }
      // Sub-chunks long enough that a cluster's rows come in blocks of about 8 or more: the
      // kernel's fixed cost per block would dominate with 1 to 4 rows per cluster. Each is
      // staged: its rows are read in order (sequential: fast from DRAM too) and their z copied
      // to a thread-local buffer in cluster order, which the kernel then reads in order.
      // The staged copies of all chunks together take at most the tables' budget (or 1 MB each).
      const double stage_bytes = std::max(1.0 * (1 << 20), budget / n_chunks);
      const index_t most = std::max<index_t>(256, static_cast<index_t>(stage_bytes / (PP * 8.0)));
      const index_t sub = std::min(most, std::max(8 * n_slots, kSubChunkRows));
      std::vector<index_t> start(n_slots + 1), pos(n_slots);
      thread_local std::vector<double> stage, acc;
      stage.resize(sub * PP);
      acc.resize(sq);
      for (index_t s0 = lo; s0 < hi; s0 += sub) {
        const index_t s1 = std::min(hi, s0 + sub);
        std::fill(start.begin(), start.end(), 0);
        for (index_t i = s0; i < s1; ++i) ++start[codes[i] + 1];
        for (index_t g = 0; g < n_slots; ++g) start[g + 1] += start[g];
        std::copy(start.begin(), start.end() - 1, pos.begin());
        for (index_t i = s0; i < s1; ++i) {
          double* z = stage.data() + pos[codes[i]]++ * PP;
          gather(i, z);
          for (index_t k = P; k < PP; ++k) z[k] = 0.0;
        }
        for (index_t g = 0; g < n_slots; ++g) {
          if (start[g + 1] == start[g]) continue;
          double* into = entry == sq ? table[c].data() + g * sq : acc.data();
          for (index_t r = start[g]; r < start[g + 1]; r += kBlockRows)
            gram_update(into, stage.data() + r * PP, std::min(kBlockRows, start[g + 1] - r), P, PP,
                        entry != sq && r == start[g]);
          if (entry != sq) add_packed(block_of(c, g), acc.data(), P, PP);
        }
      }
    });
    auto reduce_cluster = [&](index_t g) {  // chunk tables added in chunk order
      if (dest[g] < 0) return;
      double* dst = dst_of(g);
      if (into_out) {  // 0 + t_0 = t_0 exactly: the same sums as below
        for (index_t c = 1; c < n_chunks; ++c) {
          const double* t = table[c].data() + g * entry;
          for (index_t e = 0; e < entry; ++e) dst[e] += t[e];
        }
        return;
      }
      std::vector<double> sum(entry, 0.0);
      for (index_t c = 0; c < n_chunks; ++c) {
        const double* t = table[c].data() + g * entry;
        for (index_t e = 0; e < entry; ++e) sum[e] += t[e];
      }
      if (entry == sq) return put(dst, sum.data());
      for (index_t e = 0; e < entry; ++e) dst[e] += sum[e];  // adding (packed tables)
    };
    parallel_tasks(n_slots, threads, reduce_cluster, 256);
    return true;
  }

  // Many clusters, or rows already grouped by cluster: each cluster's rows are visited in place
  // (grouped input) or through a stable counting sort, built in parallel: row chunk t writes its
  // rows of cluster g after those of chunks 0..t-1, so the order is the same for any thread
  // count. The row order (uint32 where N allows) is built for one range of clusters at a time
  // so that it stays within the budget: order_bytes, or if larger a twentieth of the input
  const index_t npack = out.npack();
  const bool narrow = N < (index_t(1) << 32);
  // ... and, where the statistics themselves are large (many small clusters), so that they and
  // the order together stay within 8% of the input.
  const double input_bytes = N * (K + 2) * 8.0;
  const double order_budget = std::max(
      kOrderBytes,
      std::min(limits.order_fraction * input_bytes, 0.08 * input_bytes - (adding ? 0.0 : out.G_ * npack * 8.0)));
  const index_t n_ranges = (grouped || staged)
      ? 1 : std::max<index_t>(1, static_cast<index_t>(N * (narrow ? 4.0 : 8.0) / order_budget) + 1);
  std::vector<index_t> start(n_slots + 1, 0);
  if (grouped) {
    for (index_t i = 0; i < N; ++i)
      if (i == 0 || codes[i - 1] != codes[i]) start[codes[i]] = i;
  }
  bulk_vector<std::uint32_t> order32;
  bulk_vector<std::int64_t> order64;
  double* const rows_z = staged ? limits.stage : nullptr;  // staged: the rows' live z in cluster order (N x PPS)
  index_t g_lo = 0, before = 0;  // rows of the clusters below g_lo
  for (index_t range = 0; range < n_ranges; ++range) {
    // Clusters [g_lo, g_hi) hold about N / n_ranges rows.
    index_t g_hi = g_lo, rows = 0;
    const index_t target = N * (range + 1) / n_ranges;
    while (g_hi < n_slots && (before + rows < target || range + 1 == n_ranges)) rows += count[g_hi++];
    if (!grouped) {
      start[g_lo] = 0;
      for (index_t g = g_lo; g < g_hi; ++g) start[g + 1] = start[g] + count[g];
      const index_t width = g_hi - g_lo;
      std::vector<index_t> pos(n_count * width);
      for (index_t g = g_lo; g < g_hi; ++g) {
        index_t p = start[g];
        for (index_t t = 0; t < n_count; ++t) {
          pos[t * width + g - g_lo] = p;
          p += counts[t][g];
        }
      }
      if (staged) {
        std::vector<char> finite(n_count, 1);
#ifdef CRVE_STAGE_COLUMNS
        // Every lane a column read in order or a scalar: the column-wise path (stage_columns).
        bool columnar = PPS <= kStageLanes && (y.stride == 0 || y.stride == 1);
        for (index_t l = 0; l < PS - 2; ++l) columnar = columnar && (X_live.stride[l] == 0 || X_live.stride[l] == 1);
        StageLanes lanes;
        if (columnar) {
          for (index_t l = 0; l < PPS; ++l) {
            const bool pad = l >= PS, one = l == PS - 2;
            const double* src = pad || one ? nullptr : l == PS - 1 ? y.data : X_live.col[l];
            const index_t step = pad || one ? 0 : l == PS - 1 ? y.stride : X_live.stride[l];
            std::fill(lanes.fill[l], lanes.fill[l] + 8, pad ? 0.0 : one ? 1.0 : src[0]);
            lanes.base[l] = step ? src : lanes.fill[l];
            lanes.step[l] = step;
            lanes.shift[l] = pad || one ? 0.0 : shift_live[l == PS - 1 ? PS - 2 : l];
          }
          parallel_tasks(n_count, threads, [&](index_t t) {
            finite[t] = stage_columns(lanes, PPS, codes, N * t / n_count, N * (t + 1) / n_count, pos.data() + t * width,
                                      rows_z, limits.check_finite ? kCheckRows : N + 8) ||
                        !limits.check_finite;
          });
        } else
#endif
        parallel_tasks(n_count, threads, [&](index_t t) {
          index_t* at = pos.data() + t * width;
          const index_t lo = N * t / n_count, hi = N * (t + 1) / n_count;
          thread_local std::vector<double> block;
          block.resize(kCheckRows * PPS);
          for (index_t b0 = lo; b0 < hi; b0 += kCheckRows) {
            const index_t b1 = std::min(hi, b0 + kCheckRows);
            // Checked a block at a time, just before it is copied (then read from L2).
            if (limits.check_finite && !rows_finite(X, y, b0, b1)) {
              finite[t] = 0;
              return;
            }
            // The block's rows assembled in order (cache-resident), then each moved whole to its
            // place: a few wide stores per row, not one per value, wait on the random lines.
            for (index_t i = b0; i < b1; ++i) {
              double* z = block.data() + (i - b0) * PPS;
              stage_gather(i, z);
              for (index_t k = PS; k < PPS; ++k) z[k] = 0.0;
            }
            scatter_block(block.data(), b1 - b0, PPS, codes + b0, at, rows_z);
          }
        });
        for (char f : finite)
          if (!f) return false;
      } else if (narrow) {
        order32.resize(rows);
      } else {
        order64.resize(rows);
      }
      if (!staged) parallel_tasks(n_count, threads, [&](index_t t) {
        index_t* at = pos.data() + t * width;
        const index_t lo = N * t / n_count, hi = N * (t + 1) / n_count;
        for (index_t i = lo; i < hi; ++i) {
          const index_t c = codes[i] - g_lo;
          if (c < 0 || c >= width) continue;
          if (narrow) order32[at[c]++] = static_cast<std::uint32_t>(i); else order64[at[c]++] = i;
        }
      });
    }
    // Tasks: runs of consecutive clusters of about kTaskRows rows; a cluster of more than
    // kSegmentRows rows is split into segments whose partial sums are added in segment order.
    struct Task { index_t g0, g1, lo, n, part; };  // clusters [g0, g1), or rows [lo, lo + n) of g0
    std::vector<Task> tasks;
    index_t n_parts = 0;
    for (index_t g = g_lo; g < g_hi;) {
      if (count[g] > kSegmentRows) {
        for (index_t lo = 0; lo < count[g]; lo += kSegmentRows)
          tasks.push_back({g, g + 1, start[g] + lo, std::min(kSegmentRows, count[g] - lo), n_parts++});
        ++g;
        continue;
      }
      index_t g1 = g, n = 0;
      while (g1 < g_hi && count[g1] <= kSegmentRows && (n == 0 || n + count[g1] <= kTaskRows)) n += count[g1++];
      tasks.push_back({g, g1, 0, 0, -1});
      g = g1;
    }
    const index_t range_rows = grouped ? N : rows;
    std::vector<double> parts(n_parts * npack, 0.0);
    parallel_tasks(static_cast<index_t>(tasks.size()), threads, [&](index_t t) {
      thread_local std::vector<double> Z, acc;
      const Task& task = tasks[t];
      // One cluster's rows: the order from position `first`; the prefetch runs on to the range's end.
      auto run = [&](index_t first, index_t n, double* dst) {
        acc.resize(sq);  // n >= 1: the first block overwrites it (fresh)
        if (staged) {
          for (index_t lo = 0; lo < n; lo += kBlockRows)
            gram_update(acc.data(), rows_z + (first + lo) * PPS, std::min(kBlockRows, n - lo), PS, PPS, lo == 0);
          return put_staged(dst, acc.data());
        } else if (grouped) {
          accumulate_rows(gather, [first](index_t r) { return first + r; }, n, acc.data(), Z, 0, true);
        } else if (narrow) {
          const std::uint32_t* o = order32.data() + first;
          accumulate_rows(gather, [o](index_t r) { return static_cast<index_t>(o[r]); }, n, acc.data(), Z,
                          range_rows - first, true);
        } else {
          const std::int64_t* o = order64.data() + first;
          accumulate_rows(gather, [o](index_t r) { return o[r]; }, n, acc.data(), Z, range_rows - first, true);
        }
        put(dst, acc.data());
      };
      if (task.part >= 0) {
        run(task.lo, task.n, parts.data() + task.part * npack);
      } else {
        for (index_t g = task.g0; g < task.g1; ++g) {
          if (adding && g + kBlocksAhead < task.g1 && dest[g + kBlocksAhead] >= 0) {
            // Adding: the block of the cluster after next is read and written; fetch it now.
            const char* b = reinterpret_cast<const char*>(dst_of(g + kBlocksAhead));
            for (index_t e = 0; e < npack * 8; e += 64) __builtin_prefetch(b + e, 1);
            __builtin_prefetch(b + npack * 8 - 1, 1);
          }
          if (count[g] > 0) {
            run(start[g], count[g], dst_of(g));
          } else if (dest[g] >= 0) {  // an empty slot kept (never when adding)
            std::fill(dst_of(g), dst_of(g) + npack, 0.0);
          }
        }
      }
    });
    for (const Task& task : tasks) {  // split clusters: parts added in order
      if (task.part < 0) continue;
      double* dst = dst_of(task.g0);
      const double* src = parts.data() + task.part * npack;
      if (task.lo == start[task.g0] && !adding) std::fill(dst, dst + npack, 0.0);
      for (index_t e = 0; e < npack; ++e) dst[e] += src[e];
    }
    before += rows;
    g_lo = g_hi;
  }
  return true;
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
  forget_total();
  // With z_new = z_old + delta z_K (z_K = 1): Z_new = Z + delta c' + c delta' + n delta delta',
  // where c = Z e_K (the sums of z) and n = Z_KK, added entry by entry (no temporaries).
  std::vector<double> c(P);
  for (index_t h = 0; h < other.G_; ++h) {
    const index_t g = map[h];
    if (g < 0 || g >= G_) throw InputError(InputError::BadCode, h, "cluster map out of range");
    double* dst = gram(g);
    const double* src = other.gram(h);
    if (same) {
      for (index_t e = 0; e < np; ++e) dst[e] += src[e];
      continue;
    }
    for (index_t i = 0; i < P; ++i) c[i] = src[pack_index(i, K_)];
    const double n = c[K_];
    for (index_t i = 0; i < P; ++i)
      for (index_t j = 0; j <= i; ++j)
        dst[i * (i + 1) / 2 + j] += src[i * (i + 1) / 2 + j] + delta[i] * c[j] + c[i] * delta[j] + n * delta[i] * delta[j];
  }
}

void ClusterStats::compact(const std::int64_t* keep, index_t n) {
  const index_t np = npack();
  forget_total();
  for (index_t h = 0; h < n; ++h) {
    if (keep[h] < h || keep[h] >= G_ || (h > 0 && keep[h] <= keep[h - 1]))
      throw InputError(InputError::BadCode, h, "compact needs increasing cluster indices");
    if (keep[h] != h) std::memcpy(gram(h), gram(keep[h]), sizeof(double) * np);
  }
  G_ = n;
  packed_.resize(n * np);  // shrinks in place: no second copy of the statistics
}

std::vector<double> ClusterStats::total(int threads) const { return total_.empty() ? sum_blocks(threads) : total_; }

std::vector<double> ClusterStats::sum_blocks(int threads) const {
  // Summed over 16 fixed cluster chunks: the same on any number of threads.
  const index_t np = npack();
  return parallel_reduce<std::vector<double>>(
      G_, threads, 16, 16384, [np] { return std::vector<double>(np, 0.0); },
      [&](std::vector<double>& t, index_t g) {
        const double* z = gram(g);
        for (index_t e = 0; e < np; ++e) t[e] += z[e];
      },
      [](std::vector<double>& a, const std::vector<double>& b) {
        for (size_t e = 0; e < a.size(); ++e) a[e] += b[e];
      });
}

index_t ClusterStats::nonfinite_column(int threads) const {
  const std::vector<double> sum = total(threads);
  for (index_t i = 0; i < P(); ++i)
    if (!std::isfinite(sum[pack_index(i, i)])) return i < K_ ? i : K_;
  return -1;
}

}  // namespace crve
