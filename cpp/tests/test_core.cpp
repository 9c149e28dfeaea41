// C++ core tests, no Python: statistics against dense sums, estimators against dense textbook
// formulas (every N_g x N_g block formed), shard addition, thread-count independence.
#include <Eigen/Dense>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "crve/bootstrap.hpp"
#include "crve/diagnostics.hpp"
#include "crve/estimators.hpp"
#include "crve/model.hpp"
#include "crve/parallel.hpp"
#include "crve/stats.hpp"

using namespace crve;
using Eigen::MatrixXd;
using Eigen::VectorXd;

static int failures = 0;

#define CHECK_CLOSE(a, b, tol, what)                                                              \
  do {                                                                                            \
    const double err_ = rel_err(a, b);                                                            \
    if (!(err_ <= tol)) {                                                                         \
      std::printf("FAIL %s: relative error %.3g\n", what, err_);                                 \
      ++failures;                                                                                 \
    } else {                                                                                      \
      std::printf("ok   %s (%.2g)\n", what, err_);                                               \
    }                                                                                             \
  } while (0)

static double rel_err(const MatrixXd& a, const MatrixXd& b) { return (a - b).cwiseAbs().maxCoeff() / b.cwiseAbs().maxCoeff(); }

struct Data {
  MatrixXd X;  // column-major here: exercises strided access
  VectorXd y;
  std::vector<std::int64_t> g;
  index_t G;
};

static Data make_data(unsigned seed, index_t N, index_t K, index_t G) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd;
  std::uniform_int_distribution<index_t> ud(0, G - 1);
  Data d{MatrixXd(N, K), VectorXd(N), std::vector<std::int64_t>(N), G};
  VectorXd ce(G);
  for (index_t h = 0; h < G; ++h) ce[h] = nd(rng);
  for (index_t i = 0; i < N; ++i) {
    d.g[i] = i < G ? i : ud(rng);  // every cluster non-empty
    d.X(i, 0) = 1.0;
    for (index_t k = 1; k < K; ++k) d.X(i, k) = nd(rng) + 3.0;
    d.y[i] = d.X.row(i).sum() + ce[d.g[i]] + nd(rng);
  }
  return d;
}

static ClusterStats stats_of(const Data& d, index_t lo, index_t hi, int threads) {
  const MatrixView xv = MatrixView::strided(d.X.data() + lo, hi - lo, d.X.cols(), 1, d.X.rows());
  VectorView yv{d.y.data() + lo, hi - lo, 1};
  return ClusterStats::build(xv, yv, d.g.data() + lo, d.G, threads);
}

// Dense CV2 / CV3 meat from the definitions.
static MatrixXd dense_cov(const Data& d, Variant v) {
  const MatrixXd A = (d.X.transpose() * d.X).inverse();
  const VectorXd b = A * d.X.transpose() * d.y;
  const VectorXd u = d.y - d.X * b;
  MatrixXd meat = MatrixXd::Zero(d.X.cols(), d.X.cols());
  for (index_t h = 0; h < d.G; ++h) {
    std::vector<index_t> rows;
    for (index_t i = 0; i < d.X.rows(); ++i)
      if (d.g[i] == h) rows.push_back(i);
    MatrixXd Xg(rows.size(), d.X.cols());
    VectorXd ug(rows.size());
    for (size_t r = 0; r < rows.size(); ++r) Xg.row(r) = d.X.row(rows[r]), ug[r] = u[rows[r]];
    const MatrixXd M = MatrixXd::Identity(rows.size(), rows.size()) - Xg * A * Xg.transpose();
    Eigen::SelfAdjointEigenSolver<MatrixXd> es(M);
    VectorXd f(rows.size());
    for (index_t j = 0; j < f.size(); ++j) {
      const double l = es.eigenvalues()[j];
      f[j] = v == Variant::CV2 ? 1.0 / std::sqrt(l) : (v == Variant::CV3 ? 1.0 / l : 1.0);
    }
    const VectorXd s = Xg.transpose() * es.eigenvectors() * f.asDiagonal() * es.eigenvectors().transpose() * ug;
    meat += s * s.transpose();
  }
  MatrixXd cov = A * meat * A;
  if (v == Variant::CV3) cov *= (d.G - 1.0) / d.G;
  return cov;
}

/// Bootstrap t* of draw v by brute force: y* = X b_r + v_g u_r (restricted fit of b_k = h0),
/// refit OLS, CV1 standard error.
static double dense_wild_t(const Data& d, index_t k, double h0, const VectorXd& v) {
  const index_t N = d.X.rows(), K = d.X.cols();
  const MatrixXd A = (d.X.transpose() * d.X).inverse();
  const VectorXd b = A * d.X.transpose() * d.y;
  const VectorXd br = b - A.col(k) * ((b[k] - h0) / A(k, k));
  const VectorXd ur = d.y - d.X * br;
  VectorXd ys(N);
  for (index_t i = 0; i < N; ++i) ys[i] = d.X.row(i).dot(br) + v[d.g[i]] * ur[i];
  const VectorXd bs = A * d.X.transpose() * ys;
  const VectorXd us = ys - d.X * bs;
  MatrixXd meat = MatrixXd::Zero(K, K);
  std::vector<VectorXd> score(d.G, VectorXd::Zero(K));
  for (index_t i = 0; i < N; ++i) score[d.g[i]] += d.X.row(i).transpose() * us[i];
  for (const VectorXd& s : score) meat += s * s.transpose();
  const double G = double(d.G), ssc = G / (G - 1) * (N - 1.0) / (N - K);
  const double se = std::sqrt(ssc * (A * meat * A)(k, k));
  return (bs[k] - h0) / se;
}

static void test_bootstrap(const Data& d, const Model& m) {
  // Philox4x32-10 known-answer tests (Random123 kat_vectors).
  const Philox4x32 z = philox4x32_10(0, 0, 0, 0, 0, 0);
  const Philox4x32 pi = philox4x32_10(0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0);
  const bool kat = z.v[0] == 0x6627e8d5 && z.v[1] == 0xe169c58d && z.v[2] == 0xbc57ac4c && z.v[3] == 0x9b00dbd8 &&
                   pi.v[0] == 0xd16cfe09 && pi.v[1] == 0x94fdcceb && pi.v[2] == 0x5001e420 && pi.v[3] == 0x24126ea1;
  std::printf("%s Philox4x32-10 known answers\n", kat ? "ok  " : "FAIL");
  failures += !kat;

  const index_t k = 2, K = m.K, nb = 37;
  const double h0 = 0.3;
  MatrixXd R = MatrixXd::Zero(1, K);
  R(0, k) = 1;
  std::vector<index_t> ident(d.G);
  for (index_t h = 0; h < d.G; ++h) ident[h] = h;
  const VectorXd rho = VectorXd::Constant(1, h0) - R * m.beta0;
  const WildProblem p = wild_setup(m, m.contrasts(R), rho, ident, d.G, ident, d.G, WildOptions{}, 2);
  for (WeightKind kind : {WeightKind::Rademacher, WeightKind::Webb, WeightKind::Normal}) {
    const WeightGenerator gen{kind, 12345, false, d.G};
    MatrixXd out(p.width(), nb), out1(p.width(), nb), w(d.G, nb);
    wild_draws(p, gen, 5, nb, out.data(), 3);
    wild_draws(p, gen, 5, nb, out1.data(), 1);
    gen.fill(5, nb, w.data());
    VectorXd fast(nb), dense(nb);
    for (index_t j = 0; j < nb; ++j) {
      fast[j] = out(0, j) / std::sqrt(p.ssc * out(2, j));
      dense[j] = dense_wild_t(d, k, h0, w.col(j));
    }
    CHECK_CLOSE(fast, dense, 1e-10, "wild bootstrap t* = refit OLS + CV1");
    const bool same = out == out1;
    std::printf("%s wild draws identical on 1 and 3 threads\n", same ? "ok  " : "FAIL");
    failures += !same;
  }
}

static void test_diagnostics(const Data& d, const Model& m) {
  // Leverage tr(X_g'X_g A) and the jackknife beta_(g) - beta by refitting without cluster g.
  const index_t K = m.K, N = d.X.rows();
  const ClusterDiagnostics diag = cluster_diagnostics(m, true, 2);
  const MatrixXd A = (d.X.transpose() * d.X).inverse();
  const VectorXd b = A * d.X.transpose() * d.y;
  VectorXd lev(d.G);
  MatrixXd loo(d.G, K);
  for (index_t h = 0; h < d.G; ++h) {
    MatrixXd Ch = MatrixXd::Zero(K, K);
    VectorXd bh = VectorXd::Zero(K);
    for (index_t i = 0; i < N; ++i)
      if (d.g[i] == h) {
        Ch += d.X.row(i).transpose() * d.X.row(i);
        bh += d.X.row(i).transpose() * d.y[i];
      }
    lev[h] = (Ch * A).trace();
    const MatrixXd Cm = d.X.transpose() * d.X - Ch;
    loo.row(h) = (Cm.ldlt().solve(d.X.transpose() * d.y - bh) - b).transpose();
  }
  CHECK_CLOSE(MatrixXd(diag.leverage), MatrixXd(lev), 1e-10, "cluster leverage");
  CHECK_CLOSE(diag.loo, loo, 1e-9, "jackknife beta_(g) - beta");
  CHECK_CLOSE(MatrixXd(diag.partial.colwise().sum()), MatrixXd::Ones(1, K), 1e-12, "partial leverages sum to 1");
}

// The kept threads: every task runs once; an exception reaches the caller and the pool still
// serves the next call; a call nested in a task and calls from two threads at once (the second
// finds the pool busy and starts its own threads) all complete with the right sums.
static void test_thread_pool() {
  auto sum_of = [](index_t n, int threads) {
    std::vector<index_t> hit(n, 0);
    parallel_tasks(n, threads, [&](index_t t) { hit[t] += t + 1; });
    index_t s = 0;
    for (index_t t = 0; t < n; ++t) s += hit[t];
    return s;
  };
  bool ok = sum_of(1000, 4) == 500500 && sum_of(7, 3) == 28;
  bool thrown = false;
  try {
    parallel_tasks(100, 4, [](index_t t) {
      if (t == 57) throw std::runtime_error("task 57");
    });
  } catch (const std::runtime_error& e) {
    thrown = std::string(e.what()) == "task 57";
  }
  ok = ok && thrown && sum_of(1000, 4) == 500500;
  std::atomic<index_t> nested{0};
  parallel_tasks(8, 4, [&](index_t) { nested += sum_of(100, 2); });
  ok = ok && nested.load() == 8 * 5050;
  index_t a = 0, b = 0;
  std::thread other([&] { for (int r = 0; r < 50; ++r) a += sum_of(500, 2); });
  for (int r = 0; r < 50; ++r) b += sum_of(500, 3);
  other.join();
  ok = ok && a == 50 * 125250 && b == 50 * 125250;
  if (!ok) ++failures;
  std::printf("%s thread pool: tasks, exceptions, nested and concurrent calls\n", ok ? "ok  " : "FAIL");
}

int main() {
  test_thread_pool();
  const Data d = make_data(42, 400, 4, 23);
  const ClusterStats whole = stats_of(d, 0, 400, 2);
  const Model m(whole, 2);
  const MatrixXd A = (d.X.transpose() * d.X).inverse();
  CHECK_CLOSE(MatrixXd(m.beta()), MatrixXd(A * d.X.transpose() * d.y), 1e-11, "coefficients");
  for (Variant v : {Variant::CV0, Variant::CV2, Variant::CV3}) {
    const MatrixXd cov = m.to_raw(cluster_cov(m, v, 2).cov);
    CHECK_CLOSE(cov, dense_cov(d, v), 1e-10, v == Variant::CV0 ? "CV0" : v == Variant::CV2 ? "CV2" : "CV3");
  }
  // CV2 / CV3 at every width of the estimators' small-product kernel (up to 8, 16, 24 and 32
  // rows, and Eigen's product beyond), with clusters of fewer rows than columns (rank below K).
  for (index_t K : {1, 3, 9, 13, 17, 26, 35}) {
    const Data dk = make_data(100 + static_cast<unsigned>(K), 600, K, 23);
    const ClusterStats sk = stats_of(dk, 0, 600, 2);
    const Model mk(sk, 2);
    CHECK_CLOSE(mk.to_raw(cluster_cov(mk, Variant::CV2, 2).cov), dense_cov(dk, Variant::CV2), 1e-9, "CV2, K columns");
    CHECK_CLOSE(mk.to_raw(cluster_cov(mk, Variant::CV3, 2).cov), dense_cov(dk, Variant::CV3), 1e-9, "CV3, K columns");
    // Many small clusters: the series path (SeriesBatch, tr A C_g below 5e-2 up to K = 26).
    const Data ds = make_data(200 + static_cast<unsigned>(K), 6000, K, 600);
    const ClusterStats ss = stats_of(ds, 0, 6000, 2);
    const Model ms(ss, 2);
    CHECK_CLOSE(ms.to_raw(cluster_cov(ms, Variant::CV2, 2).cov), dense_cov(ds, Variant::CV2), 1e-9,
                "CV2, K columns, many clusters");
    CHECK_CLOSE(ms.to_raw(cluster_cov(ms, Variant::CV3, 2).cov), dense_cov(ds, Variant::CV3), 1e-9,
                "CV3, K columns, many clusters");
  }
  // Shards add (clusters span the cut); shifts differ, so the re-shift is exercised.
  ClusterStats parts = stats_of(d, 0, 150, 1);
  std::vector<std::int64_t> ident(d.G);
  for (index_t h = 0; h < d.G; ++h) ident[h] = h;
  parts.add(stats_of(d, 150, 400, 1), ident.data());
  const Model mp(parts, 1);
  CHECK_CLOSE(MatrixXd(mp.beta()), MatrixXd(m.beta()), 1e-12, "shard sum: coefficients");
  CHECK_CLOSE(mp.to_raw(cluster_cov(mp, Variant::CV2, 1).cov), m.to_raw(cluster_cov(m, Variant::CV2, 1).cov), 1e-11,
              "shard sum: CV2");
  // Thread-count independence: bit-identical statistics and covariances.
  const Data big = make_data(7, 200000, 5, 3000);
  const ClusterStats s1 = stats_of(big, 0, 200000, 1), s4 = stats_of(big, 0, 200000, 4);
  const bool same = s1.packed() == s4.packed();
  std::printf("%s statistics identical on 1 and 4 threads\n", same ? "ok  " : "FAIL");
  failures += !same;
  const Model m1(s1, 1), m4(s4, 4);
  const bool same_cov = cluster_cov(m1, Variant::CV2, 1).cov == cluster_cov(m4, Variant::CV2, 4).cov &&
                        cluster_cov(m1, Variant::CV1, 1).cov == cluster_cov(m4, Variant::CV1, 4).cov;
  std::printf("%s CV1, CV2 identical on 1 and 4 threads\n", same_cov ? "ok  " : "FAIL");
  failures += !same_cov;
  // The total build() leaves behind is the one summed afresh, and add() drops it.
  {
    ClusterStats t = s1;
    const std::vector<double> kept = t.total(1);
    t.forget_total();
    bool same_total = kept == t.total(4);
    ClusterStats doubled = s1;
    std::vector<std::int64_t> ident_big(s1.G());
    for (index_t h = 0; h < s1.G(); ++h) ident_big[h] = h;
    doubled.add(s1, ident_big.data());
    const std::vector<double> sum2 = doubled.total(1);
    for (size_t e = 0; e < kept.size(); ++e) same_total = same_total && std::abs(sum2[e] - 2 * kept[e]) <= 1e-12 * std::abs(sum2[e]);
    std::printf("%s total() after build() equals the blocks' sum, and follows add()\n", same_total ? "ok  " : "FAIL");
    failures += !same_total;
  }
  // drop_empty: only the slots with rows, in slot order, and their slot numbers; both traversals.
  for (double table_bytes : {0.0, 1e12}) {
    std::vector<std::int64_t> odd(big.g.size());
    for (size_t i = 0; i < odd.size(); ++i) odd[i] = 2 * big.g[i] + 1;  // even slots stay empty
    const MatrixView xv = MatrixView::strided(big.X.data(), big.X.rows(), big.X.cols(), 1, big.X.rows());
    const VectorView yv{big.y.data(), big.X.rows(), 1};
    BuildLimits lim;
    lim.table_bytes = table_bytes;
    lim.resident_bytes = 0;  // small data: reach the chunk tables too
    lim.drop_empty = true;
    std::vector<index_t> kept;
    const ClusterStats sd = ClusterStats::build(xv, yv, odd.data(), 2 * big.G + 1, 2, lim, &kept);
    bool ok = sd.G() == big.G && static_cast<index_t>(kept.size()) == big.G;
    for (index_t h = 0; ok && h < big.G; ++h) ok = kept[h] == 2 * h + 1;
    std::printf("%s drop_empty keeps the %ld odd slots in order\n", ok ? "ok  " : "FAIL", static_cast<long>(sd.G()));
    failures += !ok;
    if (ok) {
      const Eigen::Map<const MatrixXd> a(sd.packed().data(), sd.npack(), sd.G()), b(s1.packed().data(), s1.npack(), s1.G());
      CHECK_CLOSE(MatrixXd(a), MatrixXd(b), 1e-13, "drop_empty statistics = statistics of the non-empty slots");
    }
  }
  // add_rows: the two halves of the rows added into empty statistics with the first row's shift
  // equal the one-pass statistics; staged (scratch lent), by row order, and by chunk tables;
  // identical on 1 and 4 threads. A NaN adds nothing and says so.
  {
    const index_t N = big.X.rows(), half = N / 2;
    auto view = [&](index_t lo, index_t n) {
      return MatrixView::strided(big.X.data() + lo, n, big.X.cols(), 1, big.X.rows());
    };
    std::vector<std::int64_t> ident_big(big.G);
    for (index_t h = 0; h < big.G; ++h) ident_big[h] = big.G - 1 - h;  // reversed: the map is used
    std::vector<double> stage(ClusterStats::stage_doubles(half + 1, big.X.cols()));
    auto added = [&](double table_bytes, bool lend, int threads) {
      ClusterStats t(big.X.cols(), big.G, s1.shift());
      BuildLimits lim;
      lim.table_bytes = table_bytes;
      lim.resident_bytes = 0;
      lim.check_finite = true;
      if (lend) lim.stage = stage.data(), lim.stage_size = static_cast<index_t>(stage.size());
      const VectorView y0{big.y.data(), half, 1}, y1{big.y.data() + half, N - half, 1};
      t.add_rows(view(0, half), y0, big.g.data(), big.G, ident_big.data(), threads, lim);
      t.add_rows(view(half, N - half), y1, big.g.data() + half, big.G, ident_big.data(), threads, lim);
      return t;
    };
    for (double table_bytes : {0.0, 1e12})
      for (bool lend : {false, true}) {
        const ClusterStats t1 = added(table_bytes, lend, 1), t4 = added(table_bytes, lend, 4);
        MatrixXd a(s1.npack(), s1.G()), b(s1.npack(), s1.G());
        for (index_t h = 0; h < big.G; ++h)
          for (index_t e = 0; e < s1.npack(); ++e) a(e, h) = t1.gram(big.G - 1 - h)[e], b(e, h) = s1.gram(h)[e];
        CHECK_CLOSE(a, b, 1e-12, table_bytes > 0 ? "add_rows by chunk tables = one pass"
                                 : lend ? "add_rows staged = one pass" : "add_rows by row order = one pass");
        const bool same_t = t1.packed() == t4.packed();
        std::printf("%s add_rows identical on 1 and 4 threads\n", same_t ? "ok  " : "FAIL");
        failures += !same_t;
      }
    bool stage_used = false;
    for (double v : stage) stage_used = stage_used || v != 0.0;
    std::printf("%s the staged mode ran (scratch written)\n", stage_used ? "ok  " : "FAIL");
    failures += !stage_used;
    // Staged: columns given as broadcast scalars equal to their shift (an intercept, and here a
    // constant in the middle too) are zero in every shifted row and left out of the staged copy;
    // the statistics are bit for bit those of the same constants held as real columns.
    {
      MatrixXd Xc = big.X.topRows(half);
      Xc.col(2).setConstant(3.0);
      const double one = 1.0, three = 3.0;
      MatrixView real = MatrixView::strided(Xc.data(), half, Xc.cols(), 1, half), bcast = real;
      bcast.col[0] = &one, bcast.stride[0] = 0;
      bcast.col[2] = &three, bcast.stride[2] = 0;
      std::vector<double> shift_c;
      for (index_t k = 0; k < Xc.cols(); ++k) shift_c.push_back(Xc(0, k));
      shift_c.push_back(big.y[0]);
      auto staged_stats = [&](const MatrixView& xv) {
        ClusterStats t(Xc.cols(), big.G, shift_c);
        BuildLimits lim;
        lim.table_bytes = 0;
        lim.resident_bytes = 0;
        lim.stage = stage.data(), lim.stage_size = static_cast<index_t>(stage.size());
        t.add_rows(xv, VectorView{big.y.data(), half, 1}, big.g.data(), big.G, ident_big.data(), 2, lim);
        t.add_rows(xv, VectorView{big.y.data(), half, 1}, big.g.data(), big.G, ident_big.data(), 2, lim);
        return t;
      };
      const bool same = staged_stats(bcast).packed() == staged_stats(real).packed();
      std::printf("%s staged: broadcast constant columns (left out of the copy) = real ones, bit for bit\n",
                  same ? "ok  " : "FAIL");
      failures += !same;
    }
    for (bool lend : {false, true}) {
      std::vector<double> ybad(big.y.data(), big.y.data() + half);
      ybad[half / 3] = std::numeric_limits<double>::quiet_NaN();
      ClusterStats t(big.X.cols(), big.G, s1.shift());
      BuildLimits lim;
      lim.table_bytes = 0;
      lim.check_finite = true;
      if (lend) lim.stage = stage.data(), lim.stage_size = static_cast<index_t>(stage.size());
      const bool added_any = t.add_rows(view(0, half), VectorView{ybad.data(), half, 1}, big.g.data(), big.G,
                                        ident_big.data(), 2, lim);
      bool zero = true;
      for (double v : t.packed()) zero = zero && v == 0.0;
      std::printf("%s add_rows refuses a NaN and adds nothing (%s)\n", !added_any && zero ? "ok  " : "FAIL",
                  lend ? "staged" : "row order");
      failures += added_any || !zero;
    }
  }
  test_bootstrap(d, m);
  test_diagnostics(d, m);
  std::printf("%d failed\n", failures);
  return failures == 0 ? 0 : 1;
}
