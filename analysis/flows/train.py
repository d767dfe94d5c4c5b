r"""The annealed reverse KL of a flow and its compiled training chunks (JAX).

Objective of one seed at inverse temperature beta (DESIGN.md section 1, the flow in place of
the mixture q):

    F_beta(q) = E_q log q - beta E_q log p - gamma E_q log p0,

``p(x) = sum_a pi_a N(x; mu_a, Delta I)``, ``p0 = N(0, sigma0^2 I)``, gamma = 1 - beta on the
geometric path and 0 for tempering.  With ``x_i = f(z_i)``, ``z_i ~ N(0, I)``, i = 1..n, the
estimate is ``(1/n) sum_i [log q(x_i) - beta log p(x_i) - gamma log p0(x_i)]`` and its gradient
with respect to the flow's parameters is the reparameterised (pathwise) one; ``stl`` (sticking
the landing, Roeder et al. 2017) evaluates ``log q`` at the samples with the parameters held
fixed, dropping the score term whose expectation is zero.  At beta = 1 (tempering, or any path at
its end) ``F`` is ``KL(q || p)``: every density here is normalised.

One optimiser step per schedule step: ``theta <- theta - lr * update(grad)`` (optax SGD or
Adam; both act elementwise, so the S seeds, stacked in one pytree and trained on the sum of
their objectives, are S independent runs).  The step's beta and gamma come in as arrays (one
entry per step of the chunk, computed from the schedule object by the caller), so one compiled
chunk serves every schedule family and every target of the same shapes.  Step j of run r draws
its samples from ``fold_in(root_key_r, j)``.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax

from . import realnvp

__all__ = ["Target", "log_target", "log_base", "make_optimizer", "chunk_runner",
           "evaluate"]


class Target(NamedTuple):
    """The target and the base of the geometric path, as arrays (traced, not static).

    mu : (K, d) means; log_pi : (K,) log-weights; Delta : () variance; sigma0_sq : () base
    variance (any positive value on the tempering path, where gamma = 0).
    """

    mu: Any
    log_pi: Any
    Delta: Any
    sigma0_sq: Any


def log_target(target: Target, x: Any) -> Any:
    """``log p(x) = logsumexp_a(log pi_a - |x - mu_a|^2 / (2 Delta)) - (d/2) log(2 pi Delta)``;
    x (..., d) -> (...)."""
    d = x.shape[-1]
    sq = jnp.sum((x[..., None, :] - target.mu) ** 2, axis=-1)          # (..., K)
    return (jax.scipy.special.logsumexp(target.log_pi - 0.5 * sq / target.Delta, axis=-1)
            - 0.5 * d * jnp.log(2.0 * math.pi * target.Delta))


def log_base(target: Target, x: Any) -> Any:
    """``log p0(x) = -|x|^2 / (2 sigma0^2) - (d/2) log(2 pi sigma0^2)``; x (..., d) -> (...)."""
    d = x.shape[-1]
    return (-0.5 * jnp.sum(x ** 2, axis=-1) / target.sigma0_sq
            - 0.5 * d * jnp.log(2.0 * math.pi * target.sigma0_sq))


def make_optimizer(optimizer: str, lr: float) -> optax.GradientTransformation:
    """optax ``adam(lr)`` or ``sgd(lr)``."""
    if optimizer == "adam":
        return optax.adam(lr)
    if optimizer == "sgd":
        return optax.sgd(lr)
    raise ValueError(f"optimizer: must be 'adam' or 'sgd', got {optimizer!r}")


def _objective(params: Any, static: Any, keys: Any, beta: Any, gamma: Any, target: Target,
               n: int, estimator: str) -> tuple[Any, Any]:
    """(sum over seeds, per-seed (S,)) of the sample estimate of F_beta."""
    flows = eqx.combine(params, static)
    x, lq = realnvp.sample_and_log_prob(flows, keys, n)                # (S, n, d), (S, n)
    if estimator == "stl":
        lq = realnvp.log_prob(eqx.combine(jax.lax.stop_gradient(params), static), x)
    per = jnp.mean(lq - beta * log_target(target, x) - gamma * log_base(target, x), axis=1)
    return jnp.sum(per), per


@functools.lru_cache(maxsize=16)
def chunk_runner(n: int, estimator: str, optimizer: str, lr: float) -> Any:
    """The compiled chunk ``run(params, static, opt_state, root_keys, steps, betas, gammas,
    target) -> (params, opt_state, losses)``: ``len(steps)`` optimiser steps (a ``lax.scan``),
    ``steps`` (C,) the global step indices (they seed the samples), ``betas``, ``gammas`` (C,);
    ``losses`` (C, S) the per-seed objective estimate at each step (before its update).
    Cached per (n, estimator, optimizer, lr); JAX recompiles only for new shapes."""
    opt = make_optimizer(optimizer, lr)

    @eqx.filter_jit
    def run(params: Any, static: Any, opt_state: Any, root_keys: Any, steps: Any, betas: Any,
            gammas: Any, target: Target) -> tuple[Any, Any, Any]:
        def body(carry: Any, inp: Any) -> tuple[Any, Any]:
            p, s = carry
            step, beta, gamma = inp
            keys = jax.vmap(lambda k: jr.fold_in(k, step))(root_keys)
            grad_fn = eqx.filter_grad(_objective, has_aux=True)
            g, per = grad_fn(p, static, keys, beta, gamma, target, n, estimator)
            updates, s = opt.update(g, s, p)
            return (eqx.apply_updates(p, updates), s), per

        (params, opt_state), losses = jax.lax.scan(body, (params, opt_state),
                                                   (steps, betas, gammas))
        return params, opt_state, losses

    return run


def init_optimizer(optimizer: str, lr: float, params: Any) -> Any:
    """The optimiser state of the stacked parameters."""
    return make_optimizer(optimizer, lr).init(params)


@functools.partial(eqx.filter_jit)
def evaluate(params: Any, static: Any, keys: Any, target: Target, n_eval: int, beta: Any,
             gamma: Any) -> dict:
    """Final diagnostics of every seed from ``n_eval`` fresh samples.

    Returns a dict of arrays: ``counts`` (S, K) samples nearest each mode (``argmin_a
    |x - mu_a|^2``, ties to the lowest a); ``kl`` (S,) the estimate of ``KL(q || p)`` =
    mean(log q - log p); ``objective`` (S,) the estimate of F at (beta, gamma); ``finite`` (S,)
    whether every sample and log-density is finite.
    """
    flows = eqx.combine(params, static)
    x, lq = realnvp.sample_and_log_prob(flows, keys, n_eval)
    lp = log_target(target, x)
    sq = jnp.sum((x[..., None, :] - target.mu) ** 2, axis=-1)             # (S, N, K)
    nearest = jnp.argmin(sq, axis=-1)
    K = target.mu.shape[0]
    counts = jnp.sum(nearest[..., None] == jnp.arange(K), axis=1)
    finite = jnp.all(jnp.isfinite(x), axis=(1, 2)) & jnp.all(jnp.isfinite(lq), axis=1)
    return {"counts": counts, "kl": jnp.mean(lq - lp, axis=1),
            "objective": jnp.mean(lq - beta * lp - gamma * log_base(target, x), axis=1),
            "finite": finite}
