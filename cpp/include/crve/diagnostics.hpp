// Cluster diagnostics of MacKinnon, Nielsen and Webb (2023, "summclust") and Carter, Schnepel and
// Steigerwald (2017), from the G small blocks of a Model: no second pass over the rows.
//
// With A = (X'X)^{-1} and a_j = A e_j (raw coefficient j):
//   leverage          L_g = tr(C_g A)                       (sums to K over clusters)
//   partial leverage  L_gj = a_j' C_g a_j / A_jj            (= x~_gj'x~_gj / x~_j'x~_j, FWL residual
//                                                            of x_j on the other columns; sums to 1)
//   CSS weights       gamma0_gj = a_j' C_g a_j,  gamma1_gj = (1'X_g a_j)^2
//   jackknife         beta_(g) - beta = -(X'X - C_g)^{-1} s_g = -A X_g'(I - H_gg)^{-1} u_g
//                     (pseudo-inverse where X'X - C_g is singular, counted in leverage_one)
//   residual sums     1'u_g and u_g'u_g (for the residual intraclass correlation)
#pragma once
#include <Eigen/Dense>

#include "model.hpp"

namespace crve {

struct ClusterDiagnostics {
  VectorXd leverage;    // G
  MatrixXd partial;     // G x K
  MatrixXd iota_xa;     // G x K: 1'X_g a_j (gamma1 is its square)
  VectorXd u_sum, uu;   // G
  MatrixXd loo;         // G x K: beta_(g) - beta in the caller's basis (empty without jackknife)
  index_t leverage_one = 0;  // clusters whose X'X - C_g is singular (jackknife undefined there)
};

ClusterDiagnostics cluster_diagnostics(const Model& m, bool jackknife, int threads);

}  // namespace crve
