#include "crve/estimators.hpp"

#include <cmath>

#include "crve/parallel.hpp"

namespace crve {

namespace {

constexpr double kCholeskyTol = 1e-11;  // relative pivot size treated as zero rank
constexpr index_t kChunks = 64;         // fixed reduction chunks (thread-count independent)

// Pivoted Cholesky C = L L' (L: K x r, rows in original order), stopping at relative pivot tol.
// Also returns the pivot rows and the r x r lower-triangular block L11 = L[piv, :].
void pivoted_cholesky(const Eigen::Ref<const MatrixXd>& C, MatrixXd& L, std::vector<index_t>& piv) {
  const index_t K = C.rows();
  MatrixXd R = C;  // Schur complement, updated in place
  L.setZero(K, K);
  piv.clear();
  double dmax = R.diagonal().maxCoeff();
  if (!(dmax > 0)) {
    L.resize(K, 0);
    return;
  }
  const double tol = kCholeskyTol * dmax;
  std::vector<bool> used(K, false);
  index_t r = 0;
  for (; r < K; ++r) {
    index_t p = -1;
    double best = tol;
    for (index_t i = 0; i < K; ++i)
      if (!used[i] && R(i, i) > best) best = R(i, i), p = i;
    if (p < 0) break;
    used[p] = true;
    piv.push_back(p);
    const double d = std::sqrt(R(p, p));
    for (index_t i = 0; i < K; ++i) L(i, r) = used[i] && i != p ? 0.0 : R(i, p) / d;
    for (index_t i = 0; i < K; ++i) {
      if (used[i]) continue;
      for (index_t j = 0; j < K; ++j)
        if (!used[j]) R(i, j) -= L(i, r) * L(j, r);
    }
  }
  L.conservativeResize(K, r);
}

}  // namespace

HatBlock hat_block(const Eigen::Ref<const MatrixXd>& Cg, const MatrixXd& A) {
  const index_t K = Cg.rows();
  MatrixXd L;
  std::vector<index_t> piv;
  pivoted_cholesky(Cg, L, piv);
  const index_t r = L.cols();
  HatBlock hb;
  if (r == 0) {
    hb.Lv.resize(K, 0);
    hb.Rv.resize(K, 0);
    hb.lam.resize(0);
    return hb;
  }
  Eigen::SelfAdjointEigenSolver<MatrixXd> es(L.transpose() * A * L);
  hb.lam = es.eigenvalues().cwiseMax(0.0);
  hb.Lv = L * es.eigenvectors();
  // L^+ s for s in range(L): solve L11 z = s[piv] (L11 = rows piv of L, lower triangular).
  MatrixXd L11(r, r);
  for (index_t i = 0; i < r; ++i) L11.row(i) = L.row(piv[i]);
  // Rv' s = V' z = V' L11^{-1} s[piv]  =>  Rv[piv, :] = L11^{-T} V, zero elsewhere.
  MatrixXd Rp = L11.triangularView<Eigen::Lower>().transpose().solve(es.eigenvectors());
  hb.Rv = MatrixXd::Zero(K, r);
  for (index_t i = 0; i < r; ++i) hb.Rv.row(piv[i]) = Rp.row(i);
  return hb;
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

bool has_leverage_one(const HatBlock& hb) {
  return hb.lam.size() > 0 && hb.lam.maxCoeff() >= 1.0 - kLeverageTol;
}

// Adjusted scores T_g s_g for every cluster (K x G), counting leverage-one clusters.
MatrixXd adjusted_scores(const Model& m, Variant v, int threads, index_t& leverage_one) {
  MatrixXd out(m.K, m.G);
  std::vector<char> flag(m.G, 0);
  parallel_tasks(m.G, threads, [&](index_t g) {
    const HatBlock hb = hat_block(m.C_of(g), m.A);
    VectorXd phi1(hb.lam.size());
    for (index_t j = 0; j < hb.lam.size(); ++j) phi1[j] = adjustment(v, hb.lam[j]) - 1.0;
    out.col(g) = m.S.col(g) + hb.Lv * phi1.cwiseProduct(hb.Rv.transpose() * m.S.col(g));
    flag[g] = has_leverage_one(hb);
  });
  leverage_one = 0;
  for (char f : flag) leverage_one += f;
  return out;
}

}  // namespace

CovResult cluster_cov(const Model& m, Variant v, int threads) {
  CovResult res;
  const double G = static_cast<double>(m.G);
  if (v == Variant::CV0 || v == Variant::CV1) {
    res.cov = m.A * (m.S * m.S.transpose()) * m.A;
    if (v == Variant::CV1) res.cov *= G / (G - 1.0) * (m.N - 1.0) / (m.N - m.K);
    return res;
  }
  const MatrixXd T = adjusted_scores(m, v, threads, res.leverage_one);
  if (v == Variant::CV2) {
    res.cov = m.A * (T * T.transpose()) * m.A;  // Bell–McCaffrey: no extra factor
    return res;
  }
  // Jackknife (MNW 2023): beta_(g) - beta = -(X'X - C_g)^{-1} s_g = -A X_g'(I - H_gg)^{-1} u_g.
  MatrixXd D = m.A * T;
  if (v == Variant::CV3J) D.colwise() -= D.rowwise().mean();  // centred on the mean of beta_(g)
  res.cov = (G - 1.0) / G * (D * D.transpose());
  return res;
}

namespace {

// Accumulates the pieces of OmegaSums cluster by cluster.
struct OmegaAcc {
  index_t K = 0, q = 0;
  bool full = false;
  MatrixXd D1, P_abab, X_abab, P_aabb, X_aabb;
  std::vector<MatrixXd> WW;  // WW[a*q+b] = sum_g w_a w_b'   (only a == b unless full)
  index_t leverage_one = 0;

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
  void merge(const OmegaAcc& o) {
    D1 += o.D1;
    P_abab += o.P_abab;
    X_abab += o.X_abab;
    P_aabb += o.P_aabb;
    X_aabb += o.X_aabb;
    for (size_t i = 0; i < WW.size(); ++i)
      if (WW[i].size()) WW[i] += o.WW[i];
    leverage_one += o.leverage_one;
  }
  OmegaSums finish(const MatrixXd& A) const {
    OmegaSums out;
    out.trace = out.tr_abab = out.tr_aabb = MatrixXd::Constant(q, q, std::nan(""));
    for (index_t a = 0; a < q; ++a) {
      for (index_t b = 0; b < q; ++b) {
        if (!full && a != b) continue;
        const MatrixXd& Wab = WW[a * q + b];
        out.trace(a, b) = D1(a, b) - (A * Wab).trace();
        // tr(Omega^{ab} Omega^{ab}) = sum d^2 - 2 sum d e + tr(A WW_ba A WW_ba)
        const MatrixXd& Wba = WW[b * q + a];
        out.tr_abab(a, b) = P_abab(a, b) - 2.0 * X_abab(a, b) + (A * Wba * A * Wba).trace();
        // tr(Omega^{aa} Omega^{bb}) = sum d_aa d_bb - sum (d_aa e_bb + d_bb e_aa) + tr(A WW_ab A WW_ba)
        out.tr_aabb(a, b) = P_aabb(a, b) - X_aabb(a, b) + (A * Wab * A * Wba).trace();
      }
    }
    out.leverage_one = leverage_one;
    return out;
  }
};

}  // namespace

OmegaSums omega_sums(const Model& m, Variant v, const MatrixXd& contrasts, bool full, int threads) {
  const index_t K = m.K, q = contrasts.cols();
  const MatrixXd AC = m.A * contrasts;  // K x q
  OmegaAcc total = parallel_reduce<OmegaAcc>(
      m.G, threads, kChunks, [&] { return OmegaAcc(K, q, full); },
      [&](OmegaAcc& acc, index_t g) {
        const HatBlock hb = hat_block(m.C_of(g), m.A);
        const index_t r = hb.lam.size();
        VectorXd p1(r), p2(r);
        for (index_t j = 0; j < r; ++j) {
          const double phi = adjustment(v, hb.lam[j]);
          p1[j] = phi - 1.0;
          p2[j] = phi * phi - 1.0;
        }
        const MatrixXd LtAC = hb.Lv.transpose() * AC;  // r x q
        const MatrixXd W = m.C_of(g) * AC + hb.Lv * (p1.asDiagonal() * LtAC);
        const MatrixXd D = AC.transpose() * m.C_of(g) * AC + LtAC.transpose() * p2.asDiagonal() * LtAC;
        const MatrixXd E = W.transpose() * m.A * W;
        acc.add(W, D, E);
        acc.leverage_one += has_leverage_one(hb);
      },
      [](OmegaAcc& a, const OmegaAcc& b) { a.merge(b); });
  return total.finish(m.A);
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
    OmegaAcc omega;
  };
  Acc total = parallel_reduce<Acc>(
      N, threads, kChunks,
      [&] { return Acc{MatrixXd::Zero(K, K), VectorXd::Zero(K), 0, OmegaAcc(K, q, full)}; },
      [&](Acc& acc, index_t i) {
        thread_local VectorXd w;
        w.resize(K);
        double yw;
        m.working_row(X.data + i * X.row_stride, X.col_stride, y[i], w.data(), yw);
        const double u = yw - w.dot(m.gamma);
        const VectorXd Aw = m.A * w;
        const double h = std::max(0.0, w.dot(Aw));
        const double phi = adjustment(v, h);
        acc.lev += h >= 1.0 - kLeverageTol;
        const double t = phi * u;  // adjusted score of the row is t * w
        acc.meat.noalias() += (t * t) * w * w.transpose();
        if (v == Variant::CV3J) acc.jk += t * Aw;
        if (q > 0) {
          // Rank-one cluster: L = w, lam = h; w_a = phi w (w'A c_a), d^{ab} = phi^2 z_a z_b.
          const Eigen::RowVectorXd z = w.transpose() * AC;
          const MatrixXd W = (phi * w) * z;
          const MatrixXd D = (phi * phi) * z.transpose() * z;
          acc.omega.add(W, D, h * D);
        }
      },
      [](Acc& a, const Acc& b) {
        a.meat += b.meat;
        a.jk += b.jk;
        a.lev += b.lev;
        a.omega.merge(b.omega);
      });
  RowPass out;
  out.meat = std::move(total.meat);
  out.jk_sum = std::move(total.jk);
  out.leverage_one = total.lev;
  if (q > 0) {
    out.omega = total.omega.finish(m.A);
    out.omega.leverage_one = total.lev;
  }
  return out;
}

}  // namespace crve
