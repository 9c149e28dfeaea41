#include "crve/diagnostics.hpp"

#include "crve/estimators.hpp"
#include "crve/parallel.hpp"

namespace crve {

ClusterDiagnostics cluster_diagnostics(const Model& m, bool jackknife, int threads) {
  const index_t K = m.K, G = m.G;
  // Working-basis a_j for raw coefficient j: X a_j = W_s (A M' e_j), so P = A M' (K x K) and
  // A_raw_jj = (M A M')_jj.
  const MatrixXd P = m.A * m.M.transpose();
  const VectorXd Ajj = (m.M * P).diagonal();
  ClusterDiagnostics d;
  d.leverage.resize(G);
  d.partial.resize(G, K);
  d.iota_xa.resize(G, K);
  d.u_sum.resize(G);
  d.uu = m.uu;
  if (jackknife) d.loo.resize(G, K);
  std::vector<char> singular(jackknife ? G : 0, 0);
  parallel_tasks(G, threads, [&](index_t g) {
    thread_local MatrixXd Cg, CP;
    thread_local VectorXd sums;
    m.C_of(g, Cg);
    m.sums_of(g, sums);
    d.leverage[g] = Cg.cwiseProduct(m.A).sum();
    CP.noalias() = Cg * P;
    d.partial.row(g) = (P.cwiseProduct(CP).colwise().sum().transpose().cwiseQuotient(Ajj)).transpose();
    d.iota_xa.row(g) = (P.transpose() * sums.head(K)).transpose();
    d.u_sum[g] = sums[K] - sums.head(K).dot(m.gamma);
  }, 256);
  // Jackknife: beta_(g) - beta = -A X_g'(I - H_gg)^{-1} u_g, by the series (in batches) where the
  // leverage is small, else through the hat block; 256 clusters a task.
  const index_t n_tasks = jackknife ? (G + 255) / 256 : 0;
  parallel_tasks(n_tasks, threads, [&](index_t task) {
    thread_local MatrixXd Cg;
    thread_local VectorXd t, F1z;
    thread_local HatBlock hb;
    SeriesBatch sb(m.A, nullptr, nullptr, false, Variant::CV3);
    index_t lane_of[SeriesBatch::kLanes];
    auto loo = [&](index_t g, const VectorXd& tg) { d.loo.row(g) = -(m.M * (m.A * tg)).transpose(); };
    auto flush = [&] {
      const index_t used = sb.size();
      if (used == 0) return;
      sb.run();
      for (index_t l = 0; l < used; ++l) {
        t.resize(K);
        for (index_t i = 0; i < K; ++i) t[i] = sb.phiV(i, 0, static_cast<int>(l));
        loo(lane_of[l], t);
      }
    };
    for (index_t g = task * 256; g < std::min(G, (task + 1) * 256); ++g) {
      m.C_into(g, sb.next(), SeriesBatch::kLanes);
      if (sb.next_trace() < kSeriesTrace) {
        lane_of[sb.size()] = g;
        if (sb.add(m.S.col(g).data())) flush();
        continue;
      }
      m.C_of(g, Cg);
      hb.compute(Cg, m.A, Variant::CV3);
      singular[g] = hb.leverage_one;
      t = m.S.col(g);
      if (hb.rank() > 0) {
        F1z.noalias() = hb.F1 * hb.pinv(m.S.col(g));
        t.noalias() += hb.L * F1z;
      }
      loo(g, t);
    }
    flush();
  });
  for (char s : singular) d.leverage_one += s;
  return d;
}

}  // namespace crve
