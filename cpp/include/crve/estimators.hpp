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
/// C_g gives the same matrices.) phi(W) comes from W's eigen-decomposition, or, when
/// tr W < kSeriesTrace (small leverage: the usual case with many clusters), from its Taylor
/// series, exact to rounding. Buffers are reused between clusters (one HatBlock per thread).
struct HatBlock {
  MatrixXd L, LT, R, W, F1, Wn, AL;  // LT = L'; R's top-left r x r lower triangle: L's pivoted rows
  std::vector<MatrixXd> pw;           // powers of W for the series
  VectorXd z, lam;
  std::vector<index_t> perm;
  Eigen::SelfAdjointEigenSolver<MatrixXd> es;
  bool leverage_one = false;
  double leverage_max = 0.0;  // the largest eigenvalue of H_gg below leverage one (tr W on the series path)
  index_t rank() const { return rank_; }
  void compute(const Eigen::Ref<const MatrixXd>& Cg, const MatrixXd& A, Variant v);
  /// L^+ s for s in the range of C_g (r-vector).
  const VectorXd& pinv(const Eigen::Ref<const VectorXd>& s);

 private:
  index_t rank_ = 0;
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
