"""``TreeEnsemble.validate()``: one negative test per rule, a valid model, frozen arrays.

Every malformed model must be refused with ``InvalidModelError`` before a
kernel sees it, and the message must say where: ``tree T node N`` for a
per-node rule (the node id is the tree-local one, as ``apply`` returns).

The gaps these tests first found in ``validate()`` (an int64 overflow in the
category-set bound, arrays left writeable, unsigned offsets, negative split
kinds) are fixed; their tests now pass.
"""
from __future__ import annotations

import numpy as np
import pytest

from fastml import ir
from fastml.errors import InvalidModelError

from reference_trees import tree_apply, tree_predict



@pytest.fixture(autouse=True, params=[0, 1, 3], ids=["one-block", "tree-per-block", "3-node-blocks"])
def _blocks(request, monkeypatch):
    """``validate()`` checks runs of whole trees at a time (``ir.TREE_BLOCK_NODES``): every
    test also runs with a run per tree, and with runs that split the first tree from the
    second, and must give the same answers and name the same first offender."""
    if request.param:
        monkeypatch.setattr(ir, "TREE_BLOCK_NODES", request.param)

def _parts(**changes) -> dict:
    """A valid two-tree regressor on 3 features, as keyword arguments.

    tree 0 (nodes 0-4)               tree 1 (nodes 5-7)
      0: x0 <= 0.5 ? 1 : 2             0: x2 in {1, 3} ? 1 : 2
      1: leaf                          1: leaf
      2: x1 < 1.5 ? 3 : 4              2: leaf
      3: leaf  4: leaf
    """
    kw = dict(
        n_features=3,
        tree_offsets=np.array([0, 5, 8], dtype=np.int64),
        feature=np.array([0, -1, 1, -1, -1, 2, -1, -1], dtype=np.int32),
        threshold=np.array([0.5, 0, 1.5, 0, 0, 0, 0, 0], dtype=np.float64),
        left=np.array([1, -1, 3, -1, -1, 1, -1, -1], dtype=np.int32),
        right=np.array([2, -1, 4, -1, -1, 2, -1, -1], dtype=np.int32),
        missing_left=np.array([1, 0, 0, 0, 0, 1, 0, 0], dtype=bool),
        value=np.arange(8, dtype=np.float64)[:, None],
        split=np.array([ir.SPLIT_LEQ, 0, ir.SPLIT_LT, 0, 0, ir.SPLIT_MEMBER, 0, 0], dtype=np.uint8),
        cat_offset=np.zeros(8, dtype=np.int64),
        cat_nwords=np.ones(8, dtype=np.int32),
        cat_bits=np.array([0b1010], dtype=np.uint32),
        flat=True,
    )
    kw.update(changes)
    return kw


def _model(**changes) -> ir.TreeEnsemble:
    return ir.TreeEnsemble(**_parts(**changes))


def _at(name: str, index: int, value, **changes) -> ir.TreeEnsemble:
    """The valid model with ``name[index] = value``."""
    a = np.array(_parts()[name], copy=True)
    a[index] = value
    return _model(**{name: a}, **changes)


def _classifier(k: int = 3, **changes) -> ir.TreeEnsemble:
    """The valid trees as a forest classifier with ``k`` classes (vector leaves)."""
    kw = dict(value=np.full((8, k), 1.0 / k), n_targets=k, is_classifier=True,
              classes=np.arange(k) * 10, post="proba", predict_rule="argmax", flat=False, average=True)
    kw.update(changes)
    return _model(**kw)


def _refused(model: ir.TreeEnsemble, *fragments: str) -> str:
    with pytest.raises(InvalidModelError) as info:
        model.validate()
    msg = str(info.value)
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"
    return msg


# --------------------------------------------------------------------------- valid models

def test_valid_model_passes_and_decides_as_documented():
    m = _model().validate()
    assert m.n_trees == 2 and m.n_nodes == 8
    X = np.array([[0.5, 0.0, 1.0],    # x0 <= 0.5 -> leaf 1; x2 = 1 is in {1, 3} -> leaf 1
                  [0.6, 1.5, 2.0],    # x1 < 1.5 is false -> leaf 4; 2 not in the set -> leaf 2
                  [0.6, 1.4, 3.0],    # -> leaf 3; 3 in the set -> leaf 1
                  [np.nan, 0.0, np.nan]])  # NaN goes left at both roots (missing_left)
    np.testing.assert_array_equal(tree_apply(m, X), [[1, 1], [4, 2], [3, 1], [1, 1]])
    np.testing.assert_array_equal(tree_predict(m, X), [1 + 6, 4 + 7, 3 + 6, 1 + 6])


def test_valid_variants_pass():
    _classifier().validate()
    _classifier(2, value=np.zeros((8, 1)), n_targets=1, post="logistic", predict_rule="gt0",
                average=False).validate()
    _model(value=np.zeros((8, 1)), n_targets=2, tree_target=np.array([1, 0], dtype=np.int32),
           base_score=np.array([0.5, -0.5]), flat=False).validate()
    _model(post="isolation", post_params=(3.0, -0.5), predict_rule="isolation").validate()
    # no split array at all: every node is <=, and NaN thresholds are then refused
    _model(split=None, cat_offset=None, cat_nwords=None, cat_bits=None).validate()
    # one-node trees (lone leaves) are trees
    _model(tree_offsets=np.array([0, 5, 6, 7, 8]), left=np.array([1, -1, 3, -1, -1, -1, -1, -1]),
           right=np.array([2, -1, 4, -1, -1, -1, -1, -1]), split=None).validate()


def test_arrays_are_frozen_after_validate():
    m = _classifier().validate()
    for name in ("tree_offsets", "feature", "threshold", "left", "right", "missing_left", "value",
                 "classes"):
        a = getattr(m, name)
        assert not a.flags.writeable, name
        with pytest.raises(ValueError):
            a[0] = a[1]


@pytest.mark.parametrize("name", ["split", "cat_offset", "cat_nwords", "cat_bits", "tree_target",
                                  "base_score"])
def test_optional_arrays_are_frozen_after_validate(name):
    m = _model(value=np.zeros((8, 1)), n_targets=2, tree_target=np.array([1, 0], dtype=np.int32),
               base_score=np.array([0.5, -0.5]), flat=False).validate()
    assert not getattr(m, name).flags.writeable


# --------------------------------------------------------------------------- ensemble-level rules

@pytest.mark.parametrize("n_features", [0, -1])
def test_n_features_below_one(n_features):
    _refused(_model(n_features=n_features), "n_features must be >= 1")


def test_no_trees():
    _refused(_model(tree_offsets=np.array([0])), "at least one tree")


@pytest.mark.parametrize("name", ["tree_offsets", "feature", "left", "right"])
def test_index_arrays_must_hold_integers(name):
    a = np.asarray(_parts()[name], dtype=np.float64)
    _refused(_model(**{name: a}), name, "integers")


@pytest.mark.parametrize("name", ["tree_offsets", "feature", "left", "right"])
def test_index_arrays_must_be_1d(name):
    a = np.asarray(_parts()[name])[None, :]
    _refused(_model(**{name: a}), name, "1-D")


@pytest.mark.parametrize("name", ["left", "right"])
def test_node_arrays_of_different_lengths(name):
    _refused(_model(**{name: np.asarray(_parts()[name])[:-1]}), name, "one per node")


def test_threshold_dtype_and_shape():
    _refused(_model(threshold=_parts()["threshold"].astype(np.float32)), "threshold must be float64")
    _refused(_model(threshold=_parts()["threshold"][:-1]), "threshold must be float64 of shape (8,)")


def test_missing_left_dtype_and_shape():
    _refused(_model(missing_left=_parts()["missing_left"].astype(np.int8)), "missing_left must be bool")
    _refused(_model(missing_left=_parts()["missing_left"][:-1]), "missing_left must be bool")


@pytest.mark.parametrize("value", [np.zeros(8), np.zeros((7, 1)), np.zeros((8, 0)),
                                   np.zeros((8, 1), dtype=np.float32)])
def test_value_dtype_and_shape(value):
    _refused(_model(value=value), "value must be float64 of shape (8, W)")


@pytest.mark.parametrize("offsets", [[1, 5, 8], [0, 5, 7], [0, 5, 5, 8], [0, 6, 5, 8]])
def test_tree_offsets_must_rise_from_zero_to_the_node_count(offsets):
    _refused(_model(tree_offsets=np.array(offsets)), "tree_offsets must rise strictly")


@pytest.mark.parametrize("offsets", [np.array([0, 200, 8], dtype=np.uint8),
                                     np.array([0, 5, 8], dtype=np.uint64)])
def test_unsigned_tree_offsets_give_a_typed_error(offsets):
    try:
        _model(tree_offsets=offsets).validate()
    except InvalidModelError:
        return  # refused with a typed error: fine
    # accepted: only fine if the offsets are valid
    assert offsets[-1] == 8 and np.all(np.diff(offsets.astype(np.int64)) > 0)


def test_n_targets_below_one():
    _refused(_model(n_targets=0, flat=False), "n_targets must be >= 1")


def test_leaf_width_neither_one_nor_n_targets():
    _refused(_model(value=np.zeros((8, 2)), n_targets=3, flat=False), "width 2", "n_targets=3")


def test_scalar_leaves_with_several_targets_need_tree_target():
    _refused(_model(n_targets=2, flat=False), "need tree_target")


def test_tree_target_of_wrong_length():
    _refused(_model(n_targets=2, flat=False, tree_target=np.array([0, 1, 1])), "3 entries for 2 trees")


@pytest.mark.parametrize("bad", [2, -1])
def test_tree_target_out_of_range_names_the_tree(bad):
    _refused(_model(n_targets=2, flat=False, tree_target=np.array([0, bad])),
             "tree 1", f"target id {bad} out of range [0, 2)")


def test_tree_target_where_none_applies():
    _refused(_model(tree_target=np.array([0, 0])), "tree_target applies only")


@pytest.mark.parametrize("base, fragment", [
    (np.zeros(2), "base_score has 2 values, expected n_targets=1"),
    (np.zeros((1, 1)), "base_score must be 1-D"),
    (np.array([np.nan]), "base_score contains NaN"),
    (np.array([np.inf]), "base_score contains NaN or infinity"),
    (np.zeros(1, dtype=np.float32), "base_score must be float64"),
])
def test_base_score(base, fragment):
    _refused(_model(base_score=base), fragment)


def test_split_array_of_wrong_length_or_type():
    _refused(_model(split=np.zeros(7, dtype=np.uint8)), "split has 7 entries, expected 8")
    _refused(_model(split=np.zeros(8, dtype=np.float64)), "split must hold integers")


# --------------------------------------------------------------------------- per-node rules (name tree and node)

def test_leaf_with_a_right_child():
    _refused(_at("right", 3, 1), "tree 0 node 3", "a leaf (left = -1) must have right = -1")


@pytest.mark.parametrize("name, index, value", [
    ("left", 2, 5),      # left >= tree size (tree 0 has 5 nodes)
    ("right", 2, 5),     # right >= tree size
    ("right", 2, -1),    # a split with only one child
    ("right", 5, 3),     # tree 1 has 3 nodes: 3 is out of range although node 3 exists globally
    ("left", 0, 10**9),
])
def test_child_out_of_range(name, index, value):
    tree, node = (0, index) if index < 5 else (1, index - 5)
    _refused(_at(name, index, value), f"tree {tree} node {node}", "child out of range")


@pytest.mark.parametrize("value", [3, 4, -1, -2, 2**31 - 1])
def test_feature_out_of_range(value):
    _refused(_at("feature", 2, value), "tree 0 node 2", f"feature id {value} out of range [0, 3)")


def test_feature_at_leaves_is_not_checked():
    _at("feature", 1, 99).validate()  # leaves carry no feature; kernels never read it


def test_both_children_the_same_node():
    _refused(_at("right", 2, 3), "tree 0 node 2", "both children are node 3")


@pytest.mark.parametrize("kind", [3, 255])
def test_unknown_split_kind(kind):
    _refused(_at("split", 2, kind), "tree 0 node 2", f"unknown split kind {kind}")


def test_negative_split_kind():
    split = np.array(_parts()["split"], dtype=np.int8)
    split[2] = -1
    _refused(_model(split=split), "tree 0 node 2", "unknown split kind -1")


def test_nan_threshold_at_a_split():
    _refused(_at("threshold", 2, np.nan), "tree 0 node 2", "threshold is NaN")
    _refused(_at("threshold", 0, np.nan, split=None, cat_offset=None, cat_nwords=None, cat_bits=None),
             "tree 0 node 0", "threshold is NaN")


def test_nan_threshold_is_fine_at_leaves_and_set_splits():
    t = np.array(_parts()["threshold"], copy=True)
    t[[1, 3, 5, 6]] = np.nan  # two leaves and the set split (root of tree 1)
    _model(threshold=t).validate()


def test_infinite_thresholds_are_fine():
    _at("threshold", 0, -np.inf).validate()
    _at("threshold", 2, np.inf).validate()


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_leaf_value(value):
    _refused(_at("value", 4, value), "tree 0 node 4", "leaf value is NaN or infinite")
    _refused(_at("value", 7, value), "tree 1 node 2", "leaf value is NaN or infinite")


def test_non_finite_value_at_a_split_is_ignored():
    _at("value", 0, np.nan).validate()


@pytest.mark.parametrize("drop", ["cat_offset", "cat_nwords", "cat_bits"])
def test_set_splits_need_category_arrays(drop):
    _refused(_model(**{drop: None}), "set-membership splits need cat_offset, cat_nwords and cat_bits")


def test_cat_bits_must_be_uint32():
    _refused(_model(cat_bits=np.array([10], dtype=np.int64)), "cat_bits must be 1-D uint32")
    _refused(_model(cat_bits=np.array([[10]], dtype=np.uint32)), "cat_bits must be 1-D uint32")


def test_category_arrays_need_one_entry_per_node():
    _refused(_model(cat_offset=np.zeros(7, dtype=np.int64)), "one entry per node")
    _refused(_model(cat_nwords=np.ones(9, dtype=np.int32)), "one entry per node")


@pytest.mark.parametrize("name, value, where", [
    ("cat_offset", 1, "[1, 2)"),    # past the end of cat_bits (1 word)
    ("cat_offset", -1, "[-1, 0)"),
    ("cat_nwords", 2, "[0, 2)"),
    ("cat_nwords", 0, "[0, 0)"),    # an empty set must still have one word
    ("cat_nwords", -3, "[0, -3)"),
])
def test_category_set_outside_cat_bits(name, value, where):
    _refused(_at(name, 5, value), "tree 1 node 0", f"category set {where} outside cat_bits of 1 words")


def test_category_arrays_at_other_nodes_are_not_checked():
    _at("cat_offset", 2, 10**6).validate()  # node 2 is a '<' split: its set is never read


def test_category_offset_that_overflows():
    _refused(_at("cat_offset", 5, 2**63 - 1), "tree 1 node 0", "outside cat_bits")


def test_root_as_a_child_is_a_cycle():
    _refused(_at("right", 2, 0), "tree 0 node 0", "the root is some node's child (a cycle)")


def test_shared_child():
    # node 2's children become (3, 1): node 1 then has two parents, node 4 none
    _refused(_at("right", 2, 1), "tree 0 node 1", "node is the child of 2 nodes")


def test_unreachable_node():
    # tree 0 without its inner split: root 0 -> (1, 3); nodes 2 and 4 hang nowhere
    left = np.array([1, -1, -1, -1, -1, 1, -1, -1])
    right = np.array([3, -1, -1, -1, -1, 2, -1, -1])
    _refused(_model(left=left, right=right), "tree 0 node 2", "node is unreachable from the root")


def test_cycle_away_from_the_root():
    # tree of 7 nodes: 0 -> (1, 2); 3 -> (4, 5) and 4 -> (3, 6): every node but the
    # root has exactly one parent, yet 3 and 4 form a cycle nobody reaches
    kw = _parts(split=None, cat_offset=None, cat_nwords=None, cat_bits=None)
    kw.update(tree_offsets=np.array([0, 7]),
              feature=np.array([0, -1, -1, 1, 2, -1, -1]), threshold=np.zeros(7),
              left=np.array([1, -1, -1, 4, 3, -1, -1]), right=np.array([2, -1, -1, 5, 6, -1, -1]),
              missing_left=np.zeros(7, dtype=bool), value=np.zeros((7, 1)))
    _refused(ir.TreeEnsemble(**kw), "tree 0 node 3", "unreachable from the root (a cycle)")


def test_errors_name_the_first_offender_in_later_trees():
    # the same fault in tree 1 is reported with tree 1's local node id
    _refused(_at("feature", 5, 7), "tree 1 node 0", "feature id 7")


def test_the_first_rule_broken_is_reported_before_earlier_trees():
    # tree 0 has a NaN threshold, tree 1 a feature id out of range: the feature rule comes
    # first, so tree 1 is named however the trees are split into runs
    thr = _parts()["threshold"].copy()
    thr[2] = np.nan
    _refused(_at("feature", 5, 7, threshold=thr), "tree 1 node 0", "feature id 7")
    _refused(_model(threshold=thr), "tree 0 node 2", "threshold is NaN")


# --------------------------------------------------------------------------- enumerated values

@pytest.mark.parametrize("field, value", [("compare", "float16"), ("post", "log"),
                                          ("predict_rule", "median")])
def test_unknown_enumerated_values(field, value):
    _refused(_model(**{field: value}), f"unknown {field} {value!r}")


@pytest.mark.parametrize("params", [(), (1.0,), (1.0, 2.0, 3.0)])
def test_isolation_needs_two_post_params(params):
    _refused(_model(post="isolation", post_params=params, predict_rule="isolation"),
             "post 'isolation' needs post_params")


def _binary(**changes) -> ir.TreeEnsemble:
    """The valid trees as a boosted binary classifier: one raw column, sigmoid probabilities."""
    kw = dict(n_targets=1, is_classifier=True, classes=np.array([0, 1]), post="logistic",
              predict_rule="ge0", flat=False)
    kw.update(changes)
    return _model(**kw)


def test_logistic_scale_and_exp_post_are_valid():
    assert _binary(post_params=(2.0,)).validate().logistic_scale == 2.0
    assert _binary().validate().logistic_scale == 1.0
    assert _model(post="exp").validate().methods() == {"predict", "apply"}


@pytest.mark.parametrize("params", [(0.0,), (-2.0,), (np.inf,), (np.nan,), (2.0, 1.0)])
def test_logistic_takes_one_finite_positive_scale(params):
    _refused(_binary(post_params=params), "post 'logistic' takes post_params () or (scale,)")


@pytest.mark.parametrize("post", ["none", "exp"])
def test_other_posts_take_no_params(post):
    _refused(_model(post=post, post_params=(1.0,)), f"post {post!r} takes no post_params")


def test_inf_refused_is_a_column_mask_next_to_allow_inf():
    _model(inf_refused=np.array([False, True, False])).validate()
    for bad in (np.array([0, 1, 0]), np.array([True, False])):
        _refused(_model(inf_refused=bad), "inf_refused must be a bool array of shape (3,)")
    _refused(_model(inf_refused=np.zeros(3, bool), allow_inf=False), "it needs allow_inf=True")


def test_exp_post_is_for_value_regressors():
    _refused(_binary(post="exp"), "post 'exp' is for regressors")
    _refused(_model(post="exp", predict_rule="isolation"), "post 'exp' is for regressors that predict a value")


# --------------------------------------------------------------------------- classifiers and regressors

def test_classifier_without_classes():
    _refused(_classifier(classes=None), "a classifier needs classes")


@pytest.mark.parametrize("classes", [np.array([5]), np.array([1, 1, 2]), np.array([[0, 1, 2]])])
def test_bad_classes(classes):
    _refused(_classifier(classes=classes), "classes must be 1-D, unique and at least 2")


def test_class_count_does_not_match_output_columns():
    _refused(_classifier(classes=np.arange(4)), "4 classes", "need 4 output columns, got n_targets=3")
    _refused(_classifier(2, n_targets=2, value=np.zeros((8, 2)), post="logistic", predict_rule="ge0"),
             "need 1 output columns, got n_targets=2")


@pytest.mark.parametrize("rule", ["value", "isolation"])
def test_classifier_with_a_regressor_rule(rule):
    _refused(_classifier(predict_rule=rule), f"predict_rule {rule!r} is for regressors")


def test_argmax_proba_needs_probabilities():
    _refused(_classifier(post="none", predict_rule="argmax_proba"),
             "predict_rule 'argmax_proba' needs probabilities")


@pytest.mark.parametrize("kw", [dict(classes=np.array([0, 1])), dict(post="proba"),
                                dict(post="logistic"), dict(post="softmax")])
def test_regressor_with_classes_or_probabilities(kw):
    _refused(_model(**kw), "a regressor has no classes or probabilities")


@pytest.mark.parametrize("rule", ["argmax", "argmax_proba", "ge0", "gt0"])
def test_regressor_with_a_classifier_rule(rule):
    _refused(_model(predict_rule=rule), f"predict_rule {rule!r} is for classifiers")


def test_flat_regressor_with_several_targets():
    _refused(_model(value=np.zeros((8, 2)), n_targets=2), "a flat (1-D) regressor has exactly one target")
