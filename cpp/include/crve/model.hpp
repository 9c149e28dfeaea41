// The fitted OLS model in a well-conditioned working basis, built from ClusterStats alone.
//
// Working design W_s = W S with W = X re-expressed in the shifted basis (each column minus its
// first-row value, the intercept column replaced by 1) and S = diag(scale) giving W_s'W_s a unit
// diagonal. X = W T for an invertible T, so every estimator here is computed for W_s and mapped
// back exactly:   beta = M gamma + beta0,   Cov(beta) = M Cov(gamma) M',   M = T^{-1} S.
// Without an intercept column the working basis is the raw X (scaled).
#pragma once
#include <Eigen/Dense>
#include <vector>

#include "stats.hpp"

namespace crve {

using Eigen::MatrixXd;
using Eigen::VectorXd;

class Model {
 public:
  /// rcond of the scaled X'X below which the design is refused as collinear.
  static constexpr double kRankTol = 1e-12;  // below it fewer than 1 digit would be left (100 eps / rcond)

  /// `stats` must outlive the Model (the per-cluster blocks are read from it, not copied).
  Model(const ClusterStats& stats, int threads = 0);

  index_t K = 0, G = 0;
  double N = 0;
  index_t intercept = -1;  // column index of the constant column, or -1
  VectorXd scale;          // S
  MatrixXd M;              // beta = M gamma + beta0
  VectorXd beta0;

  // Working per-cluster statistics (scaled).
  MatrixXd S;    // K x G: scores s_g = W_g'u_g = b_g - C_g gamma
  VectorXd uu;   // G: u_g'u_g
  MatrixXd C, A; // sum_g C_g and its inverse
  VectorXd gamma;
  double ssr = 0;   // sum of squared residuals
  double yy_c = 0;  // total sum of squares about the mean (if intercept) or about zero
  double rcond = 0; // reciprocal condition number of the scaled X'X

  /// The working C_g = W_g'W_g (scaled), read from the statistics (a re-indexing when X has an
  /// intercept column) into `out`.
  void C_of(index_t g, MatrixXd& out) const;
  /// The same C_g written to out[e * stride], e = i + j K (column-major entries, strided).
  void C_into(index_t g, double* out, index_t stride) const;
  /// Prefetches cluster g's block (read next by C_of).
  void prefetch(index_t g) const;
  /// The working column sums 1'W_g (scaled, K) and the working response's sum 1'y_g (at K).
  void sums_of(index_t g, VectorXd& out) const;
  VectorXd beta() const { return M * gamma + beta0; }
  MatrixXd to_raw(const MatrixXd& cov_w) const { return M * cov_w * M.transpose(); }
  /// Working-basis contrasts (K x q) for raw contrasts given as rows of R (q x K).
  MatrixXd contrasts(const MatrixXd& R) const { return (R * M).transpose(); }

  /// Maps one raw row (x, y) to the working row w (K) and working response; used by row passes.
  void working_row(const MatrixView& X, index_t i, double y, double* w, double& yw) const;

 private:
  void working_block(const double* packed, MatrixXd& Zw) const;  // unscaled [W, y] Gram (K+1 x K+1)
  // v'Z v for Z packed (P x P) and v = T.col(K) - T.leftCols(K) g, in double-double.
  double quadratic_dd(const double* packed, const MatrixXd& T, const VectorXd& g) const;

  const ClusterStats* stats_ = nullptr;
  bool selection_ = false;    // X has an intercept column: [W, y] is a re-indexing of z
  std::vector<index_t> idx_;  // working column k (and y at K) -> index in z (intercept case)
  std::vector<index_t> cpack_;  // C_g(i, j) -> index in the packed block (intercept case, K x K)
  std::vector<double> cscale_;  // scale_i scale_j (powers of two), K x K
  MatrixXd Tz_;               // z -> [W, y] (no intercept: the raw basis)
  VectorXd xshift_;  // shift applied to raw rows before scaling (0 when no intercept)
  double yshift_ = 0;
};

/// out[i] = y[i] - x_i' beta for every row, each product and sum carried in double-double
/// (error-free FMA products) and rounded once: the residuals of the double coefficients to about
/// one unit in their last place (the rows' polish of near-exact fits, python/crve/results.py).
void residuals_dd(const MatrixView& X, const VectorView& y, const double* beta, double* out, int threads);
/// X'X in double-double: hi + lo (K x K, row-major, both filled symmetric), every product exact
/// (FMA) and every sum compensated; row chunks of fixed size added in order (thread-independent).
void gram_dd(const MatrixView& X, double* hi, double* lo, int threads);

}  // namespace crve
