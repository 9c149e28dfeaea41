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
  const double t = W.trace();  // sum of the hat block's eigenvalues, >= the largest
  if (t < kSeriesTrace) {
    leverage_max = t;
    // phi(W) - I as a power series in W: CR2 (1-x)^{-1/2} - 1 = sum c_k x^k, c_k = binom(2k, k)
    // / 4^k; CR3 (1-x)^{-1} - 1 = sum x^k, c_k <= 1. Term k is below t^k (the eigenvalues are at
    // most t), so the series stops at the first term below 1e-17: phi(W) = I + F1 to rounding.
    const bool cr2 = v == Variant::CV2;
    double a[24] = {0.0, cr2 ? 0.5 : 1.0};  // a[k]: the coefficient of W^k, k = 1..n
    index_t n = 1;
    for (double tk = t; n < 23 && tk * t > 1e-17; tk *= t) {
      ++n;
      a[n] = cr2 ? a[n - 1] * (2.0 * n - 1.0) / (2.0 * n) : 1.0;
    }
    // Paterson–Stockmeyer: F1 = sum_j B_j (W^s)^j, B_j = sum_{i<s} a[js + i] W^i, by Horner in
    // W^s from the powers W..W^s: s - 1 + n / s products instead of n - 1.
    index_t s = 1;
    for (index_t c = 2; c <= n; ++c)
      if (c - 1 + n / c < s - 1 + n / s) s = c;
    pw.resize(s + 1);
    pw[1] = W;
    for (index_t i = 2; i <= s; ++i) product(pw[i - 1], W, pw[i]);
    auto block = [&](index_t j, MatrixXd& B) {
      B.setZero(r, r);
      B.diagonal().setConstant(a[j * s]);
      for (index_t i = 1; i < s && j * s + i <= n; ++i) B += a[j * s + i] * pw[i];
    };
    const index_t m = n / s;
    block(m, F1);
    for (index_t j = m - 1; j >= 0; --j) {
      product(pw[s], F1, Wn);
      block(j, F1);
      F1 += Wn;
    }
    return;
  }
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

// One traversal: adjusted scores T_g s_g into the meat, and (q > 0) the diagonal Omega sums.
CovAcc traverse(const Model& m, Variant v, const MatrixXd* contrasts, bool full, bool need_cov, int threads) {
  const index_t K = m.K, q = contrasts ? contrasts->cols() : 0;
  const MatrixXd AC = contrasts ? MatrixXd(m.A * *contrasts) : MatrixXd(K, 0);
  return parallel_reduce<CovAcc>(
      m.G, threads, kChunks, 32,
      [&] { return CovAcc{MatrixXd::Zero(K, K), VectorXd::Zero(K), 0, 0.0, OmegaAcc(K, q, full)}; },
      [&](CovAcc& acc, index_t g) {
        thread_local HatBlock hb;
        thread_local VectorXd t, F1z;
        thread_local MatrixXd Cg;
        const bool adjust = v != Variant::CV0 && v != Variant::CV1;
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
