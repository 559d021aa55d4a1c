"""How convolutions are lowered: XLA convolutions (``"lax"``), patches + ``dot_general``
(``"matmul"``), or, for transposed convolutions, explicit zero insertion (``"zero_insertion"``).

One module owns this choice for the library's layers (:mod:`coordjax.linen`,
:mod:`coordjax.nnx`) and for the model zoo (:mod:`coordjax.models`). The pure functions
:func:`conv` and :func:`conv_transpose` compute exactly what ``flax.linen.Conv`` and
``flax.linen.ConvTranspose`` compute (without bias), channels-last, with ``(*window, C_in,
C_out)`` kernels:

``"lax"``
  ``lax.conv_general_dilated`` / ``lax.conv_transpose``, the calls Flax makes. Fast with cuDNN
  for plain convolutions; on XLA:CPU transposed convolutions and conv weight gradients are slow
  (worse inside ``lax.scan``), and under ``vmap`` over models (a sweep's model axis) every
  convolution becomes a grouped convolution (``feature_group_count = M``).
``"matmul"``
  A convolution is a *patches* gather (static strided slices of the padded input, stacked) and
  one ``dot_general`` contracting ``(window, C_in)``; a stride-1 1x1 convolution is a plain
  contraction over channels. A stride-``s`` transposed convolution is computed by the sub-pixel
  decomposition: output position ``o = s*q + r`` (phase ``r``) only sees the kernel taps
  ``t = t0(r) (mod s)``, so each of the ``s**d`` phases is a small stride-1 convolution of the
  *undilated* input. Usually all phases share one patches gather (the union of their windows)
  and one ``dot_general`` into ``s**d * C_out`` channels (the kernel taps scattered into a
  combined kernel by a constant 0/1 selection, exact), followed by depth-to-space and a crop;
  with stride 2 and a 2x2 kernel that is a single matmul. Where the union window is larger than
  each phase's own (a 4x4 kernel at stride 2: 3x3 against 2x2, so 2.25x the FLOPs), every phase
  gets its own window and the phases are the batch axis of one ``dot_general`` (for outputs of
  at least 16 channels; a thin matmul is bound by the gather instead).
  Where the phases' windows differ (a 3x3 kernel at stride 2: 2x2, 2x1, 1x2, 1x1 against a
  shared 2x2), each phase gets its own patches and matmul, ``prod(kernel)`` taps in all.
  A transposed conv into one channel (a painter's logits) with overlapping taps is computed
  the other way round: one ``dot_general`` of every input pixel with every tap, then the taps
  added into the output at their offsets (an overlap-add: pads with interior padding ``s - 1``).
  :func:`conv_transpose_form` names the form a transposed convolution takes, from its shapes;
  ``conv_transpose(..., form=...)`` computes it with any of :data:`CONV_TRANSPOSE_FORMS`.
  There are no convolution ops in the forward pass or in any gradient: the transpose of a slice
  is a pad and the transpose of a ``dot_general`` is a ``dot_general``, so under ``vmap``
  everything becomes batched matmuls, never ``feature_group_count``. Supported: any strides,
  ``'SAME'``/``'VALID'``/explicit padding,
  kernel dilation, even and odd and non-square kernels, any number of spatial dims.
``"zero_insertion"``
  A transposed convolution inserts the ``s - 1`` zeros between input samples itself
  (``lax.pad`` with interior padding, which also applies the edge pads) and runs an ordinary
  stride-1 ``lax.conv_general_dilated`` without ``lhs_dilation``: the correlation
  ``lax.conv_transpose`` computes (kernel flipped only with ``transpose_kernel=True``, as for a
  Conv's gradient). Equinox replaced ``lhs_dilation`` this way and reported a ~30x faster
  ConvTranspose gradient on GPU (patrick-kidger/equinox#1259): the input gradient becomes a
  stride-1 convolution and a strided slice. Plain convolutions are ``"lax"`` under this
  lowering; both stay XLA convolutions, so grouped under a model ``vmap``.

Default rule (:func:`default_lowering`; ``"auto"`` everywhere here): a fixed table of the
platform, whether the convolution is transposed and whether its weights carry a model axis. It
never depends on a timing taken at run time, so the same command computes the same numbers;
the sweep engine resolves it once for its vmapped model axis (:func:`resolve_lowering`: one
value per platform for both kinds of convolution), records it in the workdir's
``config.json`` and reuses it on resume.

Evidence for CPU (``python benchmarks/conv_lowering.py --quick``: one training step = forward,
all gradients, Adam; ``jit(lax.scan)`` of 2 steps, one model, batch 16, both lowerings
interleaved in one process; 2-core CPU shared with other jobs, load average ~15, so only the
ratios mean anything; jax 0.10.2, 2026-11-29), matmul / lax steps per second:
deconv painter fs 2 c 1: 7.1x; fs 2 c 2: 18.6x; fs 4 c 1: 10.3x; fs 4 c 2: 10.4x;
CoordConv classifier: 1.3x (its only conv is the first 1x1 CoordConv); conv regressor
(quadrant, strided 3x3/5x5 convs): 15.1x. Compile times were similar (matmul 0.9-1.6x lax's).
GPU and TPU: :func:`default_lowering` (public records, not yet our measurements;
``benchmarks/device_check.py`` measures them).
"""

from __future__ import annotations

import itertools
import math
import string
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from coordjax._checks import check_choice, is_int, per_dim, positive_int

__all__ = [
    "LOWERINGS",
    "Lowering",
    "CONV_TRANSPOSE_FORMS",
    "conv",
    "conv_transpose",
    "conv_transpose_form",
    "default_lowering",
    "resolve_lowering",
]

Lowering = Literal["auto", "lax", "matmul", "zero_insertion"]
LOWERINGS = ("auto", "lax", "matmul", "zero_insertion")

_GPU_PLATFORMS = ("gpu", "cuda", "rocm")


def default_lowering(platform: str, *, transposed: bool, vmapped: bool) -> str:
    """The lowering ``"auto"`` takes for one convolution: a fixed table, never a timing.

    ============  ==========================  ============================
    platform      conv: unvmapped / vmapped   transposed: unvmapped / vmapped
    ============  ==========================  ============================
    CPU           matmul / matmul             matmul / matmul
    GPU           lax / matmul                matmul / matmul
    TPU, other    lax / lax                   lax / lax
    ============  ==========================  ============================

    CPU: the matmul lowering everywhere (measured, module docstring; the rule since that
    lowering was introduced, so a CPU command computes the same numbers as before).

    GPU (``"gpu"``, ``"cuda"``, ``"rocm"``): the matmul forms (sub-pixel phases, patches,
    batched ``dot_general``) for transposed convolutions and for convolutions whose weights
    carry the model axis; cuDNN convolutions (``"lax"``) only for a plain, unvmapped
    convolution. Public record, not yet our measurement: a 1-D ``conv_transpose`` ran ~200x
    slower than the plain conv on an RTX 4090 (jax-ml/jax#23783, open); a vmapped
    ConvTranspose gradient ran 32x slower than PyTorch (jax-ml/jax#31662, openxla/xla#34273:
    "XLA chooses a suboptimal convolution"); vmapped convolutions become grouped convolutions
    (``feature_group_count = M``, weight gradients ``batch_group_count = M``) whose backward
    pass is as slow as a dense one (jax-ml/jax#13800) and which ``lax.map`` beat ~3x
    (jax-ml/jax#26568). ``dot_general`` vmaps to batched matmuls instead.

    TPU and any other platform: ``"lax"`` everywhere, the rule before this table, and
    **unmeasured**. Every slow path on record above is a cuDNN one and TPUs have no cuDNN:
    XLA:TPU compiles convolutions itself, grouped and input-dilated ones included, onto the
    MXU, the unit a ``dot_general`` runs on, and f32 ``Precision.DEFAULT`` runs both as bf16
    passes there (jax-ml/jax#18934), so no source gives either form an edge. Without a
    measurement the rule keeps XLA's convolutions; ``benchmarks/device_check.py`` run on a
    TPU would decide (reference/sweep_gpu_anchors.md has no TPU numbers).

    Args:
      platform: a JAX platform name (``jax.default_backend()``, ``device.platform``), any case.
      transposed: whether the convolution is a transposed one (:func:`conv_transpose`).
      vmapped: whether its weights carry a model axis (a ``vmap`` over models, as in the sweep
        engine), which turns an XLA convolution into a grouped one.

    Returns:
      ``"lax"`` or ``"matmul"``.

    Raises:
      TypeError: ``platform`` is not a string.
    """
    if not isinstance(platform, str):
        raise TypeError(f"platform must be a platform name (str); got {platform!r}")
    platform = platform.lower()
    if platform == "cpu":
        return "matmul"
    if platform in _GPU_PLATFORMS:
        return "matmul" if transposed or vmapped else "lax"
    return "lax"


def resolve_lowering(
    lowering: str = "auto",
    platform: str | None = None,
    *,
    transposed: bool | None = None,
    vmapped: bool = True,
) -> str:
    """The concrete lowering (``"lax"``, ``"matmul"`` or ``"zero_insertion"``) for a request.

    Args:
      lowering: one of :data:`LOWERINGS`; anything but ``"auto"`` is returned unchanged.
      platform: ``"cpu"``, ``"gpu"``/``"cuda"``/``"rocm"``, ``"tpu"``, ...; default
        ``jax.default_backend()``.
      transposed: the kind of convolution (:func:`default_lowering`); ``None`` (default): the
        one lowering for every kind, as the sweep engine passes one value to a whole model.
      vmapped: whether the weights carry a model axis; default True (the sweep engine's case).
        :func:`conv` and :func:`conv_transpose` resolve ``"auto"`` with ``vmapped=False``:
        they cannot see a ``vmap`` around them, so a model ``vmap`` written by hand should pass
        ``lowering=resolve_lowering("auto")`` to its layers.

    Returns:
      :func:`default_lowering` for ``"auto"``; with ``transposed=None`` the value both kinds
      share (they do for ``vmapped=True`` on every platform).

    Raises:
      ValueError: ``lowering`` is not one of :data:`LOWERINGS`, or ``transposed=None`` where
        the rule differs between plain and transposed convolutions.
    """
    check_choice("lowering", lowering, LOWERINGS)
    if lowering != "auto":
        return lowering
    platform = jax.default_backend() if platform is None else str(platform)
    if transposed is not None:
        return default_lowering(platform, transposed=transposed, vmapped=vmapped)
    plain, transposed_ = (
        default_lowering(platform, transposed=t, vmapped=vmapped) for t in (False, True)
    )
    if plain != transposed_:
        raise ValueError(
            f"lowering='auto' on platform {platform!r} with vmapped={vmapped} is {plain!r} for "
            f"convolutions and {transposed_!r} for transposed ones: pass transposed=True or False"
        )
    return plain


# --------------------------------------------------------------------------------------------
# Argument handling


def _explicit_padding(
    padding, n: int, modes=("SAME", "VALID")
) -> tuple[tuple[int, int], ...] | str:
    """Flax's ``canonicalize_padding``: one of ``modes`` (upper case) or ``n`` ``(lo, hi)``
    pairs."""
    allowed = ", ".join(repr(m) for m in modes)
    if isinstance(padding, str):
        if padding.upper() in modes:
            return padding.upper()
        raise ValueError(
            f"padding must be {allowed}, an int, or {n} ints / (lo, hi) pairs; got "
            f"{padding!r}"
            + ("" if "CIRCULAR" in modes else " (Flax's other modes need the 'lax' lowering)")
        )
    if is_int(padding):
        return ((int(padding), int(padding)),) * n
    try:
        pairs = [(p, p) if is_int(p) else tuple(p) for p in padding]
    except TypeError:
        pairs = []
    if len(pairs) != n or not all(len(p) == 2 and all(is_int(v) for v in p) for p in pairs):
        raise ValueError(
            f"padding must be {allowed}, an int, or {n} ints / (lo, hi) pairs (one per "
            f"spatial dim); got {padding!r}"
        )
    return tuple((int(lo), int(hi)) for lo, hi in pairs)


# Padding modes of flax's Conv / ConvTranspose, computed by the "lax" lowering only.
_LAX_CONV_PADDINGS = ("SAME", "VALID", "SAME_LOWER", "CIRCULAR", "REFLECT", "CAUSAL")
_LAX_CONV_TRANSPOSE_PADDINGS = ("SAME", "VALID", "CIRCULAR")


def _flatten_batch(x, kernel, name: str):
    """``(*batch, *spatial, C)`` -> ``(B, *spatial, C)`` and the batch shape."""
    n = kernel.ndim - 2
    if n < 1:
        raise ValueError(
            f"kernel must have shape (*window, C_in, C_out) with at least one spatial dim; "
            f"got {tuple(kernel.shape)}"
        )
    if x.ndim < n + 1:
        raise ValueError(
            f"{name}: x must have shape (*batch, *spatial, C) with {n} spatial dim(s); "
            f"got {tuple(x.shape)}"
        )
    batch = x.shape[: x.ndim - n - 1]
    return x.reshape((math.prod(batch), *x.shape[x.ndim - n - 1 :])), batch


def _channels_last(n: int):
    """Channels-last dimension numbers for ``n`` spatial dims (any ``n``)."""
    spatial = "".join(c for c in string.ascii_uppercase if c not in "NCIO")[:n]
    return (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C")


# --------------------------------------------------------------------------------------------
# Public functions


def conv(
    x: jax.Array,
    kernel: jax.Array,
    *,
    strides: int | Sequence[int] = 1,
    padding="SAME",
    kernel_dilation: int | Sequence[int] = 1,
    input_dilation: int | Sequence[int] = 1,
    feature_group_count: int = 1,
    lowering: str = "auto",
    precision=None,
) -> jax.Array:
    """``flax.linen.Conv`` without bias: a channels-last convolution, lowered as requested.

    Args:
      x: ``(*batch, *spatial, C_in)`` (``batch`` may be empty).
      kernel: ``(*window, C_in / feature_group_count, C_out)``; its rank fixes the number of
        spatial dims.
      strides, kernel_dilation, input_dilation: ``None`` (1), an int, or one per spatial dim.
      padding: ``'SAME'``, ``'VALID'``, an int, or one int / ``(lo, hi)`` pair per spatial dim
        (Flax's meaning; negative pads crop); the ``"lax"`` lowering also takes Flax's
        ``'SAME_LOWER'``, ``'CIRCULAR'``, ``'REFLECT'`` and (1-D) ``'CAUSAL'``.
      feature_group_count: as in ``flax.linen.Conv``.
      lowering: one of :data:`LOWERINGS` (module docstring); ``"auto"`` resolves with
        ``vmapped=False`` (:func:`resolve_lowering`); ``"zero_insertion"`` is ``"lax"`` here.
        ``input_dilation``, ``feature_group_count`` and the padding modes other than
        ``'SAME'``/``'VALID'`` need ``"lax"``.
      precision: passed to the convolution / ``dot_general``.

    Returns:
      ``(*batch, *spatial_out, C_out)`` with ``spatial_out`` as in ``lax.conv_general_dilated``.

    Raises:
      ValueError: a bad argument (named), channels that do not match the kernel, an empty
        output, or an option the matmul lowering does not compute.
    """
    n = kernel.ndim - 2
    x2, batch = _flatten_batch(x, kernel, "conv")
    strides = per_dim("strides", strides, n)
    dilation = per_dim("kernel_dilation", kernel_dilation, n)
    input_dilation = per_dim("input_dilation", input_dilation, n)
    groups = positive_int("feature_group_count", feature_group_count)
    matmul = resolve_lowering(lowering, transposed=False, vmapped=False) == "matmul"
    pads = _explicit_padding(padding, n, ("SAME", "VALID") if matmul else _LAX_CONV_PADDINGS)
    if x2.shape[-1] != groups * kernel.shape[-2]:
        raise ValueError(
            f"x has {x2.shape[-1]} channels but the kernel {tuple(kernel.shape)} with "
            f"feature_group_count={groups} expects {groups * kernel.shape[-2]} (kernel is "
            "(*window, C_in / feature_group_count, C_out))"
        )
    if not matmul:
        if isinstance(pads, str) and input_dilation != (1,) * n:
            raise ValueError(
                f"padding {pads!r} is not defined for input_dilation={input_dilation!r}; give "
                "explicit padding ((lo, hi) per spatial dim), or use ConvTranspose / "
                "CoordConvTranspose for a transposed convolution"
            )
        y = _lax_conv(x2, kernel, strides, pads, dilation, input_dilation, groups, precision)
        return y.reshape(*batch, *y.shape[1:])
    unsupported = [
        f"{name}={value!r}"
        for name, value, default in (
            ("input_dilation", input_dilation, (1,) * n),
            ("feature_group_count", groups, 1),
        )
        if value != default
    ]
    if unsupported:
        raise ValueError(
            f"the matmul lowering does not compute {', '.join(unsupported)}; use lowering='lax'"
        )
    if isinstance(pads, str):
        window = tuple((k - 1) * d + 1 for k, d in zip(kernel.shape[:n], dilation, strict=True))
        pads = tuple(lax.padtype_to_pads(x2.shape[1:-1], window, strides, pads))
    pads = tuple((int(lo), int(hi)) for lo, hi in pads)
    y = _conv_matmul(x2, kernel, strides, pads, dilation, precision)
    return y.reshape(*batch, *y.shape[1:])


def _lax_conv(x, kernel, strides, pads, dilation, input_dilation, groups, precision):
    """``flax.linen.Conv``'s own computation: Flax's padding modes, then one XLA convolution."""
    n = kernel.ndim - 2
    if pads in ("CIRCULAR", "REFLECT"):
        window = tuple((k - 1) * d + 1 for k, d in zip(kernel.shape[:n], dilation, strict=True))
        edges = [(0, 0)] + [((k - 1) // 2, k // 2) for k in window] + [(0, 0)]
        x = jnp.pad(x, edges, mode={"CIRCULAR": "wrap", "REFLECT": "reflect"}[pads])
        pads = "VALID"
    elif pads == "CAUSAL":
        if n != 1:
            raise ValueError(f"padding='CAUSAL' needs one spatial dim; got {n}")
        x = jnp.pad(x, [(0, 0), (dilation[0] * (kernel.shape[0] - 1), 0), (0, 0)])
        pads = "VALID"
    return lax.conv_general_dilated(
        x, kernel, strides, pads, lhs_dilation=input_dilation, rhs_dilation=dilation,
        dimension_numbers=_channels_last(n), feature_group_count=groups, precision=precision,
    )  # fmt: skip


def conv_transpose(
    x: jax.Array,
    kernel: jax.Array,
    *,
    strides: int | Sequence[int] = 1,
    padding="SAME",
    kernel_dilation: int | Sequence[int] = 1,
    transpose_kernel: bool = False,
    lowering: str = "auto",
    precision=None,
    preferred_element_type=None,
    form: str | None = None,
) -> jax.Array:
    """``flax.linen.ConvTranspose`` without bias (``lax.conv_transpose`` semantics).

    The input is dilated by ``strides`` (``s - 1`` zeros between samples) and correlated at
    stride 1 with the kernel (not flipped, unless ``transpose_kernel``); ``'SAME'``/``'VALID'``
    choose the pads of the dilated input as ``lax.conv_transpose`` does (``'SAME'`` gives
    ``n * s`` outputs), explicit pads are the dilated input's pads.

    Args:
      x: ``(*batch, *spatial, C_in)``.
      kernel: ``(*window, C_in, C_out)``, or ``(*window, C_out, C_in)`` with
        ``transpose_kernel=True`` (then flipped spatially, as the gradient of a ``Conv``).
      strides, kernel_dilation, precision: as in Flax.
      padding: ``'SAME'``, ``'VALID'``, an int, or one int / ``(lo, hi)`` pair per spatial
        dim; the ``"lax"`` lowering also takes Flax's ``'CIRCULAR'``.
      lowering: ``"auto"`` (resolved with ``vmapped=False``, :func:`resolve_lowering`),
        ``"lax"``, ``"matmul"`` (the sub-pixel decomposition) or ``"zero_insertion"``.
      preferred_element_type: as in ``lax.conv_transpose``; the ``"lax"`` lowering only.
      form: one of :data:`CONV_TRANSPOSE_FORMS` to compute it with, overriding ``lowering``;
        default (``None``): :func:`conv_transpose_form`'s choice. Every form computes the same
        values; ``"stride_one"`` needs all strides 1.

    Returns:
      ``(*batch, *spatial_out, C_out)``.

    Raises:
      ValueError: a bad argument (named), channels that do not match the kernel, an empty
        output, or an unknown ``form``.
    """
    n = kernel.ndim - 2
    x2, batch = _flatten_batch(x, kernel, "conv_transpose")
    strides = per_dim("strides", strides, n)
    dilation = per_dim("kernel_dilation", kernel_dilation, n)
    if form is not None:
        check_choice("form", form, CONV_TRANSPOSE_FORMS)
    lax_only = form == "lax" or (
        form is None and resolve_lowering(lowering, transposed=True, vmapped=False) == "lax"
    )
    pads = _explicit_padding(padding, n, _LAX_CONV_TRANSPOSE_PADDINGS if lax_only else
                             ("SAME", "VALID"))  # fmt: skip
    c_in = kernel.shape[-1] if transpose_kernel else kernel.shape[-2]
    if x2.shape[-1] != c_in:
        raise ValueError(
            f"x has {x2.shape[-1]} channels but the kernel {tuple(kernel.shape)} expects {c_in}"
        )
    if preferred_element_type is not None and not lax_only:
        raise ValueError("preferred_element_type needs the 'lax' lowering (or form='lax')")
    if form is None:
        form = _transpose_form(x2.shape[1:-1], kernel.shape, strides, pads, dilation,
                               transpose_kernel, lowering)  # fmt: skip
    y = _CONV_TRANSPOSE_FORMS[form](x2, kernel, strides, pads, dilation, transpose_kernel,
                                    precision, preferred_element_type)  # fmt: skip
    return y.reshape(*batch, *y.shape[1:])


def conv_transpose_form(
    x_shape: Sequence[int],
    kernel_shape: Sequence[int],
    *,
    strides: int | Sequence[int] = 1,
    padding="SAME",
    kernel_dilation: int | Sequence[int] = 1,
    transpose_kernel: bool = False,
    lowering: str = "auto",
) -> str:
    """The form :func:`conv_transpose` computes a transposed convolution with, from shapes only.

    ``lowering`` (resolved with ``vmapped=False``) ``"lax"`` and ``"zero_insertion"`` are
    forms of their own. Under ``"matmul"``, with ``C_out`` the output channels and the kernel
    window taken after dilation:

    ``"stride_one"``
      all strides 1: an ordinary patches + ``dot_general`` convolution.
    ``"overlap_add"``
      ``C_out`` at most 1 (a painter's logits) and taps that overlap (a window side larger
      than its stride): one ``dot_general`` of every input pixel with every tap, then the taps
      added into the output at their offsets.
    ``"per_phase_separate"``
      ``C_out >= 16`` and phases with unequal windows (a 3x3 kernel at stride 2) whose taps
      are fewer than the shared window's: every phase its own patches and matmul.
    ``"per_phase_batched"``
      ``C_out >= 16`` and per-phase windows smaller than the shared one (a 4x4 kernel at
      stride 2: 2x2 against 3x3): the phases are the batch axis of one ``dot_general``.
    ``"shared_window"``
      otherwise: every phase reads the union window; one matmul into ``s**d * C_out``
      channels.

    Args:
      x_shape: ``(*batch, *spatial, C_in)``.
      kernel_shape: ``(*window, C_in, C_out)`` (``(*window, C_out, C_in)`` with
        ``transpose_kernel=True``).
      strides, padding, kernel_dilation, transpose_kernel, lowering: as in
        :func:`conv_transpose`.

    Returns:
      One of :data:`CONV_TRANSPOSE_FORMS`.

    Raises:
      ValueError: a bad argument (named), or an empty output of a sub-pixel form.

    >>> conv_transpose_form((8, 16, 16, 32), (4, 4, 32, 1), strides=2, lowering="matmul")
    'overlap_add'
    >>> conv_transpose_form((8, 16, 16, 32), (4, 4, 32, 64), strides=2, lowering="matmul")
    'per_phase_batched'
    """
    kernel_shape = tuple(kernel_shape)
    n = len(kernel_shape) - 2
    if n < 1 or len(x_shape) < n + 1:
        raise ValueError(
            f"kernel_shape must be (*window, C_in, C_out) and x_shape (*batch, *spatial, C_in) "
            f"with as many spatial dims; got {kernel_shape} and {tuple(x_shape)}"
        )
    spatial = tuple(x_shape)[len(x_shape) - n - 1 : -1]
    strides = per_dim("strides", strides, n)
    dilation = per_dim("kernel_dilation", kernel_dilation, n)
    pads = _explicit_padding(padding, n)
    return _transpose_form(spatial, kernel_shape, strides, pads, dilation, transpose_kernel,
                           lowering)  # fmt: skip


# Per-phase windows gather more numbers (4 phases x 2x2 against one 3x3 window for a 4x4 kernel
# at stride 2) and multiply fewer zeros: worth it when the matmul is wide. Measured on a 2-core
# CPU (fwd + both gradients, batch 32, one process, interleaved): C_out 1 (a painter's logits):
# the shared window as fast or faster; C_out 32 and 96: per-phase 1.4-1.6x faster.
# Separate matmuls for phases of unequal windows (3x3 at stride 2), same setting: 96 -> 96
# channels at 16x16: 40 -> 35 ms; 192 -> 96 at 8x8: 16 -> 11 ms; 192 -> 192 at 4x4: 8.6 -> 4.8 ms;
# the fs 3 painter's training step 1.13x (c 1), 1.2x (c 2), 1.3x (c 3).
_MIN_C_OUT_PER_PHASE = 16

# A transposed conv into one channel (a painter's logits) is bound by the patches gather: each
# output block reads a whole window of C_in-channel inputs. Multiplying first (every input pixel
# by every tap: prod(kernel) * C_out numbers each) and adding the shifted taps into the output
# reads each input once. Measured on a 2-core CPU (fwd + both gradients, batch 32, 32x32 ->
# 64x64, one process, interleaved): 4x4 kernel, C_in 32: 16 -> 5 ms; C_in 96: 46 -> 7 ms; 3x3,
# C_in 96: 18 -> 5 ms; under a vmap over 8 models about 2x faster. C_out 2 about equal, C_out
# >= 4 slower (2.5-11x at C_out 8-32: each shifted add is a pass over the whole output); a 2x2
# kernel at stride 2 (no overlap) is already a single matmul.
_MAX_C_OUT_OVERLAP_ADD = 1


def _transpose_form(spatial, kernel_shape, strides, pads, dilation, transpose_kernel, lowering):
    """:func:`conv_transpose_form` on canonical arguments (per-dim tuples, checked pads)."""
    lowering = resolve_lowering(lowering, transposed=True, vmapped=False)
    if lowering != "matmul":
        return lowering
    n = len(kernel_shape) - 2
    c_out = kernel_shape[-2] if transpose_kernel else kernel_shape[-1]
    window = tuple((k - 1) * d + 1 for k, d in zip(kernel_shape[:n], dilation, strict=True))
    if all(s == 1 for s in strides):
        return "stride_one"
    if c_out <= _MAX_C_OUT_OVERLAP_ADD and any(k > s for k, s in zip(window, strides, strict=True)):
        return "overlap_add"
    if c_out < _MIN_C_OUT_PER_PHASE:
        return "shared_window"
    if isinstance(pads, str):
        pads = tuple(_transpose_padding(k, s, pads) for k, s in zip(window, strides, strict=True))
    plans = [
        _phase_plan(size, k, s, pad)
        for size, k, s, pad in zip(spatial, window, strides, pads, strict=True)
    ]
    union = math.prod(_union_window(phases)[1] for _, _, phases in plans)
    per_phase = math.prod(max(len(taps) for _, taps, _ in phases) for _, _, phases in plans)
    even = all(
        len(phases) == s and len({len(t) for _, t, _ in phases}) == 1
        for (_, _, phases), s in zip(plans, strides, strict=True)
    )
    if not even and math.prod(window) < math.prod(strides) * union:
        return "per_phase_separate"
    if per_phase < union:
        return "per_phase_batched"
    return "shared_window"


def _conv_transpose_zero_insertion(x, kernel, strides, pads, dilation, precision):
    """``lax.conv_transpose`` without ``lhs_dilation``: zeros inserted by ``lax.pad``.

    ``x`` is ``(B, *spatial, C_in)``, ``kernel`` ``(*window, C_in, C_out)`` (already flipped for
    ``transpose_kernel``); ``pads`` are ``'SAME'``/``'VALID'`` or the dilated input's explicit
    ``(lo, hi)`` pairs (negative ones crop). Returns ``(B, *spatial_out, C_out)``.
    """
    n = kernel.ndim - 2
    if isinstance(pads, str):
        window = tuple((k - 1) * d + 1 for k, d in zip(kernel.shape[:n], dilation, strict=True))
        pads = tuple(_transpose_padding(k, s, pads) for k, s in zip(window, strides, strict=True))
    config = [(0, 0, 0), *((lo, hi, s - 1) for (lo, hi), s in zip(pads, strides, strict=True))]
    dilated = lax.pad(x, jnp.zeros((), x.dtype), [*config, (0, 0, 0)])
    return lax.conv_general_dilated(
        dilated, kernel, (1,) * n, ((0, 0),) * n, rhs_dilation=dilation,
        dimension_numbers=_channels_last(n), precision=precision,
    )  # fmt: skip


def _transpose_padding(k: int, s: int, padding: str) -> tuple[int, int]:
    """``lax.conv_transpose``'s pads of the dilated input for ``'SAME'`` / ``'VALID'``."""
    if padding == "SAME":
        total = k + s - 2
        before = k - 1 if s > k - 1 else -(-total // 2)
    else:
        total = k + s - 2 + max(k - s, 0)
        before = k - 1
    return before, total - before


# --------------------------------------------------------------------------------------------
# The matmul lowering


def _pad(x, pads):
    """Zero-pads (or, for negative pads, crops) the spatial axes of ``(B, *spatial, C)``."""
    if all(lo == 0 and hi == 0 for lo, hi in pads):
        return x
    config = [(0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)]
    return lax.pad(x, jnp.zeros((), x.dtype), config)


def _patches(xp, window, strides, dilation, out):
    """``(B, *out, prod(window) * C)``: the receptive fields of a padded ``(B, *spatial, C)``.

    Feature order ``(*window, C)``, row-major, matching a ``(*window, C_in, C_out)`` kernel
    reshaped to ``(prod(window) * C_in, C_out)``. Static slices only (their transpose is a pad).
    """
    b, c = xp.shape[0], xp.shape[-1]
    if math.prod(window) == 1:
        if tuple(out) == xp.shape[1:-1] and all(s == 1 for s in strides):
            return xp
        stop = (b, *((o - 1) * s + 1 for o, s in zip(out, strides, strict=True)), c)
        return lax.slice(xp, (0,) * xp.ndim, stop, (1, *strides, 1))
    taps = []
    for tap in itertools.product(*(range(k) for k in window)):
        start = (0, *(t * d for t, d in zip(tap, dilation, strict=True)), 0)
        stop = (
            b,
            *(
                t * d + (o - 1) * s + 1
                for t, d, o, s in zip(tap, dilation, out, strides, strict=True)
            ),
            c,
        )
        taps.append(lax.slice(xp, start, stop, (1, *strides, 1)))
    return jnp.stack(taps, axis=-2).reshape(b, *out, len(taps) * c)


def _contract(patches, kernel2d, precision):
    """``(B, *out, F) x (F, C_out) -> (B, *out, C_out)``: one ``dot_general``."""
    return lax.dot_general(
        patches, kernel2d, (((patches.ndim - 1,), (0,)), ((), ())), precision=precision
    )


def _conv_matmul(x, kernel, strides, pads, dilation, precision):
    """Patches + one ``dot_general`` (a contraction over channels for stride-1 1x1 kernels)."""
    n = kernel.ndim - 2
    window = kernel.shape[:n]
    xp = _pad(x, pads)
    out = tuple(
        (size - (k - 1) * d - 1) // s + 1
        for size, k, d, s in zip(xp.shape[1:-1], window, dilation, strides, strict=True)
    )
    if any(o < 1 for o in out):
        raise ValueError(
            f"the convolution's output would be empty: padded input {xp.shape[1:-1]}, kernel "
            f"{window}, dilation {dilation}, strides {strides}"
        )
    patches = _patches(xp, window, strides, dilation, out)
    return _contract(patches, kernel.reshape(-1, kernel.shape[-1]), precision)


def _phase_plan(n_in: int, k: int, s: int, pad: tuple[int, int]):
    """One spatial dim of the sub-pixel decomposition of a stride-``s`` transposed conv.

    Output ``o = s*q + r`` reads dilated-input position ``o + t - pad_lo`` through tap ``t``; it is
    an input sample iff ``t = t0(r) = (pad_lo - r) mod s`` (mod ``s``), at input index
    ``q + m + d(r)`` for tap ``t0(r) + s*m``.

    Returns:
      ``(out_len, q_len, phases)``: the output length, ``ceil(out_len / s)`` output blocks, and
      per phase ``r`` with at least one tap ``(r, taps, d(r))``.
    """
    pad_lo, pad_hi = pad
    out_len = (n_in - 1) * s + 1 + pad_lo + pad_hi - k + 1
    if out_len < 1:
        raise ValueError(
            f"the transposed convolution's output would be empty: input {n_in}, kernel {k}, "
            f"stride {s}, padding {pad}"
        )
    phases = []
    for r in range(s):
        t0 = (pad_lo - r) % s
        taps = list(range(t0, k, s))
        if taps:
            phases.append((r, taps, (r + t0 - pad_lo) // s))
    return out_len, -(-out_len // s), phases


def _union_window(phases) -> tuple[int, int]:
    """``(lo, window)``: the union of the phases' input windows is ``lo..lo+window-1``."""
    lo = min(d for _, _, d in phases)
    hi = max(d + len(taps) - 1 for _, taps, d in phases)
    return lo, hi - lo + 1


def _union_selection(phases, s: int, k: int) -> np.ndarray:
    """The ``(window, s, k)`` 0/1 array placing tap ``t`` of phase ``r`` at index ``j`` of the
    phases' union window (:func:`_union_window`)."""
    lo, window = _union_window(phases)
    selection = np.zeros((window, s, k), np.float32)
    for r, taps, d in phases:
        for m, t in enumerate(taps):
            selection[d - lo + m, r, t] = 1.0
    return selection


def _phase_selection(phases, s: int, k: int, lo: int, union: int):
    """``(starts, window, selection)`` for separate per-phase windows of ``max(len(taps))``
    inputs: phase ``r`` reads ``starts[r]..starts[r]+window-1`` (inside the union, offsets from
    ``lo``); ``selection`` is ``(s, window, k)``. Phases without taps read zeros."""
    window = max(len(taps) for _, taps, _ in phases)
    starts = [0] * s
    selection = np.zeros((s, window, k), np.float32)
    for r, taps, d in phases:
        starts[r] = min(d - lo, union - window)
        for m, t in enumerate(taps):
            selection[r, d - lo - starts[r] + m, t] = 1.0
    return starts, window, selection


def _depth_to_space(y, q_shape, strides, out):
    """``(B, *q, *s, C)`` -> ``(B, *(q*s), C)`` cropped to ``out``."""
    n, b, c_out = len(q_shape), y.shape[0], y.shape[-1]
    order = [0] + [a for i in range(n) for a in (1 + i, 1 + n + i)] + [1 + 2 * n]
    y = jnp.transpose(y, order).reshape(b, *(q * s for q, s in zip(q_shape, strides, strict=True)),
                                        c_out)  # fmt: skip
    return y if out == y.shape[1:-1] else lax.slice(y, (0,) * y.ndim, (b, *out, c_out))


def _conv_transpose_overlap_add(x, kernel, strides, pads, precision):
    """Transposed conv as one ``dot_general`` then an overlap-add (col2im).

    ``z[b, *i, *t, c] = x[b, *i, :] . kernel[*t, :, c]``, and input ``i`` through tap ``t``
    lands on output ``o = s*i + pad_lo - t``: each tap's ``z`` is placed with interior padding
    ``s - 1`` (a ``pad``, whose transpose is a strided slice) and the taps are summed.
    """
    n = kernel.ndim - 2
    b, spatial = x.shape[0], x.shape[1:-1]
    window, (c_in, c_out) = kernel.shape[:n], kernel.shape[n:]
    taps_last = jnp.moveaxis(kernel.reshape(-1, c_in, c_out), 0, 1).reshape(c_in, -1)
    z = lax.dot_general(x, taps_last, (((x.ndim - 1,), (0,)), ((), ())), precision=precision)
    z = z.reshape(b, *spatial, *window, c_out)
    zero = jnp.zeros((), z.dtype)
    # the sum over taps, on the full grid u = s*i + (k - 1 - t) of length (n_in - 1) * s + k
    full = None
    for tap in itertools.product(*(range(k) for k in window)):
        where = [(k - 1 - t, t, s - 1) for k, t, s in zip(window, tap, strides, strict=True)]
        placed = lax.pad(z[(slice(None),) * (n + 1) + tap], zero, [(0, 0, 0), *where, (0, 0, 0)])
        full = placed if full is None else full + placed
    # output o is full-grid u = o + k - 1 - pad_lo: crop (or zero-pad) to the output
    crop = []
    for size, k, s, (lo, hi) in zip(spatial, window, strides, pads, strict=True):
        out_len, _, _ = _phase_plan(size, k, s, (lo, hi))  # (refuses an empty output)
        crop.append((lo - (k - 1), out_len - ((size - 1) * s + k) + (k - 1 - lo), 0))
    return lax.pad(full, zero, [(0, 0, 0), *crop, (0, 0, 0)])


def _phases_separately(xp, kernel, strides, plans, lows, precision):
    """``(B, *q, *strides, C_out)``: every phase its own patches (its own window) and matmul.

    For phases of unequal windows (an odd kernel at stride 2: 2x2, 2x1, 1x2 and 1x1 taps for a
    3x3 kernel) this multiplies no zeros: ``prod(kernel)`` taps in all. ``xp`` is the input
    padded so that its index 0 is input offset ``lows[i]`` of output block 0; phase ``r`` reads
    taps ``t0, t0 + s, ...`` (a strided slice of the kernel) over inputs ``q + d(r) + m``.
    """
    n = kernel.ndim - 2
    b, c_in, c_out = xp.shape[0], kernel.shape[-2], kernel.shape[-1]
    q_shape = tuple(q for _, q, _ in plans)
    by_phase = [
        {r: (taps, d - lo) for r, taps, d in phases}
        for (_, _, phases), lo in zip(plans, lows, strict=True)
    ]
    outputs = []
    for phase in itertools.product(*(range(s) for s in strides)):
        if any(r not in dim for r, dim in zip(phase, by_phase, strict=True)):
            outputs.append(jnp.zeros((b, *q_shape, c_out), xp.dtype))  # no tap reaches it
            continue
        taps, starts = zip(*(dim[r] for r, dim in zip(phase, by_phase, strict=True)), strict=True)
        window = tuple(len(t) for t in taps)
        stop = (
            b,
            *(st + q + w - 1 for st, q, w in zip(starts, q_shape, window, strict=True)),
            c_in,
        )
        patches = _patches(lax.slice(xp, (0, *starts, 0), stop), window, (1,) * n, (1,) * n,
                           q_shape)  # fmt: skip
        phase_kernel = kernel[
            tuple(slice(t[0], None, s) for t, s in zip(taps, strides, strict=True))
        ]
        outputs.append(_contract(patches, phase_kernel.reshape(-1, c_out), precision))
    return jnp.stack(outputs, axis=-2).reshape(b, *q_shape, *strides, c_out)


def _subpixel_setup(x, kernel, strides, pads):
    """The sub-pixel decomposition's plan: per dim ``(out_len, q_len, phases)``, the phases'
    union windows ``(lo, window)``, the ``q`` and output shapes, and the input padded (or
    cropped) so that index 0 is input offset ``lo`` of output block 0."""
    n = kernel.ndim - 2
    plans = [
        _phase_plan(size, k, s, pad)
        for size, k, s, pad in zip(x.shape[1:-1], kernel.shape[:n], strides, pads, strict=True)
    ]
    unions = [_union_window(phases) for _, _, phases in plans]
    q_shape = tuple(q for _, q, _ in plans)
    out = tuple(out_len for out_len, _, _ in plans)
    # Input offsets lo..lo+window-1 for output blocks 0..q_len-1: pad (or crop) accordingly.
    xp = _pad(
        x,
        [
            (-lo, q - 1 + lo + window - 1 - (size - 1))
            for size, q, (lo, window) in zip(x.shape[1:-1], q_shape, unions, strict=True)
        ],
    )
    return plans, unions, q_shape, out, xp


def _phase_specs(n: int):
    """Einsum letters: ``(taps, windows, phases, C_in, C_out)`` for ``n`` spatial dims."""
    letters = iter(string.ascii_lowercase)
    taps, wins, phs = ([next(letters) for _ in range(n)] for _ in range(3))
    return taps, wins, phs, next(letters), next(letters)


def _per_phase_separate(x, kernel, strides, pads, precision):
    """Every phase its own window, patches and matmul (phases of unequal windows)."""
    plans, unions, q_shape, out, xp = _subpixel_setup(x, kernel, strides, pads)
    y = _phases_separately(xp, kernel, strides, plans, [lo for lo, _ in unions], precision)
    return _depth_to_space(y, q_shape, strides, out)


def _per_phase_batched(x, kernel, strides, pads, precision):
    """Every phase its own window of ``max(len(taps))`` inputs; the phases are the batch axis
    of one ``dot_general``: ``(P, B, *q, prod(window) * C_in) x (P, prod(window) * C_in,
    C_out)``."""
    n = kernel.ndim - 2
    b, c_in, c_out = x.shape[0], kernel.shape[-2], kernel.shape[-1]
    plans, unions, q_shape, out, xp = _subpixel_setup(x, kernel, strides, pads)
    split = [
        _phase_selection(phases, s, k, lo, window)
        for (_, _, phases), s, k, (lo, window) in zip(
            plans, strides, kernel.shape[:n], unions, strict=True
        )
    ]
    taps, wins, phs, cin, cout = _phase_specs(n)
    kernel_spec = "".join(taps) + cin + cout
    window = tuple(w for _, w, _ in split)
    patches = jnp.stack(
        [
            _patches(
                lax.slice(
                    xp,
                    (0, *(st[r] for (st, _, _), r in zip(split, phase, strict=True)), 0),
                    (b, *(st[r] + q + w - 1 for (st, w, _), r, q in zip(
                        split, phase, q_shape, strict=True)), c_in),
                ),
                window, (1,) * n, (1,) * n, q_shape,
            )
            for phase in itertools.product(*(range(s) for s in strides))
        ]
    )  # fmt: skip
    spec = (
        ",".join([kernel_spec] + [p + w + t for w, p, t in zip(wins, phs, taps, strict=True)])
        + "->" + "".join(phs) + "".join(wins) + cin + cout
    )  # fmt: skip
    selections = [jnp.asarray(sel, kernel.dtype) for _, _, sel in split]
    per_phase = jnp.einsum(spec, kernel, *selections, precision=lax.Precision.HIGHEST)
    per_phase = per_phase.reshape(math.prod(strides), -1, c_out)
    y = lax.dot_general(
        patches, per_phase, (((patches.ndim - 1,), (1,)), ((0,), (0,))), precision=precision
    )  # (P, B, *q, C_out)
    y = jnp.moveaxis(y.reshape(*strides, b, *q_shape, c_out), tuple(range(n)),
                     tuple(range(n + 1, 2 * n + 1)))  # fmt: skip
    return _depth_to_space(y, q_shape, strides, out)


def _shared_window(x, kernel, strides, pads, precision):
    """All phases read the union window: one matmul into ``s**d * C_out`` channels with a
    combined kernel ``(*window, C_in, *strides, C_out)`` (the taps placed by a 0/1 selection,
    zeros elsewhere), then depth-to-space."""
    n = kernel.ndim - 2
    b, c_out = x.shape[0], kernel.shape[-1]
    plans, unions, q_shape, out, xp = _subpixel_setup(x, kernel, strides, pads)
    taps, wins, phs, cin, cout = _phase_specs(n)
    kernel_spec = "".join(taps) + cin + cout
    window = tuple(w for _, w in unions)
    patches = _patches(xp, window, (1,) * n, (1,) * n, q_shape)
    spec = (
        ",".join([kernel_spec] + [w + p + t for w, p, t in zip(wins, phs, taps, strict=True)])
        + "->" + "".join(wins) + cin + "".join(phs) + cout
    )  # fmt: skip
    selections = [
        jnp.asarray(_union_selection(phases, s, k), kernel.dtype)
        for (_, _, phases), s, k in zip(plans, strides, kernel.shape[:n], strict=True)
    ]
    combined = jnp.einsum(spec, kernel, *selections, precision=lax.Precision.HIGHEST)
    y = _contract(patches, combined.reshape(-1, math.prod(strides) * c_out), precision)
    return _depth_to_space(y.reshape(b, *q_shape, *strides, c_out), q_shape, strides, out)


def _stride_one(x, kernel, strides, pads, precision):
    """All strides 1: the transposed conv is a plain one (patches + one ``dot_general``)."""
    if any(s != 1 for s in strides):
        raise ValueError(f"form='stride_one' needs all strides 1; got strides={strides}")
    return _conv_matmul(x, kernel, strides, pads, (1,) * len(strides), precision)


# --------------------------------------------------------------------------------------------
# The forms of a transposed convolution


def _matmul_form(compute):
    """A form of the matmul lowering as a table entry: the kernel flipped for
    ``transpose_kernel``, dilated by inserting zero taps, and ``'SAME'``/``'VALID'`` turned
    into the dilated input's pads; then ``compute(x, kernel, strides, pads, precision)``."""

    def form(x, kernel, strides, pads, dilation, transpose_kernel, precision, element_type):
        del element_type  # None: conv_transpose refuses it outside the lax form
        n = kernel.ndim - 2
        if transpose_kernel:
            kernel = jnp.swapaxes(jnp.flip(kernel, axis=tuple(range(n))), -1, -2)
        if any(d > 1 for d in dilation):
            kernel = lax.pad(
                kernel, jnp.zeros((), kernel.dtype),
                [(0, 0, d - 1) for d in dilation] + [(0, 0, 0), (0, 0, 0)],
            )  # fmt: skip
        if isinstance(pads, str):
            pads = tuple(
                _transpose_padding(k, s, pads)
                for k, s in zip(kernel.shape[:n], strides, strict=True)
            )
        return compute(x, kernel, strides, pads, precision)

    return form


def _lax_form(x, kernel, strides, pads, dilation, transpose_kernel, precision, element_type):
    """``flax.linen.ConvTranspose``'s own computation: ``lax.conv_transpose`` and, for
    ``'CIRCULAR'`` padding, Flax's periodic wrap of the ``'VALID'`` output."""
    y = lax.conv_transpose(
        x, kernel, strides, "VALID" if pads == "CIRCULAR" else pads, rhs_dilation=dilation,
        dimension_numbers=_channels_last(kernel.ndim - 2), transpose_kernel=transpose_kernel,
        precision=precision, preferred_element_type=element_type,
    )  # fmt: skip
    if pads != "CIRCULAR":
        return y
    # The output has period s * n along each axis: pad it to whole periods so that the input's
    # start sits on a period boundary (the extra one on the left, or on the right for a
    # transposed kernel, as flax does), then sum the periods.
    periods = [size * s for size, s in zip(x.shape[1:-1], strides, strict=True)]
    missing = [-(y_dim - p) % (2 * p) for y_dim, p in zip(y.shape[1:-1], periods, strict=True)]
    if transpose_kernel:
        edges = [(m // 2, (m + 1) // 2) for m in missing]
    else:
        edges = [((m + 1) // 2, m // 2) for m in missing]
    y = jnp.pad(y, [(0, 0), *edges, (0, 0)])
    for axis in range(1, y.ndim - 1):
        y = y.reshape(y.shape[:axis] + (-1, periods[axis - 1]) + y.shape[axis + 1 :])
        y = y.sum(axis=axis)
    return y


def _zero_insertion_form(x, kernel, strides, pads, dilation, transpose_kernel, precision,
                         element_type):  # fmt: skip
    del element_type  # None: conv_transpose refuses it outside the lax form
    if transpose_kernel:
        kernel = jnp.swapaxes(jnp.flip(kernel, axis=tuple(range(kernel.ndim - 2))), -1, -2)
    return _conv_transpose_zero_insertion(x, kernel, strides, pads, dilation, precision)


# name -> f(x (B, *spatial, C_in), kernel as given, strides, pads ('SAME'/'VALID' or (lo, hi)
# pairs; 'CIRCULAR' for lax), kernel dilation, transpose_kernel, precision,
# preferred_element_type) -> (B, *spatial_out, C_out)
_CONV_TRANSPOSE_FORMS = {
    "lax": _lax_form,
    "zero_insertion": _zero_insertion_form,
    "stride_one": _matmul_form(_stride_one),
    "overlap_add": _matmul_form(_conv_transpose_overlap_add),
    "per_phase_separate": _matmul_form(_per_phase_separate),
    "per_phase_batched": _matmul_form(_per_phase_batched),
    "shared_window": _matmul_form(_shared_window),
}
CONV_TRANSPOSE_FORMS = tuple(_CONV_TRANSPOSE_FORMS)
"""The names of the forms :func:`conv_transpose` computes with (:func:`conv_transpose_form`)."""
