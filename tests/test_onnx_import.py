"""from_onnx on the graphs skl2onnx writes, checked against scikit-learn and ONNX Runtime.

For every estimator x {float32 graph, float64 graph} x {ZipMap on, off}:

* the IR's numbers equal the estimator's: exactly for a float64 graph, equal to
  the float32-rounded values for a float32 graph;
* ``tests/reference.py`` on that IR reproduces sklearn's ``predict``,
  ``decision_function`` and ``predict_proba``;
* it also reproduces ONNX Runtime running the very same graph.

Tolerances, stated once (``_TOL``). Scores are compared against a bound
relative to their magnitude ``|X| @ |coef|.T + |intercept|`` (what rounding
in a dot product is proportional to); probabilities with an absolute bound.

* float64 graph: 1e-12 of the magnitude, probabilities 1e-12. The weights are
  the same bits; only summation order and libm differ.
* float32 graph: 1e-5 of the magnitude, probabilities 2e-5. The weights are
  rounded to float32 (relative 6e-8 each) and ONNX Runtime also rounds the input
  and accumulates in float32 (relative 6e-8 per term, up to 30 terms here).

Labels are identical on every row whose decision margin exceeds the score bound
(a margin inside the bound can legitimately flip under float32 rounding; the
count of such rows is asserted to be small).
"""
from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest

skl2onnx = pytest.importorskip("skl2onnx")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType  # noqa: E402
from sklearn import datasets  # noqa: E402
from sklearn.linear_model import (ElasticNet, Lasso, LinearRegression, LogisticRegression,  # noqa: E402
                                  Perceptron, Ridge, RidgeClassifier, SGDClassifier, SGDRegressor)
from sklearn.multiclass import OneVsRestClassifier  # noqa: E402
from sklearn.pipeline import Pipeline as SkPipeline, make_pipeline  # noqa: E402
from sklearn.preprocessing import (MaxAbsScaler, MinMaxScaler, Normalizer as SkNormalizer,  # noqa: E402
                                   RobustScaler, StandardScaler, normalize)
from sklearn.svm import LinearSVC, LinearSVR  # noqa: E402

from fastml.converters.onnx_import import from_onnx  # noqa: E402
from fastml.errors import InvalidModelError, UnsupportedModelError  # noqa: E402
from fastml.ir import Linear, Normalizer, Pipeline, Scaler, as_pipeline  # noqa: E402

try:  # tests/ as a package (python -m pytest from the root) or as a plain folder on sys.path
    from tests.reference import (reference_decision_function, reference_predict, reference_predict_proba,
                                 reference_scores, reference_transform)
except ImportError:  # pragma: no cover
    from reference import (reference_decision_function, reference_predict, reference_predict_proba,  # noqa
                           reference_scores, reference_transform)

_TOL = {
    np.float64: dict(score=1e-12, proba=1e-12),
    np.float32: dict(score=1e-5, proba=2e-5),
}
_MAX_MARGIN_ROWS = 0.02  # share of rows allowed inside the float32 label margin


# --------------------------------------------------------------------------- data


@functools.lru_cache(maxsize=None)
def _data(name):
    if name == "binary":
        return datasets.make_classification(n_samples=240, n_features=6, n_informative=4, random_state=0)
    if name == "multi":
        return datasets.make_classification(n_samples=240, n_features=6, n_informative=4, n_classes=3,
                                            n_clusters_per_class=1, random_state=1)
    if name == "iris":
        return datasets.load_iris(return_X_y=True)
    if name == "iris_str":
        X, y = datasets.load_iris(return_X_y=True)
        return X, np.array(["setosa", "versicolor", "virginica"], dtype=object)[y]
    if name == "binary_str":
        X, y = _data("binary")
        return X, np.array(["no", "yes"], dtype=object)[y]
    if name == "wine":
        return datasets.load_wine(return_X_y=True)
    if name == "breast_cancer":
        X, y = datasets.load_breast_cancer(return_X_y=True)
        return X[:, :10], y
    if name == "digits":
        X, y = datasets.load_digits(return_X_y=True)
        return X[:300], y[:300]
    if name == "diabetes":
        return datasets.load_diabetes(return_X_y=True)
    if name == "multi_target":
        X, y = datasets.make_regression(n_samples=200, n_features=5, n_targets=3, noise=0.5, random_state=0)
        return X, y
    raise KeyError(name)


# --------------------------------------------------------------------------- cases

# id -> (factory, data, skl2onnx writes a float64 graph, the zipmap option applies)
_CASES = {
    "logreg-binary": (lambda: LogisticRegression(), "binary", True, True),
    "logreg-multinomial": (lambda: LogisticRegression(max_iter=2000), "iris", True, True),
    "logreg-strings": (lambda: LogisticRegression(max_iter=2000), "iris_str", True, True),
    "ovr-logreg-multi": (lambda: OneVsRestClassifier(LogisticRegression(max_iter=2000)), "iris", True, True),
    "ovr-logreg-binary": (lambda: OneVsRestClassifier(LogisticRegression()), "binary", True, True),
    "linear-regression": (lambda: LinearRegression(), "diabetes", True, False),
    "ridge": (lambda: Ridge(alpha=0.5), "diabetes", True, False),
    "lasso": (lambda: Lasso(alpha=0.05), "diabetes", True, False),
    "elasticnet": (lambda: ElasticNet(alpha=0.001), "diabetes", True, False),
    # skl2onnx: "post_transform 'NONE' is not supported with double"
    "ridge-classifier-binary": (lambda: RidgeClassifier(), "binary", False, True),
    "ridge-classifier-multi": (lambda: RidgeClassifier(), "digits", False, True),
    "sgd-hinge-binary": (lambda: SGDClassifier(random_state=0), "binary", True, True),
    "sgd-hinge-multi": (lambda: SGDClassifier(random_state=0), "multi", True, True),
    "sgd-hinge-strings": (lambda: SGDClassifier(random_state=0), "binary_str", True, True),
    "sgd-log-binary": (lambda: SGDClassifier(loss="log_loss", random_state=0), "binary", True, True),
    "sgd-log-multi": (lambda: SGDClassifier(loss="log_loss", random_state=0), "multi", True, True),
    "sgd-mhuber-binary": (lambda: SGDClassifier(loss="modified_huber", random_state=0), "binary", True, True),
    "sgd-mhuber-multi": (lambda: SGDClassifier(loss="modified_huber", random_state=0), "multi", True, True),
    "sgd-regressor": (lambda: SGDRegressor(random_state=0), "diabetes", True, False),
    "perceptron-binary": (lambda: Perceptron(random_state=0), "binary", True, True),
    "perceptron-multi": (lambda: Perceptron(random_state=0), "multi", True, True),
    # skl2onnx: LinearSVC takes no zipmap option and writes no float64 graph
    "linear-svc-binary": (lambda: LinearSVC(), "binary", False, False),
    "linear-svc-multi": (lambda: LinearSVC(), "iris", False, False),
    "linear-svr": (lambda: LinearSVR(random_state=0, max_iter=5000), "diabetes", True, False),
    "multi-output-linreg": (lambda: LinearRegression(), "multi_target", True, False),
    "multi-output-ridge": (lambda: Ridge(), "multi_target", True, False),
    "multi-output-lasso": (lambda: Lasso(alpha=0.1), "multi_target", True, False),
    "pipe-standard-logreg": (lambda: make_pipeline(StandardScaler(), LogisticRegression()), "breast_cancer",
                             True, True),
    "pipe-standard-nomean-ridge": (lambda: make_pipeline(StandardScaler(with_mean=False), Ridge()), "diabetes",
                                   True, False),
    "pipe-standard-nostd-ridge": (lambda: make_pipeline(StandardScaler(with_std=False), Ridge()), "diabetes",
                                  True, False),
    "pipe-minmax-logreg": (lambda: make_pipeline(MinMaxScaler(), LogisticRegression(max_iter=2000)), "wine",
                           True, True),
    "pipe-maxabs-sgd-mhuber": (lambda: make_pipeline(MaxAbsScaler(), SGDClassifier(loss="modified_huber",
                                                                                   random_state=0)),
                               "multi", True, True),
    "pipe-robust-ridge": (lambda: make_pipeline(RobustScaler(), Ridge()), "diabetes", True, False),
    "pipe-robust-sgd-log": (lambda: make_pipeline(RobustScaler(), SGDClassifier(loss="log_loss", random_state=0)),
                            "binary", True, True),
    "pipe-normalizer-l1-ridge": (lambda: make_pipeline(SkNormalizer("l1"), Ridge()), "diabetes", True, False),
    "pipe-normalizer-l2-logreg": (lambda: make_pipeline(SkNormalizer("l2"), LogisticRegression(max_iter=2000)),
                                  "iris", True, True),
    "pipe-scaler-normalizer-perceptron": (lambda: make_pipeline(StandardScaler(), SkNormalizer("l2"),
                                                                Perceptron(random_state=0)), "multi", True, True),
    "pipe-minmax-ridge-classifier": (lambda: make_pipeline(MinMaxScaler(), RidgeClassifier()), "wine", False, True),
    # skl2onnx cannot convert this pipeline (a zipmap option error): merged from two graphs below
    "pipe-standard-linear-svc": (lambda: make_pipeline(StandardScaler(), LinearSVC()), "iris", False, False),
}


def _to_onnx_step_by_step(est, X, tensor):
    """Convert each pipeline step on its own and chain the graphs with onnx.compose."""
    from onnx import compose

    model, Z = None, X
    for i, (_, step) in enumerate(est.steps):
        part = skl2onnx.to_onnx(step, initial_types=[("X", tensor([None, Z.shape[1]]))])
        part = compose.add_prefix(part, f"s{i}_")
        model = part if model is None else compose.merge_models(
            model, part, io_map=[(model.graph.output[0].name, part.graph.input[0].name)])
        Z = step.transform(Z) if hasattr(step, "transform") else Z
    return model


_CONVERT = {"pipe-standard-linear-svc": _to_onnx_step_by_step}


def _params():
    out = []
    for case, (_, _, has_f64, zipmap) in _CASES.items():
        for dtype in (np.float32, np.float64):
            if dtype is np.float64 and not has_f64:
                continue
            for zm in ((True, False) if zipmap else (None,)):
                zid = {True: "-zipmap", False: "-nozipmap", None: ""}[zm]
                out.append(pytest.param(case, dtype, zm, id=f"{case}-{dtype.__name__}{zid}"))
    return out


PARAMS = _params()


@functools.lru_cache(maxsize=None)
def _fitted(case):
    factory, data, _, _ = _CASES[case]
    X, y = _data(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: the fit only has to be deterministic
        est = factory().fit(X, y)
    return est, X


@functools.lru_cache(maxsize=None)
def _converted(case, dtype, zipmap):
    est, X = _fitted(case)
    tensor = DoubleTensorType if dtype is np.float64 else FloatTensorType
    options = None if zipmap is None else {"zipmap": zipmap}
    if case in _CONVERT:
        model = _CONVERT[case](est, X, tensor)
    else:
        model = skl2onnx.to_onnx(est, initial_types=[("X", tensor([None, X.shape[1]]))], options=options)
    return model, from_onnx(model)


# --------------------------------------------------------------------------- expected IR from sklearn


def _final(est):
    return est.steps[-1][1] if isinstance(est, SkPipeline) else est


def _sk_steps(est):
    steps = []
    for _, t in (est.steps[:-1] if isinstance(est, SkPipeline) else []):
        n = t.n_features_in_
        if isinstance(t, StandardScaler):  # casts its parameters to X's dtype (scikit-learn >= 1.8)
            off = t.mean_ if t.with_mean else np.zeros(n)
            steps.append(Scaler(off, t.scale_ if t.with_std else np.ones(n), "sub_div", cast_params=True))
        elif isinstance(t, RobustScaler):
            steps.append(Scaler(t.center_, t.scale_, "sub_div"))
        elif isinstance(t, MaxAbsScaler):
            steps.append(Scaler(np.zeros(n), t.scale_, "sub_div"))
        elif isinstance(t, MinMaxScaler):
            steps.append(Scaler(t.min_, t.scale_, "mul_add"))
        elif isinstance(t, SkNormalizer):
            steps.append(Normalizer(t.norm, n_features=n))
        else:
            raise TypeError(type(t))
    return tuple(steps)


def _sk_proba(clf):
    if isinstance(clf, OneVsRestClassifier):
        return "logistic"
    if isinstance(clf, LogisticRegression):
        return "logistic" if len(clf.classes_) == 2 else "softmax"
    if isinstance(clf, SGDClassifier):
        return {"log_loss": "logistic", "modified_huber": "modified_huber"}.get(clf.loss, "none")
    return "none"


def _sk_linear(est) -> Linear:
    """The IR a sklearn linear estimator means, written by hand (the test's ground truth)."""
    m = _final(est)
    if isinstance(m, OneVsRestClassifier):
        coef = np.vstack([e.coef_ for e in m.estimators_])
        intercept = np.concatenate([np.atleast_1d(e.intercept_) for e in m.estimators_])
    else:
        coef = np.atleast_2d(m.coef_)
        intercept = np.broadcast_to(np.atleast_1d(np.asarray(m.intercept_, dtype=np.float64)),
                                    (coef.shape[0],))
    coef, intercept = np.array(coef, dtype=np.float64), np.array(intercept, dtype=np.float64)
    if hasattr(m, "classes_"):
        lin = Linear(coef, intercept, True, classes=m.classes_, proba=_sk_proba(m))
    else:
        lin = Linear(coef, intercept, False, flat=np.ndim(m.coef_) == 1)
    steps = _sk_steps(est)
    return (Pipeline(steps, lin) if steps else lin).validate()


def _as_graph_stores(model, dtype):
    """The IR as a graph of this dtype stores it: float32 rounding, skl2onnx's float32
    Scaler op which multiplies by 1 / scale, and steps computing in the graph's dtype."""
    pipe = as_pipeline(model)
    if dtype is np.float64:
        steps = tuple(Scaler(s.offset, s.scale, s.mode) if isinstance(s, Scaler) else s for s in pipe.steps)
        return Pipeline(steps, pipe.estimator) if steps else pipe.estimator
    r32 = lambda a: np.asarray(a, dtype=np.float64).astype(np.float32).astype(np.float64)  # noqa: E731
    steps = []
    for s in pipe.steps:
        if isinstance(s, Scaler) and s.mode == "sub_div":
            s = Scaler(r32(s.offset), r32(1.0 / s.scale), "sub_mul", cast_params=True)
        elif isinstance(s, Scaler):
            s = Scaler(r32(s.offset), r32(s.scale), s.mode, cast_params=True)
        steps.append(s)
    e = pipe.estimator
    lin = Linear(r32(e.coef), r32(e.intercept), e.is_classifier, e.classes, e.proba, e.flat)
    return Pipeline(tuple(steps), lin) if steps else lin


def _assert_same_ir(got, want):
    g, w = as_pipeline(got), as_pipeline(want)
    assert len(g.steps) == len(w.steps), (g.steps, w.steps)
    for a, b in zip(g.steps, w.steps):
        assert type(a) is type(b)
        if isinstance(a, Scaler):
            assert (a.mode, a.cast_params) == (b.mode, b.cast_params)
            np.testing.assert_array_equal(a.offset, b.offset)
            np.testing.assert_array_equal(a.scale, b.scale)
        else:
            assert a.norm == b.norm
    ge, we = g.estimator, w.estimator
    assert (ge.is_classifier, ge.proba, ge.flat) == (we.is_classifier, we.proba, we.flat)
    np.testing.assert_array_equal(ge.coef, we.coef)
    np.testing.assert_array_equal(ge.intercept, we.intercept)
    if we.is_classifier:
        np.testing.assert_array_equal(ge.classes, we.classes)
        # strings stay strings (object or unicode, as sklearn varies), numbers stay integers
        kind = lambda a: "str" if np.asarray(a).dtype.kind in "OU" else np.asarray(a).dtype.kind  # noqa: E731
        assert kind(ge.classes) == kind(we.classes)


# --------------------------------------------------------------------------- comparison helpers


def _magnitude(model, X):
    """|X'| @ |coef|.T + |intercept| per score, X' the estimator's input: what rounding scales with."""
    pipe = as_pipeline(model)
    Z = np.asarray(X, dtype=np.float64)
    for s in pipe.steps:
        Z = reference_transform(s, Z)
    e = pipe.estimator
    return np.abs(Z) @ np.abs(e.coef).T + np.abs(e.intercept)


def _assert_scores_close(got, want, mag, rel, what):
    got, want = np.asarray(got, dtype=np.float64).reshape(mag.shape), np.asarray(want).reshape(mag.shape)
    bad = np.abs(got - want) > rel * mag + 1e-300
    assert not bad.any(), (f"{what}: {bad.sum()} scores differ by more than {rel:g} x magnitude; "
                           f"max diff {np.max(np.abs(got - want)):.3g}")


def _decidable(scores, mag, rel):
    """Rows whose label cannot flip under score errors of rel x magnitude."""
    bound = rel * mag.max(axis=1)
    if scores.shape[1] == 1:
        return np.abs(scores[:, 0]) > bound
    top2 = np.sort(scores, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0] > 2 * bound


def _assert_labels(got, want, ok, what, skip=None):
    assert np.mean(~ok) <= _MAX_MARGIN_ROWS, f"{what}: {np.sum(~ok)} rows inside the rounding margin"
    if skip is not None:
        ok = ok & ~skip
    assert np.array_equal(np.asarray(got)[ok], np.asarray(want)[ok]), \
        f"{what}: {np.sum(np.asarray(got)[ok] != np.asarray(want)[ok])} labels differ"


# --------------------------------------------------------------------------- tests: import


@pytest.mark.parametrize("case,dtype,zipmap", PARAMS)
def test_ir_numbers_equal_the_estimator(case, dtype, zipmap):
    est, _ = _fitted(case)
    _, ir = _converted(case, dtype, zipmap)
    _assert_same_ir(ir, _as_graph_stores(_sk_linear(est), dtype))
    assert as_pipeline(ir).estimator.name  # names the ONNX node the scores came from


@pytest.mark.parametrize("case,dtype,zipmap", PARAMS)
def test_reference_on_imported_ir_matches_sklearn(case, dtype, zipmap):
    est, X = _fitted(case)
    _, ir = _converted(case, dtype, zipmap)
    tol, e = _TOL[dtype], as_pipeline(ir).estimator
    mag = _magnitude(ir, X)
    if not e.is_classifier:
        _assert_scores_close(reference_predict(ir, X), est.predict(X), mag, tol["score"], "predict")
        assert reference_predict(ir, X).shape == est.predict(X).shape
        return
    sk_dec = est.decision_function(X)
    _assert_scores_close(reference_decision_function(ir, X), sk_dec, mag, tol["score"], "decision_function")
    assert reference_decision_function(ir, X).shape == sk_dec.shape
    ok = _decidable(np.atleast_2d(sk_dec.T).T if sk_dec.ndim == 1 else sk_dec, mag, tol["score"])
    _assert_labels(reference_predict(ir, X), est.predict(X), ok, "predict")
    if e.proba != "none":
        np.testing.assert_allclose(reference_predict_proba(ir, X), est.predict_proba(X), rtol=0,
                                   atol=tol["proba"])
    else:
        assert not hasattr(est, "predict_proba") or _sk_proba(_final(est)) == "none"
        with pytest.raises(AttributeError):
            reference_predict_proba(ir, X)


def _ort_outputs(model, Xg):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: Xg})))


@pytest.mark.parametrize("case,dtype,zipmap", PARAMS)
def test_reference_on_imported_ir_matches_onnxruntime(case, dtype, zipmap):
    _, X = _fitted(case)
    model, ir = _converted(case, dtype, zipmap)
    Xg = X.astype(dtype)  # both sides see the same input; steps of a float32 graph run in float32
    tol, e = _TOL[dtype], as_pipeline(ir).estimator
    if dtype is np.float64 and zipmap:
        # ONNX Runtime refuses ZipMap on double tensors, so it cannot run this graph; run the
        # same graph without ZipMap, which fastml reads to the very same IR
        model, ir_without = _converted(case, dtype, False)
        _assert_same_ir(ir_without, ir)
    outs = _ort_outputs(model, Xg)
    mag = _magnitude(ir, Xg)
    scores = reference_scores(ir, Xg)
    if not e.is_classifier:
        (got,) = outs.values()
        _assert_scores_close(got, scores, mag, tol["score"], "onnxruntime regression output")
        return
    label_name = next(n for n in outs if "label" in n)
    prob_name = next(n for n in outs if "prob" in n)
    probs = outs[prob_name]
    if isinstance(probs, list):  # ZipMap: a list of {class: probability}
        probs = np.array([[row[c] for c in e.classes] for row in probs])
    ok, ties = _decidable(scores, mag, tol["score"]), None
    labels = reference_predict(ir, Xg)
    if e.proba != "none":
        ref = reference_predict_proba(ir, Xg)
        np.testing.assert_allclose(probs, ref, rtol=0, atol=tol["proba"])
        if ref.shape[1] > 2:
            # these graphs take the label as the argmax of the probabilities: where the top
            # probabilities tie (clipped modified-Huber scores, saturated sigmoids) ONNX Runtime
            # takes the first class, sklearn (and fastml) the one with the larger raw score,
            # which is still one of the tied classes
            ties = np.sum(probs == probs.max(axis=1, keepdims=True), axis=1) > 1
            index = np.array([list(e.classes).index(c) for c in labels])
            np.testing.assert_array_equal(ref[np.arange(len(ref)), index], ref.max(axis=1))
    else:
        # the "probabilities" output of a model without predict_proba carries scores
        probs = np.asarray(probs, dtype=np.float64)
        got = probs[:, -1:] if scores.shape[1] == 1 else probs
        _assert_scores_close(got, scores, mag, tol["score"], "onnxruntime score output")
    _assert_labels(outs[label_name], labels, ok, "onnxruntime labels", skip=ties)


@pytest.mark.parametrize("case", list(_CASES))
def test_reference_matches_sklearn_directly(case):
    est, X = _fitted(case)
    ir = _sk_linear(est)
    e = as_pipeline(ir).estimator
    pipe = as_pipeline(ir)
    Z = X
    for step, (_, t) in zip(pipe.steps, est.steps[:-1] if pipe.steps else ()):
        if isinstance(step, Scaler):  # the same operations in the same order: bit for bit
            np.testing.assert_array_equal(reference_transform(step, Z), t.transform(Z))
        else:  # row norms: only the summation order may differ
            np.testing.assert_allclose(reference_transform(step, Z), t.transform(Z), rtol=1e-15, atol=0)
        Z = t.transform(Z)
    mag = _magnitude(ir, X)
    tol = _TOL[np.float64]
    if not e.is_classifier:
        _assert_scores_close(reference_predict(ir, X), est.predict(X), mag, tol["score"], "predict")
        return
    _assert_scores_close(reference_decision_function(ir, X), est.decision_function(X), mag, tol["score"],
                         "decision_function")
    assert np.array_equal(reference_predict(ir, X), est.predict(X))
    if e.proba != "none":
        np.testing.assert_allclose(reference_predict_proba(ir, X), est.predict_proba(X), rtol=0,
                                   atol=tol["proba"])


def test_onnx_normalizer_max_is_refused_because_it_is_not_sklearns_max():
    X, y = _data("diabetes")
    est = make_pipeline(SkNormalizer("max"), Ridge()).fit(X, y)
    model = skl2onnx.to_onnx(est, X[:1].astype(np.float32))  # skl2onnx writes no float64 graph for it
    # the graph does not compute what sklearn does: ONNX's MAX is the signed row maximum
    got = _ort_outputs(model, X.astype(np.float32))["variable"][:, 0]
    assert np.max(np.abs(got - est.predict(X))) > 1.0
    with pytest.raises(UnsupportedModelError, match="MAX.*signed row maximum"):
        from_onnx(model)


def test_reference_normalizer_max_is_sklearns_max_abs():
    X, y = _data("diabetes")
    est = make_pipeline(SkNormalizer("max"), Ridge()).fit(X, y)
    ir = _sk_linear(est)
    np.testing.assert_allclose(reference_predict(ir, X), est.predict(X), rtol=1e-12)


@pytest.mark.parametrize("case", [c for c in _CASES if c.startswith("pipe-")])
def test_reference_steps_on_float32_input_round_like_sklearn(case):
    est, X = _fitted(case)
    Z = X.astype(np.float32)
    for step, (_, t) in zip(_sk_steps(est), est.steps[:-1]):
        got, want = reference_transform(step, Z), t.transform(Z)
        assert got.dtype == want.dtype == np.float32
        if isinstance(step, Scaler):  # every operation rounds where scikit-learn rounds
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=2e-7, atol=0)
        Z = want


def test_reference_normalizer_zero_and_tiny_rows_like_sklearn():
    X = np.array([[0.0, 0.0, 0.0], [3.0, -4.0, 0.0], [1e-300, 0.0, -1e-300], [-2.0, 0.5, 1.0]])
    for norm in ("l1", "l2", "max"):
        got = reference_transform(Normalizer(norm), X)
        np.testing.assert_array_equal(got, normalize(X, norm=norm))
        np.testing.assert_array_equal(got[0], 0.0)


def test_reference_modified_huber_all_clipped_rows_are_uniform():
    X, y = _data("multi")
    est = SGDClassifier(loss="modified_huber", random_state=0).fit(X, y)
    ir = _sk_linear(est)
    below = np.linalg.lstsq(est.coef_, -5.0 - est.intercept_, rcond=None)[0]  # every score = -5
    Xfar = np.vstack([X[:5], below])
    assert np.all(est.decision_function(Xfar[-1:]) < -1)
    np.testing.assert_allclose(reference_predict_proba(ir, Xfar), est.predict_proba(Xfar), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(reference_predict_proba(ir, Xfar)[-1], 1 / 3)


# --------------------------------------------------------------------------- tests: loading


def test_bytes_path_and_proto_give_the_same_ir_and_proto_is_not_mutated(tmp_path):
    model, ir = _converted("pipe-standard-logreg", np.float64, False)
    before = model.SerializeToString()
    path = tmp_path / "m.onnx"
    path.write_bytes(before)
    for source in (model, before, str(path), path):
        _assert_same_ir(from_onnx(source), ir)
    assert model.SerializeToString() == before


@pytest.mark.parametrize("opset", [9, 13])
@pytest.mark.parametrize("case", ["ovr-logreg-multi", "sgd-mhuber-multi", "pipe-normalizer-l2-logreg"])
def test_older_opsets_read_the_same(case, opset):
    est, X = _fitted(case)
    for dtype in (np.float32, np.float64):
        model = skl2onnx.to_onnx(est, X[:1].astype(dtype), target_opset={"": opset, "ai.onnx.ml": 1})
        _assert_same_ir(from_onnx(model), _as_graph_stores(_sk_linear(est), dtype))


# --------------------------------------------------------------------------- tests: errors


def _mutate(model, rng):
    """One random structural or byte-level corruption of a model."""
    m = onnx.ModelProto.FromString(model.SerializeToString())
    g, nodes = m.graph, list(m.graph.node)
    kind = rng.integers(7)
    if kind == 0:
        b = bytearray(m.SerializeToString())
        for i in rng.integers(len(b), size=3):
            b[i] = rng.integers(256)
        return bytes(b)
    node = nodes[rng.integers(len(nodes))]
    if kind == 1 and node.attribute:
        a = node.attribute[rng.integers(len(node.attribute))]
        if len(a.floats):
            del a.floats[rng.integers(len(a.floats)):]
        elif len(a.ints):
            a.ints[0] = int(rng.choice([-5, 0, 2, 99, 2 ** 40]))
        else:
            a.i, a.s = int(rng.choice([-1, 0, 2, 99])), bytes(rng.choice([b"", b"L3", b"\xff"]))
    elif kind == 2 and g.initializer:
        t = g.initializer[rng.integers(len(g.initializer))]
        t.raw_data = t.raw_data[: rng.integers(len(t.raw_data) + 1)]
        t.data_type = int(rng.choice([t.data_type, 1, 7, 8, 11]))
    elif kind == 3 and node.input:
        node.input[rng.integers(len(node.input))] = str(rng.choice(["X", "nope", ""] + list(nodes[0].output)))
    elif kind == 4:
        node.op_type = str(rng.choice(["MatMul", "Add", "Div", "Sigmoid", "Concat", "ArgMax", "Slice",
                                       "ReduceSum", "Cast", "Reshape", "LinearClassifier", "Scaler"]))
        node.domain = "ai.onnx.ml" if node.op_type in ("LinearClassifier", "Scaler") else ""
    elif kind == 5:
        del g.node[rng.integers(len(nodes))]
    else:
        dims = g.input[0].type.tensor_type.shape.dim
        dims[1].dim_value = int(rng.choice([1, 3, 100]))
    return m


def test_corrupted_models_give_valid_ir_or_a_fastml_error():
    from fastml.errors import FastMLError
    rng = np.random.default_rng(0)
    models = [_converted(*p.values)[0] for p in PARAMS[::3]]
    outcomes = {"ir": 0, "error": 0}
    for _ in range(600):
        try:
            ir = from_onnx(_mutate(models[rng.integers(len(models))], rng))
        except FastMLError:
            outcomes["error"] += 1
        else:
            ir.validate()
            outcomes["ir"] += 1
    assert outcomes["error"] > 100, outcomes

_X = helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 2])


def _graph(nodes, outputs, initializers=(), inputs=(_X,), opsets=(("", 13), ("ai.onnx.ml", 1))):
    g = helper.make_graph(nodes, "g", list(inputs), outputs, initializer=list(initializers))
    # IR version 10: what onnxruntime 1.31 still loads
    return helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets], ir_version=10)


def _out(name, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, None)


def _linear_classifier(name="lc", **attrs):
    kw = dict(coefficients=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], intercepts=[0.1, 0.2, 0.3], classlabels_ints=[0, 1, 2],
              post_transform="SOFTMAX")
    kw.update(attrs)
    kw = {k: v for k, v in kw.items() if v is not None}
    node = helper.make_node("LinearClassifier", ["X"], ["label", "probabilities"], name=name,
                            domain="ai.onnx.ml", **kw)
    label = TensorProto.STRING if "classlabels_strings" in kw else TensorProto.INT64
    return _graph([node], [_out("label", label), _out("probabilities")])


def test_hand_built_linear_classifier_is_read():
    ir = from_onnx(_linear_classifier())
    np.testing.assert_array_equal(ir.coef, [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(ir.intercept, np.float32([0.1, 0.2, 0.3]).astype(np.float64))
    assert ir.proba == "softmax" and ir.name == "LinearClassifier:lc"


def _binary_softmax_model():
    return _linear_classifier(coefficients=[-1.5, 0.5, 1.5, -0.5], intercepts=[-0.25, 0.25],
                              classlabels_ints=[3, 7], post_transform="SOFTMAX")


def _single_row_model():
    return _linear_classifier(coefficients=[1.5, -0.5], intercepts=[0.25], classlabels_strings=["neg", "pos"],
                              classlabels_ints=None, post_transform="NONE")


def _gemm_lp_model():
    w = numpy_helper.from_array(np.array([[0.5, -2.0], [1.0, 3.0], [-1.0, 0.25]], np.float32), "W")
    c = numpy_helper.from_array(np.array([0.5, -1.0, 2.0], np.float32), "C")
    nodes = [helper.make_node("LpNormalization", ["X"], ["Z"], name="lp", axis=1, p=2),
             helper.make_node("Gemm", ["Z", "W", "C"], ["Y"], name="gemm", transB=1)]
    return _graph(nodes, [_out("Y")], [w, c])


def _sigmoid_ovr_model():
    nodes = [helper.make_node("LinearClassifier", ["X"], ["label", "scores"], name="lc", domain="ai.onnx.ml",
                              coefficients=[1.0, -2.0, 0.5, 0.5, -1.0, 1.0], intercepts=[0.1, -0.2, 0.3],
                              classlabels_ints=[0, 1, 2], post_transform="LOGISTIC"),
             helper.make_node("Normalizer", ["scores"], ["probabilities"], name="l1", domain="ai.onnx.ml", norm="L1")]
    return _graph(nodes, [_out("label", TensorProto.INT64), _out("probabilities")])


@pytest.mark.parametrize("make,proba", [(_binary_softmax_model, "softmax"), (_single_row_model, "none"),
                                        (_gemm_lp_model, None), (_sigmoid_ovr_model, "logistic")],
                         ids=["binary-softmax", "one-score-row", "gemm-lpnormalization", "l1-of-sigmoids"])
def test_hand_built_patterns_match_onnxruntime(make, proba):
    model = make()
    ir = from_onnx(model)
    e = as_pipeline(ir).estimator
    X = np.random.default_rng(0).normal(size=(300, 2)).astype(np.float32)  # steps stay float32, like the graph
    outs = list(_ort_outputs(model, X).values())
    mag = _magnitude(ir, X)
    tol = _TOL[np.float32]
    if not e.is_classifier:
        _assert_scores_close(outs[0], reference_predict(ir, X), mag, tol["score"], "regression")
        return
    assert e.proba == proba
    scores = reference_scores(ir, X)
    _assert_labels(outs[0], reference_predict(ir, X), _decidable(scores, mag, tol["score"]), "labels")
    if proba != "none":
        np.testing.assert_allclose(outs[1], reference_predict_proba(ir, X), rtol=0, atol=tol["proba"])


def _imputer_model():
    node = helper.make_node("Imputer", ["X"], ["Y"], name="imp", domain="ai.onnx.ml",
                            imputed_value_floats=[0.0], replaced_value_float=float("nan"))
    return _graph([node], [_out("Y")])


def _if_model():
    then = helper.make_graph([helper.make_node("Identity", ["X"], ["t"])], "then", [], [_out("t")])
    other = helper.make_graph([helper.make_node("Identity", ["X"], ["e"])], "else", [], [_out("e")])
    cond = numpy_helper.from_array(np.array(True), "cond")
    node = helper.make_node("If", ["cond"], ["Y"], name="branch", then_branch=then, else_branch=other)
    return _graph([node], [_out("Y")], [cond])


def _custom_domain_model():
    node = helper.make_node("FastScore", ["X"], ["Y"], name="mine", domain="com.example")
    return _graph([node], [_out("Y")], opsets=(("", 13), ("com.example", 1)))


def _external_data_model():
    w = helper.make_tensor("W", TensorProto.FLOAT, [2, 1], [0.0, 0.0])
    w.ClearField("float_data")
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value="weights.bin")
    node = helper.make_node("MatMul", ["X", "W"], ["Y"], name="mm")
    return _graph([node], [_out("Y")], [w])


def _matmul_model(w):
    node = helper.make_node("MatMul", ["X", "W"], ["Y"], name="mm")
    return _graph([node], [_out("Y")], [numpy_helper.from_array(np.asarray(w, dtype=np.float32), "W")])


def _scaler_model(**attrs):
    sc = helper.make_node("Scaler", ["X"], ["Z"], name="sc", domain="ai.onnx.ml", **attrs)
    lr = helper.make_node("LinearRegressor", ["Z"], ["Y"], name="lr", domain="ai.onnx.ml",
                          coefficients=[1.0, 2.0], intercepts=[0.5])
    return _graph([sc, lr], [_out("Y")])


def _unnormalised_sigmoids_model():
    return _linear_classifier(post_transform="LOGISTIC")


def _label_from_other_scores_model():
    lc = helper.make_node("LinearClassifier", ["X"], ["label", "p1"], name="lc1", domain="ai.onnx.ml",
                          coefficients=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], intercepts=[0.0, 0.0, 0.0],
                          classlabels_ints=[0, 1, 2], post_transform="NONE")
    lc2 = helper.make_node("LinearClassifier", ["X"], ["label2", "probabilities"], name="lc2",
                           domain="ai.onnx.ml", coefficients=[6.0, 5.0, 4.0, 3.0, 2.0, 1.0],
                           intercepts=[0.0, 0.0, 0.0], classlabels_ints=[0, 1, 2], post_transform="SOFTMAX")
    return _graph([lc, lc2], [_out("label", TensorProto.INT64), _out("probabilities")])


def _unsorted_model():
    a = helper.make_node("Identity", ["Z"], ["Y"], name="late")
    b = helper.make_node("Identity", ["X"], ["Z"], name="early")
    return _graph([a, b], [_out("Y")])


ERROR_CASES = [
    # (id, model factory, error type, words the message must contain)
    ("imputer", _imputer_model, UnsupportedModelError, ["Imputer", "'imp'"]),
    ("if-node", _if_model, UnsupportedModelError, ["If", "'branch'", "control flow"]),
    ("custom-domain", _custom_domain_model, UnsupportedModelError, ["'com.example'", "'mine'"]),
    ("external-data", _external_data_model, UnsupportedModelError, ["'W'", "external data"]),
    ("coef-not-divisible", lambda: _linear_classifier(coefficients=[1.0] * 5), InvalidModelError,
     ["LinearClassifier", "'lc'", "'coefficients'", "3 score rows"]),
    ("coef-wrong-feature-count", lambda: _linear_classifier(coefficients=[1.0] * 9), InvalidModelError,
     ["'lc'", "'coefficients'", "2 features"]),
    ("classes-vs-intercepts", lambda: _linear_classifier(coefficients=[1.0] * 4, intercepts=[0.0, 0.0]),
     InvalidModelError, ["'lc'", "'intercepts'"]),
    ("unknown-post-transform", lambda: _linear_classifier(post_transform="FOO"), InvalidModelError,
     ["'lc'", "'post_transform'", "'FOO'"]),
    ("nan-weights", lambda: _linear_classifier(coefficients=[1.0, float("nan"), 3.0, 4.0, 5.0, 6.0]),
     InvalidModelError, ["'lc'", "'coefficients'", "NaN"]),
    ("no-class-labels", lambda: _linear_classifier(classlabels_ints=None), InvalidModelError,
     ["'lc'", "classlabels_ints"]),
    ("nan-initializer", lambda: _matmul_model([[1.0], [np.nan]]), InvalidModelError, ["'mm'", "'W'", "NaN"]),
    ("matmul-wrong-rows", lambda: _matmul_model([[1.0], [2.0], [3.0]]), InvalidModelError,
     ["MatMul", "'mm'", "3 rows for 2 features"]),
    ("scaler-offset-size", lambda: _scaler_model(offset=[1.0, 2.0, 3.0], scale=[1.0, 1.0]), InvalidModelError,
     ["Scaler", "'sc'", "'offset'"]),
    ("softmax-zero", lambda: _linear_classifier(post_transform="SOFTMAX_ZERO"), UnsupportedModelError,
     ["'lc'", "SOFTMAX_ZERO"]),
    ("unnormalised-sigmoids", _unnormalised_sigmoids_model, UnsupportedModelError,
     ["'probabilities'", "LinearClassifier:lc", "sigmoid", "no IR equivalent"]),
    ("label-and-proba-disagree", _label_from_other_scores_model, UnsupportedModelError,
     ["'label'", "LinearClassifier:lc1", "'probabilities'", "LinearClassifier:lc2", "different scores"]),
    ("not-topologically-sorted", _unsorted_model, InvalidModelError, ["'late'", "'Z'"]),
]


@pytest.mark.parametrize("make,error,words", [pytest.param(*c[1:], id=c[0]) for c in ERROR_CASES])
def test_errors_name_the_offending_node_and_attribute(make, error, words):
    with pytest.raises(error) as info:
        from_onnx(make())
    for w in words:
        assert w in str(info.value), (w, str(info.value))


@pytest.mark.parametrize("data", [b"\xff\xff\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f", b"not an onnx model",
                                  b""], ids=["bad-varint", "truncated", "text", "empty"])
def test_garbage_bytes_are_invalid_model_errors(data):
    with pytest.raises(InvalidModelError, match="ONNX"):
        from_onnx(data)


def test_missing_file_is_an_invalid_model_error(tmp_path):
    missing = tmp_path / "nope.onnx"
    with pytest.raises(InvalidModelError, match="nope.onnx"):
        from_onnx(missing)
    with pytest.raises(InvalidModelError, match="nope.onnx"):
        from_onnx(str(missing))


def test_wrong_argument_type_is_refused():
    with pytest.raises(UnsupportedModelError, match="ModelProto"):
        from_onnx(42)
