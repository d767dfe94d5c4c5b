r"""The d-dimensional Monte Carlo beyond the fixed-variance reverse KL (DESIGN.md section 9).

Kernels of :func:`analysis.montecarlo.simulate` for the forward KL and for trainable (tied) or
adiabatic variances.  The fixed-variance reverse KL keeps its own kernels
(:mod:`analysis.mc_estimators`, :mod:`analysis.mc_optimisers`) untouched.  Time is the
gradient-flow time t = eta * steps, as everywhere in the simulator.

Forward KL (``spec.objective == "forward-kl"``)
-----------------------------------------------
``F = E_{p_beta} log p_beta - E_{p_beta} log q`` with ``q = sum_k w_k N(m_k, s I)`` and the
variational responsibilities ``rho_k(x) = softmax_k(log w_k - |x - m_k|^2 / (2 s))``:

    grad_{m_k} F = -E_{x ~ p_beta}[rho_k(x) (x - m_k)] / s,
    dF/dalpha_k  = -(E_{p_beta}[rho_k] - w_k)                      (w = softmax(alpha)),
    dF/dlog s    = d/2 - E_{p_beta}[sum_j rho_j(x) |x - m_j|^2] / (2 s).

Every step draws ``N = M n`` samples from ``p_beta`` (the reverse KL's n per component: the same
number of Gaussian numbers per step), exactly: the component first, then the Gaussian.

* ``"inflation"`` path: ``p_beta = sum_a pi_a N(mu_a, (Delta/beta) I)``: mode a with
  probability pi_a, then ``x = mu_a + sqrt(Delta/beta) eps``;
* ``"mixture"`` path: ``p_beta = beta p + (1 - beta) p0``, ``p0 = N(0, sigma0^2 I)``: the base
  with probability gamma = 1 - beta (``x = sigma0 eps``), else mode a with probability
  beta pi_a (``x = mu_a + sqrt(Delta) eps``).

The component is chosen by inversion of one extra standard normal z per sample,
``u = Phi(z) = erfc(-z / sqrt 2) / 2`` (uniform on (0, 1)), against the cumulative
probabilities.  The estimates are the sample means of the integrands above: unbiased.  In terms
of the projections ``eps . m_j``, ``eps . mu_a`` (what the kernel computes, (M + K) d per
sample): ``x . m_j = R_ja + sd eps . m_j`` (0 instead of R_ja for the base) and
``|x|^2 = T_aa + 2 sd eps . mu_a + sd^2 |eps|^2``.

Trainable variances (``spec.family.variances``)
-----------------------------------------------
* ``"tied"``: one common variance s = exp(log s), trained with the learning-rate ratio 1/d,
  ``d(log s)/dt = -(1/d) dF/dlog s`` (the natural time scale: the entropy and E|x|^2 carry
  explicit factors of d, so log s would move O(d) faster than the means at equal rate; with
  the ratio both move at O(1) rates).  SGD: ``log s <- log s - (eta/d) g``; Adam: its own
  moments on the scaled gradient g/d.  The reverse-KL estimate of ``dF/dlog s`` is the
  ``stl`` reparameterisation gradient: with ``x = m_k + sqrt(s) eps``,
  ``dx/dlog s = sqrt(s) eps / 2`` and

      dF/dlog s = sum_k w_k E[(sqrt(s)/2) eps . grad_x phi(x)]
                = sum_k w_k (sqrt(s)/2) E[c (eps.m_k + sqrt(s) |eps|^2)
                                         + (1/s) sum_j rho_j eps.m_j
                                         - (beta/Delta) sum_a r_a eps.mu_a],

  ``c = -1/s + beta/Delta + gamma/sigma0^2`` (:mod:`analysis.mc_estimators`; the score term
  has zero mean).  K = M = 1 tempering: ``dF/dlog s = (d/2)(beta s/Delta - 1)``, zero at
  ``s = Delta/beta``.  Only ``stl`` is implemented for tied variances.
* ``"adiabatic"``: s at the single-component optimum at every step, ``s = 1/(beta/Delta +
  gamma/sigma0^2)`` for the reverse KL (tempering and geometric paths) and ``s = Delta/beta``
  for the forward KL on the inflation path (the mixture path has no such closed form and is
  refused).  The entropy's repulsion between components does not enter this s.

Per-component variances (``"per-component"``)
---------------------------------------------
``q(x) = sum_k w_k N(x; m_k, s_k I)`` with one variance per component, s_k = exp(log s_k), each
trained by the same optimiser as the means at the learning-rate ratio 1/d of ``"tied"``:
``d(log s_k)/dt = -(1/d) dF/dlog s_k`` (SGD: ``log s_k <- log s_k - (eta/d) g_k``; Adam: its own
moments of g_k/d per component).  The responsibilities now carry the normalisers,
``rho_j(x) = softmax_j(log w_j - (d/2) log(2 pi s_j) - |x - m_j|^2 / (2 s_j))``, which do not
cancel, so the kernels work with the d-dimensional samples x themselves rather than with
projections (no reduction to overlaps is exact here: the logit differences contain
``|x|^2 (1/s_k - 1/s_j)/2``).

* Reverse KL, ``stl`` (path derivative through ``x = m_k + sqrt(s_k) eps``, score term of zero
  mean dropped), with ``phi = log q - beta log p - gamma log p0`` and

      grad_x phi = c(x) x + sum_j rho_j m_j / s_j - (beta/Delta) sum_a r_a mu_a,
      c(x) = -sum_j rho_j / s_j + beta/Delta + gamma/sigma0^2,

  ``grad_{m_k} F = w_k E[grad_x phi]``, ``dF/dlog s_k = w_k (sqrt(s_k)/2) E[eps . grad_x phi]``
  and ``dF/dalpha_k = w_k (E_k phi - sum_j w_j E_j phi)``.  With all s_k = s these are
  the tied kernel's per-component terms, and sum_k dF/dlog s_k is the tied dF/dlog s.
  Leading order: ``dF/dlog s_k = w_k (d/2)(s_k/s* - 1) + O(1)``, so
  ``d(log s_k)/dt = (w_k/2)(1 - s_k/s*) + O(1/d)``: each s_k relaxes to the tied/adiabatic s*
  at the rate w_k/2 (the common tied s, which receives the sum over k, at 1/2).
* Forward KL (samples of p_beta as above): ``grad_{m_k} F = -E[rho_k (x - m_k)] / s_k``,
  ``dF/dlog s_k = E[rho_k (d/2 - |x - m_k|^2 / (2 s_k))]``, ``dF/dalpha_k = -(E rho_k - w_k)``.

Random streams: a run's normals come from its own generator (:mod:`analysis.mc_random`), first
the M n d normals of eps and then (forward KL) the M n normals that choose the components,
every step; runs are independent of threads and batches as in the reverse-KL kernel.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .mc_estimators import (
    _assemble,
    _axpy,
    _component_constants,
    _dot,
    _project,
    _sample_terms,
    _softmax_inplace,
    _softmax_logits,
    qr_stats,
)
from .mc_optimisers import ADAM_CODE, _adam_update, _sgd_update
from .mc_random import FASTMATH, draw_normals

__all__ = ["OBJECTIVE_CODES", "VARIANCE_CODES", "FKL_PATH_CODES", "FKL_WORK_ROWS",
           "rkl_grad_logs", "fkl_grad", "objective_block", "adiabatic_variance",
           "forward_gradient", "reverse_gradient_tied", "rkl_grad_per_component",
           "fkl_grad_per_component", "reverse_gradient_per_component",
           "forward_gradient_per_component"]

OBJECTIVE_CODES = {"reverse-kl": 0, "forward-kl": 1}
VARIANCE_CODES = {"fixed": 0, "tied": 1, "adiabatic": 2, "per-component": 3}
#: Path codes of the forward-KL sampler (the reverse KL's paths enter only through gamma).
FKL_PATH_CODES = {"inflation": 0, "mixture": 1, "tempering": 0, "geometric": 0}
#: Rows of the work array of :func:`fkl_grad` and :func:`rkl_grad_logs` (width M + K + 1).
FKL_WORK_ROWS = 8


def adiabatic_variance(objective: str, path: str, beta: np.ndarray | float, delta: float,
                       sigma0_sq: float) -> np.ndarray | float:
    """The adiabatic s(beta), the d -> infinity minimiser of the variance part of the objective
    (the same value the reduced engine substitutes, :func:`derivations.model` ``"adiabatic"``):

    * reverse KL: ``1/(beta/Delta + gamma/sigma0^2)`` (gamma = 1 - beta on the geometric path,
      0 for tempering);
    * forward KL: ``s* = D_beta`` with ``E_{p_beta}|x|^2 = d D_beta + O(1)``: ``Delta/beta`` on
      the inflation path, ``beta Delta + (1 - beta) sigma0^2`` on the mixture path
      ``p_beta = beta p + (1 - beta) N(0, sigma0^2 I)``.  At finite d the tied flow's optimum is
      ``D_beta + O(1/d)`` (the O(1) part of E|x|^2 and the means' terms); ``adiabatic`` drops it.
    """
    b = np.asarray(beta, dtype=float)
    if objective == "forward-kl":
        if path == "inflation":
            out = delta / b
        elif path == "mixture":
            out = b * delta + (1.0 - b) * sigma0_sq
        else:
            raise ValueError(f"path: the forward KL takes 'inflation' or 'mixture', got {path!r}")
    else:
        gamma = (1.0 - b) if path == "geometric" else np.zeros_like(b)
        out = 1.0 / (b / delta + gamma / sigma0_sq)
    return float(out) if out.ndim == 0 else out


@njit(fastmath=FASTMATH, cache=True)
def rkl_grad_logs(m, alpha, mu, tdiag, logpi, beta, gamma, s, delta, sigma0_sq, eps, n,
                  train_w, g, galpha, Q, R, ebar, rhobar, rbar, fbar, work, B):
    """The ``stl`` reverse-KL gradient (g (M, d), galpha (M,)) as in
    :func:`analysis.mc_estimators.grad_from_noise`, and the returned estimate of
    ``dF/dlog s`` (module docstring), from the noise eps (M n, d) of ``x = m_k + sqrt(s) eps``.

    work (FKL_WORK_ROWS, M + K + 1); the other arrays as in ``grad_from_noise`` (V unused).
    """
    M, d = m.shape
    K = mu.shape[0]
    qr_stats(m, mu, Q, R)
    for j in range(M):
        B[j, :] = m[j]
    for a in range(K):
        B[M + a, :] = mu[a]
    w = work[0, :M]
    logw = work[1, :M]
    proj = work[2, :M + K]
    em = proj[:M]
    emu = proj[M:]
    cq = work[3, :M]
    cp = work[4, :K]
    rho = work[5, :M]
    r = work[6, :K]
    _softmax_logits(alpha, w, logw)
    ss = math.sqrt(s)
    c = -1.0 / s + beta / delta + (gamma / sigma0_sq if gamma != 0.0 else 0.0)
    glogs = 0.0
    for k in range(M):
        fbar[k] = 0.0
        for j in range(M):
            rhobar[k, j] = 0.0
        for a in range(K):
            rbar[k, a] = 0.0
        ek = ebar[k]
        for i in range(d):
            ek[i] = 0.0
    for k in range(M):
        _component_constants(k, Q, R, logw, logpi, tdiag, s, delta, cq, cp)
        ek = ebar[k]
        acc = 0.0
        for i in range(n):
            e = eps[k * n + i]
            _project(e, B, proj, ek)
            sq = _dot(e, e)
            fbar[k] += _sample_terms(k, em, emu, sq, cq, cp, Q[k, k], ss, s, delta, beta,
                                     gamma, sigma0_sq, d, train_w, rho, r)
            term = c * (em[k] + ss * sq)
            for j in range(M):
                rhobar[k, j] += rho[j]
                term += rho[j] * em[j] / s
            for a in range(K):
                rbar[k, a] += r[a]
                term -= beta / delta * r[a] * emu[a]
            acc += term
        glogs += w[k] * 0.5 * ss * acc / n
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
    V = np.empty((1, 1, 1))
    _assemble(m, mu, w, rhobar, rbar, fbar, ebar, V, ss, s, delta, beta, gamma, sigma0_sq,
              False, train_w, g, galpha)
    return glogs


@njit(fastmath=FASTMATH, cache=True)
def fkl_grad(m, alpha, mu, tdiag, logpi, beta, gamma, s, delta, sigma0_sq, path_code, eps,
             sel, train_w, want_s, g, galpha, Q, R, acc, scratch, cmu, work, B):
    """One forward-KL gradient estimate from the noise: returns ``dF/dlog s`` (0 unless
    want_s) and writes g (M, d) ~ grad_m F, galpha (M,) ~ dF/dalpha (zeros unless train_w).

    eps (N, d) standard normals, sel (N,) standard normals choosing each sample's component
    (module docstring); path_code 0 inflation, 1 mixture (base weight gamma).  Work: Q (M, M),
    R (M, K), acc (M, d), scratch (d,), cmu (M, K + 1), work (FKL_WORK_ROWS, M + K + 1),
    B (M + K, d).
    """
    M, d = m.shape
    K = mu.shape[0]
    N = eps.shape[0]
    qr_stats(m, mu, Q, R)
    for j in range(M):
        B[j, :] = m[j]
    for a in range(K):
        B[M + a, :] = mu[a]
    w = work[0, :M]
    logw = work[1, :M]
    proj = work[2, :M + K]
    em = proj[:M]
    emu = proj[M:]
    rho = work[3, :M]
    cum = work[4, :K + 1]
    _softmax_logits(alpha, w, logw)
    # cumulative probabilities of the components of p_beta; index K is the base
    base = gamma if path_code == 1 else 0.0
    tot = 0.0
    for a in range(K):
        tot += (1.0 - base) * math.exp(logpi[a])
        cum[a] = tot
    cum[K] = 1.0
    sd_t = math.sqrt(delta / beta) if path_code == 0 else math.sqrt(delta)
    sd_0 = math.sqrt(sigma0_sq)
    for k in range(M):
        for i in range(d):
            acc[k, i] = 0.0
        for a in range(K + 1):
            cmu[k, a] = 0.0
    s2 = 0.0
    inv_s = 1.0 / s
    for i in range(N):
        e = eps[i]
        u = 0.5 * math.erfc(-sel[i] / math.sqrt(2.0))
        a = K
        for b in range(K):
            if u < cum[b]:
                a = b
                break
        if a == K and base == 0.0:        # u rounded to 1 without a base: the last mode
            a = K - 1
        sd = sd_0 if a == K else sd_t
        _project(e, B, proj, scratch)
        for j in range(M):
            xm = sd * em[j] + (R[j, a] if a < K else 0.0)
            rho[j] = logw[j] + (xm - 0.5 * Q[j, j]) * inv_s
        _softmax_inplace(rho, False)
        if want_s:
            sq = _dot(e, e)
            x2 = sd * sd * sq
            if a < K:
                x2 += tdiag[a] + 2.0 * sd * emu[a]
            for j in range(M):
                xm = sd * em[j] + (R[j, a] if a < K else 0.0)
                s2 += rho[j] * (x2 - 2.0 * xm + Q[j, j])
        for k in range(M):
            cmu[k, a] += rho[k]
            _axpy(rho[k] * sd, e, acc[k])
    inv_n = 1.0 / N
    for k in range(M):
        rs = 0.0
        for a in range(K + 1):
            rs += cmu[k, a]
        gk = g[k]
        coef = -inv_s * inv_n
        for i in range(d):
            gk[i] = coef * (acc[k, i] - rs * m[k, i])
        for a in range(K):
            _axpy(coef * cmu[k, a], mu[a], gk)
        galpha[k] = -(rs * inv_n - w[k]) if train_w else 0.0
    if want_s:
        return 0.5 * d - 0.5 * s2 * inv_s * inv_n
    return 0.0


@njit(fastmath=FASTMATH, cache=True)
def _pc_logits(x, m, logw, logs, out):
    """``out_j = log w_j - (d/2) log(2 pi s_j) - |x - m_j|^2 / (2 s_j)`` (s_j = exp(logs_j))."""
    M, d = m.shape
    for j in range(M):
        mj = m[j]
        acc = 0.0
        for t in range(d):
            u = x[t] - mj[t]
            acc += u * u
        out[j] = logw[j] - 0.5 * d * (math.log(2.0 * math.pi) + logs[j]) \
            - 0.5 * acc * math.exp(-logs[j])


@njit(fastmath=FASTMATH, cache=True)
def rkl_grad_per_component(m, alpha, mu, logpi, beta, gamma, logs, delta, sigma0_sq, eps, n,
                           train_w, g, galpha, glogs, x, gx, work):
    """The ``stl`` reverse-KL gradient with per-component variances (module docstring).

    m (M, d), alpha (M,), mu (K, d), logpi (K,), logs (M,) the log s_k; eps (M n, d): row
    ``k n + i`` is the noise of sample i of component k, ``x = m_k + sqrt(s_k) eps``.  Writes
    g (M, d) ~ grad_m F, galpha (M,) ~ dF/dalpha (zeros unless train_w) and glogs (M,) ~
    dF/dlog s_k.  Work: x, gx (d,), work (FKL_WORK_ROWS, M + K + 1).
    """
    M, d = m.shape
    K = mu.shape[0]
    w = work[0, :M]
    logw = work[1, :M]
    lq = work[2, :M]
    lp = work[3, :K]
    fbar = work[4, :M]
    sv = work[5, :M]
    _softmax_logits(alpha, w, logw)
    for j in range(M):
        sv[j] = math.exp(logs[j])
    bp = beta / delta
    bg = gamma / sigma0_sq if gamma != 0.0 else 0.0
    cp = -0.5 * d * math.log(2.0 * math.pi * delta)
    c0 = -0.5 * d * math.log(2.0 * math.pi * sigma0_sq)
    inv_n = 1.0 / n
    for k in range(M):
        gk = g[k]
        for t in range(d):
            gk[t] = 0.0
        glogs[k] = 0.0
        fbar[k] = 0.0
        ssk = math.sqrt(sv[k])
        mk = m[k]
        for i in range(n):
            e = eps[k * n + i]
            for t in range(d):
                x[t] = mk[t] + ssk * e[t]
            _pc_logits(x, m, logw, logs, lq)
            for a in range(K):
                ma = mu[a]
                acc = 0.0
                for t in range(d):
                    u = x[t] - ma[t]
                    acc += u * u
                lp[a] = logpi[a] - 0.5 * acc / delta
            lse_q = _softmax_inplace(lq, train_w)
            lse_p = _softmax_inplace(lp, train_w)
            c = bp + bg
            for j in range(M):
                c -= lq[j] / sv[j]
            for t in range(d):
                gx[t] = c * x[t]
            for j in range(M):
                _axpy(lq[j] / sv[j], m[j], gx)
            for a in range(K):
                _axpy(-bp * lp[a], mu[a], gx)
            _axpy(inv_n, gx, gk)
            glogs[k] += _dot(e, gx)
            if train_w:
                phi = lse_q - beta * (lse_p + cp)
                if gamma != 0.0:
                    phi -= gamma * (-0.5 * _dot(x, x) / sigma0_sq + c0)
                fbar[k] += phi * inv_n
        wk = w[k]
        for t in range(d):
            gk[t] *= wk
        glogs[k] *= wk * 0.5 * ssk * inv_n
    if train_w:
        fmean = 0.0
        for j in range(M):
            fmean += w[j] * fbar[j]
        for k in range(M):
            galpha[k] = w[k] * (fbar[k] - fmean)
    else:
        for k in range(M):
            galpha[k] = 0.0


@njit(fastmath=FASTMATH, cache=True)
def fkl_grad_per_component(m, alpha, mu, logpi, beta, gamma, logs, delta, sigma0_sq, path_code,
                           eps, sel, train_w, g, galpha, glogs, x, work):
    """The forward-KL gradient with per-component variances from samples of p_beta (as in
    :func:`fkl_grad`: eps (N, d), sel (N,)): g (M, d), galpha (M,), glogs (M,) (module
    docstring).  Work: x (d,), work (FKL_WORK_ROWS, M + K + 1)."""
    M, d = m.shape
    K = mu.shape[0]
    N = eps.shape[0]
    w = work[0, :M]
    logw = work[1, :M]
    rho = work[2, :M]
    cum = work[3, :K + 1]
    rs = work[4, :M]
    dist = work[5, :M]
    sv = work[6, :M]
    _softmax_logits(alpha, w, logw)
    base = gamma if path_code == 1 else 0.0
    tot = 0.0
    for a in range(K):
        tot += (1.0 - base) * math.exp(logpi[a])
        cum[a] = tot
    cum[K] = 1.0
    sd_t = math.sqrt(delta / beta) if path_code == 0 else math.sqrt(delta)
    sd_0 = math.sqrt(sigma0_sq)
    for k in range(M):
        sv[k] = math.exp(logs[k])
        rs[k] = 0.0
        glogs[k] = 0.0
        gk = g[k]
        for t in range(d):
            gk[t] = 0.0
    for i in range(N):
        e = eps[i]
        u = 0.5 * math.erfc(-sel[i] / math.sqrt(2.0))
        a = K
        for b in range(K):
            if u < cum[b]:
                a = b
                break
        if a == K and base == 0.0:
            a = K - 1
        if a == K:
            for t in range(d):
                x[t] = sd_0 * e[t]
        else:
            ma = mu[a]
            for t in range(d):
                x[t] = ma[t] + sd_t * e[t]
        _pc_logits(x, m, logw, logs, rho)
        for j in range(M):
            dist[j] = 2.0 * (logw[j] - 0.5 * d * (math.log(2.0 * math.pi) + logs[j]) - rho[j])
        _softmax_inplace(rho, False)
        for k in range(M):
            rk = rho[k]
            rs[k] += rk
            _axpy(rk, x, g[k])
            glogs[k] += rk * (0.5 * d - 0.5 * dist[k])      # dist[k] = |x - m_k|^2 / s_k
    inv_n = 1.0 / N
    for k in range(M):
        gk = g[k]
        mk = m[k]
        coef = -inv_n / sv[k]
        for t in range(d):
            gk[t] = coef * (gk[t] - rs[k] * mk[t])
        glogs[k] *= inv_n
        galpha[k] = -(rs[k] * inv_n - w[k]) if train_w else 0.0


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def objective_block(m, alpha, logs, mom1, mom2, amom1, amom2, smom, rng_state, active, mu,
                    tdiag, logpi, betas, gammas, svals, step0, eta, n, delta, sigma0_sq,
                    objective_code, path_code, variance_code, train_w, optimiser_code, b1, b2,
                    adam_eps, Q_out, R_out):
    """Advance S runs by ``len(betas)`` steps of the forward KL or of a trainable-variance
    reverse KL (in place; the counterpart of :func:`analysis.mc_optimisers.sgd_block`).

    m (S, M, d), alpha (S, M), logs (S, M) log s_k of every run and component (per-component:
    each trained; tied: one trained value kept in every column; fixed and adiabatic:
    overwritten with log of ``svals`` of the last step); mom1, mom2 (S, M, d) or (S, 1, 1),
    amom1, amom2 (S, M), smom (S, M, 2): optimiser moments of log s_k (tied: row 0);
    rng_state (S, 2, LANES); active (S,);
    betas, gammas, svals (nsteps,): beta, gamma and the prescribed s (fixed or adiabatic) at the
    start of each step.  objective_code / variance_code: :data:`OBJECTIVE_CODES`,
    :data:`VARIANCE_CODES`; path_code: :data:`FKL_PATH_CODES` (forward KL only).
    Tied: ``log s <- log s - eta g / d`` (SGD) with g the estimate of ``dF/dlog s``;
    per-component: ``log s_k <- log s_k - eta g_k / d`` with g_k the estimate of dF/dlog s_k.
    """
    S, M, d = m.shape
    K = mu.shape[0]
    nsteps = betas.shape[0]
    L = rng_state.shape[2]
    N = M * n
    fkl = objective_code == 1
    tied = variance_code == 1
    pc = variance_code == 3
    inv_d = 1.0 / d
    for run in prange(S):
        if active[run]:
            eps = np.empty((N, d))
            flat = eps.reshape(N * d)
            sel = np.empty(N)
            tmp = np.empty(2 * L)
            g = np.empty((M, d))
            galpha = np.empty(M)
            Q = np.empty((M, M))
            R = np.empty((M, K))
            ebar = np.empty((M, d))
            scratch = np.empty(d)
            rhobar = np.empty((M, M))
            rbar = np.empty((M, K))
            fbar = np.empty(M)
            cmu = np.empty((M, K + 1))
            work = np.empty((FKL_WORK_ROWS, M + K + 1))
            Bw = np.empty((M + K, d))
            glogs = np.empty(M)
            xw = np.empty(d)
            mr = m[run]
            ar = alpha[run]
            s0 = rng_state[run, 0]
            s1 = rng_state[run, 1]
            for st in range(nsteps):
                s = math.exp(logs[run, 0]) if tied else svals[st]
                draw_normals(s0, s1, flat, tmp)
                gl = 0.0
                if pc:
                    if fkl:
                        draw_normals(s0, s1, sel, tmp)
                        fkl_grad_per_component(mr, ar, mu, logpi, betas[st], gammas[st],
                                               logs[run], delta, sigma0_sq, path_code, eps,
                                               sel, train_w, g, galpha, glogs, xw, work)
                    else:
                        rkl_grad_per_component(mr, ar, mu, logpi, betas[st], gammas[st],
                                               logs[run], delta, sigma0_sq, eps, n, train_w,
                                               g, galpha, glogs, xw, scratch, work)
                elif fkl:
                    draw_normals(s0, s1, sel, tmp)
                    gl = fkl_grad(mr, ar, mu, tdiag, logpi, betas[st], gammas[st], s, delta,
                                  sigma0_sq, path_code, eps, sel, train_w, tied, g, galpha,
                                  Q, R, ebar, scratch, cmu, work, Bw)
                else:
                    gl = rkl_grad_logs(mr, ar, mu, tdiag, logpi, betas[st], gammas[st], s,
                                       delta, sigma0_sq, eps, n, train_w, g, galpha, Q, R,
                                       ebar, rhobar, rbar, fbar, work, Bw)
                if optimiser_code == ADAM_CODE:
                    _adam_update(mr, ar, g, galpha, mom1[run], mom2[run], amom1[run],
                                 amom2[run], step0 + st + 1, eta, b1, b2, adam_eps, train_w)
                else:
                    _sgd_update(mr, ar, g, galpha, eta, train_w)
                if tied or pc:
                    for k in range(M if pc else 1):
                        gs = (glogs[k] if pc else gl) * inv_d
                        if optimiser_code == ADAM_CODE:
                            tstep = step0 + st + 1
                            v1 = b1 * smom[run, k, 0] + (1.0 - b1) * gs
                            v2 = b2 * smom[run, k, 1] + (1.0 - b2) * gs * gs
                            smom[run, k, 0] = v1
                            smom[run, k, 1] = v2
                            logs[run, k] -= eta * (v1 / (1.0 - b1 ** tstep)) / (
                                math.sqrt(v2 / (1.0 - b2 ** tstep)) + adam_eps)
                        else:
                            logs[run, k] -= eta * gs
                    if tied:
                        for k in range(1, M):
                            logs[run, k] = logs[run, 0]
                else:
                    for k in range(M):
                        logs[run, k] = math.log(svals[st])
            ok = True
            for k in range(M):
                if not math.isfinite(logs[run, k]):
                    ok = False
            for k in range(M):
                if not math.isfinite(ar[k]):
                    ok = False
                for i in range(d):
                    if not math.isfinite(mr[k, i]):
                        ok = False
            if not ok:
                active[run] = False
        qr_stats(m[run], mu, Q_out[run], R_out[run])


# ----------------------------------------------------------------------------------------
# the estimators from given noise, for tests and users
# ----------------------------------------------------------------------------------------

def _path_numbers(spec, mu):
    tdiag = np.einsum("ad,ad->a", mu, mu)
    logpi = np.log(spec.target.pi)
    delta = float(spec.target.variance)
    s0 = float(spec.path.base_variance) if spec.path.base_variance is not None else 1.0
    return tdiag, logpi, delta, s0


def forward_gradient(spec, m: np.ndarray, mu: np.ndarray, eps: np.ndarray, sel: np.ndarray,
                     beta: float, s: float | None = None, alpha: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray, float]:
    """The simulator's forward-KL estimate from given noise: (g (M, d) ~ grad_m F, galpha (M,)
    ~ dF/dalpha (zeros for fixed weights), dF/dlog s).

    eps (N, d) and sel (N,) standard normals (module docstring: sample i is
    ``x_i = mu_a + sd eps_i`` with its component a chosen by ``Phi(sel_i)``); beta the inverse
    temperature of ``spec.path`` (inflation or mixture); s the variance (default
    ``spec.family.variance``); alpha (M,) logits (default ``log w - mean log w``).
    """
    from derivations.spec import require_spec

    from .mc_estimators import check_means, initial_logits
    spec = require_spec(spec)
    if spec.objective != "forward-kl":
        raise ValueError(f"spec: forward_gradient needs the forward-kl objective, got "
                         f"{spec.objective!r}")
    m, mu = check_means(spec, m, mu, "m")
    M, K, d = spec.family.M, spec.target.K, m.shape[1]
    eps = np.ascontiguousarray(eps, dtype=float)
    sel = np.ascontiguousarray(sel, dtype=float)
    if eps.ndim != 2 or eps.shape[1] != d or eps.shape[0] < 1:
        raise ValueError(f"eps: must have shape (N, {d}), got {eps.shape}")
    if sel.shape != (eps.shape[0],):
        raise ValueError(f"sel: must have shape ({eps.shape[0]},), got {sel.shape}")
    a = initial_logits(spec) if alpha is None else np.ascontiguousarray(alpha, dtype=float)
    tdiag, logpi, delta, s0 = _path_numbers(spec, mu)
    s = float(spec.family.variance) if s is None else float(s)
    beta = float(beta)
    g = np.empty((M, d))
    galpha = np.empty(M)
    gl = fkl_grad(m, a, mu, tdiag, logpi, beta, float(spec.gamma(beta)), s, delta, s0,
                  FKL_PATH_CODES[spec.path.kind], eps, sel, spec.family.train_weights, True,
                  g, galpha, np.empty((M, M)), np.empty((M, K)), np.empty((M, d)),
                  np.empty(d), np.empty((M, K + 1)), np.empty((FKL_WORK_ROWS, M + K + 1)),
                  np.empty((M + K, d)))
    return g, galpha, float(gl)


def reverse_gradient_tied(spec, m: np.ndarray, mu: np.ndarray, eps: np.ndarray, beta: float,
                          s: float, alpha: np.ndarray | None = None
                          ) -> tuple[np.ndarray, np.ndarray, float]:
    """The simulator's reverse-KL ``stl`` estimate with a trainable variance, from given noise
    eps (M, n, d) (``x_ki = m_k + sqrt(s) eps_ki``): (g, galpha, dF/dlog s)."""
    from derivations.spec import require_spec

    from .mc_estimators import check_means, initial_logits
    spec = require_spec(spec)
    m, mu = check_means(spec, m, mu, "m")
    M, K, d = spec.family.M, spec.target.K, m.shape[1]
    eps = np.asarray(eps, dtype=float)
    if eps.ndim != 3 or eps.shape[0] != M or eps.shape[2] != d or eps.shape[1] < 1:
        raise ValueError(f"eps: must have shape ({M}, n, {d}), got {eps.shape}")
    n = eps.shape[1]
    a = initial_logits(spec) if alpha is None else np.ascontiguousarray(alpha, dtype=float)
    tdiag, logpi, delta, s0 = _path_numbers(spec, mu)
    beta = float(beta)
    g = np.empty((M, d))
    galpha = np.empty(M)
    gl = rkl_grad_logs(m, a, mu, tdiag, logpi, beta, float(spec.gamma(beta)), float(s), delta,
                       s0, np.ascontiguousarray(eps.reshape(M * n, d)), n,
                       spec.family.train_weights, g, galpha, np.empty((M, M)),
                       np.empty((M, K)), np.empty((M, d)), np.empty((M, M)), np.empty((M, K)),
                       np.empty(M), np.empty((FKL_WORK_ROWS, M + K + 1)), np.empty((M + K, d)))
    return g, galpha, float(gl)


def _per_component_variances(spec, s, M: int) -> np.ndarray:
    """log s_k (M,) from ``s`` (a scalar, (M,) positive values, or None: spec.family.variance)."""
    v = np.full(M, float(spec.family.variance)) if s is None else \
        np.broadcast_to(np.asarray(s, dtype=float), (M,)).copy()
    if not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise ValueError(f"s: the per-component variances must be finite and > 0, got {v}")
    return np.log(v)


def reverse_gradient_per_component(spec, m: np.ndarray, mu: np.ndarray, eps: np.ndarray,
                                   beta: float, s, alpha: np.ndarray | None = None
                                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The simulator's reverse-KL ``stl`` estimate with per-component variances s (M,), from
    given noise eps (M, n, d) (``x_ki = m_k + sqrt(s_k) eps_ki``): (g (M, d) ~ grad_m F,
    galpha (M,) ~ dF/dalpha, glogs (M,) ~ dF/dlog s_k) (module docstring)."""
    from derivations.spec import require_spec

    from .mc_estimators import check_means, initial_logits
    spec = require_spec(spec)
    if spec.objective != "reverse-kl":
        raise ValueError(f"spec: reverse_gradient_per_component needs the reverse-kl "
                         f"objective, got {spec.objective!r}")
    m, mu = check_means(spec, m, mu, "m")
    M, K, d = spec.family.M, spec.target.K, m.shape[1]
    eps = np.asarray(eps, dtype=float)
    if eps.ndim != 3 or eps.shape[0] != M or eps.shape[2] != d or eps.shape[1] < 1:
        raise ValueError(f"eps: must have shape ({M}, n, {d}), got {eps.shape}")
    n = eps.shape[1]
    a = initial_logits(spec) if alpha is None else np.ascontiguousarray(alpha, dtype=float)
    _, logpi, delta, s0 = _path_numbers(spec, mu)
    logs = _per_component_variances(spec, s, M)
    beta = float(beta)
    g, galpha, glogs = np.empty((M, d)), np.empty(M), np.empty(M)
    rkl_grad_per_component(m, a, mu, logpi, beta, float(spec.gamma(beta)), logs, delta, s0,
                           np.ascontiguousarray(eps.reshape(M * n, d)), n,
                           spec.family.train_weights, g, galpha, glogs, np.empty(d),
                           np.empty(d), np.empty((FKL_WORK_ROWS, M + K + 1)))
    return g, galpha, glogs


def forward_gradient_per_component(spec, m: np.ndarray, mu: np.ndarray, eps: np.ndarray,
                                   sel: np.ndarray, beta: float, s,
                                   alpha: np.ndarray | None = None
                                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The simulator's forward-KL estimate with per-component variances s (M,), from the
    noise eps (N, d), sel (N,) of :func:`forward_gradient`: (g, galpha, glogs (M,))."""
    from derivations.spec import require_spec

    from .mc_estimators import check_means, initial_logits
    spec = require_spec(spec)
    if spec.objective != "forward-kl":
        raise ValueError(f"spec: forward_gradient_per_component needs the forward-kl "
                         f"objective, got {spec.objective!r}")
    m, mu = check_means(spec, m, mu, "m")
    M, K, d = spec.family.M, spec.target.K, m.shape[1]
    eps = np.ascontiguousarray(eps, dtype=float)
    sel = np.ascontiguousarray(sel, dtype=float)
    if eps.ndim != 2 or eps.shape[1] != d or eps.shape[0] < 1:
        raise ValueError(f"eps: must have shape (N, {d}), got {eps.shape}")
    if sel.shape != (eps.shape[0],):
        raise ValueError(f"sel: must have shape ({eps.shape[0]},), got {sel.shape}")
    a = initial_logits(spec) if alpha is None else np.ascontiguousarray(alpha, dtype=float)
    _, logpi, delta, s0 = _path_numbers(spec, mu)
    logs = _per_component_variances(spec, s, M)
    beta = float(beta)
    g, galpha, glogs = np.empty((M, d)), np.empty(M), np.empty(M)
    fkl_grad_per_component(m, a, mu, logpi, beta, float(spec.gamma(beta)), logs, delta, s0,
                           FKL_PATH_CODES[spec.path.kind], eps, sel,
                           spec.family.train_weights, g, galpha, glogs, np.empty(d),
                           np.empty((FKL_WORK_ROWS, M + K + 1)))
    return g, galpha, glogs
