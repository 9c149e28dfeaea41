"""crve.ols: formulas, data-frame types, clusters by name, missing values, errors."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import crve
import crve._frame

formulaic = pytest.importorskip("formulaic")


def students(seed=0, G=30, n=20, missing=False):
    """A small data set shaped like UCI student performance: grade, absences, sex, school."""
    rng = np.random.default_rng(seed)
    N = G * n
    df = pd.DataFrame({
        "school": np.repeat([f"school_{i:02d}" for i in range(G)], n),
        "absences": rng.poisson(4, N).astype(float),
        "sex": rng.choice(["F", "M"], N),
        "age": rng.integers(15, 20, N),
        "studytime": rng.normal(2, 0.8, N),
    })
    df["G3"] = (11 - 0.1 * df.absences + 0.4 * df.studytime + 0.3 * (df.sex == "M")
                + rng.normal(size=G).repeat(n) + rng.normal(size=N))
    if missing:
        df.loc[[3, 50, 51], "absences"] = np.nan
        df.loc[[7], "school"] = None
        df.loc[[50], "G3"] = np.nan
    return df


FORMULAS = ["G3 ~ absences", "G3 ~ absences + studytime + age", "G3 ~ absences + C(sex)",
            "G3 ~ absences * studytime", "G3 ~ np.log1p(absences) + I(studytime ** 2) + sex",
            "G3 ~ absences + studytime - 1", "G3 ~ 0 + C(sex) + absences", "np.log(G3 + 10) ~ absences"]


@pytest.mark.parametrize("formula", FORMULAS)
@pytest.mark.parametrize("vcov", ["CV1", "CV2", "CV3", "HC1"])
def test_formula_equals_array_path(formula, vcov):
    df = students()
    res = crve.ols(formula, df, cluster="school", vcov=vcov)
    mm = formulaic.model_matrix(formula, df)
    ref = crve.cluster_robust(mm.lhs.iloc[:, 0], mm.rhs, df.school, variant=vcov)
    assert list(res.params.index) == list(mm.rhs.columns)
    np.testing.assert_allclose(res.params.to_numpy(), ref.params.to_numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(res.bse.to_numpy(), ref.bse.to_numpy(), rtol=1e-10)
    np.testing.assert_allclose(res.df.to_numpy(), ref.df.to_numpy(), rtol=1e-10)


FAST = ["G3 ~ absences + studytime + age", "G3 ~ age + absences - 1", "G3 ~ 1 + studytime", "G3 ~ sex + absences",
        "G3 ~ C(sex) + C(age) + absences", "G3 ~ 0 + absences + sex + C(age)", "G3 ~ passed + grp", "G3 ~ 0 + grp + sex",
        "G3 ~ C(grp) + C(half)", "G3 ~ 0 + C(half) + studytime"]


@pytest.mark.parametrize("formula", FAST)
def test_fast_route_matches_formulaic(formula):
    """crve's own design (plain, bool, string, categorical and C(column) terms) equals formulaic's:
    the same columns in the same order with the same names, hence the same fit."""
    from crve.formula import _fast_term

    df = students(14)
    df["passed"] = df.G3 > 10
    df["grp"] = pd.Categorical(np.where(df.age > 17, "old", "young"), categories=["young", "old", "unused"][:2])
    df["half"] = np.where(df.studytime > 2, 1.5, 0.5)
    spec = formulaic.Formula(formula)
    assert all(_fast_term(t, crve._frame.Frame(df)) is not None for t in spec.rhs)
    res = crve.ols(formula, df, cluster="school", vcov="CV2")
    mm = formulaic.model_matrix(formula, df)
    assert list(res.params.index) == list(mm.rhs.columns)
    ref = crve.cluster_robust(mm.lhs.iloc[:, 0], mm.rhs, df.school, variant="CV2")
    np.testing.assert_allclose(res.params.to_numpy(), ref.params.to_numpy(), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(res.bse.to_numpy(), ref.bse.to_numpy(), rtol=1e-10)


def test_matches_statsmodels_formula_cluster():
    smf = pytest.importorskip("statsmodels.formula.api")
    df = students(3)
    f = "G3 ~ absences + C(sex) + studytime"
    sm = smf.ols(f.replace("C(sex)", "C(sex)"), df).fit(cov_type="cluster", cov_kwds={"groups": pd.factorize(df.school)[0]},
                                                        use_t=True)
    res = crve.ols(f, df, cluster="school")
    sm_params = sm.params.rename(lambda s: s.replace("[T.M]", "[T.M]"))
    np.testing.assert_allclose(res.params[sm_params.index], sm_params, rtol=1e-10)
    np.testing.assert_allclose(res.bse[sm.bse.index], sm.bse, rtol=1e-8)
    np.testing.assert_allclose(res.pvalues[sm.pvalues.index], sm.pvalues, rtol=1e-7)


@pytest.mark.parametrize("kind", ["polars", "arrow", "dict", "dict_of_lists"])
def test_other_frame_types(kind):
    df = students(1, missing=True)
    if kind == "polars":
        pl = pytest.importorskip("polars")
        data = pl.from_pandas(df)
    elif kind == "arrow":
        pa = pytest.importorskip("pyarrow")
        data = pa.Table.from_pandas(df, preserve_index=False)
    elif kind == "dict":
        data = {c: df[c].to_numpy() for c in df}
    else:
        data = {c: df[c].tolist() for c in df}
    for formula in ["G3 ~ absences + studytime", "G3 ~ absences + C(sex)"]:
        ref = crve.ols(formula, df, cluster="school")
        res = crve.ols(formula, data, cluster="school")
        assert res.nobs == ref.nobs and res.n_dropped == ref.n_dropped == 4
        np.testing.assert_allclose(res.bse.to_numpy(), ref.bse.to_numpy(), rtol=1e-12)


def test_polars_nulls_are_missing():
    pl = pytest.importorskip("polars")
    df = students(2)
    data = pl.from_pandas(df).with_columns(
        pl.when(pl.int_range(pl.len()) == 5).then(None).otherwise(pl.col("age")).alias("age"))
    res = crve.ols("G3 ~ age", data, cluster="school")
    assert res.n_dropped == 1 and res.dropped_by == {"age": 1}
    ref = crve.ols("G3 ~ age", df.drop(index=5), cluster="school")
    np.testing.assert_allclose(res.bse.to_numpy(), ref.bse.to_numpy(), rtol=1e-12)


@pytest.mark.parametrize("labels", ["str", "categorical", "int", "float", "object_mixed"])
def test_cluster_label_types(labels):
    df = students(4)
    codes = pd.factorize(df.school)[0]
    df["cl"] = {"str": df.school, "categorical": df.school.astype("category"), "int": codes * 7 + 3,
                "float": codes + 0.5, "object_mixed": pd.Series([c if c % 2 else f"x{c}" for c in codes], dtype=object)}[labels]
    res = crve.ols("G3 ~ absences", df, cluster="cl")
    ref = crve.cluster_robust(df.G3, np.column_stack([np.ones(len(df)), df.absences]), codes)
    assert res.n_clusters == 30
    np.testing.assert_allclose(res.bse.to_numpy(), ref.bse, rtol=1e-12)


def test_cluster_as_array_and_combination():
    df = students(5)
    df["year"] = np.tile([2019, 2020], len(df) // 2)
    by_name = crve.ols("G3 ~ absences", df, cluster=["school", "year"])
    combo = df.school + "/" + df.year.astype(str)
    by_array = crve.ols("G3 ~ absences", df, cluster=combo.to_numpy())
    assert by_name.n_clusters == 60 == by_array.n_clusters
    np.testing.assert_allclose(by_name.bse.to_numpy(), by_array.bse.to_numpy(), rtol=1e-12)
    assert by_name._stats.labels[0] == ("school_00", 2019)
    assert "school, year" in str(by_name.summary())


def test_missing_drop_counts_and_equals_complete_cases():
    df = students(6, missing=True)
    res = crve.ols("G3 ~ absences + studytime", df, cluster="school")
    assert res.n_dropped == 4 and res.dropped_by == {"G3": 1, "absences": 3, "school": 1}
    clean = df.dropna(subset=["G3", "absences", "studytime", "school"])
    ref = crve.cluster_robust(clean.G3, np.column_stack([np.ones(len(clean)), clean.absences, clean.studytime]),
                              clean.school)
    np.testing.assert_allclose(res.bse.to_numpy(), ref.bse, rtol=1e-12)
    assert "4 rows with missing values dropped" in str(res.summary())
    # An unused column's missing values do not drop rows.
    df2 = students(6)
    df2.loc[0, "age"] = np.nan
    assert crve.ols("G3 ~ absences", df2, cluster="school").n_dropped == 0


def test_float_columns_are_scanned_for_nan_only_when_the_statistics_are_not_finite(monkeypatch):
    from crve._frame import Frame

    scanned = []
    original = Frame.missing
    monkeypatch.setattr(Frame, "missing", lambda self, name: scanned.append(name) or original(self, name))
    df = students(6)
    res = crve.ols("G3 ~ absences + studytime", df, cluster="school")
    assert scanned == [] and res.n_dropped == 0  # no float column read for NaN
    df.loc[[3, 9], "absences"] = np.nan
    res = crve.ols("G3 ~ absences + studytime", df, cluster="school")
    assert sorted(scanned) == ["G3", "absences", "studytime"]
    assert res.n_dropped == 2 and res.dropped_by == {"absences": 2}
    ref = crve.ols("G3 ~ absences + studytime", df.drop(index=[3, 9]), cluster="school")
    np.testing.assert_array_equal(res.bse.to_numpy(), ref.bse.to_numpy())


@pytest.mark.parametrize("formula, used", [
    ("G3 ~ I(absences > 3)", ["G3", "absences"]),           # the transform maps NaN to False
    ("G3 ~ np.nan_to_num(absences) + studytime", ["G3", "absences", "studytime"]),
    ("G3 ~ C(absences)", ["G3", "absences"]),               # a float column as categories
    ("G3 ~ studytime + C(absences)", ["G3", "absences", "studytime"]),
    ("absences ~ studytime", ["absences", "studytime"]),    # (the outcome: found by the pass)
])
def test_a_nan_hidden_by_a_term_still_drops_its_row(formula, used):
    """Where a term can turn a NaN into a finite number, the rows are found by a scan first, as
    for every formula: a row with a missing value in any used column is dropped."""
    df = students(6)
    df.loc[[3, 9], "absences"] = np.nan
    res = crve.ols(formula, df, cluster="school")
    assert res.n_dropped == 2 and res.dropped_by == {"absences": 2}
    ref = crve.ols(formula, df.dropna(subset=used), cluster="school")
    np.testing.assert_array_equal(res.bse.to_numpy(), ref.bse.to_numpy())


def test_missing_raise_names_column_and_rows():
    df = students(7, missing=True)
    with pytest.raises(ValueError, match=r"column 'absences' has missing values in 3 rows \(first: 3, 50, 51\)"):
        crve.ols("studytime ~ absences", df, cluster="school", missing="raise")
    with pytest.raises(ValueError, match=r"column 'G3' has missing values in 1 row \(first: 50\)"):
        crve.ols("G3 ~ studytime", df, missing="raise")
    with pytest.raises(ValueError, match=r"column 'school' has missing values in 1 row \(first: 7\)"):
        crve.ols("studytime ~ age", df, cluster="school", missing="raise")
    with pytest.raises(ValueError, match="missing must be"):
        crve.ols("G3 ~ studytime", df, cluster="school", missing="omit")


def test_nullable_and_bool_columns():
    df = students(8)
    df["absences_n"] = df.absences.astype("Int64")
    df.loc[4, "absences_n"] = pd.NA
    df["passed"] = df.G3 > 10
    res = crve.ols("passed ~ absences_n", df, cluster="school")  # linear probability model
    assert res.n_dropped == 1
    ref = crve.ols("passed ~ absences", df.drop(index=4), cluster="school")
    np.testing.assert_allclose(res.bse.to_numpy(), ref.bse.to_numpy(), rtol=1e-12)


def test_transform_producing_nan_is_named():
    df = students(9)
    df.loc[2, "studytime"] = -1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(ValueError, match=r"np.log\(studytime\).*NaN or inf.*first: 2"):
            crve.ols("G3 ~ np.log(studytime)", df, cluster="school")


@pytest.mark.parametrize("formula,match", [
    ("G3 ~ absnces", r"column 'absnces', which is not in data; did you mean 'absences'"),
    ("G3 ~ (absences", "cannot parse formula"),
    ("absences", "has no outcome"),
    ("sex ~ absences", "outcome 'sex' must be numeric"),
    ("G3 + absences ~ age", "2 outcomes"),
    ("G3 ~ 0", "no regressors"),
])
def test_formula_errors(formula, match):
    with pytest.raises(ValueError, match=match):
        crve.ols(formula, students(), cluster="school")


def test_other_errors():
    df = students()
    with pytest.raises(ValueError, match="cluster uses column 'schol'.*did you mean 'school'"):
        crve.ols("G3 ~ absences", df, cluster="schol")
    with pytest.raises(ValueError, match="cluster has 3 labels but data has 600 rows"):
        crve.ols("G3 ~ absences", df, cluster=[1, 2, 3])
    with pytest.raises(TypeError, match="data must be a pandas or polars DataFrame"):
        crve.ols("G3 ~ absences", [[1, 2]], cluster="school")
    with pytest.raises(ValueError, match="different lengths"):
        crve.ols("y ~ x", {"y": [1.0, 2, 3], "x": [1.0, 2]})
    with pytest.raises(ValueError, match="collinear|linearly dependent"):
        crve.ols("G3 ~ absences + I(2 * absences)", df, cluster="school")
    with pytest.raises(ValueError, match="at least 2 clusters"):
        crve.ols("G3 ~ absences", df.assign(one="a"), cluster="one")
    with pytest.raises(ValueError, match="no rows left"):
        crve.ols("G3 ~ absences", df.assign(absences=np.nan), cluster="school")


def test_no_cluster_defaults_to_hc1():
    df = students(10)
    res = crve.ols("G3 ~ absences", df)
    assert res.variant == "HC1"
    ref = crve.cluster_robust(df.G3, np.column_stack([np.ones(len(df)), df.absences]), variant="HC1")
    np.testing.assert_allclose(res.bse.to_numpy(), ref.bse, rtol=1e-12)


def test_formula_functions_from_caller_namespace():
    df = students(11)

    def centred(x):
        return x - x.mean()

    res = crve.ols("G3 ~ centred(absences)", df, cluster="school")
    assert "centred(absences)" in res.params.index


def test_bootstrap_from_formula_result():
    df = students(12)
    res = crve.ols("G3 ~ absences + C(sex)", df, cluster="school", vcov="CV2")
    bt = res.wild_bootstrap("absences", B=999, weights="webb", seed=1)
    ref = crve.wild_cluster_bootstrap(df.G3, np.column_stack([np.ones(len(df)), df.sex == "M", df.absences]).astype(float),
                                      df.school, param=2, B=999, weights="webb", seed=1)
    assert bt.t_stat == pytest.approx(ref.t_stat, rel=1e-12) and bt.pvalue == ref.pvalue


def test_combined_clusters_with_a_missing_label():
    df = students(13)
    df["year"] = np.tile([2019.0, 2020.0], len(df) // 2)
    df.loc[[5, 8], "year"] = np.nan
    res = crve.ols("G3 ~ absences", df, cluster=["school", "year"])
    assert res.n_dropped == 2 and res.dropped_by == {"school, year": 2}
    clean = df.drop(index=[5, 8])
    ref = crve.ols("G3 ~ absences", clean, cluster=clean.school + clean.year.astype(str))
    assert res.n_clusters == ref.n_clusters == 60
    np.testing.assert_allclose(res.bse.to_numpy(), ref.bse.to_numpy(), rtol=1e-12)
