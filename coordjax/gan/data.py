"""Two-object Sort-of-Clevr (the paper's S7.1): one red and one blue object on white.

Every image holds exactly one blue and one red object, each a circle or a square (a fair coin
each), of one fixed size, at random non-overlapping positions. The paper fixes the canvas
(64 x 64), the count (50k), the colours and the shapes; the rest follows the reference
generator as shared/reference/experiments_spec.md (section 7.1) records it, with one change:

* size: radius ``10`` at 64 x 64 (a circle of radius 10, a 21 x 21 square), scaled with the
  canvas as ``canvas * 10 // 64`` (5 at 32, 2 at 16);
* centres: uniform integers in ``[radius, canvas - radius)`` on both axes (10..53 at 64, as
  the reference), so every object lies inside the canvas;
* no overlap (the change): the centres differ by more than ``2 * radius`` on at least one axis
  (Chebyshev distance ``>= 2 * radius + 1``), redrawn until they do. The reference asks only
  for a Euclidean distance of ``2 * radius``, at which two squares can share pixels; ours never
  share one, whatever the shapes (a circle lies inside its square);
* pixels: no anti-aliasing (a pixel is inside or not), pure colours (blue ``(0, 0, 255)``, red
  ``(255, 0, 0)``, background ``(255, 255, 255)``), so a colour threshold finds each object
  exactly; red is drawn after blue (irrelevant without overlap);
* scaling to the models' range: ``image / 127.5 - 1`` in [-1, 1] (the reference's).

Deterministic from a seed (NumPy's ``default_rng``); the reference set no seed.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from coordjax._checks import positive_int

BLUE = (0, 0, 255)
RED = (255, 0, 0)
COLOURS = (BLUE, RED)
"""The objects' colours in drawing order: index 0 is blue, 1 red (the reference's order)."""
SHAPES = ("circle", "square")
PAPER_CANVAS = 64
PAPER_IMAGES = 50_000


class Shapes(NamedTuple):
    """A dataset and what generated it.

    Attributes:
      images: (N, canvas, canvas, 3) uint8 RGB.
      centres: (N, 2, 2) int32: per image, the (row, col) centre of the blue (0) and the red
        (1) object.
      squares: (N, 2) bool: whether each object is a square (else a circle).
    """

    images: np.ndarray
    centres: np.ndarray
    squares: np.ndarray


def check_canvas(name: str, value) -> None:
    """A canvas side the models take: a multiple of 16 (four stride-2 halvings) from 16."""
    positive_int(name, value)
    if value % 16:
        raise ValueError(f"{name} must be a positive multiple of 16 (16, 32, 64, ...); got {value}")


def radius(canvas: int) -> int:
    """The objects' radius (half the square's side less a half pixel) at ``canvas``."""
    return canvas * 10 // PAPER_CANVAS


def centre_range(canvas: int) -> tuple[int, int]:
    """``(low, high)``: the centres' rows and columns lie in ``[low, high)``."""
    r = radius(canvas)
    return r, canvas - r


def sample_layout(num_images: int, canvas: int, rng: np.random.Generator):
    """Centres (N, 2, 2) int32 and shapes (N, 2) bool, the two objects never overlapping."""
    low, high = centre_range(canvas)
    gap = 2 * radius(canvas) + 1
    centres = rng.integers(low, high, size=(num_images, 2, 2)).astype(np.int32)
    clash = np.abs(centres[:, 0] - centres[:, 1]).max(axis=-1) < gap
    while clash.any():  # redraw the red object of clashing images until none clash
        centres[clash, 1] = rng.integers(low, high, size=(int(clash.sum()), 2))
        clash = np.abs(centres[:, 0] - centres[:, 1]).max(axis=-1) < gap
    squares = rng.random((num_images, 2)) < 0.5
    return centres, squares


def render(centres: np.ndarray, squares: np.ndarray, canvas: int) -> np.ndarray:
    """(N, canvas, canvas, 3) uint8 images of the objects at ``centres`` (N, 2, 2)."""
    r = radius(canvas)
    grid = np.arange(canvas, dtype=np.int32)
    images = np.full((len(centres), canvas, canvas, 3), 255, np.uint8)
    for obj, colour in enumerate(COLOURS):
        dr = grid[None, :, None] - centres[:, obj, 0, None, None]  # (N, H, 1)
        dc = grid[None, None, :] - centres[:, obj, 1, None, None]  # (N, 1, W)
        in_square = (np.abs(dr) <= r) & (np.abs(dc) <= r)
        in_circle = dr * dr + dc * dc <= r * r
        inside = np.where(squares[:, obj, None, None], in_square, in_circle)
        images[inside] = colour
    return images


def make_shapes(
    num_images: int = PAPER_IMAGES, canvas: int = PAPER_CANVAS, seed: int = 0
) -> Shapes:
    """The dataset: ``num_images`` images of ``canvas`` x ``canvas``, deterministic in ``seed``.

    Raises:
      ValueError: a ``num_images`` that is not a positive int, a ``canvas`` that is not a
        multiple of 16.
    """
    positive_int("num_images", num_images)
    check_canvas("canvas", canvas)
    rng = np.random.default_rng(seed)
    centres, squares = sample_layout(num_images, canvas, rng)
    images = np.concatenate(
        [render(centres[i : i + 2048], squares[i : i + 2048], canvas)
         for i in range(0, num_images, 2048)]
    )  # fmt: skip
    return Shapes(images, centres, squares)


def to_model_range(images):
    """uint8 images (..., 3) as float32 in [-1, 1] (``image / 127.5 - 1``)."""
    return images.astype(np.float32) / 127.5 - 1.0
