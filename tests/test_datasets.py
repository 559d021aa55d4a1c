"""Tests for coordjax.datasets (Not-so-Clevr): NumPy only, fast."""

import dataclasses
import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordjax import datasets
from coordjax.datasets import (
    SPLITS,
    Examples,
    NotSoClevr,
    all_examples,
    not_so_clevr,
    split_indices,
)

FIELDS = ("indices", "centers", "onehots", "images", "normalized_centers")


def reference_square(x: int, y: int) -> np.ndarray:
    """Independent construction: a 9x9 block by slicing, rows y-4..y+4, cols x-4..x+4."""
    image = np.zeros((64, 64, 1), dtype=np.float32)
    image[y - 4 : y + 5, x - 4 : x + 5, 0] = 1.0
    return image


def reference_onehot(x: int, y: int) -> np.ndarray:
    onehot = np.zeros((64, 64, 1), dtype=np.float32)
    onehot[y, x, 0] = 1.0
    return onehot


def position(x: int, y: int) -> int:
    """Generation-order position: x outer, y inner."""
    return (x - 4) * 56 + (y - 4)


# ---------------------------------------------------------------------------------------------
# The whole dataset
# ---------------------------------------------------------------------------------------------


def test_exports():
    assert SPLITS == ("uniform", "quadrant", "random")
    for name in ("not_so_clevr", "NotSoClevr", "Examples", "all_examples", "split_indices"):
        assert hasattr(datasets, name)
    assert [f.name for f in dataclasses.fields(Examples)] == list(FIELDS)
    assert [f.name for f in dataclasses.fields(NotSoClevr)] == ["split", "train", "test"]


def test_all_examples_shapes_and_dtypes():
    ex = all_examples()
    assert len(ex) == 3136
    assert ex.indices.shape == (3136,) and ex.indices.dtype == np.int32
    assert ex.centers.shape == (3136, 2) and ex.centers.dtype == np.int32
    assert ex.onehots.shape == (3136, 64, 64, 1) and ex.onehots.dtype == np.float32
    assert ex.images.shape == (3136, 64, 64, 1) and ex.images.dtype == np.float32
    assert ex.normalized_centers.shape == (3136, 2)
    assert ex.normalized_centers.dtype == np.float32


def test_generation_order_x_outer_y_inner():
    ex = all_examples()
    np.testing.assert_array_equal(ex.indices, np.arange(3136))
    expected = [(x, y) for x in range(4, 60) for y in range(4, 60)]
    np.testing.assert_array_equal(ex.centers, np.array(expected, dtype=np.int32))
    assert ex.centers.min() == 4 and ex.centers.max() == 59
    # Every centre exactly once.
    assert len({tuple(c) for c in ex.centers.tolist()}) == 3136


def test_onehots_mark_center_pixel():
    ex = all_examples()
    flat = ex.onehots.reshape(3136, -1)
    np.testing.assert_array_equal(flat.sum(axis=1), np.ones(3136, dtype=np.float32))
    np.testing.assert_array_equal(np.argmax(flat, axis=1), ex.centers[:, 1] * 64 + ex.centers[:, 0])
    assert set(np.unique(flat).tolist()) == {0.0, 1.0}


def test_images_are_9x9_squares_everywhere():
    ex = all_examples()
    assert set(np.unique(ex.images).tolist()) == {0.0, 1.0}
    np.testing.assert_array_equal(ex.images.sum(axis=(1, 2, 3)), np.full(3136, 81.0))
    # Bounding box of the ones: rows y-4..y+4, cols x-4..x+4 (with 81 ones => filled block).
    rows_any = ex.images[..., 0].any(axis=2)  # (N, 64) over rows
    cols_any = ex.images[..., 0].any(axis=1)  # (N, 64) over columns
    x, y = ex.centers[:, 0], ex.centers[:, 1]
    np.testing.assert_array_equal(rows_any.argmax(axis=1), y - 4)
    np.testing.assert_array_equal(63 - rows_any[:, ::-1].argmax(axis=1), y + 4)
    np.testing.assert_array_equal(cols_any.argmax(axis=1), x - 4)
    np.testing.assert_array_equal(63 - cols_any[:, ::-1].argmax(axis=1), x + 4)
    # The square's centre pixel is the one-hot pixel.
    assert np.all(ex.images[ex.onehots == 1.0] == 1.0)


def test_images_match_slice_construction_on_sample():
    ex = all_examples()
    rng = np.random.default_rng(123)
    sample = np.concatenate([[0, 55, 56, 3135, 3080], rng.choice(3136, size=60, replace=False)])
    for i in sample:
        x, y = (int(v) for v in ex.centers[i])
        np.testing.assert_array_equal(ex.images[i], reference_square(x, y))
        np.testing.assert_array_equal(ex.onehots[i], reference_onehot(x, y))


def test_images_equal_paper_conv_recipe():
    """The paper's recipe: pad one-hots of a 56x56 grid, then a 9x9 box filter ('SAME')."""
    ex = all_examples()
    # Summed-area table of the padded one-hots = a 9x9 box sum, independent of the slicing.
    onehots = ex.onehots[..., 0].astype(np.int32)
    padded = np.pad(onehots, ((0, 0), (5, 4), (5, 4)))
    sat = padded.cumsum(axis=1).cumsum(axis=2)
    box = sat[:, 9:, 9:] - sat[:, :-9, 9:] - sat[:, 9:, :-9] + sat[:, :-9, :-9]
    np.testing.assert_array_equal(box.astype(np.float32), ex.images[..., 0])


def test_normalized_centers():
    ex = all_examples()
    np.testing.assert_array_equal(
        ex.normalized_centers, ex.centers.astype(np.float32) / np.float32(64)
    )
    assert ex.normalized_centers.min() == np.float32(0.0625)
    assert ex.normalized_centers.max() == np.float32(0.921875)


@settings(max_examples=50, deadline=None)
@given(x=st.integers(4, 59), y=st.integers(4, 59))
def test_geometry_property(x, y):
    ex = all_examples()
    i = position(x, y)
    assert ex.indices[i] == i
    assert tuple(ex.centers[i].tolist()) == (x, y)
    np.testing.assert_array_equal(ex.images[i], reference_square(x, y))
    np.testing.assert_array_equal(ex.onehots[i], reference_onehot(x, y))
    np.testing.assert_array_equal(ex.normalized_centers[i], np.float32([x / 64, y / 64]))


def test_all_examples_cached_and_read_only():
    a, b = all_examples(), all_examples()
    assert a is b
    for name in FIELDS:
        array = getattr(a, name)
        assert not array.flags.writeable, name
        with pytest.raises(ValueError):
            array.flat[0] = 0


# ---------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "split, n_train, n_test",
    [("uniform", 2368, 768), ("quadrant", 2407, 729), ("random", 2509, 627)],
)
def test_split_counts(split, n_train, n_test):
    train_idx, test_idx = split_indices(split)
    assert (len(train_idx), len(test_idx)) == (n_train, n_test)
    data = not_so_clevr(split)
    assert data.split == split
    assert (len(data.train), len(data.test)) == (n_train, n_test)


@pytest.mark.parametrize("split", SPLITS)
def test_split_partition(split):
    train_idx, test_idx = split_indices(split)
    for idx in (train_idx, test_idx):
        assert idx.dtype == np.int32 and idx.ndim == 1
        assert np.all(np.diff(idx) > 0)  # sorted, no duplicates
    assert np.intersect1d(train_idx, test_idx).size == 0
    np.testing.assert_array_equal(np.union1d(train_idx, test_idx), np.arange(3136))


@pytest.mark.parametrize("split", SPLITS)
def test_split_sides_are_subsets_of_all_examples(split):
    data = not_so_clevr(split)
    train_idx, test_idx = split_indices(split)
    full = all_examples()
    for side, idx in ((data.train, train_idx), (data.test, test_idx)):
        np.testing.assert_array_equal(side.indices, idx)
        for name in FIELDS:
            array = getattr(side, name)
            np.testing.assert_array_equal(array, getattr(full, name)[idx])
            assert array.dtype == getattr(full, name).dtype
            assert not array.flags.writeable, name


def test_uniform_split_reference_fingerprint():
    data = not_so_clevr("uniform")
    test_xy = [tuple(c) for c in data.test.centers.tolist()]  # Python int tuples
    assert test_xy[:4] == [(4, 5), (4, 7), (4, 25), (4, 39)]
    assert sum(x for x, _ in test_xy) == 24488
    assert sum(y for _, y in test_xy) == 24310
    digest = hashlib.md5(str(sorted(test_xy)).encode()).hexdigest()
    assert digest == "a1e357f7f52dcd18fb427c8c93726c70"


def test_uniform_split_matches_per_example_legacy_draws():
    """The reference loop: one np.random.random() per example, x outer / y inner, < 0.25 -> test."""
    rs = np.random.RandomState(20202)
    expected_test = []
    for x in range(4, 60):
        for y in range(4, 60):
            if rs.random_sample() < 0.25:
                expected_test.append((x, y))
    data = not_so_clevr("uniform")
    assert [tuple(c) for c in data.test.centers.tolist()] == expected_test


def test_quadrant_split_definition():
    data = not_so_clevr("quadrant")
    tx, ty = data.test.centers[:, 0], data.test.centers[:, 1]
    assert np.all((tx >= 33) & (ty >= 33))
    assert np.all(data.test.normalized_centers > 0.5)
    rx, ry = data.train.centers[:, 0], data.train.centers[:, 1]
    assert not np.any((rx >= 33) & (ry >= 33))
    assert tx.min() == 33 and ty.min() == 33 and tx.max() == 59 and ty.max() == 59


def test_uniform_and_quadrant_ignore_seed_and_fraction():
    for split in ("uniform", "quadrant"):
        a = split_indices(split)
        b = split_indices(split, seed=7, test_fraction=0.5)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        assert not_so_clevr(split) is not_so_clevr(split, seed=7, test_fraction=0.5)


def test_random_split_matches_default_rng_permutation():
    train_idx, test_idx = split_indices("random", seed=3, test_fraction=0.2)
    perm = np.random.default_rng(3).permutation(3136)
    np.testing.assert_array_equal(test_idx, np.sort(perm[:627]))
    np.testing.assert_array_equal(train_idx, np.sort(perm[627:]))


@pytest.mark.parametrize("fraction, n_test", [(0.2, 627), (0.5, 1568), (0.25, 784), (0.01, 31)])
def test_random_split_sizes(fraction, n_test):
    train_idx, test_idx = split_indices("random", seed=1, test_fraction=fraction)
    assert len(test_idx) == n_test == round(fraction * 3136)
    assert len(train_idx) == 3136 - n_test
    np.testing.assert_array_equal(np.union1d(train_idx, test_idx), np.arange(3136))


def test_random_split_depends_on_seed():
    _, test0 = split_indices("random", seed=0)
    _, test1 = split_indices("random", seed=1)
    assert len(test0) == len(test1)
    assert not np.array_equal(test0, test1)
    assert not np.array_equal(not_so_clevr("random", seed=0).test.indices, test1)
    np.testing.assert_array_equal(not_so_clevr("random", seed=1).test.indices, test1)


@pytest.mark.parametrize("split", SPLITS)
def test_determinism(split):
    a_train, a_test = split_indices(split, seed=5)
    b_train, b_test = split_indices(split, seed=5)
    np.testing.assert_array_equal(a_train, b_train)
    np.testing.assert_array_equal(a_test, b_test)
    a, b = not_so_clevr(split, seed=5), not_so_clevr(split, seed=5)
    for side in ("train", "test"):
        for name in FIELDS:
            np.testing.assert_array_equal(
                getattr(getattr(a, side), name), getattr(getattr(b, side), name)
            )


def test_no_global_rng_state_touched():
    state = np.random.get_state()  # noqa: NPY002 (reading, to check it is untouched)
    all_examples.cache_clear()
    all_examples()
    split_indices("uniform")
    split_indices("random", seed=11)
    after = np.random.get_state()  # noqa: NPY002
    assert state[0] == after[0]
    np.testing.assert_array_equal(state[1], after[1])
    assert state[2:] == after[2:]


def test_take():
    ex = all_examples()
    sub = ex.take([3, 1])
    assert len(sub) == 2
    np.testing.assert_array_equal(sub.indices, [3, 1])
    np.testing.assert_array_equal(sub.images, ex.images[[3, 1]])
    assert not sub.images.flags.writeable


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["Uniform", "quadrants", "", None, 0])
def test_unknown_split(split):
    with pytest.raises(ValueError, match=r"split must be one of .*uniform.*quadrant.*random"):
        split_indices(split)
    with pytest.raises(ValueError, match=r"split must be one of"):
        not_so_clevr(split)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, float("nan"), "0.2", True, 1e-5])
def test_bad_test_fraction(fraction):
    with pytest.raises(ValueError, match=r"test_fraction"):
        split_indices("random", test_fraction=fraction)
    with pytest.raises(ValueError, match=r"test_fraction"):
        not_so_clevr("random", test_fraction=fraction)


@pytest.mark.parametrize("seed", [-1, 1.5, "0", None, True])
def test_bad_seed(seed):
    with pytest.raises(ValueError, match=r"seed must be a non-negative integer"):
        split_indices("random", seed=seed)
    with pytest.raises(ValueError, match=r"seed"):
        not_so_clevr("random", seed=seed)


def test_numpy_integer_seed_accepted():
    a = split_indices("random", seed=np.int64(4))
    b = split_indices("random", seed=4)
    np.testing.assert_array_equal(a[1], b[1])
