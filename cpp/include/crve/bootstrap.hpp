// Wild (cluster) bootstrap of the Wald / t statistic on the cluster statistics (DESIGN.md 4).
//
// Hypothesis a'gamma = rho (q restrictions, working basis: a = (R M)', rho = r - R beta0). The
// model's clusters are "cells": the intersections of the variance clusters (g) and the bootstrap
// clusters (the units that share a weight); without `bootcluster` cells = clusters.
//
// Bootstrap DGP  y* = W gamma_dgp + v_{b(c)} u_dgp,c.  With s_c the DGP scores W_c'u_dgp,c:
//     delta = gamma* - gamma_dgp = A sum_c v_c s_c                          (K)
//     numerator  n = a' delta                     (= a'gamma* - rho under WCR)
//     bootstrap scores of variance cluster g:  sum_{c in g} v_c s_c - C_g delta
//     projected on alpha_g:  r_g = sum_{c in g} v_c alpha_g's_c - (C_g alpha_g)' delta   (q)
//     variance   ssc * sum_g r_g r_g'
// with alpha_g = A a (CV1 studentisation, "x1") or (X'X - C_g)^+ a (CV3, "x3"): everything per
// draw is O(cells K q), no N. DGP scores ("1x"): restricted (WCR) or unrestricted (WCU) scores;
// "3x": the same from the leave-one-bootstrap-cluster-out fits (MacKinnon, Nielsen & Webb 2023):
//     s_c <- s_c + C_c Z (Z'(X'X - C_B)Z)^+ Z' s_B       (B the bootstrap cluster of c; Z spans
//                                                          {a'gamma = 0}, or Z = I under WCU).
// For one restriction (q = 1) the restricted scores are affine in rho, s_c = s_c(rho0) +
// (rho - rho0) s'_c, so the draws return n and the Gram of r for both components; t*(rho) of
// any rho then costs O(1) per draw (confidence intervals by test inversion with the same draws).
#pragma once
#include <Eigen/Dense>
#include <vector>

#include "model.hpp"
#include "rng.hpp"

namespace crve {

struct WildOptions {
  bool impose_null = true;     // WCR (true) or WCU
  bool jackknife_dgp = false;  // "3x"
  bool jackknife_stud = false; // "x3"
  bool affine = true;          // q = 1 and WCR: also the slope in rho (component 1)
};

struct WildProblem {
  index_t K = 0, q = 0, cells = 0, G_var = 0, G_boot = 0, ncomp = 1;
  std::vector<index_t> cell_boot;                 // per cell: its bootstrap cluster
  std::vector<index_t> var_start, var_cells;       // cells grouped by variance cluster (CSR)
  MatrixXd P;    // (ncomp (K + q)) x cells: per component [A s_c; a'A s_c]
  MatrixXd Cq;   // (ncomp q) x cells: alpha_{g(c)}'s_c per component
  MatrixXd F;    // K x (q G_var): column g q + i = C_g alpha_g e_i
  double ssc = 1;
  VectorXd theta;    // a'gamma
  MatrixXd V;        // the sample's variance of a'gamma (ssc included), same studentisation
  index_t dgp_singular = 0;   // bootstrap clusters whose leave-out restricted fit is not identified
  index_t stud_singular = 0;  // variance clusters with X'X - C_g singular (CV3 studentisation)
  index_t chunk = 8;          // draws per task (fixed by the problem size, not the thread count)
  bool streaming = false;     // cell c is bootstrap cluster c, cells grouped by variance cluster in order

  /// Doubles per draw returned by wild_draws: ncomp q numerators, then for each component pair
  /// (j <= k) the q x q matrix sum_g r_{j,g} r_{k,g}' (row-major).
  index_t width() const { return ncomp * q + ncomp * (ncomp + 1) / 2 * q * q; }
};

WildProblem wild_setup(const Model& m, const MatrixXd& a, const VectorXd& rho, const std::vector<index_t>& cell_var,
                       index_t G_var, const std::vector<index_t>& cell_boot, index_t G_boot, const WildOptions& opt,
                       int threads);

/// Draws [b0, b0 + nb) into out (nb x width, row-major). A draw's numbers do not depend on which
/// other draws are computed with it, nor on the thread count.
void wild_draws(const WildProblem& p, const WeightGenerator& gen, index_t b0, index_t nb, double* out, int threads);

/// For q = 1 problems: for each (rho_i, t_i) the number of draws with |t*| > |t| (1 + tol) and,
/// with signed_tails, t* > t + tol |t| and t* < t - tol |t|, where t*(rho) = n(rho) / sqrt(ssc
/// Q(rho)) from the affine components at rho - rho0. A draw with zero bootstrap variance has
/// t* = +-inf, or is counted nowhere when its numerator is zero too.
void wild_count(const double* draws, index_t nb, index_t width, index_t ncomp, double ssc, const double* drho,
                const double* t, index_t m, double tol, bool signed_tails, std::int64_t* out /* m x 3 */,
                int threads);

}  // namespace crve
