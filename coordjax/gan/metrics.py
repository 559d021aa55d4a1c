"""Numbers for "mode collapse": where a generator's objects are, against the real data.

The paper shows pictures (Fig 7: 1000 samples' object centres, their relative positions, the
mean image), no numbers. These are defined here, before any result was looked at, and kept
fixed. Each sample is read by colour, as Fig 7 reads it:

* a pixel is *blue* when its blue channel is above the middle of the range and its red and
  green ones below; *red* likewise (images in [-1, 1], so the middle is 0);
* an object's *centre* is the mean (row, col) of its colour's pixels; a colour is *present*
  when it has at least one pixel;
* a colour is *one object* when its pixel count lies within ``[0.5 x circle area, 1.5 x square
  area]`` of the data's objects and every one of its pixels lies within ``radius * sqrt(2) + 1``
  of its centre (two separate blobs, or a smear, fail one or the other; a connected-component
  count would need a host callback).

The metrics (a sample counts in a colour's positions when that colour is present):

* ``coverage``: the share of an 8 x 8 grid of cells over the real centres' range that holds at
  least one sampled centre, averaged over the two colours (1000 real images cover all 64);
* ``centre_sw``: the sliced Wasserstein-1 distance between the sampled and the real centres, per
  colour, averaged, in canvas widths (``SW1 = mean over 32 evenly spaced directions of the 1D
  Wasserstein-1 distance of the projections``: exact, a true metric of 2D distributions, and
  computable by sorting inside the compiled program, where the 2D earth mover's distance is an
  assignment problem);
* ``relative_sw``: the same for the red centre minus the blue centre (samples with both);
  either distance is ``sqrt(2)`` (:data:`ABSENT`, more than any two distributions inside the
  canvas can differ by) when no sample has the colour (or both colours), so a generator that
  draws no object ranks last rather than dropping out as NaN;
* ``well_formed``: the share of samples in which each colour is one object;
* ``mean_image_rmse``: the root mean square difference between the samples' mean image and the
  real images' mean image (in the [-1, 1] range).

Every function takes NumPy or JAX arrays and runs under ``jit``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from coordjax.gan.data import centre_range, radius

GRID = 8
DIRECTIONS = 32
ABSENT = math.sqrt(2.0)
"""The position distances when the samples have no object to place (in canvas widths)."""


class Objects(NamedTuple):
    """What :func:`find_objects` reads from N images (colour 0 blue, 1 red).

    Attributes:
      centres: (N, 2, 2) float32 (row, col) of each colour's pixels (0 where absent).
      present: (N, 2) bool: the colour has a pixel.
      single: (N, 2) bool: the colour is one object (see the module docstring).
    """

    centres: jnp.ndarray
    present: jnp.ndarray
    single: jnp.ndarray


class Reference(NamedTuple):
    """The real images' side of every comparison: their :class:`Objects` and mean image
    (H, W, 3)."""

    objects: Objects
    mean_image: jnp.ndarray


def object_areas(canvas: int) -> tuple[int, int]:
    """(circle, square) pixel counts of one object at ``canvas`` (as :mod:`~coordjax.gan.data`
    draws them)."""
    r = radius(canvas)
    d = np.arange(-r, r + 1)
    circle = int((d[:, None] ** 2 + d[None, :] ** 2 <= r * r).sum())
    return circle, (2 * r + 1) ** 2


def colour_masks(images) -> jnp.ndarray:
    """(N, H, W, 3) images in [-1, 1] -> (N, 2, H, W) bool: blue pixels, red pixels."""
    images = jnp.asarray(images, jnp.float32)
    r, g, b = images[..., 0], images[..., 1], images[..., 2]
    blue = (b > 0) & (r < 0) & (g < 0)
    red = (r > 0) & (b < 0) & (g < 0)
    return jnp.stack([blue, red], axis=1)


def find_objects(images) -> Objects:
    """The blue and red objects of (N, H, W, 3) images in [-1, 1]."""
    masks = colour_masks(images)
    canvas = masks.shape[-1]
    weights = masks.astype(jnp.float32)
    count = weights.sum(axis=(-2, -1))  # (N, 2)
    grid = jnp.arange(canvas, dtype=jnp.float32)
    along_rows, along_cols = grid.reshape(1, 1, canvas, 1), grid.reshape(1, 1, 1, canvas)
    safe = jnp.maximum(count, 1.0)
    rows = (weights * along_rows).sum(axis=(-2, -1)) / safe
    cols = (weights * along_cols).sum(axis=(-2, -1)) / safe
    centres = jnp.stack([rows, cols], axis=-1)
    distance2 = (along_rows - rows[..., None, None]) ** 2 + (
        along_cols - cols[..., None, None]
    ) ** 2
    farthest = jnp.sqrt(jnp.max(jnp.where(masks, distance2, 0.0), axis=(-2, -1)))
    circle, square = object_areas(canvas)
    single = (
        (count >= 0.5 * circle)
        & (count <= 1.5 * square)
        & (farthest <= radius(canvas) * math.sqrt(2.0) + 1.0)
    )
    return Objects(centres, count > 0, single)


def reference(images) -> Reference:
    """The real images' :class:`Reference` ((N, H, W, 3) in [-1, 1])."""
    images = jnp.asarray(images, jnp.float32)
    return Reference(find_objects(images), images.mean(axis=0))


def coverage(centres, present, canvas: int) -> jnp.ndarray:
    """Share of the 8 x 8 cells over the real centres' range that a present centre falls in,
    averaged over the colours: ``centres`` (N, 2, 2), ``present`` (N, 2) -> ()."""
    low, high = centre_range(canvas)
    centres = jnp.asarray(centres, jnp.float32)
    cell = jnp.floor((centres - (low - 0.5)) * GRID / (high - low)).astype(jnp.int32)
    inside = jnp.all((cell >= 0) & (cell < GRID), axis=-1) & jnp.asarray(present)  # (N, 2)
    flat = jnp.clip(cell[..., 0], 0, GRID - 1) * GRID + jnp.clip(cell[..., 1], 0, GRID - 1)
    colour = jnp.broadcast_to(jnp.arange(2), flat.shape)
    hits = jnp.zeros((2, GRID * GRID), bool).at[colour, flat].max(inside)
    return hits.astype(jnp.float32).mean()


def directions(count: int = DIRECTIONS) -> np.ndarray:
    """(count, 2) unit vectors at evenly spaced angles in [0, pi)."""
    angles = np.pi * np.arange(count) / count
    return np.stack([np.cos(angles), np.sin(angles)], axis=-1).astype(np.float32)


def sliced_wasserstein(a, a_valid, b, b_valid, count: int = DIRECTIONS) -> jnp.ndarray:
    """The sliced Wasserstein-1 distance between the valid points of ``a`` (N, 2) and ``b``
    (M, 2) (``a_valid`` (N,), ``b_valid`` (M,) bool), each point weighted equally within its
    set; NaN when either set has no valid point.

    Each direction's 1D distance is the integral of ``|F_a - F_b|`` over the projections, exact
    for point sets (sort the pooled projections, accumulate the signed weights).
    """
    a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    a_valid, b_valid = jnp.asarray(a_valid), jnp.asarray(b_valid)
    na = a_valid.astype(jnp.float32).sum()
    nb = b_valid.astype(jnp.float32).sum()
    weights = jnp.concatenate([
        a_valid.astype(jnp.float32) / jnp.maximum(na, 1.0),
        -b_valid.astype(jnp.float32) / jnp.maximum(nb, 1.0),
    ])  # fmt: skip
    points = jnp.concatenate([jnp.where(a_valid[:, None], a, 0.0),
                              jnp.where(b_valid[:, None], b, 0.0)])  # fmt: skip
    projected = points @ jnp.asarray(directions(count)).T  # (N + M, K)
    order = jnp.argsort(projected, axis=0)
    values = jnp.take_along_axis(projected, order, axis=0)
    cdf_gap = jnp.cumsum(weights[order], axis=0)[:-1]
    per_direction = jnp.sum(jnp.abs(cdf_gap) * jnp.diff(values, axis=0), axis=0)
    return jnp.where((na > 0) & (nb > 0), per_direction.mean(), jnp.nan)


def absent_as_worst(distance) -> jnp.ndarray:
    """A distance, :data:`ABSENT` where it is NaN (no point to place)."""
    return jnp.where(jnp.isnan(distance), ABSENT, distance)


def summary(samples, real: Reference) -> dict[str, jnp.ndarray]:
    """The five metrics of (N, H, W, 3) ``samples`` in [-1, 1] against ``real``: scalars."""
    samples = jnp.asarray(samples, jnp.float32)
    canvas = samples.shape[1]
    mine = find_objects(samples)
    theirs = real.objects
    centre = [
        absent_as_worst(sliced_wasserstein(mine.centres[:, c] / canvas, mine.present[:, c],
                                           theirs.centres[:, c] / canvas, theirs.present[:, c]))
        for c in range(2)
    ]  # fmt: skip
    both, both_real = mine.present.all(axis=1), theirs.present.all(axis=1)
    relative = sliced_wasserstein(
        (mine.centres[:, 1] - mine.centres[:, 0]) / canvas, both,
        (theirs.centres[:, 1] - theirs.centres[:, 0]) / canvas, both_real,
    )  # fmt: skip
    mean_gap = samples.mean(axis=0) - real.mean_image
    return {
        "coverage": coverage(mine.centres, mine.present, canvas),
        "centre_sw": (centre[0] + centre[1]) / 2,
        "relative_sw": absent_as_worst(relative),
        "well_formed": mine.single.all(axis=1).astype(jnp.float32).mean(),
        "mean_image_rmse": jnp.sqrt(jnp.mean(jnp.square(mean_gap))),
    }


LARGER_IS_BETTER = {
    "coverage": True,
    "centre_sw": False,
    "relative_sw": False,
    "well_formed": True,
    "mean_image_rmse": False,
}
