#include "crve/bootstrap.hpp"

#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

#include "crve/parallel.hpp"
#include "simd.hpp"

namespace crve {

namespace {

/// Cells grouped by code (a counting sort): members of group k are list[start[k] .. start[k+1]).
void group(const std::vector<index_t>& code, index_t n, std::vector<index_t>& start, std::vector<index_t>& list) {
  start.assign(n + 1, 0);
  for (index_t c : code) ++start[c + 1];
  for (index_t k = 0; k < n; ++k) start[k + 1] += start[k];
  list.resize(code.size());
  std::vector<index_t> pos(start.begin(), start.end() - 1);
  for (index_t c = 0; c < static_cast<index_t>(code.size()); ++c) list[pos[code[c]]++] = c;
}

/// Pseudo-inverse of a symmetric positive semi-definite matrix; eigenvalues at or below `tol`
/// count as zero. Returns whether any did.
bool pinv_psd(const MatrixXd& M, double tol, MatrixXd& out) {
  Eigen::SelfAdjointEigenSolver<MatrixXd> es(M);
  VectorXd inv = es.eigenvalues();
  bool singular = false;
  for (index_t i = 0; i < inv.size(); ++i) {
    if (inv[i] > tol) {
      inv[i] = 1.0 / inv[i];
    } else {
      inv[i] = 0.0;
      singular = true;
    }
  }
  out.noalias() = es.eigenvectors() * inv.asDiagonal() * es.eigenvectors().transpose();
  return singular;
}

/// Relative tolerance for "X'X minus one cluster is singular" in the equilibrated basis.
constexpr double kLeaveOutTol = 1e-10;

}  // namespace

WildProblem wild_setup(const Model& m, const MatrixXd& a, const VectorXd& rho, const std::vector<index_t>& cell_var,
                       index_t G_var, const std::vector<index_t>& cell_boot, index_t G_boot, const WildOptions& opt,
                       int threads) {
  WildProblem p;
  const index_t K = p.K = m.K, q = p.q = a.cols(), cells = p.cells = m.G;
  if (a.rows() != K || rho.size() != q || q < 1) throw std::invalid_argument("a must be K x q and rho of length q");
  if (static_cast<index_t>(cell_var.size()) != cells || static_cast<index_t>(cell_boot.size()) != cells)
    throw std::invalid_argument("cell maps must have one entry per cluster of the model");
  for (index_t c = 0; c < cells; ++c)
    if (cell_var[c] < 0 || cell_var[c] >= G_var || cell_boot[c] < 0 || cell_boot[c] >= G_boot)
      throw std::invalid_argument("cell map entry out of range");
  p.G_var = G_var;
  p.G_boot = G_boot;
  p.cell_boot = cell_boot;
  p.ncomp = (opt.affine && opt.impose_null && q == 1) ? 2 : 1;
  group(cell_var, G_var, p.var_start, p.var_cells);
  std::vector<index_t> boot_start, boot_cells;
  group(cell_boot, G_boot, boot_start, boot_cells);

  // DGP scores per component: restricted scores s_c + C_c h (a'gamma - rho) (h = A a (a'A a)^-1)
  // and their slope in rho, -C_c h; or the unrestricted scores.
  const MatrixXd Aa = m.A * a;
  std::vector<MatrixXd> S(p.ncomp, MatrixXd(K, cells));
  if (opt.impose_null) {
    const MatrixXd h = Aa * (a.transpose() * Aa).ldlt().solve(MatrixXd::Identity(q, q));
    const VectorXd shift = h * (a.transpose() * m.gamma - rho);
    parallel_tasks(cells, threads, [&](index_t c) {
      thread_local MatrixXd Cc;
      m.C_of(c, Cc);
      S[0].col(c) = m.S.col(c) + Cc * shift;
      if (p.ncomp == 2) S[1].col(c) = -Cc * h.col(0);
    }, 4096);
  } else {
    S[0] = m.S;
  }

  // "3x": scores of the leave-one-bootstrap-cluster-out fits within the null (or unrestricted).
  if (opt.jackknife_dgp) {
    MatrixXd Z = MatrixXd::Identity(K, K);
    if (opt.impose_null) {
      Eigen::HouseholderQR<MatrixXd> qr(a);
      Z = (qr.householderQ() * MatrixXd::Identity(K, K)).rightCols(K - q);
    }
    const MatrixXd ZCZ = Z.transpose() * m.C * Z;
    const double tol = kLeaveOutTol * (ZCZ.size() ? ZCZ.diagonal().maxCoeff() : 1.0);
    std::vector<char> singular(G_boot, 0);
    parallel_tasks(G_boot, threads, [&](index_t B) {
      thread_local MatrixXd Cc, CB, Minv;
      CB.setZero(K, K);
      std::vector<VectorXd> sB(p.ncomp, VectorXd::Zero(K));
      for (index_t i = boot_start[B]; i < boot_start[B + 1]; ++i) {
        const index_t c = boot_cells[i];
        m.C_of(c, Cc);
        CB += Cc;
        for (index_t j = 0; j < p.ncomp; ++j) sB[j] += S[j].col(c);
      }
      singular[B] = pinv_psd(ZCZ - Z.transpose() * CB * Z, tol, Minv);
      for (index_t j = 0; j < p.ncomp; ++j) sB[j] = Z * (Minv * (Z.transpose() * sB[j]));
      for (index_t i = boot_start[B]; i < boot_start[B + 1]; ++i) {
        const index_t c = boot_cells[i];
        m.C_of(c, Cc);
        for (index_t j = 0; j < p.ncomp; ++j) S[j].col(c) += Cc * sB[j];
      }
    }, 256);
    for (char s : singular) p.dgp_singular += s;
  }

  // Studentisation per variance cluster: alpha_g, F_g = C_g alpha_g, Cq_c = alpha_g's_c, and the
  // sample's projected scores u_g = alpha_g' s_g (unrestricted s_g) for its own variance.
  const index_t rows = K + q;
  p.P.resize(p.ncomp * rows, cells);
  for (index_t j = 0; j < p.ncomp; ++j) {
    p.P.middleRows(j * rows, K).noalias() = m.A * S[j];
    p.P.middleRows(j * rows + K, q).noalias() = Aa.transpose() * S[j];
  }
  p.Cq.resize(p.ncomp * q, cells);
  p.F.resize(K, q * G_var);
  MatrixXd U(q, G_var);
  const double tol3 = kLeaveOutTol * m.C.diagonal().maxCoeff();
  std::vector<char> singular(G_var, 0);
  parallel_tasks(G_var, threads, [&](index_t g) {
    thread_local MatrixXd Cc, Cg, alpha, Minv;
    Cg.setZero(K, K);
    VectorXd sg = VectorXd::Zero(K);
    for (index_t i = p.var_start[g]; i < p.var_start[g + 1]; ++i) {
      const index_t c = p.var_cells[i];
      m.C_of(c, Cc);
      Cg += Cc;
      sg += m.S.col(c);
    }
    if (opt.jackknife_stud) {
      singular[g] = pinv_psd(m.C - Cg, tol3, Minv);
      alpha.noalias() = Minv * a;
    } else {
      alpha = Aa;
    }
    p.F.middleCols(g * q, q).noalias() = Cg * alpha;
    U.col(g).noalias() = alpha.transpose() * sg;
    for (index_t i = p.var_start[g]; i < p.var_start[g + 1]; ++i) {
      const index_t c = p.var_cells[i];
      for (index_t j = 0; j < p.ncomp; ++j) p.Cq.col(c).segment(j * q, q).noalias() = alpha.transpose() * S[j].col(c);
    }
  }, 256);
  for (char s : singular) p.stud_singular += s;

  const double G = static_cast<double>(G_var);
  p.ssc = opt.jackknife_stud ? (G - 1) / G : G / (G - 1) * (m.N - 1) / (m.N - K);
  p.theta = a.transpose() * m.gamma;
  p.V = p.ssc * U * U.transpose();

  // Streaming: cell c is bootstrap cluster c and the cells of each variance cluster are
  // consecutive, so weights are generated in cache-sized blocks of cells (no G_boot x chunk array).
  p.streaming = G_boot == cells;
  for (index_t c = 0; c < cells && p.streaming; ++c) p.streaming = cell_boot[c] == c && p.var_cells[c] == c;
  // Draws per task: a multiple of 8 (whole SIMD lanes), the chunk's weights about 256 KB.
  const index_t wrows = p.streaming ? std::min<index_t>(cells, 1024) : G_boot;
  p.chunk = 8;
  while (p.chunk < 256 && p.chunk * 2 * wrows * 8 <= (index_t(1) << 18)) p.chunk *= 2;
  return p;
}

namespace {

struct DrawScratch {
  std::vector<double> W, tmp, acc, buf, Q;
};

/// WeightGenerator::fill_lanes, with Rademacher signs made eight draws at a time in SIMD lanes.
CRVE_MULTIVERSION void fill_weights(const WeightGenerator& gen, index_t b0, index_t nl, index_t g0, index_t g1, double* out,
                              index_t ld, double* scratch) {
  if (gen.kind != WeightKind::Rademacher || gen.enumerate) return gen.fill_lanes(b0, nl, g0, g1, out, ld, scratch);
  for (index_t j0 = 0; j0 < nl; j0 += 8) gen.rademacher_lanes8(b0 + j0, g0, g1, out + j0, ld);
}

/// Weight rows (the chunk's Bc draws of one cell, contiguous). Streaming problems (cell c is
/// bootstrap cluster c, cells visited in order) generate kBlock cells at a time, so the weights
/// stay in cache whatever G; otherwise all bootstrap clusters' weights are generated once.
class WeightRows {
 public:
  static constexpr index_t kBlock = 1024;  // a multiple of WeightGenerator::kAlign
  WeightRows(const WildProblem& p, const WeightGenerator& gen, index_t first, index_t Bc, DrawScratch& s)
      : p_(p), gen_(gen), first_(first), Bc_(Bc), s_(s) {
    if (!p.streaming) fill(0, p.G_boot);
  }
  const double* row(index_t c) {
    if (!p_.streaming) return s_.W.data() + p_.cell_boot[c] * Bc_;
    if (lo_ < 0 || c < lo_ || c >= lo_ + kBlock) {
      lo_ = c / kBlock * kBlock;
      fill(lo_, std::min(p_.cells, lo_ + kBlock));
    }
    return s_.W.data() + (c - lo_) * Bc_;
  }

 private:
  void fill(index_t lo, index_t hi) { fill_weights(gen_, first_, Bc_, lo, hi, s_.W.data(), Bc_, s_.tmp.data()); }
  const WildProblem& p_;
  const WeightGenerator& gen_;
  index_t first_, Bc_;
  DrawScratch& s_;
  index_t lo_ = -1;
};

/// Eight draws' lanes as one SIMD value (simd.hpp's Row8, load8, store8).
using Lanes8 = Row8;

/// out[0..Bc) += d * w[0..Bc): every draw in its own lane, so a draw's sums are taken in the same
/// order whichever draws share its chunk.
inline void axpy_lanes(index_t Bc, double d, const double* __restrict w, double* __restrict out) {
  for (index_t j = 0; j < Bc; ++j) out[j] += d * w[j];
}

inline void mul_add_lanes(index_t Bc, const double* __restrict x, const double* __restrict y,
                               double* __restrict out) {
  for (index_t j = 0; j < Bc; ++j) out[j] += x[j] * y[j];
}

/// acc rows i0 .. i0 + NI, lanes j0 .. j0 + 8, += sum over cells [lo, hi) of P(i, c) w_c: the
/// NI accumulators stay in registers across the cells.
template <int NI>
__attribute__((always_inline)) inline void accumulate_rows(const WildProblem& p, WeightRows& w, index_t lo, index_t hi, index_t i0, index_t j0, index_t Bc,
                     double* acc) {
  Lanes8 a[NI];
  for (int l = 0; l < NI; ++l) a[l] = load8(acc + (i0 + l) * Bc + j0);
  const index_t ld = p.P.rows();
  const double* P = p.P.data() + i0;
  for (index_t c = lo; c < hi; ++c) {
    const Lanes8 wv = load8(w.row(c) + j0);
    for (int l = 0; l < NI; ++l) a[l] += P[c * ld + l] * wv;
  }
  for (int l = 0; l < NI; ++l) store8(acc + (i0 + l) * Bc + j0, a[l]);
}

/// One chunk of Bc draws starting at draw `first`.
CRVE_MULTIVERSION void chunk_kernel(const WildProblem& p, const WeightGenerator& gen, index_t first, index_t Bc, DrawScratch& s) {
  const index_t K = p.K, q = p.q, nc = p.ncomp, rows = K + q;
  // Numerators and deltas: acc(i, :) = sum_c P(i, c) v_c.
  double* acc = s.acc.data();
  std::fill(s.acc.begin(), s.acc.end(), 0.0);
  WeightRows w(p, gen, first, Bc, s);  // with at most kBlock cells the weights are made once
  const index_t nrows = nc * rows;
  for (index_t lo = 0; lo < p.cells; lo += WeightRows::kBlock) {
    const index_t hi = std::min(p.cells, lo + WeightRows::kBlock);
    for (index_t j0 = 0; j0 < Bc; j0 += 8)
      for (index_t i0 = 0; i0 < nrows; i0 += 8) {
        switch (std::min<index_t>(8, nrows - i0)) {  // inlined into this function's SIMD clones
          case 1: accumulate_rows<1>(p, w, lo, hi, i0, j0, Bc, acc); break;
          case 2: accumulate_rows<2>(p, w, lo, hi, i0, j0, Bc, acc); break;
          case 3: accumulate_rows<3>(p, w, lo, hi, i0, j0, Bc, acc); break;
          case 4: accumulate_rows<4>(p, w, lo, hi, i0, j0, Bc, acc); break;
          case 5: accumulate_rows<5>(p, w, lo, hi, i0, j0, Bc, acc); break;
          case 6: accumulate_rows<6>(p, w, lo, hi, i0, j0, Bc, acc); break;
          case 7: accumulate_rows<7>(p, w, lo, hi, i0, j0, Bc, acc); break;
          default: accumulate_rows<8>(p, w, lo, hi, i0, j0, Bc, acc); break;
        }
      }
  }
  // Bootstrap scores of each variance cluster projected on alpha_g, and their Gram.
  double* buf = s.buf.data();
  std::fill(s.Q.begin(), s.Q.end(), 0.0);
  for (index_t g = 0; g < p.G_var; ++g) {
    std::fill(s.buf.begin(), s.buf.end(), 0.0);
    for (index_t ci = p.var_start[g]; ci < p.var_start[g + 1]; ++ci) {
      const index_t c = p.var_cells[ci];
      const double* wc = w.row(c);
      const double* cq = p.Cq.data() + c * p.Cq.rows();
      for (index_t r = 0; r < nc * q; ++r) axpy_lanes(Bc, cq[r], wc, buf + r * Bc);
    }
    for (index_t comp = 0; comp < nc; ++comp)
      for (index_t i = 0; i < q; ++i) {
        const double* f = p.F.data() + (g * q + i) * K;
        const double* delta = acc + comp * rows * Bc;
        double* out = buf + (comp * q + i) * Bc;
        for (index_t j0 = 0; j0 < Bc; j0 += 8) {  // eight lanes in registers across k
          Lanes8 r = load8(out + j0);
          for (index_t k = 0; k < K; ++k) r -= f[k] * load8(delta + k * Bc + j0);
          store8(out + j0, r);
        }
      }
    double* Qp = s.Q.data();
    for (index_t c1 = 0; c1 < nc; ++c1)
      for (index_t c2 = c1; c2 < nc; ++c2)
        for (index_t i = 0; i < q; ++i)
          for (index_t l = 0; l < q; ++l, Qp += Bc) mul_add_lanes(Bc, buf + (c1 * q + i) * Bc, buf + (c2 * q + l) * Bc, Qp);
  }
}

}  // namespace

void wild_draws(const WildProblem& p, const WeightGenerator& gen, index_t b0, index_t nb, double* out, int threads) {
  if (gen.G != p.G_boot) throw std::invalid_argument("weight generator has the wrong number of clusters");
  const index_t Bc = p.chunk, K = p.K, q = p.q, nc = p.ncomp, width = p.width();
  const index_t n_chunks = (nb + Bc - 1) / Bc;
  const index_t npairs = nc * (nc + 1) / 2;
  auto make = [&] {
    DrawScratch s;
    const index_t wrows = p.streaming ? std::min(p.cells, WeightRows::kBlock) : p.G_boot;
    s.W.resize(wrows * Bc);
    s.tmp.resize(8 * wrows);
    s.acc.resize(nc * (K + q) * Bc);
    s.buf.resize(nc * q * Bc);
    s.Q.resize(npairs * q * q * Bc);
    return s;
  };
  parallel_workers(n_chunks, threads, make, [&](DrawScratch& s, index_t t) {
    // Whole chunks (the tail computes a few unused draws): every draw goes through the same lanes.
    chunk_kernel(p, gen, b0 + t * Bc, Bc, s);
    const index_t n = std::min(Bc, nb - t * Bc);
    for (index_t j = 0; j < n; ++j) {
      double* o = out + (t * Bc + j) * width;
      for (index_t comp = 0; comp < nc; ++comp)
        for (index_t i = 0; i < q; ++i) *o++ = s.acc[(comp * (K + q) + K + i) * Bc + j];
      for (index_t r = 0; r < npairs * q * q; ++r) *o++ = s.Q[r * Bc + j];
    }
  });
}

void wild_count(const double* draws, index_t nb, index_t width, index_t ncomp, double ssc, const double* drho,
                const double* t, index_t m, double tol, bool signed_tails, std::int64_t* out, int threads) {
  if (!((ncomp == 2 && width == 5) || (ncomp == 1 && width == 2)))
    throw std::invalid_argument("wild_count needs a single-restriction problem");
  constexpr index_t block = 1 << 14;
  const index_t n_blocks = (nb + block - 1) / block;
  std::vector<std::int64_t> counts(n_blocks * m * 3, 0);
  parallel_tasks(n_blocks, threads, [&](index_t blk) {
    const index_t lo = blk * block, hi = std::min(nb, lo + block);
    std::int64_t* cnt = counts.data() + blk * m * 3;
    for (index_t i = 0; i < m; ++i) {
      const double dr = drho[i], ti = t[i], at = std::abs(ti);
      // |t*| > c  <=>  num^2 > c^2 ssc Q  (Q >= 0; Q = 0 with num != 0 is an infinite t*).
      const double c2 = at * (1 + tol) * at * (1 + tol) * ssc;
      const double up = ti + tol * at, down = ti - tol * at;
      std::int64_t n_abs = 0, n_up = 0, n_down = 0;
      for (index_t b = lo; b < hi; ++b) {
        const double* d = draws + b * width;
        const double num = ncomp == 2 ? d[0] + dr * d[1] : d[0];
        const double den = std::max(0.0, ncomp == 2 ? d[2] + dr * (2 * d[3] + dr * d[4]) : d[1]);
        n_abs += num * num > c2 * den;
        if (signed_tails) {
          // t* > up  <=>  num > up sqrt(ssc Q), likewise below; 0/0 draws count in neither.
          const double s = std::sqrt(ssc * den);
          n_up += (num > up * s) && !(num == 0 && s == 0);
          n_down += (num < down * s) && !(num == 0 && s == 0);
        }
      }
      cnt[i * 3] += n_abs;
      cnt[i * 3 + 1] += n_up;
      cnt[i * 3 + 2] += n_down;
    }
  });
  std::fill(out, out + m * 3, 0);
  for (index_t blk = 0; blk < n_blocks; ++blk)
    for (index_t e = 0; e < m * 3; ++e) out[e] += counts[blk * m * 3 + e];
}

}  // namespace crve
