"""coordjax.conv: every lowering and every transposed-conv form has flax's values and gradients,
also under vmap."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from coordjax import conv

# -- conv / conv_transpose: both lowerings equal flax's layers, values and all gradients --------

PADDINGS = {"SAME": "SAME", "VALID": "VALID", "explicit": ((2, 0), (1, 3))}


def _flax_reference(transpose, kernel_size, strides, padding, features=4):
    layer_type = nn.ConvTranspose if transpose else nn.Conv
    layer = layer_type(features, kernel_size, strides=strides, padding=padding, use_bias=False)
    return lambda x, w: layer.apply({"params": {"kernel": w}}, x)


def _lowered(transpose, strides, padding, lowering):
    fn = conv.conv_transpose if transpose else conv.conv
    return lambda x, w: fn(x, w, strides=strides, padding=padding, lowering=lowering)


def _loss(f):
    def loss(x, w):
        y = f(x, w)
        weights = jnp.arange(1.0, 1.0 + y.shape[-1]).reshape((1,) * (y.ndim - 1) + (-1,))
        return jnp.sum(jnp.sin(y) * weights)

    return loss


# (kernel side, stride): every kernel size 1-5 and stride 1-3, even and odd, kernel > and < stride
SIZES_AND_STRIDES = [(1, 2), (2, 1), (2, 2), (3, 1), (3, 3), (4, 2), (5, 3), (5, 1)]


MATMUL_FORMS = ["overlap_add", "per_phase_separate", "per_phase_batched", "shared_window"]


@pytest.mark.parametrize("padding", list(PADDINGS))
@pytest.mark.parametrize("transpose", [False, True], ids=["conv", "transpose"])
def test_lowerings_equal_flax_over_kernels_strides_and_shapes(transpose, padding):
    """Kernel sizes 1-5 (non-square), strides 1-3 (per-dim), on a non-square input: forward,
    d/dx and d/dkernel of every lowering equal flax's nn.Conv / nn.ConvTranspose; and, for a
    transposed conv, of each named form of the matmul lowering, whether or not
    conv_transpose_form would choose it there."""
    _check_lowerings_over_kernels_and_strides(
        transpose,
        padding,
        lowerings=("lax", "matmul", "zero_insertion"),
        forms=MATMUL_FORMS if transpose else (),
    )


def test_transposed_conv_forms_at_stride_one_equal_flax():
    rng = np.random.default_rng(6)
    x = jnp.asarray(rng.normal(size=(2, 5, 4, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 2, 3, 4)), jnp.float32)
    forms = ["stride_one", *MATMUL_FORMS]
    fns = [_flax_reference(True, (3, 2), (1, 1), "SAME")] + [
        functools.partial(conv.conv_transpose, strides=1, padding="SAME", form=form)
        for form in forms
    ]
    (want, want_grads), *got = jax.jit(  # one compile: the reference and every form
        lambda x, w: [(f(x, w), jax.grad(_loss(f), argnums=(0, 1))(x, w)) for f in fns]
    )(x, w)
    for form, (y, grads) in zip(forms, got, strict=True):
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5, err_msg=form)
        for g, e in zip(grads, want_grads, strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4, err_msg=form)


def test_stride_one_form_refuses_strides():
    with pytest.raises(ValueError, match="form='stride_one' needs all strides 1"):
        conv.conv_transpose(jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 1)), strides=2,
                            form="stride_one")  # fmt: skip
    with pytest.raises(ValueError, match="form must be one of"):
        conv.conv_transpose(jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 1)), form="fast")


# (x shape, kernel shape, strides, lowering, transpose_kernel) -> the form conv_transpose takes
FORM_RULE = [
    ((2, 8, 8, 3), (3, 3, 3, 4), 2, "lax", False, "lax"),
    ((2, 8, 8, 3), (3, 3, 3, 4), 2, "zero_insertion", False, "zero_insertion"),
    ((2, 8, 8, 3), (3, 3, 3, 1), 1, "matmul", False, "stride_one"),
    ((2, 8, 8, 3), (4, 4, 3, 1), 2, "matmul", False, "overlap_add"),
    ((2, 8, 8, 3), (3, 3, 3, 1), 2, "matmul", False, "overlap_add"),
    ((2, 8, 8, 3), (2, 2, 3, 1), 2, "matmul", False, "shared_window"),  # no overlapping taps
    ((2, 8, 8, 3), (4, 4, 3, 2), 2, "matmul", False, "shared_window"),  # narrow output
    ((2, 8, 8, 3), (4, 4, 3, 15), 2, "matmul", False, "shared_window"),
    ((2, 8, 8, 3), (4, 4, 3, 16), 2, "matmul", False, "per_phase_batched"),
    ((2, 8, 8, 3), (3, 3, 3, 16), 2, "matmul", False, "per_phase_separate"),
    ((2, 8, 8, 3), (2, 2, 3, 16), 2, "matmul", False, "shared_window"),  # one tap per phase
    ((2, 8, 8, 1), (3, 3, 16, 1), 2, "matmul", True, "per_phase_separate"),  # C_out 16
    ((2, 8, 8, 3), (3, 3, 1, 3), 2, "matmul", True, "overlap_add"),  # C_out 1
]


@pytest.mark.parametrize("x_shape, kernel_shape, strides, lowering, transpose_kernel, want",
                         FORM_RULE)  # fmt: skip
def test_conv_transpose_form_rule(x_shape, kernel_shape, strides, lowering, transpose_kernel,
                                  want):  # fmt: skip
    got = conv.conv_transpose_form(x_shape, kernel_shape, strides=strides, lowering=lowering,
                                   transpose_kernel=transpose_kernel)  # fmt: skip
    assert got == want
    # conv_transpose computes exactly that form: the same program as form=want
    x, w = jnp.ones(x_shape), jnp.ones(kernel_shape)
    chosen, named = (
        str(jax.make_jaxpr(functools.partial(
            conv.conv_transpose, strides=strides, lowering=lowering,
            transpose_kernel=transpose_kernel, form=form))(x, w))
        for form in (None, want)
    )  # fmt: skip
    assert chosen == named


def _check_lowerings_over_kernels_and_strides(transpose, padding, lowerings, forms=()):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 7, 5, 3)), jnp.float32)
    cases = 0
    for k, s in SIZES_AND_STRIDES:
        kernel_size, strides = (k, 6 - k), (s, 1 + (s % 3))
        pads = PADDINGS[padding]
        w = jnp.asarray(rng.normal(size=(*kernel_size, 3, 4)), jnp.float32)
        reference = _flax_reference(transpose, kernel_size, strides, pads)
        try:
            jax.eval_shape(reference, x, w)
        except (TypeError, ValueError):  # an empty output (VALID, large kernel): lax refuses too
            continue
        named = {f"lowering={low}": _lowered(transpose, strides, pads, low) for low in lowerings}
        for form in forms:
            named[f"form={form}"] = functools.partial(
                conv.conv_transpose, strides=strides, padding=pads, form=form
            )
        fns = [reference, *named.values()]
        # one compile per case: outputs and both gradients of the reference and every form
        outs = jax.jit(
            lambda x, w, fns=fns: [(f(x, w), jax.grad(_loss(f), argnums=(0, 1))(x, w)) for f in fns]
        )(x, w)
        (want, want_grads), *lowered = outs
        for name, (got, got_grads) in zip(named, lowered, strict=True):
            where = (name, kernel_size, strides)
            assert got.shape == want.shape, where
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=str(where))
            for g, e in zip(got_grads, want_grads, strict=True):
                np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4, err_msg=str(where))
        cases += 1
    assert cases >= 5


@pytest.mark.parametrize(
    "transpose, lowering",
    [(False, "matmul"), (True, "matmul"), (True, "zero_insertion")],
    ids=["conv", "transpose", "zero-insertion"],
)
@pytest.mark.parametrize(
    "kernel_size, strides", [((2, 2), 2), ((3, 3), 2), ((4, 4), 2), ((5, 3), 3)]
)
def test_lowerings_under_vmap_equal_per_model_lax(transpose, lowering, kernel_size, strides):
    """A model axis over inputs and kernels (as in a sweep): gradients are the per-model ones."""
    rng = np.random.default_rng(1)
    xs = jnp.asarray(rng.normal(size=(3, 2, 6, 4, 3)), jnp.float32)
    ws = jnp.asarray(rng.normal(size=(3, *kernel_size, 3, 4)), jnp.float32)
    mine = _loss(_lowered(transpose, strides, "SAME", lowering))
    reference = _loss(_flax_reference(transpose, kernel_size, strides, "SAME"))
    got = jax.jit(jax.vmap(jax.value_and_grad(mine, argnums=(0, 1))))(xs, ws)
    for i in range(3):
        want = jax.value_and_grad(reference, argnums=(0, 1))(xs[i], ws[i])
        for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(g[i], e, rtol=1e-4, atol=1e-4)


def test_transpose_kernel_dilation_and_unbatched_inputs():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(5, 6, 3)), jnp.float32)  # no batch axis
    w = jnp.asarray(rng.normal(size=(3, 2, 4, 3)), jnp.float32)  # (*k, C_out, C_in)
    for lowering in ("lax", "matmul", "zero_insertion"):
        got = conv.conv_transpose(x, w, strides=2, padding="SAME", transpose_kernel=True,
                                  kernel_dilation=(1, 2), lowering=lowering)  # fmt: skip
        want = lax.conv_transpose(x[None], w, (2, 2), "SAME", rhs_dilation=(1, 2),
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                  transpose_kernel=True)[0]  # fmt: skip
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        w2 = jnp.swapaxes(w, -1, -2)
        got = conv.conv(x, w2, strides=(1, 2), padding=1, kernel_dilation=2, lowering=lowering)
        want = nn.Conv(4, (3, 2), strides=(1, 2), padding=1, kernel_dilation=2, use_bias=False)
        np.testing.assert_allclose(
            got, want.apply({"params": {"kernel": w2}}, x), rtol=1e-5, atol=1e-5
        )


def test_stride2_fs2_transposed_conv_is_a_single_matmul():
    x = jnp.ones((2, 4, 4, 3))
    w = jnp.ones((2, 2, 3, 5))
    jaxpr = jax.make_jaxpr(lambda x, w: conv.conv_transpose(x, w, strides=2, lowering="matmul"))
    eqns = jaxpr(x, w).eqns
    # one matmul on the activations; the other dot_generals place the kernel taps (kernel-sized)
    on_activations = [e for e in eqns if e.primitive.name == "dot_general" and
                      e.invars[0].aval.shape == x.shape]  # fmt: skip
    assert len(on_activations) == 1
    prims = {e.primitive.name for e in eqns}
    assert not prims & {"conv_general_dilated", "slice", "pad", "gather"}


# platform -> {(transposed, vmapped): lowering}: the whole table of default_lowering
DEFAULT_TABLE = {
    "cpu": {(False, False): "matmul", (False, True): "matmul",
            (True, False): "matmul", (True, True): "matmul"},
    "gpu": {(False, False): "lax", (False, True): "matmul",
            (True, False): "matmul", (True, True): "matmul"},
    "tpu": {(False, False): "lax", (False, True): "lax", (True, False): "lax", (True, True): "lax"},
}  # fmt: skip
PLATFORM_NAMES = {"cpu": ["cpu", "CPU"], "gpu": ["gpu", "cuda", "rocm", "GPU"], "tpu": ["tpu"]}


@pytest.mark.parametrize("family", list(DEFAULT_TABLE))
def test_default_lowering_table(family):
    for name in PLATFORM_NAMES[family]:
        for (transposed, vmapped), want in DEFAULT_TABLE[family].items():
            got = conv.default_lowering(name, transposed=transposed, vmapped=vmapped)
            assert got == want, (name, transposed, vmapped)
            assert (
                conv.resolve_lowering("auto", name, transposed=transposed, vmapped=vmapped) == want
            )
            for concrete in ("lax", "matmul", "zero_insertion"):  # never overridden
                assert (
                    conv.resolve_lowering(concrete, name, transposed=transposed, vmapped=vmapped)
                    == concrete
                )
        # the engine's case (one value for a whole vmapped model): both kinds agree
        assert conv.resolve_lowering("auto", name) == DEFAULT_TABLE[family][(False, True)]
    # an unknown platform (a plugin) keeps XLA's convolutions
    assert conv.default_lowering("metal", transposed=True, vmapped=True) == "lax"
    with pytest.raises(TypeError, match="platform must be"):
        conv.default_lowering(None, transposed=True, vmapped=True)


def test_cpu_resolution_unchanged():
    """On CPU "auto" is the matmul lowering for every op, as before the per-op table: the same
    program (jaxpr) as lowering="matmul", hence the same numbers, vmapped or not."""
    assert jax.default_backend() == "cpu"
    assert conv.resolve_lowering("auto") == conv.resolve_lowering("auto", "cpu") == "matmul"
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.normal(size=(2, 5, 4, 3)), jnp.float32)
    for fn, w in (
        (conv.conv, jnp.asarray(rng.normal(size=(3, 3, 3, 4)), jnp.float32)),
        (conv.conv_transpose, jnp.asarray(rng.normal(size=(3, 3, 3, 4)), jnp.float32)),
    ):
        texts = {
            low: str(jax.make_jaxpr(functools.partial(fn, strides=2, lowering=low))(x, w))
            for low in ("auto", "matmul")
        }
        assert texts["auto"] == texts["matmul"]
        np.testing.assert_array_equal(
            fn(x, w, strides=2, lowering="auto"), fn(x, w, strides=2, lowering="matmul")
        )


def test_resolve_lowering_rule_and_errors():
    assert conv.resolve_lowering("auto", "cpu") == "matmul"
    assert conv.resolve_lowering("auto", "gpu") == "matmul"
    assert conv.resolve_lowering("auto", "tpu") == "lax"
    assert conv.resolve_lowering("lax", "cpu") == "lax"
    assert conv.resolve_lowering("matmul", "gpu") == "matmul"
    with pytest.raises(ValueError, match="lowering must be one of"):
        conv.resolve_lowering("fast")
    with pytest.raises(ValueError, match="pass transposed=True or False"):
        conv.resolve_lowering("auto", "gpu", vmapped=False)
    with pytest.raises(ValueError, match="padding must be"):
        conv.conv(jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 1)), padding="CIRCULAR")
    with pytest.raises(ValueError, match="strides must be"):
        conv.conv(jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 1)), strides=(1, 0))
    with pytest.raises(ValueError, match="channels"):
        conv.conv_transpose(jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 1, 1)))


@pytest.mark.parametrize("form", ["per_phase_batched", "shared_window"])
def test_stride2_fs4_transposed_conv_windows(form):
    """4x4 at stride 2, wide output: the four phases are the batch axis of one matmul over 2x2
    windows (no multiplying zeros of a shared 3x3 window); narrow: one shared window. Both
    equal flax's ConvTranspose in value and gradients, also under a model vmap."""
    per_phase = form == "per_phase_batched"
    rng = np.random.default_rng(3)
    xs = jnp.asarray(rng.normal(size=(2, 2, 5, 4, 3)), jnp.float32)  # (model, B, H, W, C_in)
    ws = jnp.asarray(rng.normal(size=(2, 4, 4, 3, 4)), jnp.float32)
    fn = functools.partial(conv.conv_transpose, strides=2, padding="SAME", form=form)
    on_activations = [
        e
        for e in jax.make_jaxpr(fn)(xs[0], ws[0]).eqns
        if e.primitive.name == "dot_general"
        and e.outvars[0].aval.shape in ((4, 2, 5, 4, 4), (2, 5, 4, 4 * 4))
    ]  # (phase, B, *q, C_out) or (B, *q, phase * C_out)
    assert len(on_activations) == 1
    (contracting, _), (batch, _) = on_activations[0].params["dimension_numbers"]
    window = on_activations[0].invars[0].aval.shape[contracting[0]] // 3
    assert (batch, window) == (((0,), 2 * 2) if per_phase else ((), 3 * 3))
    reference = _loss(_flax_reference(True, (4, 4), (2, 2), "SAME"))
    got = jax.jit(jax.vmap(jax.value_and_grad(_loss(fn), argnums=(0, 1))))(xs, ws)
    for i in range(2):
        want = jax.value_and_grad(reference, argnums=(0, 1))(xs[i], ws[i])
        for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(g[i], e, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kernel_size, strides", [((3, 3), 2), ((4, 4), 2), ((5, 3), (3, 2))])
def test_one_channel_transposed_conv_is_one_matmul_and_an_overlap_add(kernel_size, strides):
    """C_out = 1 (a painter's logits): one dot_general into every tap, no patches gather (no
    stack of the input's slices), and flax's values and gradients, also under a model vmap."""
    rng = np.random.default_rng(4)
    xs = jnp.asarray(rng.normal(size=(2, 2, 5, 4, 3)), jnp.float32)  # (model, B, H, W, C_in)
    ws = jnp.asarray(rng.normal(size=(2, *kernel_size, 3, 1)), jnp.float32)
    fn = functools.partial(conv.conv_transpose, strides=strides, padding="SAME", lowering="matmul")
    eqns = jax.make_jaxpr(fn)(xs[0], ws[0]).eqns
    on_activations = [e for e in eqns if e.primitive.name == "dot_general" and
                      e.invars[0].aval.shape == xs.shape[1:]]  # fmt: skip
    assert [e.outvars[0].aval.shape for e in on_activations] == [(2, 5, 4, np.prod(kernel_size))]
    assert not {e.primitive.name for e in eqns} & {"conv_general_dilated", "gather", "concatenate"}
    reference = _loss(_flax_reference(True, kernel_size, strides, "SAME", features=1))
    got = jax.jit(jax.vmap(jax.value_and_grad(_loss(fn), argnums=(0, 1))))(xs, ws)
    for i in range(2):
        want = jax.value_and_grad(reference, argnums=(0, 1))(xs[i], ws[i])
        for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(g[i], e, rtol=1e-4, atol=1e-4)


def test_odd_kernel_at_stride_2_multiplies_no_zeros():
    """3x3 at stride 2, wide output: the four phases read 2x2, 2x1, 1x2 and 1x1 inputs, one
    matmul each (9 taps in all, not 4 x 2x2); flax's values and gradients under a model vmap."""
    rng = np.random.default_rng(5)
    xs = jnp.asarray(rng.normal(size=(2, 2, 5, 4, 3)), jnp.float32)  # (model, B, H, W, C_in)
    ws = jnp.asarray(rng.normal(size=(2, 3, 3, 3, 16)), jnp.float32)
    fn = functools.partial(conv.conv_transpose, strides=2, padding="SAME", lowering="matmul")
    contracted = sorted(
        e.invars[0].aval.shape[-1]
        for e in jax.make_jaxpr(fn)(xs[0], ws[0]).eqns
        if e.primitive.name == "dot_general" and e.outvars[0].aval.shape == (2, 5, 4, 16)
    )
    assert contracted == [1 * 3, 2 * 3, 2 * 3, 4 * 3]
    reference = _loss(_flax_reference(True, (3, 3), (2, 2), "SAME", features=16))
    got = jax.jit(jax.vmap(jax.value_and_grad(_loss(fn), argnums=(0, 1))))(xs, ws)
    for i in range(2):
        want = jax.value_and_grad(reference, argnums=(0, 1))(xs[i], ws[i])
        for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(g[i], e, rtol=1e-4, atol=1e-4)


def test_zero_insertion_has_no_lhs_dilation():
    """The zero-insertion form: a pad with interior padding s - 1 and a stride-1 convolution
    without input dilation, in the forward pass and in every gradient (also under a vmap)."""
    rng = np.random.default_rng(6)
    xs = jnp.asarray(rng.normal(size=(2, 2, 5, 4, 3)), jnp.float32)  # (model, B, H, W, C_in)
    ws = jnp.asarray(rng.normal(size=(2, 4, 3, 3, 5)), jnp.float32)
    fn = functools.partial(
        conv.conv_transpose, strides=(2, 3), padding="SAME", lowering="zero_insertion"
    )
    eqns = jax.make_jaxpr(fn)(xs[0], ws[0]).eqns
    (pad,) = [e for e in eqns if e.primitive.name == "pad"]
    assert [c[2] for c in pad.params["padding_config"]] == [0, 1, 2, 0]
    train = jax.vmap(jax.grad(_loss(fn), argnums=(0, 1)))
    convs = [e for e in jax.make_jaxpr(train)(xs, ws).eqns if "conv" in e.primitive.name]
    assert convs
    for e in convs:
        assert all(d == 1 for d in e.params["lhs_dilation"]), e.params
        assert all(s == 1 for s in e.params["window_strides"]), e.params
