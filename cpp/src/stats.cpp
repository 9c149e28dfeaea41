#include "crve/stats.hpp"

#include <algorithm>
#include <cstring>

#include "crve/parallel.hpp"

namespace crve {

// The one hot loop of the library: packed lower-triangular rank-1 and rank-4 updates. Built
// for baseline x86-64 and for x86-64-v3 (AVX2 + FMA), picked at load time, so the default
// build stays portable.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CRVE_MULTIVERSION __attribute__((target_clones("default", "arch=x86-64-v3")))
#else
#define CRVE_MULTIVERSION
#endif

namespace {

CRVE_MULTIVERSION void rank1(double* __restrict acc, const double* __restrict z, index_t P) {
  for (index_t i = 0; i < P; ++i) {
    const double zi = z[i];
    double* __restrict a = acc + i * (i + 1) / 2;
    for (index_t j = 0; j <= i; ++j) a[j] += zi * z[j];
  }
}

// acc += sum_{r<4} z_r z_r' ; z is 4 rows of length P, stored one after the other.
CRVE_MULTIVERSION void rank4(double* __restrict acc, const double* __restrict z, index_t P) {
  const double* z0 = z;
  const double* z1 = z + P;
  const double* z2 = z + 2 * P;
  const double* z3 = z + 3 * P;
  for (index_t i = 0; i < P; ++i) {
    const double a0 = z0[i], a1 = z1[i], a2 = z2[i], a3 = z3[i];
    double* __restrict a = acc + i * (i + 1) / 2;
    for (index_t j = 0; j <= i; ++j) a[j] += a0 * z0[j] + a1 * z1[j] + a2 * z2[j] + a3 * z3[j];
  }
}

struct RowGather {
  const MatrixView& X;
  const VectorView& y;
  const double* shift;
  index_t K;
  void operator()(index_t i, double* z) const {
    const double* row = X.data + i * X.row_stride;
    if (X.col_stride == 1) {
      for (index_t k = 0; k < K; ++k) z[k] = row[k] - shift[k];
    } else {
      for (index_t k = 0; k < K; ++k) z[k] = row[k * X.col_stride] - shift[k];
    }
    z[K] = 1.0;
    z[K + 1] = y[i] - shift[K];
  }
};

// Accumulate rows rows[0..n) (row indices via `at`) into acc, four at a time.
template <class At>
void accumulate_rows(const RowGather& gather, At at, index_t n, double* acc, double* buf, index_t P) {
  index_t r = 0;
  for (; r + 4 <= n; r += 4) {
    for (int j = 0; j < 4; ++j) gather(at(r + j), buf + j * P);
    rank4(acc, buf, P);
  }
  for (; r < n; ++r) {
    gather(at(r), buf);
    rank1(acc, buf, P);
  }
}

constexpr index_t kSegmentRows = 1 << 15;  // rows per task when a cluster is split
constexpr index_t kRowChunks = 64;         // fixed chunk count of the small-G mode
constexpr double kSmallGBytes = 16.0 * (1 << 20);

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
                                 index_t n_slots, int threads) {
  const index_t N = X.rows, K = X.cols, P = K + 2;
  if (y.size != N) throw InputError(InputError::Other, -1, "y and X have different numbers of rows");
  if (N < 1) throw InputError(InputError::TooFewRows, -1, "no rows");
  std::vector<double> shift(K + 1);
  for (index_t k = 0; k < K; ++k) shift[k] = X(0, k);
  shift[K] = y[0];
  ClusterStats out(K, n_slots, shift);
  const index_t npack = out.npack();
  RowGather gather{X, y, out.shift_.data(), K};

  // Counts, and whether each cluster's rows are contiguous (then no permutation is needed).
  std::vector<index_t> count(n_slots, 0);
  index_t runs = 0;
  for (index_t i = 0; i < N; ++i) {
    const std::int64_t c = codes[i];
    if (c < 0 || c >= n_slots) throw InputError(InputError::BadCode, i, "cluster code out of range");
    ++count[c];
    runs += (i == 0 || codes[i - 1] != c);
  }
  index_t nonempty = 0;
  for (index_t g = 0; g < n_slots; ++g) nonempty += count[g] > 0;
  const bool grouped = runs == nonempty;

  if (!grouped && kRowChunks * n_slots * npack * 8.0 <= kSmallGBytes) {
    // Few clusters, rows in any order: fixed row chunks, each with its own small table.
    const index_t n_chunks = std::max<index_t>(1, std::min<index_t>(kRowChunks, N / 4096));
    std::vector<std::vector<double>> part(n_chunks);
    parallel_tasks(n_chunks, threads, [&](index_t c) {
      part[c].assign(n_slots * npack, 0.0);
      std::vector<double> buf(4 * P);
      const index_t lo = N * c / n_chunks, hi = N * (c + 1) / n_chunks;
      index_t i = lo;
      while (i < hi) {
        const std::int64_t g = codes[i];
        index_t j = i + 1;
        while (j < hi && codes[j] == g) ++j;  // a run of one cluster: rank-4 updates
        accumulate_rows(gather, [i](index_t r) { return i + r; }, j - i, part[c].data() + g * npack, buf.data(), P);
        i = j;
      }
    });
    for (index_t c = 0; c < n_chunks; ++c) {
      const double* src = part[c].data();
      double* dst = out.packed_.data();
      for (index_t e = 0; e < n_slots * npack; ++e) dst[e] += src[e];
    }
    return out;
  }

  // Rows grouped by cluster: directly (grouped input) or through a stable counting sort.
  std::vector<index_t> start(n_slots + 1, 0);
  std::vector<std::uint32_t> order32;
  std::vector<std::int64_t> order64;
  if (grouped) {
    for (index_t i = 0; i < N; ++i)
      if (i == 0 || codes[i - 1] != codes[i]) start[codes[i]] = i;
  } else {
    for (index_t g = 0; g < n_slots; ++g) start[g + 1] = start[g] + count[g];
    std::vector<index_t> pos(start.begin(), start.end() - 1);
    if (N < (index_t(1) << 32)) {
      order32.resize(N);
      for (index_t i = 0; i < N; ++i) order32[pos[codes[i]]++] = static_cast<std::uint32_t>(i);
    } else {
      order64.resize(N);
      for (index_t i = 0; i < N; ++i) order64[pos[codes[i]]++] = i;
    }
  }
  // Tasks: each cluster, split into segments of at most kSegmentRows rows. A cluster in one
  // segment is written in place; split clusters get partial sums added in segment order.
  struct Segment { index_t g, lo, n, part; };
  std::vector<Segment> seg;
  index_t n_parts = 0;
  for (index_t g = 0; g < n_slots; ++g) {
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
    thread_local std::vector<double> buf;
    buf.resize(4 * P);
    const Segment& s = seg[t];
    double* acc = s.part < 0 ? out.gram(s.g) : parts.data() + s.part * npack;
    if (grouped) {
      accumulate_rows(gather, [&s](index_t r) { return s.lo + r; }, s.n, acc, buf.data(), P);
    } else if (!order32.empty()) {
      const std::uint32_t* o = order32.data() + s.lo;
      accumulate_rows(gather, [o](index_t r) { return static_cast<index_t>(o[r]); }, s.n, acc, buf.data(), P);
    } else {
      const std::int64_t* o = order64.data() + s.lo;
      accumulate_rows(gather, [o](index_t r) { return o[r]; }, s.n, acc, buf.data(), P);
    }
  });
  for (const Segment& s : seg) {
    if (s.part < 0) continue;
    double* dst = out.gram(s.g);
    const double* src = parts.data() + s.part * npack;
    for (index_t e = 0; e < npack; ++e) dst[e] += src[e];
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

ClusterStats ClusterStats::subset(const std::int64_t* keep, index_t n) const {
  ClusterStats out(K_, n, shift_);
  const index_t np = npack();
  for (index_t h = 0; h < n; ++h) {
    if (keep[h] < 0 || keep[h] >= G_) throw InputError(InputError::BadCode, h, "cluster index out of range");
    std::memcpy(out.gram(h), gram(keep[h]), sizeof(double) * np);
  }
  return out;
}

}  // namespace crve
