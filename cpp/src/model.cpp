#include "crve/model.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

#include "crve/parallel.hpp"
#include "simd.hpp"

namespace crve {

namespace {

// Double-double arithmetic (error-free transformations with FMA) for the few K x K residuals
// whose cancellation decides the last digits: value = hi + lo.
struct DD {
  double hi = 0, lo = 0;
};
inline DD two_sum(double a, double b) {
  const double s = a + b, bb = s - a;
  return {s, (a - (s - bb)) + (b - bb)};
}
inline void dd_add(DD& acc, double a, double b) {  // acc += a * b, the product exactly
  const double p = a * b, e = std::fma(a, b, -p);
  const DD t = two_sum(acc.hi, p);
  acc.hi = t.hi;
  acc.lo += t.lo + e;
}
inline double dd_value(const DD& v) { return v.hi + v.lo; }

// r = b - C x with every product and sum carried in double-double.
VectorXd residual(const MatrixXd& C, const VectorXd& b, const VectorXd& x) {
  VectorXd r(b.size());
  for (index_t i = 0; i < b.size(); ++i) {
    DD acc{b[i], 0.0};
    for (index_t j = 0; j < x.size(); ++j) dd_add(acc, -C(i, j), x[j]);
    r[i] = dd_value(acc);
  }
  return r;
}

// Solve C x = b given an approximate inverse A: iterative refinement with exact residuals
// (Wilkinson), which converges to the solution of the stored system while rcond >> eps.
VectorXd refine(const MatrixXd& C, const MatrixXd& A, const VectorXd& b) {
  VectorXd x = A * b;
  double last = std::numeric_limits<double>::infinity();
  for (int it = 0; it < 10; ++it) {
    const VectorXd d = A * residual(C, b, x);
    const double size = d.cwiseAbs().maxCoeff();
    x += d;
    if (!(size < 0.5 * last) || size <= 1e-17 * x.cwiseAbs().maxCoeff()) break;
    last = size;
  }
  return x;
}

}  // namespace

Model::Model(const ClusterStats& stats, int threads) : stats_(&stats) {
  K = stats.K();
  G = stats.G();
  const index_t P = K + 2;
  const std::vector<double>& shift = stats.shift();
  if (G < 1) throw InputError(InputError::TooFewRows, -1, "no clusters");

  // The whole sample's Gram of z = [x - m, 1, y - m_y]: sums of squares are exactly zero for a
  // constant column.
  const std::vector<double> total = stats.total(threads);
  auto tot = [&](index_t i, index_t j) { return total[ClusterStats::pack_index(i, j)]; };
  for (index_t i = 0; i < P; ++i)
    if (!std::isfinite(tot(i, i))) throw InputError(InputError::NonFinite, i == K + 1 ? K : i, "non-finite values");
  N = tot(K, K);
  if (N <= K) throw InputError(InputError::TooFewRows, -1, "need more rows than columns");
  std::vector<index_t> constant;
  for (index_t k = 0; k < K; ++k) {
    if (tot(k, k) != 0.0) continue;
    if (shift[k] == 0.0) throw InputError(InputError::AllZeroColumn, k, "column is all zero");
    constant.push_back(k);
  }
  if (constant.size() > 1) throw InputError(InputError::Collinear, constant[1], "more than one constant column");

  // The working basis [W, y] in terms of z: with an intercept column a selection (z's "1" takes
  // the intercept's place), without one the raw basis x = (x - m) + m * 1, y = (y - m_y) + m_y.
  xshift_ = VectorXd::Zero(K);
  selection_ = !constant.empty();
  if (selection_) {
    intercept = constant[0];
    idx_.resize(K + 1);
    for (index_t k = 0; k < K; ++k) idx_[k] = (k == intercept) ? K : k;
    idx_[K] = K + 1;
    for (index_t k = 0; k < K; ++k) xshift_[k] = k == intercept ? 0.0 : shift[k];
    yshift_ = shift[K];
  } else {
    Tz_ = MatrixXd::Zero(P, K + 1);
    for (index_t k = 0; k < K; ++k) {
      Tz_(k, k) = 1.0;
      Tz_(K, k) = shift[k];
    }
    Tz_(K + 1, K) = 1.0;
    Tz_(K, K) = shift[K];
  }

  // Equilibrate (diagonal of X'X in [1/2, 2)) with powers of two, which round nothing, then
  // solve with a rank check.
  MatrixXd Zsum;
  working_block(total.data(), Zsum);
  scale.resize(K);
  for (index_t k = 0; k < K; ++k) scale[k] = std::exp2(-std::round(0.5 * std::log2(Zsum(k, k))));
  cscale_.resize(K * K);
  for (index_t j = 0; j < K; ++j)
    for (index_t i = 0; i < K; ++i) cscale_[j * K + i] = scale[i] * scale[j];
  if (selection_) {
    cpack_.resize(K * K);
    for (index_t j = 0; j < K; ++j)
      for (index_t i = 0; i < K; ++i) cpack_[j * K + i] = ClusterStats::pack_index(idx_[i], idx_[j]);
  }
  C = scale.asDiagonal() * Zsum.topLeftCorner(K, K) * scale.asDiagonal();
  const VectorXd b = scale.cwiseProduct(Zsum.col(K).head(K));
  Eigen::SelfAdjointEigenSolver<MatrixXd> es(C);
  const VectorXd& ev = es.eigenvalues();
  rcond = ev.maxCoeff() > 0 ? ev.minCoeff() / ev.maxCoeff() : 0.0;
  if (!(rcond > kRankTol)) {
    // The column carrying most of the (near-)null direction.
    std::ostringstream msg;
    // In double the smallest eigenvalue of a singular matrix is rounding noise of either sign.
    if (rcond > 0) msg << "collinear columns (reciprocal condition number " << rcond << ")";
    else msg << "collinear columns (reciprocal condition number 0 to rounding)";
    index_t worst = 0;
    es.eigenvectors().col(0).cwiseAbs().maxCoeff(&worst);
    throw InputError(InputError::Collinear, worst, msg.str());
  }
  A = es.eigenvectors() * ev.cwiseInverse().asDiagonal() * es.eigenvectors().transpose();
  if (rcond < 1e-6) {  // the eigen-inverse keeps about -log10(eps / rcond) digits: refine it
    MatrixXd R(K, K);
    for (int it = 0; it < 3; ++it) {
      for (index_t j = 0; j < K; ++j) R.col(j) = residual(C, VectorXd::Unit(K, j), A.col(j));
      A += A * R;
      A = 0.5 * (A + A.transpose()).eval();
    }
  }
  gamma = refine(C, A, b);

  // Scores s_g = b_g - C_g gamma and u_g'u_g, straight from the packed z-Gram Z_g: with T the
  // map z -> [W, y] (T_x its first K columns, t_y the last), the residual is z'v for
  // v = t_y - T_x (scale * gamma), so s_g = scale * T_x' Z_g v and u_g'u_g = v' Z_g v.
  MatrixXd T = selection_ ? MatrixXd::Zero(P, K + 1) : Tz_;
  if (selection_)
    for (index_t k = 0; k <= K; ++k) T(idx_[k], k) = 1.0;
  const VectorXd v = T.col(K) - T.leftCols(K) * scale.cwiseProduct(gamma);
  const MatrixXd TxS = scale.asDiagonal() * T.leftCols(K).transpose();  // K x P
  S.resize(K, G);
  uu.resize(G);
  constexpr index_t kScoreBlock = 256;  // clusters per task
  parallel_tasks((G + kScoreBlock - 1) / kScoreBlock, threads, [&](index_t t) {
    std::vector<double> zv(P);  // Z_g v
    for (index_t g = t * kScoreBlock; g < std::min(G, (t + 1) * kScoreBlock); ++g) {
      const double* z = stats.gram(g);
      std::fill(zv.begin(), zv.end(), 0.0);
      for (index_t i = 0; i < P; ++i, z += i) {  // packed row i: z[0..i]
        double acc = 0.0;
        const double vi = v[i];
        for (index_t j = 0; j < i; ++j) {
          acc += z[j] * v[j];
          zv[j] += z[j] * vi;
        }
        zv[i] += acc + z[i] * vi;
      }
      double q = 0.0;
      for (index_t i = 0; i < P; ++i) q += v[i] * zv[i];
      if (selection_) {  // T_x' is a selection: s_g = scale * (Z_g v)[idx]
        for (index_t k = 0; k < K; ++k) S(k, g) = scale[k] * zv[idx_[k]];
      } else {
        S.col(g).noalias() = TxS * Eigen::Map<const VectorXd>(zv.data(), P);
      }
      uu[g] = std::max(0.0, q);  // u_g'u_g >= 0; the expansion can round below zero for a (near-)perfect fit
    }
  }, 4);
  // The sum of squared residuals from the whole sample's Gram, v'Z v, in double-double: its
  // expansion cancels most digits when the fit is close (NIST NoInt1/2).
  ssr = std::max(0.0, quadratic_dd(total.data(), T, scale.cwiseProduct(gamma)));
  // Total sum of squares: about the mean when the model has an intercept.
  yy_c = selection_ ? Zsum(K, K) - tot(K + 1, K) * tot(K + 1, K) / N : Zsum(K, K);

  // beta = T^{-1} (S gamma + m_y e_j0); T^{-1} undoes the shift of every non-intercept column.
  M = scale.asDiagonal();
  beta0 = VectorXd::Zero(K);
  if (selection_) {
    const double c = shift[intercept];
    for (index_t k = 0; k < K; ++k)
      if (k != intercept) M.row(intercept) -= shift[k] * M.row(k);
    M.row(intercept) /= c;
    beta0[intercept] = shift[K] / c;
  }
}

double Model::quadratic_dd(const double* packed, const MatrixXd& T, const VectorXd& g) const {
  // v = t_y - T_x g in double-double, then v'Z v with Z packed lower (P x P).
  const index_t P = K + 2;
  std::vector<DD> v(P);
  for (index_t i = 0; i < P; ++i) {
    DD acc{T(i, K), 0.0};
    for (index_t k = 0; k < K; ++k) dd_add(acc, -T(i, k), g[k]);
    v[i] = two_sum(acc.hi, acc.lo);
  }
  DD q;
  for (index_t i = 0; i < P; ++i)
    for (index_t j = 0; j <= i; ++j) {
      const double z = packed[i * (i + 1) / 2 + j] * (i == j ? 1.0 : 2.0);  // exact: times 2
      // z v_i v_j with v = hi + lo, dropping lo * lo.
      const double p = z * v[i].hi, e = std::fma(z, v[i].hi, -p);
      dd_add(q, p, v[j].hi);
      dd_add(q, e, v[j].hi);
      q.lo += z * (v[i].hi * v[j].lo + v[i].lo * v[j].hi);
    }
  return dd_value(q);
}

void Model::working_block(const double* packed, MatrixXd& Zw) const {
  if (selection_) {  // a re-indexing: no arithmetic, no rounding
    Zw.resize(K + 1, K + 1);
    for (index_t k = 0; k <= K; ++k)
      for (index_t l = 0; l <= k; ++l) Zw(k, l) = Zw(l, k) = packed[ClusterStats::pack_index(idx_[k], idx_[l])];
    return;
  }
  const index_t P = K + 2;
  MatrixXd Z(P, P);
  for (index_t i = 0; i < P; ++i)
    for (index_t j = 0; j <= i; ++j) Z(i, j) = Z(j, i) = packed[i * (i + 1) / 2 + j];
  Zw.noalias() = Tz_.transpose() * Z * Tz_;
}

void Model::prefetch(index_t g) const {
  const char* p = reinterpret_cast<const char*>(stats_->gram(g));
  const index_t bytes = stats_->npack() * static_cast<index_t>(sizeof(double));
  for (index_t o = 0; o < bytes; o += 64) prefetch_read(p + o);
  prefetch_read(p + bytes - 1);  // the last line, where the block does not start on one
}

void Model::C_into(index_t g, double* out, index_t stride) const {
  if (selection_) {  // a re-indexing, scaled by powers of two: the same values as C_of's, in one pass
    const double* packed = stats_->gram(g);
    for (index_t e = 0; e < K * K; ++e) out[e * stride] = packed[cpack_[e]] * cscale_[e];
    return;
  }
  thread_local MatrixXd C;
  C_of(g, C);
  for (index_t e = 0; e < K * K; ++e) out[e * stride] = C.data()[e];
}

void Model::C_of(index_t g, MatrixXd& out) const {
  if (selection_) {
    out.resize(K, K);
    C_into(g, out.data(), 1);
    return;
  }
  thread_local MatrixXd Z;
  working_block(stats_->gram(g), Z);
  out.noalias() = scale.asDiagonal() * Z.topLeftCorner(K, K) * scale.asDiagonal();
}

void Model::sums_of(index_t g, VectorXd& out) const {
  // z = [x - m, 1, y - m_y] has the constant at index K, so 1'z_g is row K of the cluster's Gram.
  const double* packed = stats_->gram(g);
  const index_t P = K + 2;
  out.resize(K + 1);
  if (selection_) {
    for (index_t k = 0; k <= K; ++k) out[k] = packed[ClusterStats::pack_index(K, idx_[k])];
  } else {
    VectorXd row(P);
    for (index_t j = 0; j < P; ++j) row[j] = packed[ClusterStats::pack_index(K, j)];
    out.noalias() = Tz_.transpose() * row;
  }
  out.head(K).array() *= scale.array();
}

void Model::working_row(const MatrixView& X, index_t i, double y, double* w, double& yw) const {
  for (index_t k = 0; k < K; ++k) {
    const double v = (k == intercept) ? 1.0 : X(i, k) - xshift_[k];
    w[k] = v * scale[k];
  }
  yw = y - yshift_;
}

void residuals_dd(const MatrixView& X, const VectorView& y, const double* beta, double* out, int threads) {
  const index_t N = X.rows, K = X.cols;
  constexpr index_t kChunk = 16384;
  parallel_tasks((N + kChunk - 1) / kChunk, threads, [&](index_t c) {
    const index_t lo = c * kChunk, hi = std::min(N, lo + kChunk);
    for (index_t i = lo; i < hi; ++i) {
      double s = y[i], e = 0.0;  // s + e: y - sum_k x_ik b_k so far
      for (index_t k = 0; k < K; ++k) {
        const double x = X(i, k), p = -x * beta[k], pe = std::fma(-x, beta[k], -p);
        const double t = s + p, bb = t - s;
        e += ((s - (t - bb)) + (p - bb)) + pe;
        s = t;
      }
      out[i] = s + e;
    }
  });
}

void gram_dd(const MatrixView& X, double* hi, double* lo, int threads) {
  const index_t N = X.rows, K = X.cols, np = K * (K + 1) / 2;
  constexpr index_t kChunk = 8192;
  const index_t n_chunks = std::max<index_t>(1, (N + kChunk - 1) / kChunk);
  std::vector<double> sh(n_chunks * np, 0.0), sl(n_chunks * np, 0.0);
  auto add = [](double& s, double& e, double v, double ve) {  // (s, e) += (v, ve)
    const double t = s + v, bb = t - s;
    e += ((s - (t - bb)) + (v - bb)) + ve;
    s = t;
  };
  parallel_tasks(n_chunks, threads, [&](index_t c) {
    double* h = sh.data() + c * np;
    double* l = sl.data() + c * np;
    const index_t lo_row = c * kChunk, hi_row = std::min(N, lo_row + kChunk);
    for (index_t i = lo_row; i < hi_row; ++i)
      for (index_t a = 0, e = 0; a < K; ++a) {
        const double xa = X(i, a);
        for (index_t b = 0; b <= a; ++b, ++e) {
          const double xb = X(i, b), p = xa * xb;
          add(h[e], l[e], p, std::fma(xa, xb, -p));
        }
      }
  });
  for (index_t e = 0; e < np; ++e) {
    double s = 0.0, err = 0.0;
    for (index_t c = 0; c < n_chunks; ++c) add(s, err, sh[c * np + e], sl[c * np + e]);
    const double t = s + err;  // renormalise
    sh[e] = t, sl[e] = err - (t - s);
  }
  for (index_t a = 0, e = 0; a < K; ++a)
    for (index_t b = 0; b <= a; ++b, ++e) {
      hi[a * K + b] = hi[b * K + a] = sh[e];
      lo[a * K + b] = lo[b * K + a] = sl[e];
    }
}

}  // namespace crve
