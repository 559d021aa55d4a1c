"""A drop-in ``lax.conv_general_dilated`` whose weight gradient is a matmul.

XLA:CPU runs the weight-gradient convolution of a conv ~30x slower inside a loop (``lax.scan``,
i.e. every training loop here) than outside it: 12.8 s instead of 0.37 s for two 3x3, 8-channel
steps on a (256, 64, 64, 8) batch (jax 0.10.2, measured while building this module). The input
gradient and the forward pass are unaffected. This function computes the same values with the
weight gradient written as ``patches(x)ᵀ · g``: an im2col (``conv_general_dilated_patches``)
followed by one contraction, which is fast in loops and, under ``vmap``, becomes a batched matmul
instead of a grouped convolution. Forward pass and input gradient are XLA's own. (Transposed
convolutions suffer less, and the same trick on their dilated input measured slower, so the
deconv painter keeps ``nn.ConvTranspose``.)

Only the common case takes the fast path: channels-last input and output, ``(*window, C_in,
C_out)`` kernels, no dilation, one feature group. Anything else is passed to
``lax.conv_general_dilated`` unchanged. Use it in flax as ``nn.Conv(...,
conv_general_dilated=coordjax.conv.conv_general_dilated)``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax


def _is_channels_last(dimension_numbers, ndim: int) -> bool:
    if dimension_numbers is None:
        return False
    dn = lax.conv_dimension_numbers((1,) * ndim, (1,) * ndim, dimension_numbers)
    spatial = tuple(range(1, ndim - 1))
    rhs_spatial = tuple(range(ndim - 2))
    return (
        dn.lhs_spec == (0, ndim - 1, *spatial)
        and dn.out_spec == (0, ndim - 1, *spatial)
        and dn.rhs_spec == (ndim - 1, ndim - 2, *rhs_spatial)
    )


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding,
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision=None,
    preferred_element_type=None,
) -> jax.Array:
    """Same signature and values as ``lax.conv_general_dilated``; see the module docstring."""
    plain = (
        feature_group_count == 1
        and batch_group_count == 1
        and all(d == 1 for d in (lhs_dilation or ()))
        and all(d == 1 for d in (rhs_dilation or ()))
        and preferred_element_type is None
        and _is_channels_last(dimension_numbers, lhs.ndim)
    )
    if not plain:
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, batch_group_count, precision, preferred_element_type,
        )  # fmt: skip
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:-1], rhs.shape[:-2], window_strides, padding)
    padding = tuple(tuple(int(p) for p in pair) for pair in padding)
    return _conv(lhs, rhs, tuple(window_strides), padding, precision)


def _dimension_numbers(ndim: int):
    spatial = "".join("DHW"[-(ndim - 2) :]) if ndim <= 5 else None
    if spatial is None:
        raise ValueError(f"at most 3 spatial dimensions are supported; got {ndim - 2}")
    return (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C")


def _plain_conv(x, w, strides, padding, precision):
    return lax.conv_general_dilated(
        x, w, strides, padding, dimension_numbers=_dimension_numbers(x.ndim), precision=precision
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x, w, strides, padding, precision):
    return _plain_conv(x, w, strides, padding, precision)


def _conv_fwd(x, w, strides, padding, precision):
    return _plain_conv(x, w, strides, padding, precision), (x, w)


def _conv_bwd(strides, padding, precision, residuals, g):
    x, w = residuals
    _, input_vjp = jax.vjp(lambda x: _plain_conv(x, w, strides, padding, precision), x)
    (dx,) = input_vjp(g)
    window, c_in, c_out = w.shape[:-2], w.shape[-2], w.shape[-1]
    patches = lax.conv_general_dilated_patches(
        x, window, strides, padding, dimension_numbers=_dimension_numbers(x.ndim),
        precision=precision,
    )  # fmt: skip
    # patches: (B, *out, C_in·prod(window)) with features ordered (C_in, *window).
    dw = jnp.einsum(
        "nk,nf->kf", patches.reshape(-1, patches.shape[-1]), g.reshape(-1, c_out),
        precision=precision,
    )  # fmt: skip
    dw = jnp.moveaxis(dw.reshape(c_in, *window, c_out), 0, -2)
    return dx, dw.astype(w.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)
