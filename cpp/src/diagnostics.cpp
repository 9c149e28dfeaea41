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
    thread_local VectorXd sums, t, F1z;
    thread_local HatBlock hb;
    m.C_of(g, Cg);
    m.sums_of(g, sums);
    d.leverage[g] = Cg.cwiseProduct(m.A).sum();
    CP.noalias() = Cg * P;
    d.partial.row(g) = (P.cwiseProduct(CP).colwise().sum().transpose().cwiseQuotient(Ajj)).transpose();
    d.iota_xa.row(g) = (P.transpose() * sums.head(K)).transpose();
    d.u_sum[g] = sums[K] - sums.head(K).dot(m.gamma);
    if (jackknife) {
      hb.compute(Cg, m.A, Variant::CV3);
      singular[g] = hb.leverage_one;
      t = m.S.col(g);
      if (hb.rank() > 0) {
        F1z.noalias() = hb.F1 * hb.pinv(m.S.col(g));
        t.noalias() += hb.L * F1z;
      }
      d.loo.row(g) = -(m.M * (m.A * t)).transpose();
    }
  }, 256);
  for (char s : singular) d.leverage_one += s;
  return d;
}

}  // namespace crve
