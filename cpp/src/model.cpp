#include "crve/model.hpp"

#include <cmath>
#include <sstream>

#include "crve/parallel.hpp"

namespace crve {

Model::Model(const ClusterStats& stats, int threads) {
  K = stats.K();
  G = stats.G();
  const index_t P = K + 2;
  const std::vector<double>& shift = stats.shift();
  if (G < 1) throw InputError(InputError::TooFewRows, -1, "no clusters");

  // Column sums of squares in the shifted basis: zero exactly for a constant column.
  VectorXd diag = VectorXd::Zero(P);
  for (index_t g = 0; g < G; ++g)
    for (index_t i = 0; i < P; ++i) diag[i] += stats.gram(g)[i * (i + 1) / 2 + i];
  for (index_t i = 0; i < P; ++i)
    if (!std::isfinite(diag[i])) throw InputError(InputError::NonFinite, i == K + 1 ? K : i, "non-finite values");
  N = diag[K];
  if (N <= K) throw InputError(InputError::TooFewRows, -1, "need more rows than columns");
  std::vector<index_t> constant;
  for (index_t k = 0; k < K; ++k) {
    if (diag[k] != 0.0) continue;
    if (shift[k] == 0.0) throw InputError(InputError::AllZeroColumn, k, "column is all zero");
    constant.push_back(k);
  }
  if (constant.size() > 1) throw InputError(InputError::Collinear, constant[1], "more than one constant column");

  // Index of each working column in z = [x - m, 1, y - m_y], and the map W -> z.
  MatrixXd Tz = MatrixXd::Zero(P, K + 1);  // z-basis -> working [W, y]
  xshift_ = VectorXd::Zero(K);
  if (!constant.empty()) {
    intercept = constant[0];
    for (index_t k = 0; k < K; ++k) Tz(k == intercept ? K : k, k) = 1.0;
    Tz(K + 1, K) = 1.0;
    for (index_t k = 0; k < K; ++k) xshift_[k] = k == intercept ? 0.0 : shift[k];
    yshift_ = shift[K];
  } else {
    // Raw basis: x = (x - m) + m * 1, y = (y - m_y) + m_y * 1.
    for (index_t k = 0; k < K; ++k) {
      Tz(k, k) = 1.0;
      Tz(K, k) = shift[k];
    }
    Tz(K + 1, K) = 1.0;
    Tz(K, K) = shift[K];
  }

  // Unscaled working statistics, cluster by cluster.
  Cg.resize(K, K * G);
  MatrixXd B(K, G);
  n.resize(G);
  VectorXd yy(G);
  const bool selection = intercept >= 0;  // a pure re-indexing: no arithmetic, no rounding
  std::vector<index_t> idx(K + 1);
  for (index_t k = 0; k < K; ++k) idx[k] = (k == intercept) ? K : k;
  idx[K] = K + 1;
  parallel_tasks(G, threads, [&](index_t g) {
    const double* a = stats.gram(g);
    n[g] = a[K * (K + 1) / 2 + K];
    if (selection) {
      for (index_t k = 0; k < K; ++k) {
        for (index_t l = 0; l <= k; ++l) Cg(k, g * K + l) = Cg(l, g * K + k) = a[ClusterStats::pack_index(idx[k], idx[l])];
        B(k, g) = a[ClusterStats::pack_index(idx[k], K + 1)];
      }
      yy[g] = a[ClusterStats::pack_index(K + 1, K + 1)];
    } else {
      const MatrixXd Zw = Tz.transpose() * stats.block(g) * Tz;
      Cg.middleCols(g * K, K) = Zw.topLeftCorner(K, K);
      B.col(g) = Zw.col(K).head(K);
      yy[g] = Zw(K, K);
    }
  });

  // Equilibrate, then the global system.
  C = MatrixXd::Zero(K, K);
  for (index_t g = 0; g < G; ++g) C += Cg.middleCols(g * K, K);
  scale.resize(K);
  for (index_t k = 0; k < K; ++k) scale[k] = 1.0 / std::sqrt(C(k, k));
  C = scale.asDiagonal() * C * scale.asDiagonal();
  parallel_tasks(G, threads, [&](index_t g) {
    Cg.middleCols(g * K, K) = scale.asDiagonal() * Cg.middleCols(g * K, K) * scale.asDiagonal();
    B.col(g) = scale.cwiseProduct(B.col(g));
  });
  VectorXd b = B.rowwise().sum();

  Eigen::SelfAdjointEigenSolver<MatrixXd> es(C);
  const VectorXd& ev = es.eigenvalues();
  rcond = ev.maxCoeff() > 0 ? ev.minCoeff() / ev.maxCoeff() : 0.0;
  if (!(rcond > kRankTol)) {
    // The columns carrying the (near-)null direction(s).
    std::ostringstream msg;
    msg << "collinear columns (reciprocal condition number " << rcond << ")";
    index_t worst = 0;
    es.eigenvectors().col(0).cwiseAbs().maxCoeff(&worst);
    throw InputError(InputError::Collinear, worst, msg.str());
  }
  A = es.eigenvectors() * ev.cwiseInverse().asDiagonal() * es.eigenvectors().transpose();
  gamma = A * b;
  gamma += A * (b - C * gamma);  // one step of iterative refinement

  S.resize(K, G);
  uu.resize(G);
  for (index_t g = 0; g < G; ++g) {
    S.col(g) = B.col(g) - C_of(g) * gamma;
    uu[g] = yy[g] - gamma.dot(B.col(g)) - gamma.dot(S.col(g));  // u'u = y'y - 2 g'b + g'C g
  }
  ssr = uu.sum();
  // Total sum of squares: about the mean when the model has an intercept.
  const double ysum = [&] {
    double s = 0;
    for (index_t g = 0; g < G; ++g) s += stats.gram(g)[ClusterStats::pack_index(K + 1, K)];
    return s;
  }();
  const double yy_shift = diag[K + 1];
  yy_c = intercept >= 0 ? yy_shift - ysum * ysum / N : yy.sum();

  // beta = T^{-1} (S gamma + m_y e_j0); T^{-1} undoes the shift of every non-intercept column.
  M = scale.asDiagonal();
  beta0 = VectorXd::Zero(K);
  if (intercept >= 0) {
    const double c = shift[intercept];
    for (index_t k = 0; k < K; ++k)
      if (k != intercept) M.row(intercept) -= shift[k] * M.row(k);
    M.row(intercept) /= c;
    beta0[intercept] = shift[K] / c;
  }
}

void Model::working_row(const double* x, index_t x_stride, double y, double* w, double& yw) const {
  for (index_t k = 0; k < K; ++k) {
    const double v = (k == intercept) ? 1.0 : x[k * x_stride] - xshift_[k];
    w[k] = v * scale[k];
  }
  yw = y - yshift_;
}

}  // namespace crve
