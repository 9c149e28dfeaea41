#include "crve/estimators.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "crve/parallel.hpp"
#include "simd.hpp"

namespace crve {

namespace {

constexpr double kCholeskyTol = 1e-11;  // relative pivot size treated as zero rank
constexpr index_t kChunks = 64;         // fixed reduction chunks (thread-count independent)

// Columns [j0, j0 + J) of C (m x n, leading dimension m) = A (m x k, leading dimension lda) B
// (k x n, leading dimension ldb): a column of A is NV vectors, C's J columns stay in registers.
// Columns p < safe of A are read in place (lanes past row m read what follows and feed only rows
// >= m, which are not stored); later ones from `tail`, where they are copied zero-padded.
template <int NV, int J>
inline __attribute__((always_inline)) void product_cols(const double* A, index_t lda, const double* B, index_t ldb,
                                                        double* C, index_t m, index_t k, index_t j0, index_t safe,
                                                        const double* tail, index_t full) {
  Row8 c[J][NV] = {};
  for (index_t p = 0; p < k; ++p) {
    const double* a = p < safe ? A + p * lda : tail + (p - safe) * 8 * NV;
    Row8 av[NV];
    for (int v = 0; v < NV; ++v) std::memcpy(&av[v], a + 8 * v, sizeof(Row8));
    for (int j = 0; j < J; ++j) {
      const double b = B[p + (j0 + j) * ldb];
      for (int v = 0; v < NV; ++v) c[j][v] += b * av[v];
    }
  }
  // Columns are stored in order, whole vectors where that stays within C: the lanes past row m
  // land on the next columns' first rows, which are stored later; the last ones exactly.
  for (int j = 0; j < J; ++j) {
    double* out = C + (j0 + j) * m;
    if (j0 + j < full) {
      std::memcpy(out, c[j], sizeof c[j]);
    } else {
      double tmp[8 * NV];
      std::memcpy(tmp, c[j], sizeof tmp);
      std::memcpy(out, tmp, m * sizeof(double));
    }
  }
}

template <int NV>
inline __attribute__((always_inline)) void product_fixed(const double* A, index_t lda, const double* B, index_t ldb,
                                                         double* C, index_t m, index_t k, index_t n) {
  // Column p can be read in place while p lda + 8 NV stays within A ((k - 1) lda + m values).
  const index_t end = (k - 1) * lda + m, safe = std::min(k, end >= 8 * NV ? (end - 8 * NV) / lda + 1 : 0);
  double tail[8 * NV * 8];  // at most 7 columns: (k - 1 - p) lda < 8 NV - m <= 7
  for (index_t p = safe; p < k; ++p) {
    double* t = tail + (p - safe) * 8 * NV;
    std::memcpy(t, A + p * lda, m * sizeof(double));
    std::fill(t + m, t + 8 * NV, 0.0);
  }
  // Column j of C is stored as whole vectors while j m + 8 NV stays within C (n m values).
  const index_t full = n * m >= 8 * NV ? std::min(n, (n * m - 8 * NV) / m + 1) : 0;
  index_t j = 0;
  for (; j + 4 <= n; j += 4) product_cols<NV, 4>(A, lda, B, ldb, C, m, k, j, safe, tail, full);
  switch (n - j) {
    case 3: return product_cols<NV, 3>(A, lda, B, ldb, C, m, k, j, safe, tail, full);
    case 2: return product_cols<NV, 2>(A, lda, B, ldb, C, m, k, j, safe, tail, full);
    case 1: return product_cols<NV, 1>(A, lda, B, ldb, C, m, k, j, safe, tail, full);
    default: return;
  }
}

CRVE_MULTIVERSION void small_product(const double* A, index_t lda, const double* B, index_t ldb, double* C, index_t m,
                                     index_t k, index_t n) {
  if (m <= 8) return product_fixed<1>(A, lda, B, ldb, C, m, k, n);
  if (m <= 16) return product_fixed<2>(A, lda, B, ldb, C, m, k, n);
  if (m <= 24) return product_fixed<3>(A, lda, B, ldb, C, m, k, n);
  return product_fixed<4>(A, lda, B, ldb, C, m, k, n);
}

// Pivoted Cholesky (LAPACK dpstrf's order) of the symmetric K x K matrix whose lower triangle is
// in a (column-major), in place: returns the rank r (pivots up to tol); the first r columns of
// the lower triangle then hold the factor of the pivoted rows, and perm the pivot order. Only
// the lower triangle is read or written (symmetric swaps, as dpstrf).
CRVE_MULTIVERSION index_t pivoted_cholesky(double* a, index_t K, double tol, index_t* perm) {
  auto at = [&](index_t i, index_t j) -> double& { return a[i + j * K]; };  // i >= j
  index_t r = 0;
  for (; r < K; ++r) {
    index_t p = r;
    for (index_t i = r + 1; i < K; ++i)
      if (at(i, i) > at(p, p)) p = i;
    if (!(at(p, p) > tol)) break;
    if (p != r) {  // swap rows and columns r and p of the symmetric matrix, lower triangle only
      std::swap(at(r, r), at(p, p));
      for (index_t j = 0; j < r; ++j) std::swap(at(r, j), at(p, j));
      for (index_t i = r + 1; i < p; ++i) std::swap(at(i, r), at(p, i));
      for (index_t i = p + 1; i < K; ++i) std::swap(at(i, r), at(i, p));
      std::swap(perm[r], perm[p]);
    }
    double* cr = a + r * K;
    const double d = std::sqrt(cr[r]), inv = 1.0 / d;
    cr[r] = d;
    for (index_t i = r + 1; i < K; ++i) cr[i] *= inv;
    for (index_t j = r + 1; j < K; ++j) {  // the trailing lower triangle -= c c', c = column r below r
      double* cj = a + j * K;
      const double b = cr[j];
      for (index_t i = j; i < K; ++i) cj[i] -= cr[i] * b;
    }
  }
  return r;
}

// The lower triangles of the K x K matrices lower[a] += w_a w_a', w_a = column a of W (K x q).
CRVE_MULTIVERSION void rank_updates(double* const* lower, const double* W, index_t K, index_t q) {
  for (index_t a = 0; a < q; ++a) {
    const double* w = W + a * K;
    double* M = lower[a];
    for (index_t j = 0; j < K; ++j) {
      const double b = w[j];
      double* col = M + j * K;
      for (index_t i = j; i < K; ++i) col[i] += w[i] * b;
    }
  }
}

// acc (K x K, column-major, both triangles) += sum of s_g s_g' over the columns g in [lo, hi) of S.
// Summed in a buffer of the calling thread's own (the callers' accumulators may share lines).
CRVE_MULTIVERSION void outer_sums(const double* __restrict S, index_t K, index_t lo, index_t hi, double* acc) {
  thread_local std::vector<double> own;
  own.assign(K * K, 0.0);
  double* __restrict a = own.data();
  for (index_t g = lo; g < hi; ++g) {
    const double* __restrict s = S + g * K;
    for (index_t j = 0; j < K; ++j) {
      const double b = s[j];
      double* __restrict col = a + j * K;
      for (index_t i = 0; i < K; ++i) col[i] += s[i] * b;
    }
  }
  for (index_t e = 0; e < K * K; ++e) acc[e] += a[e];
}

// S S' (the CV0 meat) summed over 16 fixed cluster chunks: the same on any number of threads.
MatrixXd score_outer(const MatrixXd& S, int threads) {
  const index_t K = S.rows(), G = S.cols();
  return parallel_reduce<MatrixXd>(
      16, threads, 16, 1, [K] { return MatrixXd::Zero(K, K); },
      [&](MatrixXd& acc, index_t c) { outer_sums(S.data(), K, G * c / 16, G * (c + 1) / 16, acc.data()); },
      [](MatrixXd& a, const MatrixXd& b) { a += b; });
}

// C = A B for the clusters' small blocks (no aliasing): the kernel above where A has at most 32
// rows (Eigen's coefficient-based product of dynamic-size matrices is 3x slower there), else Eigen.
template <class MA, class MB>
void product(const MA& A, const MB& B, MatrixXd& C) {
  const index_t m = A.rows(), k = A.cols(), n = B.cols();
  C.resize(m, n);
  if (m == 0 || n == 0) return;
  if (k == 0) {
    C.setZero();
    return;
  }
  if (m > 32) {
    C.noalias() = A * B;
    return;
  }
  small_product(A.data(), A.outerStride(), B.data(), B.outerStride(), C.data(), m, k, n);
}

}  // namespace

void HatBlock::compute(const Eigen::Ref<const MatrixXd>& Cg, const MatrixXd& A, Variant v) {
  // Pivoted Cholesky (LAPACK dpstrf order) of C_g, stopping at a relative pivot tolerance.
  const index_t K = Cg.rows();
  R = Cg;
  perm.resize(K);
  for (index_t i = 0; i < K; ++i) perm[i] = i;
  const double dmax = R.diagonal().maxCoeff();
  const double tol = kCholeskyTol * dmax;
  index_t r = 0;
  if (dmax > 0) r = pivoted_cholesky(R.data(), K, tol, perm.data());
  // L in the original row order; its first r pivoted rows (lower triangular) stay in R.
  L.setZero(K, r);
  for (index_t i = 0; i < K; ++i)
    for (index_t j = 0; j < r && j <= i; ++j) L(perm[i], j) = R(i, j);
  rank_ = r;
  leverage_one = false;
  leverage_max = 0.0;
  if (r == 0) {
    F1.resize(0, 0);
    return;
  }
  product(A, L, AL);
  LT = L.transpose();
  product(LT, AL, W);
  es.compute(W);
  lam = es.eigenvalues().cwiseMax(0.0);
  VectorXd p1(r);
  for (index_t j = 0; j < r; ++j) p1[j] = adjustment(v, lam[j]) - 1.0;
  leverage_one = lam.maxCoeff() >= 1.0 - kLeverageTol;
  for (index_t j = 0; j < r; ++j)
    if (lam[j] < 1.0 - kLeverageTol) leverage_max = std::max(leverage_max, lam[j]);
  const MatrixXd& V = es.eigenvectors();
  Wn.noalias() = V * p1.asDiagonal();
  F1.noalias() = Wn.lazyProduct(V.transpose());
}

const VectorXd& HatBlock::pinv(const Eigen::Ref<const VectorXd>& s) {
  const index_t r = rank();
  z.resize(r);
  for (index_t i = 0; i < r; ++i) z[i] = s[perm[i]];
  R.topLeftCorner(r, r).triangularView<Eigen::Lower>().solveInPlace(z);
  return z;
}

// ---- the series path, kLanes clusters at a time -------------------------------------------
namespace {
constexpr int kL = SeriesBatch::kLanes;

static_assert(kL == 8, "one Row8 per entry");

// Rows i0 .. i0 + R - 1 of column j of Out (m x n, lanes) = X (m x k, lanes) B (k x n: lanes, or
// one matrix shared by all lanes). R accumulators of one vector each hide the FMA latency.
template <int R, bool Shared>
inline __attribute__((always_inline)) void lane_rows(const double* __restrict X, const double* __restrict B, index_t m,
                                                     index_t k, index_t i0, index_t j, double* __restrict Out) {
  Row8 acc[R] = {};
  for (index_t p = 0; p < k; ++p) {
    if (Shared && B[p + j * k] == 0.0) continue;  // sparse shared factors (contrasts): skip zeros
    const Row8 b = Shared ? Row8{} + B[p + j * k] : load8(B + (p + j * k) * kL);
    for (int r = 0; r < R; ++r) acc[r] += load8(X + (i0 + r + p * m) * kL) * b;
  }
  for (int r = 0; r < R; ++r) store8(Out + (i0 + r + j * m) * kL, acc[r]);
}

template <bool Shared>
inline __attribute__((always_inline)) void lane_product_impl(const double* X, const double* B, index_t m, index_t k,
                                                             index_t n, double* Out) {
  for (index_t j = 0; j < n; ++j) {
    index_t i = 0;
    for (; i + 4 <= m; i += 4) lane_rows<4, Shared>(X, B, m, k, i, j, Out);
    switch (m - i) {
      case 3: lane_rows<3, Shared>(X, B, m, k, i, j, Out); break;
      case 2: lane_rows<2, Shared>(X, B, m, k, i, j, Out); break;
      case 1: lane_rows<1, Shared>(X, B, m, k, i, j, Out); break;
      default: break;
    }
  }
}
CRVE_MULTIVERSION void lane_product(const double* X, const double* B, bool shared, index_t m, index_t k, index_t n,
                                    double* Out) {
  if (shared) return lane_product_impl<true>(X, B, m, k, n, Out);
  lane_product_impl<false>(X, B, m, k, n, Out);
}

// phiV += alpha cur; D(a, b) += bd mu, E(a, b) += be mu for mu = AC_a' cur_b (b = a unless full).
CRVE_MULTIVERSION void lane_terms(const double* __restrict cur, double alpha, double* __restrict phiV, index_t nv,
                                  const double* __restrict AC, index_t K, index_t q, bool full, double bd, double be,
                                  double* __restrict D, double* __restrict E) {
  for (index_t e = 0; e < nv; ++e) store8(phiV + e * kL, load8(phiV + e * kL) + alpha * load8(cur + e * kL));
  auto moment = [&](index_t a, index_t b) {
    Row8 mu0 = {}, mu1 = {};  // two chains: half the add latency
    index_t i = 0;
    for (; i + 2 <= K; i += 2) {
      mu0 += AC[i + a * K] * load8(cur + (i + b * K) * kL);
      mu1 += AC[i + 1 + a * K] * load8(cur + (i + 1 + b * K) * kL);
    }
    if (i < K) mu0 += AC[i + a * K] * load8(cur + (i + b * K) * kL);
    const Row8 mu = mu0 + mu1;
    const index_t at = (full ? a + b * q : b) * kL;
    store8(D + at, load8(D + at) + bd * mu);
    store8(E + at, load8(E + at) + be * mu);
  };
  for (index_t b = 0; b < q; ++b) {
    if (!full) {
      moment(b, b);
      continue;
    }
    for (index_t a = 0; a < q; ++a) moment(a, b);
  }
}
}  // namespace

SeriesBatch::SeriesBatch(const MatrixXd& A, const MatrixXd* C, const MatrixXd* AC, bool full, Variant v)
    : A_(A), C_(C), AC_(AC), K_(A.rows()), q_(AC ? AC->cols() : 0), full_(full), cr2_(v == Variant::CV2) {
  Cl_.assign(K_ * K_ * kL, 0.0);
  N_.resize(K_ * K_ * kL);
  const index_t nv = (q_ + 1) * K_ * kL, nd = q_ * (full_ ? q_ : 1) * kL;
  V_.assign(nv, 0.0);
  cur_.resize(nv);
  prev_.resize(nv);
  phiV_.resize(nv);
  D_.resize(nd);
  E_.resize(nd);
}

double SeriesBatch::next_trace() const {
  // Both symmetric: tr(A C_g) = the sum of the elementwise products, in 4 partial sums.
  const double *c = Cl_.data() + used_, *a = A_.data();
  const index_t n = K_ * K_;
  double t[4] = {};
  index_t e = 0;
  for (; e + 4 <= n; e += 4)
    for (int r = 0; r < 4; ++r) t[r] += c[(e + r) * kL] * a[e + r];
  for (; e < n; ++e) t[0] += c[e * kL] * a[e];
  return (t[0] + t[1]) + (t[2] + t[3]);
}

bool SeriesBatch::add(const double* s) {
  const index_t l = used_++;
  for (index_t i = 0; i < K_; ++i) V_[(i + q_ * K_) * kL + l] = s[i];
  return used_ == kL;
}

void SeriesBatch::run() {
  const index_t K = K_, q = q_, nv = (q + 1) * K;
  for (index_t l = used_; l < kL; ++l) {  // unused lanes: zeros in, zeros out
    for (index_t e = 0; e < K * K; ++e) Cl_[e * kL + l] = 0.0;
    for (index_t i = 0; i < K; ++i) V_[(i + q * K) * kL + l] = 0.0;
  }
  used_ = 0;
  lane_product(Cl_.data(), A_.data(), true, K, K, K, N_.data());  // N_g = C_g A
  // The largest leverage of each lane is at most t and at most sqrt(tr N^2) (computed with its
  // rounding bound added: N need not be symmetric); the terms follow the largest over the lanes.
  // |N_ij N_ji| <= (N_ij^2 + N_ji^2) / 2, so ||N||_F^2 bounds the sum of the products' sizes.
  Row8 t = {}, tr2 = {}, fro = {};
  for (index_t j = 0; j < K; ++j) {
    t += load8(&N_[(j + j * K) * kL]);
    for (index_t i = 0; i < K; ++i) {
      const Row8 x = load8(&N_[(i + j * K) * kL]);
      tr2 += x * load8(&N_[(j + i * K) * kL]);
      fro += x * x;
    }
  }
  double rho = 0.0;
  for (int l = 0; l < kL; ++l)
    rho = std::max(rho, std::min(std::max(t[l], 0.0), std::sqrt(std::max(tr2[l], 0.0) + 1e-13 * fro[l])));
  // CR2: phi = (1-x)^{-1/2}, a_k = binom(2k, k) / 4^k; phi^2 = (1-x)^{-1}, b_k = 1.
  // CR3: phi = (1-x)^{-1}, a_k = 1; phi^2 = (1-x)^{-2}, b_k = k + 1. All a_k <= 1, b_k <= k + 1.
  double a = 1.0, b = 1.0, b_prev = 1.0;
  if (q) lane_product(N_.data(), C_->data(), true, K, K, q, V_.data());  // V = [N_g C = C_g AC, s_g]
  std::copy(V_.begin(), V_.end(), phiV_.begin());
  std::fill(D_.begin(), D_.end(), 0.0);
  std::fill(E_.begin(), E_.end(), 0.0);
  if (q) lane_terms(V_.data(), 0.0, phiV_.data(), 0, AC_ ? AC_->data() : nullptr, K, q, full_, 1.0, 0.0, D_.data(),
                    E_.data());
  const double* prev = V_.data();
  double rk = 1.0;
  for (index_t k = 1; k <= kMaxTerms; ++k) {
    a = cr2_ ? a * (2.0 * k - 1.0) / (2.0 * k) : 1.0;
    b_prev = b;
    b = cr2_ ? 1.0 : k + 1.0;
    lane_product(N_.data(), prev, false, K, K, q + 1, cur_.data());  // N_g^k V
    lane_terms(cur_.data(), a, phiV_.data(), nv, AC_ ? AC_->data() : nullptr, K, q, full_, b, b_prev, D_.data(),
               E_.data());
    std::swap(cur_, prev_);
    prev = prev_.data();
    rk *= rho;
    if ((k + 2.0) * rk * rho <= 1e-17) break;  // term k + 1 of both series
  }
  if (full_) {  // symmetric in exact arithmetic
    for (index_t bb = 0; bb < q; ++bb)
      for (index_t aa = 0; aa < bb; ++aa)
        for (int l = 0; l < kL; ++l) {
          double& d1 = D_[(aa + bb * q) * kL + l];
          double& d2 = D_[(bb + aa * q) * kL + l];
          d1 = d2 = 0.5 * (d1 + d2);
          double& e1 = E_[(aa + bb * q) * kL + l];
          double& e2 = E_[(bb + aa * q) * kL + l];
          e1 = e2 = 0.5 * (e1 + e2);
        }
  }
}

double adjustment(Variant v, double lam) {
  switch (v) {
    case Variant::CV0:
    case Variant::CV1:
      return 1.0;
    case Variant::CV2:
      return lam >= 1.0 - kLeverageTol ? 0.0 : 1.0 / std::sqrt(1.0 - lam);
    case Variant::CV3:
    case Variant::CV3J:
      return lam >= 1.0 - kLeverageTol ? 0.0 : 1.0 / (1.0 - lam);
  }
  return 1.0;
}

namespace {

// Accumulates the pieces of OmegaSums cluster by cluster.
struct OmegaAcc {
  index_t K = 0, q = 0;
  bool full = false;
  MatrixXd D1, P_abab, X_abab, P_aabb, X_aabb;
  std::vector<MatrixXd> WW;  // WW[a*q+b] = sum_g w_a w_b'   (only a == b unless full)

  OmegaAcc(index_t K_, index_t q_, bool full_) : K(K_), q(q_), full(full_) {
    D1 = P_abab = X_abab = P_aabb = X_aabb = MatrixXd::Zero(q, q);
    WW.assign(q * q, MatrixXd());
    for (index_t a = 0; a < q; ++a)
      for (index_t b = 0; b < q; ++b)
        if (full || a == b) WW[a * q + b] = MatrixXd::Zero(K, K);
  }
  // One cluster: W (K x q) columns w_a, D (q x q) d^{ab}, E (q x q) e^{ab} = w_a'A w_b.
  void add(const MatrixXd& W, const MatrixXd& D, const MatrixXd& E) {
    D1 += D;
    P_abab += D.cwiseProduct(D);
    X_abab += D.cwiseProduct(E);
    const VectorXd dd = D.diagonal(), ee = E.diagonal();
    P_aabb += dd * dd.transpose();
    X_aabb += dd * ee.transpose() + ee * dd.transpose();
    for (index_t a = 0; a < q; ++a)
      for (index_t b = 0; b < q; ++b)
        if (full || a == b) WW[a * q + b].noalias() += W.col(a) * W.col(b).transpose();
  }
  // Diagonal-only update (full == false): one contrast a.
  void add_diag(index_t a, const Eigen::Ref<const VectorXd>& w, double d, double e) {
    D1(a, a) += d;
    P_abab(a, a) += d * d;
    X_abab(a, a) += d * e;
    double* lower = WW[a * q + a].data();
    rank_updates(&lower, w.data(), K, 1);
  }
  // ... every contrast a at once: w_a = W.col(a), d_a, e_a.
  void add_diag(const MatrixXd& W, const double* d, const double* e) {
    thread_local std::vector<double*> lower;
    lower.resize(q);
    for (index_t a = 0; a < q; ++a) {
      D1(a, a) += d[a];
      P_abab(a, a) += d[a] * d[a];
      X_abab(a, a) += d[a] * e[a];
      lower[a] = WW[a * q + a].data();
    }
    rank_updates(lower.data(), W.data(), K, q);
  }
  void merge(const OmegaAcc& o) {
    D1 += o.D1;
    P_abab += o.P_abab;
    X_abab += o.X_abab;
    P_aabb += o.P_aabb;
    X_aabb += o.X_aabb;
    for (size_t i = 0; i < WW.size(); ++i)
      if (WW[i].size()) WW[i] += o.WW[i];
  }
  OmegaSums finish(const MatrixXd& A) const {
    OmegaSums out;
    out.trace = out.tr_abab = out.tr_aabb = MatrixXd::Constant(q, q, std::nan(""));
    std::vector<MatrixXd> S(WW.size());  // full symmetric WW (diag mode stores the lower half)
    for (size_t i = 0; i < WW.size(); ++i)
      if (WW[i].size()) S[i] = full ? WW[i] : MatrixXd(WW[i].selfadjointView<Eigen::Lower>());
    for (index_t a = 0; a < q; ++a) {
      for (index_t b = 0; b < q; ++b) {
        if (!full && a != b) continue;
        const MatrixXd& Wab = S[a * q + b];
        out.trace(a, b) = D1(a, b) - (A * Wab).trace();
        // tr(Omega^{ab} Omega^{ab}) = sum d^2 - 2 sum d e + tr(A WW_ba A WW_ba)
        const MatrixXd& Wba = S[b * q + a];
        out.tr_abab(a, b) = P_abab(a, b) - 2.0 * X_abab(a, b) + (A * Wba * A * Wba).trace();
        // tr(Omega^{aa} Omega^{bb}) = sum d_aa d_bb - sum (d_aa e_bb + d_bb e_aa) + tr(A WW_ab A WW_ba)
        out.tr_aabb(a, b) = full ? P_aabb(a, b) - X_aabb(a, b) + (A * Wab * A * Wba).trace() : out.tr_abab(a, b);
      }
    }
    return out;
  }
};

// Omega pieces of one cluster. Unadjusted (CV0/CV1, where hb is unused): w_a = C_g AC_a,
// d^{ab} = AC_a' C_g AC_b. Adjusted, C_g + L F1 L' = L phi L' and C_g + L F2 L' = L phi^2 L', so
// with M = phi L'AC (r x q): w_a = L M_a, d^{ab} = M_a'M_b; and e^{ab} = w_a'A w_b = M_a' W M_b.
void omega_cluster(const Eigen::Ref<const MatrixXd>& Cg, const HatBlock* hb, const MatrixXd& A, const MatrixXd& AC,
                   OmegaAcc& acc) {
  thread_local MatrixXd W, M, LtAC, E;
  const bool adjust = hb != nullptr && hb->rank() > 0;
  if (adjust) {
    product(hb->LT, AC, LtAC);  // r x q
    product(hb->F1, LtAC, M);
    M += LtAC;
    product(hb->L, M, W);       // K x q: the w_a
    product(hb->W, M, E);
  } else {
    product(Cg, AC, W);
    product(A, W, E);
  }
  // d^{ab} = Ml_a' D_b and e^{ab} = D_a' E_b: (Ml, D, E) = (M, M, W M) adjusted, (AC, W, A W) not.
  const MatrixXd& Ml = adjust ? M : AC;
  const MatrixXd& D = adjust ? M : W;
  if (acc.full) {
    acc.add(W, Ml.transpose() * D, D.transpose() * E);
    return;
  }
  thread_local std::vector<double> d, e;
  d.resize(acc.q);
  e.resize(acc.q);
  for (index_t a = 0; a < acc.q; ++a) d[a] = Ml.col(a).dot(D.col(a)), e[a] = D.col(a).dot(E.col(a));
  acc.add_diag(W, d.data(), e.data());
}

struct CovAcc {
  MatrixXd meat;   // sum of adjusted scores' outer products
  VectorXd dsum;   // CV3J: sum of A T_g s_g
  index_t lev = 0;
  double lev_max = 0.0;
  OmegaAcc omega;
  void merge(const CovAcc& o) {
    meat += o.meat;
    dsum += o.dsum;
    lev += o.lev;
    lev_max = std::max(lev_max, o.lev_max);
    omega.merge(o.omega);
  }
};

// Sums of the series path's clusters, lane by lane ([entry][lane]), folded into a CovAcc at the
// end of each chunk: the meat's and the WW_a's lower triangles, and d, d^2, d e per contrast.
// The w_a of up to kHeld batches are held, so that each entry of the WW_a is loaded and stored
// once per kHeld batches (the rank-one updates are otherwise bound by the stores); they are added
// in batch order, the same sums as one batch at a time.
struct LaneSums {
  static constexpr index_t kHeld = 4;
  std::vector<double> meat, dsum, d1, dd, de, ww, held;
  index_t n_held = 0;
  void reset(index_t K, index_t q, bool omega) {
    meat.assign(K * K * kL, 0.0);
    dsum.assign(K * kL, 0.0);
    d1.assign(omega ? q * kL : 0, 0.0);
    dd.assign(d1.size(), 0.0);
    de.assign(d1.size(), 0.0);
    ww.assign(omega ? q * K * K * kL : 0, 0.0);
    held.resize(omega ? kHeld * q * K * kL : 0);
    n_held = 0;
  }
};

// The held batches' w_a w_a' into the lower triangles of the WW_a.
CRVE_MULTIVERSION void add_held(LaneSums& s, index_t K, index_t q) {
  const index_t stride = q * K * kL;  // one batch's w
  for (index_t a = 0; a < q; ++a) {
    double* ww = s.ww.data() + a * K * K * kL;
    const double* w = s.held.data() + a * K * kL;
    for (index_t j = 0; j < K; ++j)
      for (index_t i = j; i < K; ++i) {
        double* o = ww + (i + j * K) * kL;
        Row8 sum = load8(o);
        for (index_t b = 0; b < s.n_held; ++b)
          sum += load8(w + b * stride + i * kL) * load8(w + b * stride + j * kL);
        store8(o, sum);
      }
  }
  s.n_held = 0;
}

// The batch's results into the lane sums: t t' (t = the adjusted score), and, for the diagonal
// Omega sums, d, d^2, d e and w_a w_a' of every contrast a.
CRVE_MULTIVERSION void lane_accumulate(const SeriesBatch& sb, bool cov, bool cv3j, bool omega, const double* A,
                                       LaneSums& s) {
  const index_t K = sb.K(), q = sb.q();
  auto outer = [&](index_t c, double* into) {  // lower triangle of into += v v', v = phiV column c
    for (index_t j = 0; j < K; ++j) {
      const Row8 vj = load8(sb.phiV_lanes(j, c));
      for (index_t i = j; i < K; ++i) {
        double* o = into + (i + j * K) * kL;
        store8(o, load8(o) + load8(sb.phiV_lanes(i, c)) * vj);
      }
    }
  };
  if (cov) {
    outer(q, s.meat.data());
    if (cv3j)
      for (index_t p = 0; p < K; ++p) {
        const Row8 tp = load8(sb.phiV_lanes(p, q));
        for (index_t i = 0; i < K; ++i) store8(&s.dsum[i * kL], load8(&s.dsum[i * kL]) + A[i + p * K] * tp);
      }
  }
  if (!omega) return;
  for (index_t a = 0; a < q; ++a) {
    const Row8 d = load8(sb.D_lanes(a, 0)), e = load8(sb.E_lanes(a, 0));
    store8(&s.d1[a * kL], load8(&s.d1[a * kL]) + d);
    store8(&s.dd[a * kL], load8(&s.dd[a * kL]) + d * d);
    store8(&s.de[a * kL], load8(&s.de[a * kL]) + d * e);
  }
  // w_a = phiV's first q columns, held until kHeld batches are in.
  std::memcpy(s.held.data() + s.n_held * q * K * kL, sb.phiV_lanes(0, 0), q * K * kL * sizeof(double));
  if (++s.n_held == LaneSums::kHeld) add_held(s, K, q);
}

// One traversal: adjusted scores T_g s_g into the meat, and (q > 0) the Omega sums. Clusters with
// small leverage take the series in batches (SeriesBatch), the others the HatBlock, one cluster
// at a time; kChunks fixed chunks of clusters, so the sums do not depend on the thread count.
CovAcc traverse(const Model& m, Variant v, const MatrixXd* contrasts, bool full, bool need_cov, int threads) {
  const index_t K = m.K, q = contrasts ? contrasts->cols() : 0, G = m.G;
  const MatrixXd AC = contrasts ? MatrixXd(m.A * *contrasts) : MatrixXd(K, 0);
  const bool adjust = v != Variant::CV0 && v != Variant::CV1;
  const index_t n_chunks = std::max<index_t>(1, std::min(kChunks, G));
  return parallel_reduce<CovAcc>(
      n_chunks, G >= 64 ? threads : 1, n_chunks, 1,
      [&] { return CovAcc{MatrixXd::Zero(K, K), VectorXd::Zero(K), 0, 0.0, OmegaAcc(K, q, full)}; },
      [&](CovAcc& acc, index_t c) {
        thread_local HatBlock hb;
        thread_local VectorXd t, F1z;
        thread_local MatrixXd Cg, W, D, E;
        thread_local LaneSums sums;
        SeriesBatch sb(m.A, contrasts, q > 0 ? &AC : nullptr, full, v);
        sums.reset(K, q, q > 0 && !full);
        auto flush = [&] {  // the batch's clusters into the sums
          if (sb.size() == 0) return;
          const index_t used = sb.size();
          sb.run();
          lane_accumulate(sb, need_cov, v == Variant::CV3J, q > 0 && !full, m.A.data(), sums);
          if (q > 0 && full) {  // HTZ: the full q x q pieces, cluster by cluster
            W.resize(K, q), D.resize(q, q), E.resize(q, q);
            for (index_t l = 0; l < used; ++l) {
              for (index_t a = 0; a < q; ++a) {
                for (index_t i = 0; i < K; ++i) W(i, a) = sb.phiV(i, a, l);
                for (index_t b = 0; b < q; ++b) D(a, b) = sb.D_lanes(a, b)[l], E(a, b) = sb.E_lanes(a, b)[l];
              }
              acc.omega.add(W, D, E);
            }
          }
        };
        const index_t g_end = G * (c + 1) / n_chunks;
        for (index_t g = G * c / n_chunks; g < g_end; ++g) {
          if (g + 2 < g_end) m.prefetch(g + 2);  // the blocks are read in order: hide DRAM latency
          if (adjust) {
            m.C_into(g, sb.next(), kL);
            const double tr = sb.next_trace();
            if (tr < kSeriesTrace) {  // small leverage: the series, in the next lane
              acc.lev_max = std::max(acc.lev_max, std::max(tr, 0.0));
              if (sb.add(m.S.col(g).data())) flush();
              continue;
            }
          }
          if (adjust || q > 0) m.C_of(g, Cg);
          if (adjust) {
            hb.compute(Cg, m.A, v);
            acc.lev += hb.leverage_one;
            acc.lev_max = std::max(acc.lev_max, hb.leverage_max);
          }
          if (need_cov) {
            t = m.S.col(g);
            if (adjust && hb.rank() > 0) {
              F1z.noalias() = hb.F1 * hb.pinv(m.S.col(g));
              t.noalias() += hb.L * F1z;
            }
            acc.meat.selfadjointView<Eigen::Lower>().rankUpdate(t);
            if (v == Variant::CV3J) acc.dsum.noalias() += m.A * t;
          }
          if (q > 0) omega_cluster(Cg, adjust ? &hb : nullptr, m.A, AC, acc.omega);
        }
        flush();
        if (sums.n_held) add_held(sums, K, q);
        // The lane sums into the chunk's accumulator, lanes in order.
        for (int l = 0; l < kL; ++l) {
          for (index_t j = 0; j < K; ++j)
            for (index_t i = j; i < K; ++i) acc.meat(i, j) += sums.meat[(i + j * K) * kL + l];
          for (index_t i = 0; i < K; ++i) acc.dsum[i] += sums.dsum[i * kL + l];
          if (sums.d1.empty()) continue;
          for (index_t a = 0; a < q; ++a) {
            acc.omega.D1(a, a) += sums.d1[a * kL + l];
            acc.omega.P_abab(a, a) += sums.dd[a * kL + l];
            acc.omega.X_abab(a, a) += sums.de[a * kL + l];
            MatrixXd& ww = acc.omega.WW[a * q + a];
            for (index_t j = 0; j < K; ++j)
              for (index_t i = j; i < K; ++i) ww(i, j) += sums.ww[((a * K * K) + i + j * K) * kL + l];
          }
        }
      },
      [](CovAcc& a, const CovAcc& b) { a.merge(b); });
}

CovResult finish_cov(const Model& m, Variant v, CovAcc& acc) {
  CovResult res;
  const double G = static_cast<double>(m.G);
  const MatrixXd meat = acc.meat.selfadjointView<Eigen::Lower>();
  res.cov = m.A * meat * m.A;
  res.leverage_one = acc.lev;
  res.leverage_max = acc.lev_max;
  if (v == Variant::CV3) {
    // Jackknife (MNW 2023): beta_(g) - beta = -(X'X - C_g)^{-1} s_g = -A X_g'(I - H_gg)^{-1} u_g.
    res.cov *= (G - 1.0) / G;
  } else if (v == Variant::CV3J) {
    // Centred on the mean of the beta_(g): sum (d - dbar)(d - dbar)' = sum d d' - G dbar dbar'.
    res.cov = (G - 1.0) / G * (res.cov - acc.dsum * acc.dsum.transpose() / G);
  }
  return res;
}

}  // namespace

CovResult cluster_cov(const Model& m, Variant v, int threads) {
  if (v == Variant::CV0 || v == Variant::CV1) {
    CovResult res;
    const double G = static_cast<double>(m.G);
    res.cov = m.A * score_outer(m.S, threads) * m.A;
    if (v == Variant::CV1) res.cov *= G / (G - 1.0) * (m.N - 1.0) / (m.N - m.K);
    return res;
  }
  CovAcc acc = traverse(m, v, nullptr, false, true, threads);
  return finish_cov(m, v, acc);  // CV2: Bell–McCaffrey, no extra factor
}

OmegaSums omega_sums(const Model& m, Variant v, const MatrixXd& contrasts, bool full, int threads) {
  CovAcc acc = traverse(m, v, &contrasts, full, false, threads);
  OmegaSums out = acc.omega.finish(m.A);
  out.leverage_one = acc.lev;
  return out;
}

std::pair<CovResult, OmegaSums> cluster_cov_dof(const Model& m, Variant v, const MatrixXd& contrasts, int threads) {
  if (v == Variant::CV0 || v == Variant::CV1) {
    return {cluster_cov(m, v, threads), omega_sums(m, v, contrasts, false, threads)};
  }
  CovAcc acc = traverse(m, v, &contrasts, false, true, threads);
  OmegaSums o = acc.omega.finish(m.A);
  o.leverage_one = acc.lev;
  return {finish_cov(m, v, acc), o};
}

RowPass row_pass(const Model& m, const MatrixView& X, const VectorView& y, Variant v,
                 const MatrixXd* contrasts, bool full, int threads) {
  const index_t K = m.K, N = X.rows;
  const index_t q = contrasts ? contrasts->cols() : 0;
  const MatrixXd AC = contrasts ? MatrixXd(m.A * *contrasts) : MatrixXd(K, 0);
  struct Acc {
    MatrixXd meat;
    VectorXd jk;
    index_t lev = 0;
    double lev_max = 0.0;
    OmegaAcc omega;
  };
  Acc total = parallel_reduce<Acc>(
      N, threads, kChunks, 4096,
      [&] { return Acc{MatrixXd::Zero(K, K), VectorXd::Zero(K), 0, 0.0, OmegaAcc(K, q, full)}; },
      [&](Acc& acc, index_t i) {
        thread_local VectorXd w, Aw;
        thread_local Eigen::RowVectorXd z;
        w.resize(K);
        double yw;
        m.working_row(X, i, y[i], w.data(), yw);
        const double u = yw - w.dot(m.gamma);
        Aw.noalias() = m.A * w;
        const double h = std::max(0.0, w.dot(Aw));
        const double phi = adjustment(v, h);
        acc.lev += h >= 1.0 - kLeverageTol;
        if (h < 1.0 - kLeverageTol) acc.lev_max = std::max(acc.lev_max, h);
        const double t = phi * u;  // adjusted score of the row is t * w
        acc.meat.selfadjointView<Eigen::Lower>().rankUpdate(w, t * t);
        if (v == Variant::CV3J) acc.jk += t * Aw;
        if (q > 0) {
          // Rank-one cluster: L = w, lam = h; w_a = phi w (w'A c_a), d^{ab} = phi^2 z_a z_b.
          z.noalias() = w.transpose() * AC;
          if (full) {
            const MatrixXd W = (phi * w) * z;
            const MatrixXd D = (phi * phi) * z.transpose() * z;
            acc.omega.add(W, D, h * D);
          } else {
            for (index_t a = 0; a < q; ++a) {
              const double d = phi * phi * z[a] * z[a];
              acc.omega.add_diag(a, (phi * z[a]) * w, d, h * d);
            }
          }
        }
      },
      [](Acc& a, const Acc& b) {
        a.meat += b.meat;
        a.jk += b.jk;
        a.lev += b.lev;
        a.lev_max = std::max(a.lev_max, b.lev_max);
        a.omega.merge(b.omega);
      });
  RowPass out;
  out.meat = total.meat.selfadjointView<Eigen::Lower>();
  out.jk_sum = std::move(total.jk);
  out.leverage_one = total.lev;
  out.leverage_max = total.lev_max;
  if (q > 0) {
    out.omega = total.omega.finish(m.A);
    out.omega.leverage_one = total.lev;
  }
  return out;
}

}  // namespace crve
