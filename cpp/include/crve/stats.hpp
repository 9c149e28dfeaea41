// Per-cluster sufficient statistics (DESIGN.md section 1).
//
// For each cluster g we keep the Gram matrix of the augmented, shifted rows
//     z_i = [x_i - m, 1, y_i - m_y]          (P = K + 2 entries)
//     Z_g = sum_{i in g} z_i z_i'            (P x P, stored packed lower)
// which holds n_g, X_g'X_g, X_g'y_g and y_g'y_g in a shifted basis. The shift (m, m_y) is the
// first row: shifting removes the large common offsets that make normal equations lose digits
// (NIST Longley: 11 or more correct digits instead of 8), and a constant column becomes exactly zero,
// which is how the intercept is recognised. Statistics of two row shards add; shards with
// different shifts are re-shifted exactly first (z -> z + delta * 1).
#pragma once
#include <Eigen/Dense>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <utility>
#include <vector>

#include "views.hpp"

namespace crve {

/// Allocator for big scratch and result arrays: elements are left uninitialised (their writer
/// fills every one, in parallel, so pages are first touched by the threads that use them), and
/// blocks of 4 MB or more ask the kernel for transparent huge pages (fewer page faults).
template <class T>
struct BulkAllocator {
  using value_type = T;
  BulkAllocator() = default;
  template <class U>
  BulkAllocator(const BulkAllocator<U>&) {}
  T* allocate(std::size_t n);
  void deallocate(T* p, std::size_t) { std::free(p); }
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;  // default-initialisation: no zeroing
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
  template <class U>
  bool operator==(const BulkAllocator<U>&) const { return true; }
  template <class U>
  bool operator!=(const BulkAllocator<U>&) const { return false; }
};
template <class T>
using bulk_vector = std::vector<T, BulkAllocator<T>>;
void* bulk_allocate(std::size_t bytes);
template <class T>
T* BulkAllocator<T>::allocate(std::size_t n) {
  return static_cast<T*>(bulk_allocate(n * sizeof(T)));
}

/// Memory budgets that choose the traversal of ClusterStats::build (tests shrink them to reach
/// every mode on small data). They never depend on the thread count.
struct BuildLimits {
  double table_bytes = 32.0 * (1 << 20);  // few-clusters mode: all chunk tables together
  double resident_bytes = 16.0 * (1 << 20);  // inputs up to this size (N (K + 2) doubles), with no
                                            // scratch lent, skip the chunk tables (except the narrow
                                            // scatter mode): their rows stay in cache, where the
                                            // counting sort's gathers are as fast and need no
                                            // per-thread staging
  double order_bytes = 16.0 * (1 << 20);  // many-clusters mode: the counting sort's row order
  double order_fraction = 0.05;           // ... or, if more, this fraction of the input's size
  double* stage = nullptr;                // caller's scratch for a copy of the rows in cluster order
  index_t stage_size = 0;                 // (stage_doubles(N, K) or more: the many-clusters mode then
                                          // reads X once, in order; streaming batches reuse one buffer)
  bool drop_empty = false;                // leave slots with no rows out of the result
  bool check_finite = false;              // add_rows: add nothing (return false) if X or y has NaN/inf
  std::vector<double> shift;              // K + 1 centres (x, then y); empty: the first row's values.
                                          // Batches built with one shift add without re-shifting.
};

class ClusterStats {
 public:
  ClusterStats() = default;
  /// G empty clusters (all sums zero).
  ClusterStats(index_t K, index_t G, std::vector<double> shift);

  /// One pass over the rows. codes[i] in [0, n_slots) names row i's cluster; rows need not be
  /// sorted. Slots with no rows stay empty (n_g = 0) unless limits.drop_empty. Work is split by cluster or by fixed row
  /// chunks, never by thread count, so the result is the same on any number of threads.
  /// With limits.drop_empty the result holds only the slots with rows, in slot order, and
  /// `kept` (if given) receives their slot numbers.
  static ClusterStats build(const MatrixView& X, const VectorView& y, const std::int64_t* codes,
                            index_t n_slots, int threads, const BuildLimits& limits = BuildLimits(),
                            std::vector<index_t>* kept = nullptr);

  index_t K() const { return K_; }
  index_t G() const { return G_; }
  index_t P() const { return K_ + 2; }
  index_t npack() const { return P() * (P() + 1) / 2; }
  static index_t pack_index(index_t i, index_t j) { return i >= j ? i * (i + 1) / 2 + j : j * (j + 1) / 2 + i; }

  const std::vector<double>& shift() const { return shift_; }
  /// Writable block; whoever writes through it (or through packed()) must call forget_total().
  double* gram(index_t g) { return packed_.data() + g * npack(); }
  const double* gram(index_t g) const { return packed_.data() + g * npack(); }
  bulk_vector<double>& packed() { return packed_; }
  const bulk_vector<double>& packed() const { return packed_; }
  double count(index_t g) const { return gram(g)[pack_index(K_, K_)]; }
  double nobs() const;

  /// Z_g unpacked (P x P).
  Eigen::MatrixXd block(index_t g) const;

  /// The same pass adding into these statistics: this[map[slot]] += the statistics of the rows
  /// with that code (map: one entry per slot, distinct for the slots that have rows; others
  /// ignored). The rows are taken in this object's shift, so batches of a stream add exactly.
  /// With limits.check_finite, a NaN or inf in X or y adds nothing and returns false.
  bool add_rows(const MatrixView& X, const VectorView& y, const std::int64_t* codes, index_t n_slots,
                const std::int64_t* map, int threads, const BuildLimits& limits = BuildLimits());
  /// Doubles of scratch that lets build / add_rows copy N rows of K columns (BuildLimits::stage).
  static index_t stage_doubles(index_t N, index_t K);

  /// this[map[h]] += other[h] for every cluster h of `other`, re-shifting `other` if needed.
  void add(const ClusterStats& other, const std::int64_t* map);
  /// The first column (K for y) whose sum of squares is NaN or inf (NaN/inf in the data, or
  /// overflow), or -1.
  index_t nonfinite_column(int threads = 1) const;
  /// The whole sample's packed Gram (sum over clusters, 16 fixed chunks: thread-count independent).
  /// build() leaves it computed, so the checks and the Model after it do not read the G blocks
  /// again; add, add_rows and compact drop it (it is then summed on each call).
  std::vector<double> total(int threads = 1) const;
  void forget_total() { total_.clear(); }
  /// Keep only the clusters keep[0..n) (strictly increasing), in place.
  void compact(const std::int64_t* keep, index_t n);

 private:
  index_t K_ = 0, G_ = 0;
  std::vector<double> shift_;   // m (K) then m_y
  bulk_vector<double> packed_;  // G x npack
  std::vector<double> total_;   // total() as build() left it; empty: not known
  std::vector<double> sum_blocks(int threads) const;
  struct Uninitialised {};
  static bool build_impl(const MatrixView& X, const VectorView& y, const std::int64_t* codes, index_t n_slots,
                         int threads, const BuildLimits& limits, ClusterStats& out, const std::int64_t* map,
                         std::vector<index_t>* kept);
  ClusterStats(index_t K, index_t G, std::vector<double> shift, Uninitialised);
};

}  // namespace crve
