"""The divergence guard every training step ends with.

A model whose step produced a non-finite loss or state keeps its last finite state and is
marked ``diverged`` at that step; the engine reads ``diverged`` and ``diverged_step`` and stops
spending steps on it. Works on any state with those two fields and ``step``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def all_finite(tree: Any) -> jax.Array:
    """Whether every entry of every leaf of ``tree`` is finite: a bool scalar."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def keep_if_finite(state: Any, new: Any, mask: jax.Array, finite: jax.Array):
    """``(state, taken)``: ``new`` where the batch had a valid example (``mask`` (B,)), the model
    had not diverged and the step was ``finite``, else ``state``; a model whose active step is
    not finite is marked ``diverged`` with ``diverged_step`` the step that failed."""
    active = jnp.any(mask) & ~state.diverged
    taken = active & finite
    state = jax.tree.map(lambda a, b: jnp.where(taken, a, b), new, state)
    diverges = active & ~finite
    state = state._replace(
        diverged=state.diverged | diverges,
        diverged_step=jnp.where(diverges, state.step, state.diverged_step),
    )
    return state, taken
