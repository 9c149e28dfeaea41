// Cluster-robust covariances and the Bell–McCaffrey / Satterthwaite machinery (DESIGN.md 2-3),
// all from the G small blocks of a Model. Everything is in the Model's working basis; map back
// with Model::to_raw / Model::contrasts.
#pragma once
#include <Eigen/Dense>
#include <utility>
#include <vector>

#include "model.hpp"

namespace crve {

enum class Variant { CV0, CV1, CV2, CV3, CV3J };

/// Leverage within this of 1 is leverage one: M_gg singular, pseudo-inverse used (phi = 0).
constexpr double kLeverageTol = 1e-9;

/// The hat block H_gg = X_g A X_g' of one cluster, never formed. With C_g = L L' (L: K x r,
/// pivoted Cholesky, r = rank) and W = L'AL (r x r), H_gg has the nonzero eigenvalues of W, and
/// for an adjustment B_g = phi(H_gg) (phi(lam) = (1-lam)^{-1/2}: CR2; (1-lam)^{-1}: CR3 / the
/// jackknife):
///     X_g' B_g u_g     = s_g + L F1 L^+ s_g,         F1 = phi(W) - I
///     X_g' B_g X_g     = C_g + L F1 L'   = L phi(W) L'
///     X_g' B_g' B_g X_g = L phi(W)^2 L'
/// (DESIGN.md 2-3 write L = P Sig^{1/2} and C_g + L F2 L', F2 = phi^2 - I; any square root of
/// C_g gives the same matrices.) phi(W) comes from W's eigen-decomposition: this is the path
/// for clusters with large leverage (tr A C_g >= kSeriesTrace) or a leverage-one direction;
/// LeverageSeries below serves the others. Buffers are reused between clusters (one HatBlock
/// per thread).
struct HatBlock {
  MatrixXd L, LT, R, W, F1, Wn, AL;  // LT = L'; R's top-left r x r lower triangle: L's pivoted rows
  VectorXd z, lam;
  std::vector<index_t> perm;
  Eigen::SelfAdjointEigenSolver<MatrixXd> es;
  bool leverage_one = false;
  double leverage_max = 0.0;  // the largest eigenvalue of H_gg below leverage one
  index_t rank() const { return rank_; }
  void compute(const Eigen::Ref<const MatrixXd>& Cg, const MatrixXd& A, Variant v);
  /// L^+ s for s in the range of C_g (r-vector).
  const VectorXd& pinv(const Eigen::Ref<const VectorXd>& s);

 private:
  index_t rank_ = 0;
};

/// The same adjustments without a factorisation, for clusters whose leverages are small (their
/// sum t = tr(A C_g) below kSeriesTrace: the usual case with many clusters). With N_g = C_g A
/// (K x K; its nonzero eigenvalues are H_gg's), X_g'(X_g A X_g')^k = N_g^k X_g' and
/// L f(W) L' = f(N_g) C_g give, for phi(x) = sum_k a_k x^k and phi(x)^2 = sum_k b_k x^k,
///     X_g' B_g u_g = phi(N_g) s_g,      w_a = X_g' B_g X_g A c_a = phi(N_g) C_g A c_a,
///     d^{ab} = (A c_a)' phi(N_g)^2 C_g (A c_b) = sum_k b_k mu_k^{ab},
///     e^{ab} = (A c_a)' N_g phi(N_g)^2 C_g (A c_b) = sum_k b_{k-1} mu_k^{ab},
/// with mu_k^{ab} = (A c_a)' N_g^k C_g (A c_b): one small product per term, applied to the
/// columns V = [N_g c_1 .. N_g c_q, s_g] (contrasts are often sparse: their zeros are skipped). Term k is at most rho^k times the first, rho the
/// largest leverage (bounded by min(t, sqrt(tr N_g^2))), so the sums stop where the next term of
/// both series is below 1e-17: exact to rounding.
/// Clusters go through in batches of kLanes, one per SIMD lane (cluster-major storage
/// [entry][lane]), so every product runs at full vector width with no padding; unused lanes hold
/// zeros and give zeros.
struct SeriesBatch {
  static constexpr int kLanes = 8;
  static constexpr index_t kMaxTerms = 24;
  /// C: the contrasts (K x q, or null), AC = A C.
  SeriesBatch(const MatrixXd& A, const MatrixXd* C, const MatrixXd* AC, bool full, Variant v);
  /// Where the next cluster's C_g goes: entry e = i + j K at next()[e * kLanes].
  double* next() { return Cl_.data() + used_; }
  /// tr(A C_g) of the C_g at next(): the series applies where this is below kSeriesTrace.
  double next_trace() const;
  /// Takes the C_g at next() with the score s_g as the next lane; true when the batch is full.
  bool add(const double* s);
  index_t size() const { return used_; }
  /// phiV, D, E for the lanes in use; the batch is then empty again (results stay until the next add).
  void run();
  // Results, lane l: phiV(i, c) for c < q (w_c) and c = q (the adjusted score); D, E: d^{ab},
  // e^{ab} for a == b (diag) or all a, b (full).
  double phiV(index_t i, index_t c, int l) const { return phiV_[(i + c * K_) * kLanes + l]; }
  const double* phiV_lanes(index_t i, index_t c) const { return phiV_.data() + (i + c * K_) * kLanes; }
  const double* D_lanes(index_t a, index_t b) const { return D_.data() + (a + b * q_) * kLanes; }
  const double* E_lanes(index_t a, index_t b) const { return E_.data() + (a + b * q_) * kLanes; }
  index_t K() const { return K_; }
  index_t q() const { return q_; }

 private:
  const MatrixXd& A_;
  const MatrixXd* C_;
  const MatrixXd* AC_;
  index_t K_, q_;
  bool full_, cr2_;
  index_t used_ = 0;
  std::vector<double> Cl_, N_, V_, cur_, prev_, phiV_, D_, E_;
};

constexpr double kSeriesTrace = 5e-2;

/// phi(lam) = f(1 - lam) of the variant's adjustment (1 for CV0/CV1).
double adjustment(Variant v, double lam);

struct CovResult {
  MatrixXd cov;             // working basis
  index_t leverage_one = 0; // clusters with a leverage-one direction (CV2, CV3, CV3J)
  double leverage_max = 0;  // the largest eigenvalue of any H_gg below leverage one: the adjustment
                            // (1 - lam)^(-1/2 or -1) keeps about eps / (1 - leverage_max) relative accuracy
};
CovResult cluster_cov(const Model& m, Variant v, int threads);

/// For contrasts c_1..c_q (working basis, K x q) and a variant's adjustment, the matrices
/// Omega^{ab} = diag_g(d^{ab}_g) - W_a' A W_b (G x G, never formed) of Bell–McCaffrey (2002) /
/// Pustejovsky–Tipton (2018) under the working model sigma^2 I, with
///     w_{a,g} = (C_g + L F1 L') A c_a,   d^{ab}_g = (A c_a)'(C_g + L F2 L')(A c_b)   (see HatBlock),
/// i.e. with M = phi(W) L'A [c_1 .. c_q]:  w_{a,g} = L M_a,  d^{ab}_g = M_a'M_b.
/// Returned: trace(a,b) = tr Omega^{ab};  tr_abab(a,b) = tr(Omega^{ab} Omega^{ab});
/// tr_aabb(a,b) = tr(Omega^{aa} Omega^{bb}). With full = false only the diagonal a = b
/// (then tr_abab(a,a) = tr((Omega^{aa})^2), the Satterthwaite denominator).
struct OmegaSums {
  MatrixXd trace, tr_abab, tr_aabb;
  index_t leverage_one = 0;
};
OmegaSums omega_sums(const Model& m, Variant v, const MatrixXd& contrasts, bool full, int threads);

/// cluster_cov and the diagonal omega_sums of `contrasts` in one traversal of the clusters.
std::pair<CovResult, OmegaSums> cluster_cov_dof(const Model& m, Variant v, const MatrixXd& contrasts, int threads);

/// Heteroskedasticity-robust pieces from a second pass over the rows (every row its own
/// cluster): meat = sum_i phi(h_i)^2 u_i^2 w_i w_i' with h_i = w_i'A w_i, and for CV3J the
/// sum of A w_i u_i phi(h_i). Optionally the Omega sums of the rank-one clusters.
struct RowPass {
  MatrixXd meat;
  VectorXd jk_sum;
  index_t leverage_one = 0;
  double leverage_max = 0;  // the largest h_i below leverage one (as CovResult)
  OmegaSums omega;
};
RowPass row_pass(const Model& m, const MatrixView& X, const VectorView& y, Variant v,
                 const MatrixXd* contrasts, bool full, int threads);

}  // namespace crve
