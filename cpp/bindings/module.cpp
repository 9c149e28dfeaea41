// The only pybind11 file: array views in, arrays out, the GIL released around heavy work,
// core InputError mapped to crve._core.CoreInputError(code, index, message).
#include <pybind11/eigen.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cctype>
#include <optional>
#include <string>

#include "crve/bootstrap.hpp"
#include "crve/diagnostics.hpp"
#include "crve/estimators.hpp"
#include "crve/model.hpp"
#include "crve/stats.hpp"

namespace py = pybind11;
using namespace crve;

namespace {

using F64Array = py::array_t<double, 0>;  // no forcecast: the Python layer converts once
using I64Array = py::array_t<std::int64_t, 0>;

// X is a 2-D float64 array, or a list of K 1-D float64 arrays of equal length (the columns,
// read in place; a stride-0 column is a constant). `keep` holds the arrays while X is read.
MatrixView matrix_view(const py::object& X, std::vector<F64Array>& keep) {
  if (py::isinstance<py::array>(X)) {
    F64Array a = py::cast<F64Array>(X);
    if (a.ndim() != 2) throw std::invalid_argument("X must be 2-D");
    keep.push_back(a);
    return MatrixView::strided(a.data(), a.shape(0), a.shape(1), a.strides(0) / 8, a.strides(1) / 8);
  }
  MatrixView v;
  for (const py::handle& h : py::cast<py::list>(X)) {
    if (!py::isinstance<F64Array>(h)) throw std::invalid_argument("each column of X must be a float64 array");
    F64Array a = py::cast<F64Array>(h);
    if (a.ndim() != 1) throw std::invalid_argument("each column of X must be 1-D");
    if (v.cols == 0) v.rows = a.shape(0);
    if (a.shape(0) != v.rows) throw std::invalid_argument("the columns of X have different lengths");
    keep.push_back(a);
    v.add_column(a.data(), a.strides(0) / 8);
  }
  return v;
}

VectorView vector_view(const F64Array& y) {
  if (y.ndim() != 1) throw std::invalid_argument("y must be 1-D");
  return VectorView{y.data(), y.shape(0), y.strides(0) / 8};
}

Variant parse_variant(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::toupper(c); });
  if (s == "CV0") return Variant::CV0;
  if (s == "CV1") return Variant::CV1;
  if (s == "CV2") return Variant::CV2;
  if (s == "CV3") return Variant::CV3;
  if (s == "CV3J") return Variant::CV3J;
  throw std::invalid_argument("unknown variant " + s);
}

// Satterthwaite dof tr(Omega)^2 / tr(Omega^2) do not depend on the length of a contrast, but the
// sums do (as its fourth power): working contrasts of columns in units of 1e150 would underflow.
// Per-contrast (diagonal) sums are therefore taken for unit-length working contrasts.
MatrixXd unit_columns(MatrixXd C) {
  for (Eigen::Index j = 0; j < C.cols(); ++j) {
    const double n = C.col(j).norm();
    if (n > 0 && std::isfinite(n)) C.col(j) /= n;
  }
  return C;
}

py::dict omega_dict(const OmegaSums& o) {
  py::dict d;
  d["trace"] = o.trace;
  d["tr_abab"] = o.tr_abab;
  d["tr_aabb"] = o.tr_aabb;
  d["leverage_one"] = o.leverage_one;
  return d;
}

WeightKind parse_weights(const std::string& s) {
  if (s == "rademacher") return WeightKind::Rademacher;
  if (s == "webb") return WeightKind::Webb;
  if (s == "mammen") return WeightKind::Mammen;
  if (s == "normal") return WeightKind::Normal;
  throw std::invalid_argument("unknown weights " + s);
}

std::vector<index_t> index_vector(const I64Array& a, index_t n) {
  if (a.ndim() != 1 || a.shape(0) != n) throw std::invalid_argument("map must have one entry per cluster");
  auto v = a.unchecked<1>();
  std::vector<index_t> out(n);
  for (index_t i = 0; i < n; ++i) out[i] = v(i);
  return out;
}

const char* code_name(InputError::Code c) {
  switch (c) {
    case InputError::NonFinite: return "nonfinite";
    case InputError::AllZeroColumn: return "all_zero_column";
    case InputError::Collinear: return "collinear";
    case InputError::TooFewRows: return "too_few_rows";
    case InputError::BadCode: return "bad_code";
    default: return "other";
  }
}

}  // namespace

PYBIND11_MODULE(_core, mod) {
  mod.doc() = "crve C++ core: cluster statistics, estimators, degrees-of-freedom pieces";
  static py::exception<InputError> core_error(mod, "CoreInputError", PyExc_ValueError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const InputError& e) {
      PyErr_SetObject(core_error.ptr(), py::make_tuple(code_name(e.code), e.index, e.what()).ptr());
    }
  });

  py::class_<ClusterStats>(mod, "ClusterStats")
      .def(py::init([](index_t K, std::vector<double> shift, F64Array packed) {
             if (static_cast<index_t>(shift.size()) != K + 1) throw std::invalid_argument("shift must have K + 1 entries");
             const index_t np = (K + 2) * (K + 3) / 2;
             if (packed.ndim() != 2 || packed.shape(1) != np) throw std::invalid_argument("packed must be G x (K+2)(K+3)/2");
             ClusterStats s(K, packed.shape(0), shift);
             auto p = packed.unchecked<2>();
             for (index_t g = 0; g < packed.shape(0); ++g)
               for (index_t e = 0; e < np; ++e) s.gram(g)[e] = p(g, e);
             return s;
           }),
           py::arg("K"), py::arg("shift"), py::arg("packed"))
      .def_property_readonly("K", &ClusterStats::K)
      .def_property_readonly("G", &ClusterStats::G)
      .def_property_readonly("shift", [](const ClusterStats& s) { return s.shift(); })
      .def_property_readonly("packed", [](py::object self) {
        ClusterStats& s = self.cast<ClusterStats&>();
        py::array_t<double> view({s.G(), s.npack()}, {s.npack() * 8, index_t(8)}, s.packed().data(), self);
        // Read-only: the statistics change only through their methods (which keep total() true).
        py::detail::array_proxy(view.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
        return view;
      })
      .def_property_readonly("counts", [](const ClusterStats& s) {
        py::array_t<double> out(s.G());
        auto o = out.mutable_unchecked<1>();
        for (index_t g = 0; g < s.G(); ++g) o(g) = s.count(g);
        return out;
      })
      .def("block", &ClusterStats::block)
      .def("nonfinite_column", [](const ClusterStats& s, int threads) {
             py::gil_scoped_release release;
             return s.nonfinite_column(threads);
           }, py::arg("threads") = 0)
      .def("add", [](ClusterStats& s, const ClusterStats& other, const I64Array& map) {
        if (map.ndim() != 1 || map.shape(0) != other.G()) throw std::invalid_argument("map must have one entry per cluster");
        s.add(other, map.data());
      })
      .def(
          "add_rows",
          [](ClusterStats& s, const F64Array& y, const py::object& X, const I64Array& codes, index_t n_slots,
             const I64Array& map, int threads, std::optional<F64Array> stage, bool check_finite) {
            std::vector<F64Array> keep;
            const MatrixView xv = matrix_view(X, keep);
            const VectorView yv = vector_view(y);
            if (codes.ndim() != 1 || codes.shape(0) != xv.rows || codes.strides(0) != 8)
              throw std::invalid_argument("codes must be a contiguous 1-D int64 array with one entry per row");
            if (map.ndim() != 1 || map.shape(0) != n_slots || map.strides(0) != 8)
              throw std::invalid_argument("map must be a contiguous 1-D int64 array with one entry per slot");
            BuildLimits limits;
            limits.check_finite = check_finite;
            if (stage) {
              if (stage->ndim() != 1 || stage->strides(0) != 8 || !stage->writeable())
                throw std::invalid_argument("stage must be a writeable contiguous 1-D float64 array");
              limits.stage = stage->mutable_data();
              limits.stage_size = stage->shape(0);
            }
            py::gil_scoped_release release;
            return s.add_rows(xv, yv, codes.data(), n_slots, map.data(), threads, limits);
          },
          py::arg("y"), py::arg("X"), py::arg("codes"), py::arg("n_slots"), py::arg("map"), py::arg("threads") = 0,
          py::arg("stage") = py::none(), py::arg("check_finite") = false,
          "one pass over the rows added into these statistics: cluster map[code] gets the rows with that code "
          "(distinct for the codes present); stage: scratch of stage_doubles(N, K) floats or more, reused "
          "between calls, lets rows in random cluster order be copied once in order; check_finite: add nothing and "
          "return False if y or X holds NaN or inf")
      .def_static("stage_doubles", &ClusterStats::stage_doubles, py::arg("N"), py::arg("K"))
      .def("compact", [](ClusterStats& s, const I64Array& keep) { s.compact(keep.data(), keep.shape(0)); },
           "keep the clusters keep[0..n) (increasing), in place")
      .def("copy", [](const ClusterStats& s) { return ClusterStats(s); });

  mod.def(
      "residuals_dd",
      [](const F64Array& y, const py::object& X, const F64Array& beta, int threads) {
        std::vector<F64Array> keep;
        const MatrixView xv = matrix_view(X, keep);
        const VectorView yv = vector_view(y);
        if (yv.size != xv.rows) throw std::invalid_argument("y and X have different numbers of rows");
        if (beta.ndim() != 1 || beta.shape(0) != xv.cols || beta.strides(0) != 8)
          throw std::invalid_argument("beta must be a contiguous 1-D array with one entry per column");
        py::array_t<double> out(xv.rows);
        double* o = out.mutable_data();
        {
          py::gil_scoped_release release;
          residuals_dd(xv, yv, beta.data(), o, threads);
        }
        return out;
      },
      py::arg("y"), py::arg("X"), py::arg("beta"), py::arg("threads") = 0,
      "y - X beta per row, products and sums in double-double, rounded once");

  mod.def(
      "gram_dd",
      [](const py::object& X, int threads) {
        std::vector<F64Array> keep;
        const MatrixView xv = matrix_view(X, keep);
        py::array_t<double> hi({xv.cols, xv.cols}), lo({xv.cols, xv.cols});
        double* h = hi.mutable_data();
        double* l = lo.mutable_data();
        {
          py::gil_scoped_release release;
          gram_dd(xv, h, l, threads);
        }
        return py::make_tuple(hi, lo);
      },
      py::arg("X"), py::arg("threads") = 0, "X'X in double-double: (hi, lo), K x K each");

  mod.def(
      "build_stats",
      [](const F64Array& y, const py::object& X, const I64Array& codes, index_t n_slots, int threads,
         double table_bytes, double order_bytes, std::optional<std::vector<double>> shift,
         bool drop_empty) -> py::object {
        std::vector<F64Array> keep;
        const MatrixView xv = matrix_view(X, keep);
        const VectorView yv = vector_view(y);
        if (codes.ndim() != 1 || codes.shape(0) != xv.rows || codes.strides(0) != 8)
          throw std::invalid_argument("codes must be a contiguous 1-D int64 array with one entry per row");
        BuildLimits limits;
        if (table_bytes >= 0) limits.table_bytes = table_bytes, limits.resident_bytes = 0.0;
        if (order_bytes > 0) limits.order_bytes = order_bytes, limits.order_fraction = 0.0;
        if (shift) limits.shift = *shift;
        limits.drop_empty = drop_empty;
        std::vector<index_t> kept;
        ClusterStats out;
        {
          py::gil_scoped_release release;
          out = ClusterStats::build(xv, yv, codes.data(), n_slots, threads, limits, &kept);
        }
        if (!drop_empty) return py::cast(std::move(out));
        return py::make_tuple(std::move(out), py::array_t<std::int64_t>(kept.size(), kept.data()));
      },
      py::arg("y"), py::arg("X"), py::arg("codes"), py::arg("n_slots"), py::arg("threads") = 0,
      py::arg("table_bytes") = -1.0, py::arg("order_bytes") = -1.0, py::arg("shift") = py::none(),
      py::arg("drop_empty") = false,
      "one pass over the rows; table_bytes / order_bytes override the traversal budgets (tests; table_bytes also "
      "turns off the cache-resident shortcut); shift: "
      "the K + 1 centres (default: the first row), shared by batches so they add without re-shifting; "
      "drop_empty: leave out slots with no rows and return (stats, slot numbers kept)");

  py::class_<Model>(mod, "Model")
      .def(py::init([](const ClusterStats& s, int threads) {
             py::gil_scoped_release release;
             return Model(s, threads);
           }),
           py::arg("stats"), py::arg("threads") = 0, py::keep_alive<1, 2>())
      .def_property_readonly("beta", &Model::beta)
      .def_readonly("N", &Model::N)
      .def_readonly("K", &Model::K)
      .def_readonly("G", &Model::G)
      .def_readonly("intercept", &Model::intercept)
      .def_readonly("ssr", &Model::ssr)
      .def_readonly("tss", &Model::yy_c)
      .def_readonly("rcond", &Model::rcond)
      .def_readonly("A", &Model::A)
      .def_readonly("M", &Model::M)
      .def("bread", [](const Model& m) { return m.to_raw(m.A); }, "(X'X)^{-1} in the caller's basis")
      .def(
          "cluster_cov",
          [](const Model& m, const std::string& variant, int threads) {
            const Variant v = parse_variant(variant);
            CovResult r;
            {
              py::gil_scoped_release release;
              r = cluster_cov(m, v, threads);
            }
            return py::make_tuple(m.to_raw(r.cov), r.leverage_one, r.leverage_max);
          },
          py::arg("variant"), py::arg("threads") = 0)
      .def(
          "cluster_cov_dof",
          [](const Model& m, const std::string& variant, const MatrixXd& R, int threads) {
            const Variant v = parse_variant(variant);
            std::pair<CovResult, OmegaSums> r;
            {
              py::gil_scoped_release release;
              r = cluster_cov_dof(m, v, unit_columns(m.contrasts(R)), threads);
            }
            return py::make_tuple(m.to_raw(r.first.cov), r.first.leverage_one, omega_dict(r.second),
                                  r.first.leverage_max);
          },
          py::arg("variant"), py::arg("R"), py::arg("threads") = 0,
          "cluster_cov and the Satterthwaite pieces of the rows of R in one traversal")
      .def(
          "omega_sums",
          [](const Model& m, const std::string& variant, const MatrixXd& R, bool full, int threads) {
            const Variant v = parse_variant(variant);
            OmegaSums o;
            {
              py::gil_scoped_release release;
              o = omega_sums(m, v, full ? m.contrasts(R) : unit_columns(m.contrasts(R)), full, threads);
            }
            return omega_dict(o);
          },
          py::arg("variant"), py::arg("R"), py::arg("full"), py::arg("threads") = 0)
      .def(
          "diagnostics",
          [](const Model& m, bool jackknife, int threads) {
            ClusterDiagnostics d;
            {
              py::gil_scoped_release release;
              d = cluster_diagnostics(m, jackknife, threads);
            }
            py::dict out;
            out["leverage"] = d.leverage;
            out["partial"] = d.partial;
            out["iota_xa"] = d.iota_xa;
            out["u_sum"] = d.u_sum;
            out["uu"] = d.uu;
            if (jackknife) out["loo"] = d.loo;
            out["leverage_one"] = d.leverage_one;
            return out;
          },
          py::arg("jackknife") = true, py::arg("threads") = 0,
          "per-cluster leverage, partial leverage, CSS weights, residual sums, jackknife (raw basis)")
      .def(
          "row_pass",
          [](const Model& m, const F64Array& y, const py::object& X, const std::string& variant,
             std::optional<MatrixXd> R, bool full, int threads) {
            const Variant v = parse_variant(variant);
            std::vector<F64Array> keep;
            const MatrixView xv = matrix_view(X, keep);
            const VectorView yv = vector_view(y);
            if (xv.cols != m.K || xv.rows != yv.size) throw std::invalid_argument("X/y do not match the model");
            MatrixXd C;
            if (R) C = full ? m.contrasts(*R) : unit_columns(m.contrasts(*R));
            RowPass rp;
            {
              py::gil_scoped_release release;
              rp = row_pass(m, xv, yv, v, R ? &C : nullptr, full, threads);
            }
            // meat and jk_sum to the caller's basis: cov pieces A meat A and A jk.
            py::dict d;
            d["bread_meat_bread"] = m.to_raw(m.A * rp.meat * m.A);
            d["jk_mean_times_n"] = VectorXd(m.M * rp.jk_sum);
            d["leverage_one"] = rp.leverage_one;
            d["leverage_max"] = rp.leverage_max;
            if (R) d["omega"] = omega_dict(rp.omega);
            return d;
          },
          py::arg("y"), py::arg("X"), py::arg("variant"), py::arg("R") = py::none(), py::arg("full") = false,
          py::arg("threads") = 0);
  py::class_<WildProblem>(mod, "WildProblem")
      .def_readonly("K", &WildProblem::K)
      .def_readonly("q", &WildProblem::q)
      .def_readonly("G_var", &WildProblem::G_var)
      .def_readonly("G_boot", &WildProblem::G_boot)
      .def_readonly("ncomp", &WildProblem::ncomp)
      .def_readonly("ssc", &WildProblem::ssc)
      .def_readonly("theta", &WildProblem::theta)
      .def_readonly("V", &WildProblem::V)
      .def_readonly("dgp_singular", &WildProblem::dgp_singular)
      .def_readonly("stud_singular", &WildProblem::stud_singular)
      .def_readonly("chunk", &WildProblem::chunk)
      .def_property_readonly("width", &WildProblem::width);

  mod.def(
      "wild_setup",
      [](const Model& m, const MatrixXd& R, const VectorXd& r, const I64Array& cell_var, index_t G_var,
         const I64Array& cell_boot, index_t G_boot, bool impose_null, bool jackknife_dgp, bool jackknife_stud,
         int threads) {
        if (R.cols() != m.K || R.rows() != r.size()) throw std::invalid_argument("R must be q x K and r of length q");
        WildOptions opt;
        opt.impose_null = impose_null;
        opt.jackknife_dgp = jackknife_dgp;
        opt.jackknife_stud = jackknife_stud;
        const MatrixXd a = m.contrasts(R);
        const VectorXd rho = r - R * m.beta0;
        std::vector<index_t> cv = index_vector(cell_var, m.G), cb = index_vector(cell_boot, m.G);
        py::gil_scoped_release release;
        return wild_setup(m, a, rho, cv, G_var, cb, G_boot, opt, threads);
      },
      py::arg("model"), py::arg("R"), py::arg("r"), py::arg("cell_var"), py::arg("G_var"), py::arg("cell_boot"),
      py::arg("G_boot"), py::arg("impose_null"), py::arg("jackknife_dgp"), py::arg("jackknife_stud"),
      py::arg("threads") = 0,
      "bootstrap set-up on the model's clusters (the cells); R, r in the caller's basis");

  mod.def(
      "wild_draws",
      [](const WildProblem& p, const std::string& weights, std::uint64_t seed, bool enumerate, index_t b0, index_t nb,
         int threads) {
        WeightGenerator gen{parse_weights(weights), seed, enumerate, p.G_boot};
        py::array_t<double> out({nb, p.width()});
        double* o = out.mutable_data();
        {
          py::gil_scoped_release release;
          wild_draws(p, gen, b0, nb, o, threads);
        }
        return out;
      },
      py::arg("problem"), py::arg("weights"), py::arg("seed"), py::arg("enumerate"), py::arg("b0"), py::arg("nb"),
      py::arg("threads") = 0);

  mod.def(
      "wild_count",
      [](const F64Array& draws, index_t ncomp, double ssc, const F64Array& drho, const F64Array& t, double tol,
         bool signed_tails, int threads) {
        if (draws.ndim() != 2 || draws.strides(1) != 8 || draws.strides(0) != draws.shape(1) * 8)
          throw std::invalid_argument("draws must be a C-contiguous 2-D array");
        if (drho.ndim() != 1 || t.ndim() != 1 || drho.shape(0) != t.shape(0) || drho.strides(0) != 8 || t.strides(0) != 8)
          throw std::invalid_argument("drho and t must be contiguous and of equal length");
        const index_t m = drho.shape(0);
        py::array_t<std::int64_t> out({m, index_t(3)});
        std::int64_t* o = out.mutable_data();
        {
          py::gil_scoped_release release;
          wild_count(draws.data(), draws.shape(0), draws.shape(1), ncomp, ssc, drho.data(), t.data(), m, tol, signed_tails, o,
                     threads);
        }
        return out;
      },
      py::arg("draws"), py::arg("ncomp"), py::arg("ssc"), py::arg("drho"), py::arg("t"), py::arg("tol"),
      py::arg("signed_tails"), py::arg("threads") = 0, "counts of |t*| > |t|(1+tol), t* > t + tol|t|, t* < t - tol|t| per (rho, t)");

  mod.def(
      "draw_weights",
      [](const std::string& weights, std::uint64_t seed, bool enumerate, index_t G, index_t b0, index_t nb) {
        WeightGenerator gen{parse_weights(weights), seed, enumerate, G};
        py::array_t<double> out({nb, G});
        gen.fill(b0, nb, out.mutable_data());
        return out;
      },
      py::arg("weights"), py::arg("seed"), py::arg("enumerate"), py::arg("G"), py::arg("b0"), py::arg("nb"),
      "the weights of draws [b0, b0 + nb): row j is draw b0 + j");
}
