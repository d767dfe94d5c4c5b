r"""Gradient estimators of the d-dimensional Monte Carlo: the registry and the Numba kernels.

Estimators (DESIGN.md sections 1-2; F = E_q[log q - beta log p - gamma log p0])
---------------------------------------------------------------------------------------------
Samples ``x_ki = m_k + sqrt(s) eps_ki`` (i = 1..n per component, stratified by component), and
``phi(x) = log q(x) - beta log p(x) - gamma log p0(x)``,

    grad_x phi(x) = c x + (1/s) sum_j rho_j(x) m_j - (beta/Delta) sum_a r_a(x) mu_a,
    c = -1/s + beta/Delta + gamma/sigma0^2,

with ``rho_j(x) = softmax_j(log w_j + (x.m_j - Q_jj/2)/s)`` and
``r_a(x) = softmax_a(log pi_a + (x.mu_a - T_aa/2)/Delta)``.

* ``stl`` (sticking the landing; q's parameters held fixed inside log q):
  ``g_k = w_k mean_i grad_x phi(x_ki)``.
* ``reparam`` (plain reparameterisation gradient of the sample objective
  ``sum_j w_j mean_i phi(x_ji)``, q's parameters not stopped): adds the score term
  ``sum_j w_j mean_i rho_k(x_ji) (x_ji - m_k) / s``, whose expectation
  ``E_q[rho_k (x - m_k)] / s = w_k E_k[x - m_k] / s`` vanishes.

Both are unbiased for ``grad_{m_k} F``.  Weights (logits alpha, w = softmax(alpha)):
``dF/dalpha_k = w_k (f_k - sum_j w_j f_j)`` with ``f_j = E_{N(m_j, sI)} phi``; both estimators
replace f_j by the sample mean of phi over component j's samples (this is the reparameterisation
gradient with respect to the mixture weights of the stratified sample objective), and
``reparam`` adds ``sum_j w_j mean_i rho_k(x_ji) - w_k`` (the derivative through the weights
inside log q; zero mean since ``E_q rho_k = w_k``).  ``phi`` contains all normalising constants
and the |x|^2 terms, ``-(1/s - beta/Delta - gamma/sigma0^2) |x|^2 / 2``, whose sample
fluctuation (std ~ |1/s - beta/Delta - gamma/sigma0^2| s sqrt(d/2) per sample) makes the weight
gradient noisy in large d while beta < 1; no control variate is used, as in plain VI code.

Per step and run the work is: Q, R from the vectors; M n d normals into a per-run buffer;
for every sample its projections on the M + K means (:func:`_project`, four rows per pass);
softmaxes; the gradient assembly; the update.  Runs are independent (``prange`` over runs).

Registry
--------
:data:`GRADIENT_ESTIMATORS` maps a name to a :class:`GradientEstimator`; the contract is in that
class's docstring.  The compiled kernels branch on the integer ``code``; nothing in Python code
switches on the name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

from derivations.spec import ProblemSpec, require_spec

from .mc_random import FASTMATH
from .registry import CodeRegistry

__all__ = ["GradientEstimator", "GRADIENT_ESTIMATORS", "register_gradient_estimator",
           "gradient_estimator", "STL", "REPARAM", "WORK_ROWS", "grad_from_noise", "qr_stats",
           "stochastic_gradient", "initial_logits", "problem_numbers", "check_means"]


# ----------------------------------------------------------------------------------------
# the registry
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GradientEstimator:
    """A stochastic estimator of ``grad_m F`` (and ``dF/dalpha``) from reparameterised samples.

    Contract:

    1. ``name`` is the configuration / command-line name, ``code`` the integer the compiled
       kernels (:func:`grad_from_noise`, ``analysis.mc_optimisers.sgd_block``) branch on; both
       unique in :data:`GRADIENT_ESTIMATORS`.
    2. The estimate is computed from the noise ``eps`` (M n, d) alone (``x_ki = m_k +
       sqrt(s) eps_ki``) and is unbiased for ``grad_{m_k} F`` and ``dF/dalpha_k`` (tested against
       quadrature in tests/test_montecarlo.py), and at fixed noise is the gradient of a stated
       sample objective (tested by finite differences).
    3. ``score_buffer``: the kernel needs the (M, M, d) buffer of ``mean_i rho_j eps`` (the
       score term); otherwise a (M, M, 1) placeholder is passed.
    4. ``far_noise(s, a)``: for a component far from the others (rho_kk = 1), the noise of its
       gradient out of span{mu, m} is ``w_k far_noise(s, a) sqrt(s) ebar``, ebar ~ N(0, I/n),
       with ``a = beta/Delta + gamma/sigma0^2`` (:func:`analysis.mc_config.noise_inflation`).
    5. A new estimator is one registry entry plus one branch per kernel on its code, plus the
       two tests of rule 2 and the test of rule 4 (tests/test_montecarlo_reliability.py).
    """

    name: str
    code: int
    summary: str
    score_buffer: bool = False
    far_noise: Callable[[float, float], float] | None = None


def _stl_far_noise(s: float, a: float) -> float:
    # grad_x log q at frozen parameters, -(x - m_k)/s, minus the target's a (x - ...)
    return 1.0 / s - a


def _reparam_far_noise(s: float, a: float) -> float:
    # the pathwise log q term is constant in m_k (x - m_k = sqrt(s) eps): the target's part
    return a


#: Name -> :class:`GradientEstimator` (:class:`analysis.registry.CodeRegistry`).
GRADIENT_ESTIMATORS: CodeRegistry[GradientEstimator] = CodeRegistry("estimator", GradientEstimator)


def register_gradient_estimator(est: GradientEstimator) -> GradientEstimator:
    """Add ``est`` to :data:`GRADIENT_ESTIMATORS` (name and code must be new)."""
    return GRADIENT_ESTIMATORS.register(est)


def gradient_estimator(name: Any) -> GradientEstimator:
    """The registered estimator called ``name``, or a ValueError naming ``estimator``."""
    return GRADIENT_ESTIMATORS.lookup(name)


STL_CODE = 0
REPARAM_CODE = 1

STL = register_gradient_estimator(GradientEstimator(
    "stl", STL_CODE, "sticking the landing: q's parameters held fixed inside log q",
    far_noise=_stl_far_noise))
REPARAM = register_gradient_estimator(GradientEstimator(
    "reparam", REPARAM_CODE, "full pathwise reparameterisation gradient (adds the score term)",
    score_buffer=True, far_noise=_reparam_far_noise))


# ----------------------------------------------------------------------------------------
# the gradient estimator
# ----------------------------------------------------------------------------------------

@njit(fastmath=FASTMATH, cache=True)
def _dot(a, b):
    acc = 0.0
    for i in range(a.shape[0]):
        acc += a[i] * b[i]
    return acc


@njit(fastmath=FASTMATH, cache=True)
def _axpy(alpha, x, y):
    """y += alpha x"""
    for i in range(y.shape[0]):
        y[i] += alpha * x[i]


@njit(fastmath=FASTMATH, cache=True)
def _project(e, B, out, acc):
    """``out[j] = e . B[j]`` for every row of B (nb, d), and ``acc += e`` (d,), in few passes.

    Rows are taken four (then two, then one) at a time so that every load of e serves several
    multiply-adds; the running sum of e rides along with the first pass.
    """
    nb = B.shape[0]
    d = e.shape[0]
    j = 0
    fused = False
    while j + 4 <= nb:
        b0 = B[j]
        b1 = B[j + 1]
        b2 = B[j + 2]
        b3 = B[j + 3]
        a0 = 0.0
        a1 = 0.0
        a2 = 0.0
        a3 = 0.0
        if not fused:
            for i in range(d):
                x = e[i]
                a0 += x * b0[i]
                a1 += x * b1[i]
                a2 += x * b2[i]
                a3 += x * b3[i]
                acc[i] += x
            fused = True
        else:
            for i in range(d):
                x = e[i]
                a0 += x * b0[i]
                a1 += x * b1[i]
                a2 += x * b2[i]
                a3 += x * b3[i]
        out[j] = a0
        out[j + 1] = a1
        out[j + 2] = a2
        out[j + 3] = a3
        j += 4
    while j + 2 <= nb:
        b0 = B[j]
        b1 = B[j + 1]
        a0 = 0.0
        a1 = 0.0
        if not fused:
            for i in range(d):
                x = e[i]
                a0 += x * b0[i]
                a1 += x * b1[i]
                acc[i] += x
            fused = True
        else:
            for i in range(d):
                x = e[i]
                a0 += x * b0[i]
                a1 += x * b1[i]
        out[j] = a0
        out[j + 1] = a1
        j += 2
    if j < nb:
        b0 = B[j]
        a0 = 0.0
        if not fused:
            for i in range(d):
                x = e[i]
                a0 += x * b0[i]
                acc[i] += x
            fused = True
        else:
            for i in range(d):
                a0 += e[i] * b0[i]
        out[j] = a0
    if not fused:
        for i in range(d):
            acc[i] += e[i]


@njit(fastmath=FASTMATH, cache=True)
def qr_stats(m, mu, Q, R):
    """``Q = m m^T`` (M, M), ``R = m mu^T`` (M, K) from the vectors m (M, d), mu (K, d)."""
    M = m.shape[0]
    K = mu.shape[0]
    for k in range(M):
        for l in range(k, M):
            v = _dot(m[k], m[l])
            Q[k, l] = v
            Q[l, k] = v
        for a in range(K):
            R[k, a] = _dot(m[k], mu[a])


@njit(fastmath=FASTMATH, cache=True)
def _softmax_inplace(x, need_lse):
    """x <- softmax(x) (1-d, small); returns log-sum-exp of the input if need_lse, else 0."""
    n = x.shape[0]
    mx = x[0]
    for j in range(1, n):
        if x[j] > mx:
            mx = x[j]
    z = 0.0
    for j in range(n):
        e = math.exp(x[j] - mx)
        x[j] = e
        z += e
    inv = 1.0 / z
    for j in range(n):
        x[j] *= inv
    return mx + math.log(z) if need_lse else 0.0


@njit(fastmath=FASTMATH, cache=True)
def _softmax_logits(alpha, w, logw):
    M = alpha.shape[0]
    amax = alpha[0]
    for k in range(1, M):
        if alpha[k] > amax:
            amax = alpha[k]
    z = 0.0
    for k in range(M):
        w[k] = math.exp(alpha[k] - amax)
        z += w[k]
    lz = math.log(z)
    for k in range(M):
        w[k] /= z
        logw[k] = alpha[k] - amax - lz


@njit(fastmath=FASTMATH, cache=True)
def _component_constants(k, Q, R, logw, logpi, tdiag, s, delta, cq, cp):
    """Sample-independent parts of the logits of rho and r for samples of component k:
    ``log w_j + (Q_kj - Q_jj/2)/s`` and ``log pi_a + (R_ka - T_aa/2)/Delta``."""
    for j in range(cq.shape[0]):
        cq[j] = logw[j] + (Q[k, j] - 0.5 * Q[j, j]) / s
    for a in range(cp.shape[0]):
        cp[a] = logpi[a] + (R[k, a] - 0.5 * tdiag[a]) / delta


@njit(fastmath=FASTMATH, cache=True)
def _sample_terms(k, em, emu, sq, cq, cp, Qkk, ss, s, delta, beta, gamma, sigma0_sq, d,
                  train_w, rho, r):
    """Responsibilities and phi at one sample ``x = m_k + sqrt(s) eps`` of component k.

    em (M,) = eps . m_j, emu (K,) = eps . mu_a, sq = |eps|^2 (used only when train_w);
    cq, cp from :func:`_component_constants`.  Writes rho (M,) = softmax_j(log w_j +
    (x.m_j - Q_jj/2)/s) and r (K,) = softmax_a(log pi_a + (x.mu_a - T_aa/2)/Delta), using
    x.m_j = Q_kj + sqrt(s) eps.m_j and x.mu_a = R_ka + sqrt(s) eps.mu_a.  Returns
    phi(x) = log q(x) - beta log p(x) - gamma log p0(x) when train_w (else 0), with
    |x|^2 = Q_kk + 2 sqrt(s) eps.m_k + s |eps|^2 and all normalising constants.
    """
    aq = ss / s
    ap = ss / delta
    for j in range(rho.shape[0]):
        rho[j] = cq[j] + aq * em[j]
    for a in range(r.shape[0]):
        r[a] = cp[a] + ap * emu[a]
    lse_q = _softmax_inplace(rho, train_w)
    lse_p = _softmax_inplace(r, train_w)
    if not train_w:
        return 0.0
    x2 = Qkk + 2.0 * ss * em[k] + s * sq
    logq = lse_q - 0.5 * x2 / s - 0.5 * d * math.log(2.0 * math.pi * s)
    logp = lse_p - 0.5 * x2 / delta - 0.5 * d * math.log(2.0 * math.pi * delta)
    phi = logq - beta * logp
    if gamma != 0.0:
        logp0 = -0.5 * x2 / sigma0_sq - 0.5 * d * math.log(2.0 * math.pi * sigma0_sq)
        phi -= gamma * logp0
    return phi


@njit(fastmath=FASTMATH, cache=True)
def _assemble(m, mu, w, rhobar, rbar, fbar, ebar, V, ss, s, delta, beta, gamma, sigma0_sq,
              reparam, train_w, g, galpha):
    """g (M, d) and galpha (M,) from the per-component sample means (module docstring)."""
    M = m.shape[0]
    K = mu.shape[0]
    inv_s = 1.0 / s
    c = -inv_s + beta / delta + (gamma / sigma0_sq if gamma != 0.0 else 0.0)
    for k in range(M):
        gk = g[k]
        wk = w[k]
        mk = m[k]
        ek = ebar[k]
        cm = wk * c
        ce = wk * c * ss
        for i in range(gk.shape[0]):
            gk[i] = cm * mk[i] + ce * ek[i]
        for j in range(M):
            _axpy(wk * inv_s * rhobar[k, j], m[j], gk)
        for a in range(K):
            _axpy(-wk * beta / delta * rbar[k, a], mu[a], gk)
        if reparam:
            for j in range(M):
                coef = w[j] * inv_s * rhobar[j, k]
                _axpy(coef, m[j], gk)
                _axpy(-coef, mk, gk)
                _axpy(w[j] * ss * inv_s, V[j, k], gk)
    if train_w:
        fmean = 0.0
        for j in range(M):
            fmean += w[j] * fbar[j]
        for k in range(M):
            galpha[k] = w[k] * (fbar[k] - fmean)
            if reparam:
                extra = -w[k]
                for j in range(M):
                    extra += w[j] * rhobar[j, k]
                galpha[k] += extra
    else:
        for k in range(M):
            galpha[k] = 0.0


#: Rows of the small work array of :func:`grad_from_noise` (shape (WORK_ROWS, M + K)).
WORK_ROWS = 7


@njit(fastmath=FASTMATH, cache=True)
def grad_from_noise(m, alpha, mu, tdiag, logpi, beta, gamma, s, delta, sigma0_sq, eps, n,
                    estimator_code, train_w, g, galpha, Q, R, ebar, V, rhobar, rbar, fbar, work,
                    B):
    """One stochastic gradient of F from given noise.

    estimator_code : :attr:`GradientEstimator.code` (0 ``stl``, 1 ``reparam``; a bool is read
    as that integer).
    m (M, d), alpha (M,), mu (K, d), tdiag (K,) = |mu_a|^2, logpi (K,);
    eps (M n, d): row ``k n + i`` is the standard-normal noise of sample i of component k;
    outputs g (M, d) ~ grad_m F and galpha (M,) ~ dF/dalpha (zeros unless train_w);
    work: Q (M, M), R (M, K), ebar (M, d), V (M, M, d) (used only if reparam), rhobar (M, M),
    rbar (M, K), fbar (M,), work (WORK_ROWS, M + K), B (M + K, d).  On return Q, R hold the
    statistics of m, and rhobar, rbar, fbar, ebar (and V / n) the per-component sample means of
    rho, r, phi, eps (and rho_j eps).
    """
    M, d = m.shape
    K = mu.shape[0]
    reparam = estimator_code == REPARAM_CODE
    qr_stats(m, mu, Q, R)
    for j in range(M):
        B[j, :] = m[j]
    for a in range(K):
        B[M + a, :] = mu[a]
    w = work[0, :M]
    logw = work[1, :M]
    proj = work[2]
    em = proj[:M]
    emu = proj[M:]
    cq = work[3, :M]
    cp = work[4, :K]
    rho = work[5, :M]
    r = work[6, :K]
    _softmax_logits(alpha, w, logw)
    ss = math.sqrt(s)
    for k in range(M):
        fbar[k] = 0.0
        for j in range(M):
            rhobar[k, j] = 0.0
        for a in range(K):
            rbar[k, a] = 0.0
        ek = ebar[k]
        for i in range(d):
            ek[i] = 0.0
        if reparam:
            for j in range(M):
                vkj = V[k, j]
                for i in range(d):
                    vkj[i] = 0.0
    for k in range(M):
        _component_constants(k, Q, R, logw, logpi, tdiag, s, delta, cq, cp)
        ek = ebar[k]
        for i in range(n):
            e = eps[k * n + i]
            _project(e, B, proj, ek)
            sq = _dot(e, e) if train_w else 0.0
            fbar[k] += _sample_terms(k, em, emu, sq, cq, cp, Q[k, k], ss, s, delta, beta,
                                     gamma, sigma0_sq, d, train_w, rho, r)
            for j in range(M):
                rhobar[k, j] += rho[j]
            for a in range(K):
                rbar[k, a] += r[a]
            if reparam:
                for j in range(M):
                    _axpy(rho[j], e, V[k, j])
    inv_n = 1.0 / n
    for k in range(M):
        fbar[k] *= inv_n
        for j in range(M):
            rhobar[k, j] *= inv_n
        for a in range(K):
            rbar[k, a] *= inv_n
        ek = ebar[k]
        for t in range(d):
            ek[t] *= inv_n
        if reparam:
            for j in range(M):
                vkj = V[k, j]
                for t in range(d):
                    vkj[t] *= inv_n
    _assemble(m, mu, w, rhobar, rbar, fbar, ebar, V, ss, s, delta, beta, gamma, sigma0_sq,
              reparam, train_w, g, galpha)


# ----------------------------------------------------------------------------------------
# the estimator from given noise, for tests and users
# ----------------------------------------------------------------------------------------

def check_means(spec: ProblemSpec, m: Any, mu: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Component means (M, d) and target means (K, d) as contiguous float arrays."""
    m = np.ascontiguousarray(m, dtype=float)
    mu = np.ascontiguousarray(mu, dtype=float)
    M, K = spec.family.M, spec.target.K
    if m.ndim != 2 or m.shape[0] != M:
        raise ValueError(f"{name}: must have shape ({M}, d), got {m.shape}")
    d = m.shape[1]
    if mu.shape != (K, d):
        raise ValueError(f"mu: must have shape ({K}, {d}), got {mu.shape}")
    return m, mu


def problem_numbers(spec: ProblemSpec, mu: np.ndarray) -> tuple:
    """(tdiag (K,) = |mu_a|^2, logpi (K,), s, Delta, sigma0^2) as the kernels read them
    (sigma0^2 = 1 for tempering, where gamma = 0 makes it irrelevant)."""
    tdiag = np.einsum("ad,ad->a", mu, mu)
    logpi = np.log(spec.target.pi)
    s = float(spec.family.variance)
    delta = float(spec.target.variance)
    s0 = float(spec.path.base_variance) if spec.path.kind == "geometric" else 1.0
    return tdiag, logpi, s, delta, s0


def initial_logits(spec: ProblemSpec) -> np.ndarray:
    """``alpha(0) = log w - mean(log w)`` (M,), the convention of the reduced state."""
    lw = np.log(require_spec(spec).family.w)
    return lw - lw.mean()


def stochastic_gradient(spec: ProblemSpec, m: np.ndarray, mu: np.ndarray, eps: np.ndarray,
                        beta: float, alpha: np.ndarray | None = None,
                        estimator: str = "stl") -> tuple[np.ndarray, np.ndarray]:
    """The estimator used by ``analysis.montecarlo.simulate``, from given noise.

    Parameters
    ----------
    m : (M, d) means; mu : (K, d) target means; alpha : (M,) logits (default from spec).
    eps : (M, n, d) standard-normal noise, ``x_ki = m_k + sqrt(s) eps_ki``.
    beta : inverse temperature (gamma from ``spec.path``).
    estimator : a name in :data:`GRADIENT_ESTIMATORS`.

    Returns
    -------
    g : (M, d) estimate of ``grad_m F`` (so dm/dt = -g), galpha : (M,) estimate of
    ``dF/dalpha`` (zeros when the weights are fixed).
    """
    spec = require_spec(spec)
    est = gradient_estimator(estimator)
    m, mu = check_means(spec, m, mu, "m")
    M, K, d = spec.family.M, spec.target.K, m.shape[1]
    eps = np.asarray(eps, dtype=float)
    if eps.ndim != 3 or eps.shape[0] != M or eps.shape[2] != d or eps.shape[1] < 1:
        raise ValueError(f"eps: must have shape ({M}, n, {d}), got {eps.shape}")
    n = eps.shape[1]
    a = initial_logits(spec) if alpha is None else np.ascontiguousarray(alpha, dtype=float)
    tdiag, logpi, s, delta, s0 = problem_numbers(spec, mu)
    beta = float(beta)
    gamma = float(spec.gamma(beta))
    g = np.empty((M, d))
    galpha = np.empty(M)
    grad_from_noise(m, a, mu, tdiag, logpi, beta, gamma, s, delta, s0,
                    np.ascontiguousarray(eps.reshape(M * n, d)), n, est.code,
                    spec.family.train_weights, g, galpha, np.empty((M, M)), np.empty((M, K)),
                    np.empty((M, d)), np.empty((M, M, d if est.score_buffer else 1)),
                    np.empty((M, M)), np.empty((M, K)), np.empty(M),
                    np.empty((WORK_ROWS, M + K)), np.empty((M + K, d)))
    return g, galpha
