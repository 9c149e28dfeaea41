#include "crve/estimators.hpp"

#include <cmath>

#include "crve/parallel.hpp"

namespace crve {

namespace {

constexpr double kCholeskyTol = 1e-11;  // relative pivot size treated as zero rank
constexpr index_t kChunks = 64;         // fixed reduction chunks (thread-count independent)

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
  if (dmax > 0) {
    for (; r < K; ++r) {
      index_t p;
      const double best = R.diagonal().tail(K - r).maxCoeff(&p);
      p += r;
      if (!(best > tol)) break;
      if (p != r) {
        R.row(r).swap(R.row(p));
        R.col(r).swap(R.col(p));
        std::swap(perm[r], perm[p]);
      }
      const double d = std::sqrt(R(r, r));
      R(r, r) = d;
      const index_t m = K - r - 1;
      R.col(r).tail(m) /= d;
      R.bottomRightCorner(m, m).noalias() -= R.col(r).tail(m) * R.col(r).tail(m).transpose();
    }
  }
  // L in the original row order; L11 = the first r pivoted rows (lower triangular).
  L.setZero(K, r);
  for (index_t i = 0; i < K; ++i)
    for (index_t j = 0; j < r && j <= i; ++j) L(perm[i], j) = R(i, j);
  L11 = R.topLeftCorner(r, r).triangularView<Eigen::Lower>();
  leverage_one = false;
  leverage_max = 0.0;
  if (r == 0) {
    F1.resize(0, 0);
    return;
  }
  AL.noalias() = A.lazyProduct(L);
  W.noalias() = L.transpose().lazyProduct(AL);
  const double t = W.trace();  // sum of the hat block's eigenvalues, >= the largest
  if (t < kSeriesTrace) {
    leverage_max = t;
    // phi(W) - I as a power series in W: CR2 (1-x)^{-1/2} - 1 = sum c_k x^k, c_k = binom(2k, k)
    // / 4^k; CR3 (1-x)^{-1} - 1 = sum x^k, c_k <= 1. Term k is below t^k (the eigenvalues are at
    // most t), so the series stops at the first term below 1e-17: phi(W) = I + F1 to rounding.
    const bool cr2 = v == Variant::CV2;
    F1 = W;
    if (cr2) F1 *= 0.5;
    Wk = W;
    double c = 0.5, tk = t;
    for (index_t k = 2; tk * t > 1e-17; ++k) {
      Wn.noalias() = Wk.lazyProduct(W);
      Wk.swap(Wn);
      tk *= t;
      c *= (2.0 * k - 1.0) / (2.0 * k);
      F1 += (cr2 ? c : 1.0) * Wk;
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
  L11.triangularView<Eigen::Lower>().solveInPlace(z);
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
    WW[a * q + a].selfadjointView<Eigen::Lower>().rankUpdate(w);
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
  thread_local MatrixXd W, M, LtAC, AW;
  const bool adjust = hb != nullptr && hb->rank() > 0;
  if (adjust) {
    LtAC.noalias() = hb->L.transpose().lazyProduct(AC);  // r x q
    M = LtAC;
    M.noalias() += hb->F1.lazyProduct(LtAC);
    W.noalias() = hb->L.lazyProduct(M);                  // K x q: the w_a
    AW.noalias() = hb->W.lazyProduct(M);                 // r x q: e^{ab} = M_a' (W M)_b
  } else {
    W.noalias() = Cg.lazyProduct(AC);
    M = AC;                                              // d^{ab} = AC_a' W_b, e^{ab} = W_a' A W_b
    AW.noalias() = A.lazyProduct(W);
  }
  const MatrixXd& Wd = adjust ? M : W;  // d^{ab} = M_a' Wd_b
  const MatrixXd& We = adjust ? M : W;  // e^{ab} = We_a' AW_b
  if (acc.full) {
    acc.add(W, M.transpose() * Wd, We.transpose() * AW);
    return;
  }
  for (index_t a = 0; a < acc.q; ++a) acc.add_diag(a, W.col(a), M.col(a).dot(Wd.col(a)), We.col(a).dot(AW.col(a)));
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
    res.cov = m.A * (m.S * m.S.transpose()) * m.A;
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
