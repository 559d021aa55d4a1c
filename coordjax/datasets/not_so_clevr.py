"""The Not-so-Clevr dataset (Liu et al. 2018, section 2) and its train/test splits.

Every possible position of a 9x9 square on a 64x64 canvas, such that the whole square lies on
the canvas: centres ``(x, y)`` with ``x`` = column and ``y`` = row, each in ``4..59``, giving
56 * 56 = 3136 examples. Each example has

- ``centers``: ``[x, y]`` (int32, raw pixel units 4..59; the classification/rendering input);
- ``onehots``: (64, 64, 1) float32, 1.0 at ``[row=y, col=x]`` (the centre pixel), else 0;
- ``images``: (64, 64, 1) float32, a filled 9x9 square of value 1.0 covering rows ``y-4..y+4``
  and columns ``x-4..x+4``, else 0. (The reference code's squares have value 128/255 = 0.502;
  the paper's own two-line recipe, and this library, use 1.0.);
- ``normalized_centers``: ``[x/64, y/64]`` float32 (divisor 64, the regression target).

Examples are enumerated in the reference generator's order: ``x`` outer (4..59), ``y`` inner
(4..59), so example ``i`` has ``x = 4 + i // 56`` and ``y = 4 + i % 56``.

Splits (:data:`SPLITS`):

- ``"uniform"``: the reference implementation's split, reproduced exactly: a legacy
  ``np.random.RandomState(20202)`` draws one uniform number per example in generation order and
  a draw below 0.25 sends the example to test (2368 train / 768 test).
- ``"quadrant"``: test is the high-column, high-row quadrant ``x >= 33 and y >= 33``
  (the reference's ``x/64 > 0.5 and y/64 > 0.5``): 2407 train / 729 test.
- ``"random"``: the paper text's "randomly split 80/20": a permutation from
  ``np.random.default_rng(seed)``; the first ``round(test_fraction * 3136)`` positions of the
  permutation are test (627 by default).

Within each side, examples are in generation order (sorted indices). The reference additionally
shuffled each side with ``np.random.seed(10101); np.random.permutation(n)``; we do not, because
training shuffles every epoch from an explicit JAX key, so a fixed pre-shuffle would only hide the
generation order.

Generation is vectorised NumPy; the full 3136-example arrays are built once and cached, and every
array handed out is read-only.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers

import numpy as np

__all__ = [
    "CANVAS_SIZE",
    "HALF_SIZE",
    "MIN_CENTER",
    "MAX_CENTER",
    "NUM_EXAMPLES",
    "SPLITS",
    "Examples",
    "NotSoClevr",
    "all_examples",
    "not_so_clevr",
    "split_indices",
]

CANVAS_SIZE = 64
"""Height and width of the canvas, in pixels."""
HALF_SIZE = 4
"""Half the side of a square: squares are ``2 * HALF_SIZE + 1 = 9`` pixels wide."""
MIN_CENTER = HALF_SIZE
"""Smallest centre coordinate (inclusive)."""
MAX_CENTER = CANVAS_SIZE - HALF_SIZE - 1
"""Largest centre coordinate (inclusive): 59."""
_SIDE = MAX_CENTER - MIN_CENTER + 1  # 56 positions per axis
NUM_EXAMPLES = _SIDE * _SIDE
"""Number of examples: 3136."""

SPLITS = ("uniform", "quadrant", "random")
"""Names accepted by :func:`split_indices` and :func:`not_so_clevr`."""

_UNIFORM_SEED = 20202
_UNIFORM_TEST_PROB = 0.25
_QUADRANT_MIN = CANVAS_SIZE // 2 + 1  # x/64 > 0.5  <=>  x >= 33


@dataclasses.dataclass(frozen=True)
class Examples:
    """One side of a split (or the whole dataset): N examples as NumPy arrays.

    Attributes:
      indices: (N,) int32, positions in generation order (0..3135), see :func:`all_examples`.
      centers: (N, 2) int32, ``[x, y]`` with x = column, y = row, each in 4..59.
      onehots: (N, 64, 64, 1) float32, 1.0 at ``[row=y, col=x]``, else 0.
      images: (N, 64, 64, 1) float32, 9x9 filled square of 1.0 centred at (x, y), else 0.
      normalized_centers: (N, 2) float32, ``[x/64, y/64]``.
    """

    indices: np.ndarray
    centers: np.ndarray
    onehots: np.ndarray
    images: np.ndarray
    normalized_centers: np.ndarray

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def take(self, positions) -> Examples:
        """The examples at ``positions`` (indices into *this* object, not generation order)."""
        positions = np.asarray(positions)
        return Examples(
            **{
                field.name: _read_only(getattr(self, field.name)[positions])
                for field in dataclasses.fields(self)
            }
        )


@dataclasses.dataclass(frozen=True)
class NotSoClevr:
    """A train/test split of Not-so-Clevr.

    Attributes:
      split: the split's name, one of :data:`SPLITS`.
      train: the training examples, in generation order.
      test: the test examples, in generation order.
    """

    split: str
    train: Examples
    test: Examples


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _generation_centers() -> np.ndarray:
    """(3136, 2) int32 ``[x, y]`` in generation order: x outer, y inner."""
    axis = np.arange(MIN_CENTER, MAX_CENTER + 1, dtype=np.int32)
    xs, ys = np.meshgrid(axis, axis, indexing="ij")  # xs[i, j] = axis[i] (outer), ys = axis[j]
    return np.stack([xs.ravel(), ys.ravel()], axis=-1)


@functools.lru_cache(maxsize=1)
def all_examples() -> Examples:
    """All 3136 examples in generation order: x outer (4..59), y inner (4..59).

    Built once with vectorised NumPy and cached; the arrays are read-only (copy before editing).
    """
    centers = _generation_centers()
    x = centers[:, 0]
    y = centers[:, 1]
    pixels = np.arange(CANVAS_SIZE, dtype=np.int32)

    # One-hot centre pixel at [row=y, col=x].
    onehots = np.zeros((NUM_EXAMPLES, CANVAS_SIZE, CANVAS_SIZE, 1), dtype=np.float32)
    onehots[np.arange(NUM_EXAMPLES), y, x, 0] = 1.0

    # 9x9 square: outer product of a row mask and a column mask.
    in_rows = np.abs(pixels[None, :] - y[:, None]) <= HALF_SIZE  # (N, 64) over rows
    in_cols = np.abs(pixels[None, :] - x[:, None]) <= HALF_SIZE  # (N, 64) over columns
    images = (in_rows[:, :, None] & in_cols[:, None, :]).astype(np.float32)[..., None]

    normalized = centers.astype(np.float32) / np.float32(CANVAS_SIZE)

    return Examples(
        indices=_read_only(np.arange(NUM_EXAMPLES, dtype=np.int32)),
        centers=_read_only(centers),
        onehots=_read_only(onehots),
        images=_read_only(images),
        normalized_centers=_read_only(normalized),
    )


def _check_split(split) -> str:
    if not isinstance(split, str) or split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_test_fraction(test_fraction) -> float:
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real):
        raise ValueError(
            f"test_fraction must be a real number in the open interval (0, 1), "
            f"got {test_fraction!r}"
        )
    value = float(test_fraction)
    if not 0.0 < value < 1.0:
        raise ValueError(
            f"test_fraction must be a real number in the open interval (0, 1), got {value!r}"
        )
    n_test = round(value * NUM_EXAMPLES)
    if not 0 < n_test < NUM_EXAMPLES:
        raise ValueError(
            f"test_fraction must leave at least one example on each side: "
            f"round({value!r} * {NUM_EXAMPLES}) = {n_test}, allowed 1..{NUM_EXAMPLES - 1}"
        )
    return value


def _test_mask(split: str, seed: int, test_fraction: float) -> np.ndarray:
    """(3136,) bool, True where the example (generation order) is in the test set."""
    if split == "uniform":
        # The reference draws np.random.random() once per example, in generation order, from
        # the legacy global MT19937 seeded with 20202; one vectorised draw gives the same stream.
        draws = np.random.RandomState(_UNIFORM_SEED).random_sample(NUM_EXAMPLES)
        return draws < _UNIFORM_TEST_PROB
    if split == "quadrant":
        centers = _generation_centers()
        return (centers[:, 0] >= _QUADRANT_MIN) & (centers[:, 1] >= _QUADRANT_MIN)
    # "random": the paper's seeded 80/20 split.
    n_test = round(test_fraction * NUM_EXAMPLES)
    permutation = np.random.default_rng(seed).permutation(NUM_EXAMPLES)
    mask = np.zeros(NUM_EXAMPLES, dtype=bool)
    mask[permutation[:n_test]] = True
    return mask


def split_indices(
    split: str = "uniform", *, seed: int = 0, test_fraction: float = 0.2
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test positions into :func:`all_examples` for ``split``.

    Args:
      split: one of :data:`SPLITS`.
      seed: non-negative integer seed of ``np.random.default_rng``; used only by ``"random"``.
      test_fraction: fraction of examples in test, in (0, 1); used only by ``"random"``, which
        puts ``round(test_fraction * 3136)`` examples in test.

    Returns:
      ``(train_idx, test_idx)``: sorted int32 arrays, disjoint, together covering 0..3135.

    Raises:
      ValueError: unknown ``split``, or a bad ``seed`` / ``test_fraction``.
    """
    split = _check_split(split)
    seed = _check_seed(seed)
    test_fraction = _check_test_fraction(test_fraction)
    mask = _test_mask(split, seed, test_fraction)
    train_idx = np.flatnonzero(~mask).astype(np.int32)
    test_idx = np.flatnonzero(mask).astype(np.int32)
    return train_idx, test_idx


@functools.lru_cache(maxsize=4)
def _cached_split(split: str, seed: int, test_fraction: float) -> NotSoClevr:
    train_idx, test_idx = split_indices(split, seed=seed, test_fraction=test_fraction)
    full = all_examples()
    return NotSoClevr(split=split, train=full.take(train_idx), test=full.take(test_idx))


def not_so_clevr(
    split: str = "uniform", *, seed: int = 0, test_fraction: float = 0.2
) -> NotSoClevr:
    """Not-so-Clevr split into train and test (see the module docstring for the splits).

    Args:
      split: one of :data:`SPLITS`: ``"uniform"`` (the reference code's split, 2368 / 768),
        ``"quadrant"`` (test = x >= 33 and y >= 33, 2407 / 729) or ``"random"`` (the paper
        text's seeded split, 80/20 by default).
      seed: non-negative integer seed; used only by ``"random"``.
      test_fraction: fraction of examples in test, in (0, 1); used only by ``"random"``.

    Returns:
      A :class:`NotSoClevr` whose ``train`` and ``test`` hold read-only arrays in generation
      order (sorted indices). Unlike the reference, neither side is pre-shuffled (the reference
      shuffled each side with seed 10101); training shuffles per epoch from an explicit key.
      Results are cached, so repeated calls return the same object.

    Raises:
      ValueError: unknown ``split``, or a bad ``seed`` / ``test_fraction``.
    """
    split = _check_split(split)
    seed = _check_seed(seed)
    test_fraction = _check_test_fraction(test_fraction)
    if split != "random":  # seed and test_fraction do not matter: share one cache entry
        seed, test_fraction = 0, 0.2
    return _cached_split(split, seed, test_fraction)


def scale_inputs(x, input_scale: str):
    """Pixel-coordinate inputs ``x`` (B, 2) (array of any kind) under ``input_scale``.

    ``"raw"`` returns ``x``; ``"unit"`` returns ``2x/63 - 1``: the corners-aligned coordinate
    channels put pixel i at ``2i/(n-1) - 1``. Shared by the training step and the report.
    """
    if input_scale == "unit":
        return x * (2.0 / (CANVAS_SIZE - 1)) - 1.0
    return x


INPUT_SCALES = ("raw", "unit")


@dataclasses.dataclass(frozen=True)
class UnitInputs:
    """Pixel coordinates ``x`` (B, 2) as ``2x/63 - 1``: the training recipe's ``prepare`` for
    ``input_scale="unit"`` (a value, so equal setups share a compiled program)."""

    def __call__(self, x):
        return scale_inputs(x, "unit")


unit_inputs = UnitInputs()
"""Feeds pixel coordinates in the coordinate channels' range (``TrainSetup(prepare=...)``,
``fit(prepare=...)``)."""


def input_transform(input_scale: str) -> UnitInputs | None:
    """The recipe's ``prepare`` for ``input_scale``: None for ``"raw"``, :data:`unit_inputs`."""
    check_input_scale(input_scale, "centers")
    return unit_inputs if input_scale == "unit" else None


def check_input_scale(input_scale: str, input_field: str) -> None:
    """Raises ValueError unless ``input_scale`` is known and applies to the task's input."""
    if input_scale not in INPUT_SCALES:
        raise ValueError(f"input_scale must be one of {list(INPUT_SCALES)}; got {input_scale!r}")
    if input_scale != "raw" and input_field != "centers":
        raise ValueError(
            f"input_scale={input_scale!r} applies to pixel-coordinate inputs (classification, "
            f"rendering); this task's input is {input_field!r}: use 'raw'"
        )
