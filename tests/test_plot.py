"""crve.plot: the plots draw, save as PNG, and show the numbers they claim to."""
from __future__ import annotations

import doctest
import sys

import numpy as np
import pytest

mpl = pytest.importorskip("matplotlib")
mpl.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

import crve  # noqa: E402
import crve.plot  # noqa: E402
from crve.plot import plot_bootstrap, plot_coefficients, plot_pvalue_curve  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def res():
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(20), 30)
    X = np.column_stack([np.ones(600), rng.normal(size=600)])
    y = X @ [1, .3] + rng.normal(size=20)[g] + rng.normal(size=600)
    return crve.cluster_robust(y, X, g, names=["const", "x"])


@pytest.fixture(scope="module")
def bt(res):
    return res.wild_bootstrap("x", B=999, seed=1, weights="webb")


@pytest.fixture(scope="module")
def joint(res):
    return res.wild_bootstrap(R=np.eye(2), r=[1, .3], B=99, seed=1)


def check_png(ax, path):
    ax.figure.savefig(path)
    assert path.exists() and path.stat().st_size > 1000
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100 and img.shape[2] in (3, 4)


def dashed(ax):
    return sorted(line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == "--")


def legend_text(ax):
    return " ".join(t.get_text() for t in ax.get_legend().get_texts())


# -- plot_bootstrap -----------------------------------------------------------------------

def test_bootstrap_plot(bt, tmp_path):
    ax = plot_bootstrap(bt)
    check_png(ax, tmp_path / "bootstrap.png")
    observed = [line for line in ax.lines if line.get_label().startswith("observed")]
    assert len(observed) == 1 and np.all(np.asarray(observed[0].get_xdata()) == bt.t_stat)
    c = np.quantile(np.abs(bt.t_star[np.isfinite(bt.t_star)]), bt.level)
    assert dashed(ax) == pytest.approx([-c, c], rel=1e-12)
    heights = np.array([p.get_height() for p in ax.patches])
    widths = np.array([p.get_width() for p in ax.patches])
    assert (heights * widths).sum() == pytest.approx(1.0)  # a density
    text = legend_text(ax)
    assert f"p = {bt.pvalue:.3g}" in text and "B = 999" in text and "webb" in text and "enumerated" not in text
    assert ax.get_title() == "Wild bootstrap: x = 0"
    assert ax.get_xlabel() and ax.get_ylabel() == "density"


@pytest.mark.parametrize("ptype, probs", [("equal-tailed", [0.025, 0.975]), ("upper", [0.95]), ("lower", [0.05])])
def test_bootstrap_critical_values(res, ptype, probs):
    b = res.wild_bootstrap("x", B=999, seed=1, weights="webb", pvalue=ptype, h0=0.25)
    ax = plot_bootstrap(b, bins=30)
    assert len(ax.patches) == 30
    assert dashed(ax) == pytest.approx(np.quantile(b.t_star[np.isfinite(b.t_star)], probs), rel=1e-12)
    assert ax.get_title() == "Wild bootstrap: x = 0.25"


def test_bootstrap_joint_and_enumerated(joint):
    ax = plot_bootstrap(joint)
    assert dashed(ax) == pytest.approx([np.quantile(joint.t_star[np.isfinite(joint.t_star)], 0.95)], rel=1e-12)
    assert "joint test of 2 restrictions" in ax.get_title()
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(12), 10)
    x = rng.normal(size=120)
    enum = crve.wild_cluster_bootstrap(x + rng.normal(size=120), np.column_stack([np.ones(120), x]), g,
                                       B=9999, seed=1)
    assert enum.enumerated
    assert "B = 4096, enumerated" in legend_text(plot_bootstrap(enum))


# -- plot_pvalue_curve --------------------------------------------------------------------

def test_pvalue_curve(bt, tmp_path):
    ax = plot_pvalue_curve(bt, points=300)
    check_png(ax, tmp_path / "pcurve.png")
    curve = ax.lines[0]
    h, p = curve.get_xdata(), curve.get_ydata()
    assert curve.get_drawstyle() == "steps-mid" and len(h) >= 300
    np.testing.assert_array_equal(p, bt.pvalue_at(h))
    assert ((p >= 0) & (p <= 1)).all()
    lo, hi = bt.conf_int
    w = hi - lo
    assert ax.get_xlim() == pytest.approx((lo - w / 2, hi + w / 2))
    # The confidence set is where the curve lies above 1 - level.
    alpha = 1 - bt.level
    se, eps = bt.std_error, 1e-6
    near = (np.abs(h - lo) < 1e-9 * se) | (np.abs(h - hi) < 1e-9 * se)
    inside = (h > lo) & (h < hi)
    assert (p[inside & ~near] > alpha).all() and (p[~inside & ~near] <= alpha).all()
    assert (bt.pvalue_at([lo + eps * se, hi - eps * se]) > alpha).all()
    assert (bt.pvalue_at([lo - eps * se, hi + eps * se]) <= alpha).all()
    assert any(np.all(np.asarray(line.get_ydata()) == alpha) for line in ax.lines)  # the 1 - level line
    est = [line for line in ax.lines if line.get_marker() == "o"]
    assert len(est) == 1 and est[0].get_xdata()[0] == bt.estimate
    assert ax.get_xlabel() == "x" and ax.get_ylabel() == "bootstrap p-value"
    assert "95% confidence set" in legend_text(ax)


def test_pvalue_curve_without_interval(res):
    b = res.wild_bootstrap("x", B=99, seed=1, conf_int=False)
    ax = plot_pvalue_curve(b, points=50)
    assert ax.get_xlim() == pytest.approx((b.estimate - 6 * b.std_error, b.estimate + 6 * b.std_error))
    h, p = ax.lines[0].get_xdata(), ax.lines[0].get_ydata()
    assert len(h) == 50
    np.testing.assert_array_equal(p, b.pvalue_at(h))


def test_pvalue_curve_joint_test_raises(joint):
    with pytest.raises(ValueError, match="single restriction"):
        plot_pvalue_curve(joint)
    assert plt.get_fignums() == []  # nothing drawn


# -- plot_coefficients --------------------------------------------------------------------

def test_coefficients(res, tmp_path):
    ax = plot_coefficients(res)
    check_png(ax, tmp_path / "coef.png")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["const", "x"]
    assert len(ax.containers) == 4
    assert [c.get_label() for c in ax.containers] == ["iid", "CV1 (G-1)", "CV2 (satterthwaite)", "CV3 (G-1)"]
    for v, cont in zip(("iid", "CV1", "CV2", "CV3"), ax.containers):
        r = res.with_variant(v)
        np.testing.assert_allclose(cont.lines[0].get_xdata(), np.asarray(r.params), rtol=1e-14)
        ends = np.array([seg[:, 0] for seg in cont.lines[2][0].get_segments()])
        np.testing.assert_allclose(ends, np.asarray(r.conf_int()), rtol=1e-12)
    ys = [c.lines[0].get_ydata()[0] for c in ax.containers]
    assert len(set(ys)) == 4  # dodged
    assert any(np.all(np.asarray(line.get_xdata()) == 0) for line in ax.lines)  # the zero line
    assert "confidence interval" in ax.get_xlabel() and ax.get_title()


def test_coefficients_terms_alpha_pairs(res):
    ax = plot_coefficients(res, variants=["CV1", ("CV1", "satterthwaite")], terms=["x"], alpha=0.1)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["x"]
    assert [c.get_label() for c in ax.containers] == ["CV1 (G-1)", "CV1 (satterthwaite)"]
    for cont, dof in zip(ax.containers, ("auto", "satterthwaite")):
        ci = np.asarray(res.with_variant("CV1", dof).conf_int(0.1))[1]
        ends = cont.lines[2][0].get_segments()[0][:, 0]
        np.testing.assert_allclose(ends, ci, rtol=1e-12)
    assert "90% confidence interval" in ax.get_xlabel()
    with pytest.raises(ValueError, match="unknown terms"):
        plot_coefficients(res, terms=["z"])


# -- shared behaviour ---------------------------------------------------------------------

def test_draws_into_given_axes(res, bt):
    fig, axes = plt.subplots(1, 3)
    assert plot_bootstrap(bt, ax=axes[0]) is axes[0]
    assert plot_pvalue_curve(bt, ax=axes[1]) is axes[1]
    assert plot_coefficients(res, ax=axes[2]) is axes[2]
    assert plt.get_fignums() == [fig.number] and len(fig.axes) == 3
    assert all(a.has_data() for a in axes)


def test_missing_matplotlib(monkeypatch, bt):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"pip install 'crve\[plot\]'"):
        plot_bootstrap(bt)


def test_docstring_examples():
    result = doctest.testmod(crve.plot, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_result_methods_draw(tmp_path):
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(9)
    g = np.repeat(np.arange(15), 20)
    X = np.column_stack([np.ones(300), rng.normal(size=300)])
    res = crve.cluster_robust(X @ [1, 0.2] + rng.normal(size=15)[g] + rng.normal(size=300), X, g, names=["const", "x"])
    bt = res.wild_bootstrap("x", B=499, seed=2, weights="webb")
    fig, axes = plt.subplots(1, 3)
    assert bt.plot(ax=axes[0]) is axes[0]
    assert bt.plot_pvalue_curve(ax=axes[1]) is axes[1]
    assert res.plot(["CV1", "CV2"], ax=axes[2]) is axes[2]
    path = tmp_path / "all.png"
    fig.savefig(path)
    plt.close(fig)
    assert path.stat().st_size > 1000
