"""Which parameters carry the recipe's L2 penalty and decoupled weight decay: Flax's kernels."""

from __future__ import annotations

from typing import Any

import jax


def l2_mask(params: Any, model: Any) -> Any:
    """Which leaves carry the recipe's L2 penalty ``l2 * sum(w**2)``.

    The reference puts L2 on every conv, transposed-conv and 1x1 (Dense-form) kernel and on
    nothing else. A model declares the exceptions as data: ``model.l2_exempt``, the names of
    its submodules whose kernels carry no L2 (the uniform regressor's Dense head); a model that
    declares nothing has none. True exactly for leaves named ``kernel`` none of whose enclosing
    module names is in ``model.l2_exempt``; False for biases, BatchNorm scale/bias and
    statistics, and the exempt kernels.

    Args:
      params: a params tree of ``model`` (or any tree with the same naming, e.g. the variables
        dict, or stacked over models).
      model: what declares the exemptions: the module, its class or its registry entry
        (:class:`ModelSpec`); anything without an ``l2_exempt`` attribute exempts nothing.

    Returns:
      A tree of Python bools with the structure of ``params`` (usable with ``optax.masked``).
    """
    exempt = frozenset(getattr(model, "l2_exempt", ()))

    def mark(path, _leaf) -> bool:
        names = jax.tree_util.keystr(path, simple=True, separator="/").split("/")
        return names[-1] == "kernel" and not exempt.intersection(names[:-1])

    return jax.tree_util.tree_map_with_path(mark, params)
