"""Hand-set weights: a CoordConv regressor that is exact with zero training.

A published critique of the paper (a 2018 blog post) points out that a conv net can be *built*
to map a one-hot pixel to its coordinates. With coordinate channels it takes one line of algebra,
which is the paper's point: CoordConv makes this map representable by a tiny linear network.

For the 906-parameter :class:`coordjax.models.CoordConvRegressor` (linear 1x1/3x3 convs, then a
global max over pixels), let the output channels at each pixel be::

    out_x = K·onehot + (63/128)·(xx + 1) − K        out_y = the same with yy

where ``xx = 2·col/63 − 1`` and ``yy = 2·row/63 − 1`` are the coordinate channels. At the one-hot
pixel ``(row=y, col=x)`` this is ``x/64`` (resp. ``y/64``), the regression target; everywhere
else it is at most ``63/64 − K < 0``, so the max over pixels picks the one-hot pixel exactly.
The layers before the last only carry ``[onehot, xx, yy]`` through (identity on three channels,
centre tap of the 3x3 conv), so every one of the 3136 examples is regressed exactly.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def coordconv_regressor_params(margin: float = 2.0) -> dict:
    """Parameters for ``models.build("coordconv_regressor")`` that regress ``[x/64, y/64]`` exactly.

    Args:
      margin: ``K`` above, > 63/64: how far below the target every non-one-hot pixel sits.

    Returns:
      The ``params`` collection (906 values), to use as ``model.apply({"params": p}, onehots,
      train=False)``.
    """
    if not margin > 63 / 64:
        raise ValueError(f"margin must be > 63/64 so the one-hot pixel wins the max; got {margin}")
    carry = np.zeros((3, 8), np.float32)  # [onehot, xx, yy] -> the first three channels
    carry[[0, 1, 2], [0, 1, 2]] = 1.0
    identity = np.zeros((8, 8), np.float32)
    identity[[0, 1, 2], [0, 1, 2]] = 1.0
    centre_identity = np.zeros((3, 3, 8, 8), np.float32)
    centre_identity[1, 1] = identity
    readout = np.zeros((3, 3, 8, 2), np.float32)
    readout[1, 1, 0, :] = margin  # K·onehot, both outputs
    readout[1, 1, 1, 0] = 63 / 128  # x from the column channel
    readout[1, 1, 2, 1] = 63 / 128  # y from the row channel
    readout_bias = np.full((2,), 63 / 128 - margin, np.float32)

    def layer(kernel, bias=None):
        bias = np.zeros(kernel.shape[-1], np.float32) if bias is None else bias
        return {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)}

    return {
        "coord_1x1": layer(carry),
        "conv1x1_1": layer(identity),
        "conv1x1_2": layer(identity),
        "conv_3": layer(centre_identity),
        "conv_4": layer(readout, readout_bias),
    }
