r"""The exact reduced SGD chain: SGD on Gaussian-mixture VI in R^d at a cost independent of d.

DESIGN.md section 7.  This is the same Markov chain as the d-dimensional simulator
(``analysis.montecarlo.simulate`` with the ``sgd`` optimiser and the ``stl`` or ``reparam``
estimator of ``analysis.mc_estimators``), sampled exactly through the d-independent law of its
transition, not an approximation.

The chain in R^d
----------------
Target ``p = sum_a pi_a N(mu_a, Delta I)``, family ``q = sum_k w_k N(m_k, s I)``,
``phi(x) = log q(x) - beta log p(x) - gamma log p0(x)`` (p0 = N(0, sigma0^2 I); gamma = 0 for
tempering, 1 - beta on the geometric path).  One step at beta = beta(eta * step), with
``x_ki = m_k + sqrt(s) xi_ki``, xi_ki ~ N(0, I_d), i = 1..n, N = M n samples:

    g_k = w_k [ c m_k + (1/s) sum_j rhobar_kj m_j - (beta/Delta) sum_a rbar_ka mu_a ]
          + [reparam] sum_j (w_j/s) rhobar_jk (m_j - m_k)
          + sum_{j,i} C_{k,(j,i)} xi_ji,
    C_{k,(j,i)} = delta_jk w_k c sqrt(s) / n + [reparam] w_j sqrt(s) rho_k(x_ji) / (s n),
    c = -1/s + beta/Delta + gamma/sigma0^2,

with ``rhobar_kj = mean_i rho_j(x_ki)``, ``rbar_ka = mean_i r_a(x_ki)``,
``rho_j(x) = softmax_j(log w_j + (x.m_j - Q_jj/2)/s)``,
``r_a(x) = softmax_a(log pi_a + (x.mu_a - T_aa/2)/Delta)``.  Logits (trainable weights):

    galpha_k = w_k (fbar_k - sum_j w_j fbar_j) + [reparam] (sum_j w_j rhobar_jk - w_k),
    fbar_k = mean_i phi(x_ki)   (all normalising constants included),

and the update is ``m_k <- m_k - eta g_k``, ``alpha <- alpha - eta galpha``.  Time is the
gradient-flow time ``t = eta * steps``; ``betas[i]``, ``gammas[i]`` are the values at the
*start* of step i of a block.  These are exactly the formulas of ``analysis.mc_estimators``
(the R^d code is the reference).

Reduction
---------
The softmax logits depend on xi only through ``xi.m_j`` and ``xi.mu_a`` (the |x|^2 terms are
common to all components of a softmax and cancel), phi through those and ``|xi|^2``.  Keep an
orthonormal frame of dimension ``D = r_T + M`` (r_T = rank T) containing span{mu_a, m_k}: its
first r_T axes span the target means (coordinates ``E`` (K, r_T), ``T = E E^T``, never
changing), the next M hold the rest of the means (state ``X`` (M, D), ``Q = X X^T``,
``R = X[:, :r_T] E^T``).  Write ``xi = z + xi_perp`` with z (D,) the frame coordinates and
xi_perp in the (d - D)-dimensional complement.  Then

1. z ~ N(0, I_D) for every sample: drawn explicitly (N D normals).  The responsibilities,
   rhobar, rbar and the in-frame part of g follow from z and the coordinates.
2. The out-of-frame part of the update, ``v_k = -eta sum_{j,i} C_{k,(j,i)} xi_perp_ji``, and
   (weights only) ``S_j = sum_i |xi_perp_ji|^2`` are what the rest of the noise contributes,
   with C fixed by step 1.  Per block j, the M rows of ``C_j = C[:, block j]`` (M, n) lie in an
   mb = min(M, n) dimensional subspace of R^n: with the QR factorisation ``C_j^T = Q_j R_j``
   (Q_j (n, mb) orthonormal columns), ``C_j Xi_j = R_j^T u_j`` with ``u_j = Q_j^T Xi_j``
   (mb, d - D) i.i.d. N(0, 1), and ``S_j = |u_j|_F^2 + chi^2((n - mb)(d - D))`` independently
   (the rest of the block).  Stacking the u_j (M mb rows), only their Gram matrix enters, a
   standard Wishart ``W_{M mb}(d - D)``, drawn by the Bartlett decomposition ``W = F F^T``
   (F lower triangular, ``F_ii^2 ~ chi^2(d - D - i)``, ``F_il ~ N(0, 1)``; for d - D < M mb
   the singular case, F is an (M mb, d - D) Gaussian matrix).  Then ``v = -eta B F`` with
   ``B = [R_1^T, ..., R_M^T]`` (M, M mb) are the coordinates of the v_k in q new orthonormal
   directions perpendicular to the frame, and S_j is the sum of squared row norms of F over
   block j plus the chi-square.  Every step is an identity in law: the chain is exact for
   every d >= D.  Randomness per step: N D + (M mb)(M mb + 1)/2 normals and chi-squares
   (+ M chi-squares with weights), independent of d.
3. Re-orthonormalise: the perpendicular-to-mu part of the means now has coordinates
   ``[X[:, r_T:] - eta g_perp, v]`` (M, M + q); its Householder QR gives the new M
   coordinates (a lower-triangular factor), so the frame stays of dimension D.

Random numbers: every run owns a xoshiro256** generator (state (4,) uint64, seeded by
:func:`rng_states` from ``numpy.random.SeedSequence(seed, spawn_key=(run, 2))``); normals by
Marsaglia's polar method, chi-squares as 2 Gamma(k/2) by Marsaglia-Tsang (2000) (exact
rejection sampler; shape < 1 by the ``U^(1/a)`` boost).  Runs are independent ``prange``
iterations that touch only their own state, so results do not depend on the thread count.

Adam is not rotation invariant and has no such reduction; it is not supported here.

API
---
:func:`initial_frame` (coordinates from (T, Q0, R0)), :func:`frame_overlaps` (Q, R from the
coordinates), :func:`rng_states`, :func:`advance` (a block of steps, in place, validated),
:func:`run_sgd` (a whole run with optional records), :func:`sgd_block` (the compiled kernel).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit, prange, uint64

__all__ = ["ESTIMATOR_CODES", "STL", "REPARAM", "initial_frame", "frame_overlaps",
           "rng_states", "advance", "run_sgd", "SgdRun", "sgd_block", "frame_dimension",
           "step_given_noise"]

#: Gradient estimators of the chain and the integer codes the kernel branches on (the same
#: codes as ``analysis.mc_estimators``).
STL = 0
REPARAM = 1
ESTIMATOR_CODES = {"stl": STL, "reparam": REPARAM}

#: Floating-point flags (those of the R^d kernels): no nnan/ninf, so a diverging run shows up.
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}
#: Stream index in ``SeedSequence(seed, spawn_key=(run, _STREAM))``.
_STREAM = 2
_RANK_RTOL = 1e-10
#: Columns of the QR factorisations with every entry below this are treated as zero.
_NEGLIGIBLE = 1e-290


# ----------------------------------------------------------------------------------------
# random numbers: xoshiro256** (Blackman & Vigna), Box-Muller, Marsaglia-Tsang
# ----------------------------------------------------------------------------------------

@njit(cache=True)
def _rotl(x, k):
    return (x << uint64(k)) | (x >> uint64(64 - k))


@njit(cache=True)
def _next(st):
    """Next 64-bit output of the xoshiro256** state st (4,) uint64 (updated in place)."""
    s0 = st[0]
    s1 = st[1]
    s2 = st[2]
    s3 = st[3]
    out = _rotl(s1 * uint64(5), 7) * uint64(9)
    t = s1 << uint64(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = _rotl(s3, 45)
    st[0] = s0
    st[1] = s1
    st[2] = s2
    st[3] = s3
    return out


@njit(cache=True)
def _uniform(st):
    """U in [0, 1) with 53 random bits."""
    return float(_next(st) >> uint64(11)) * (1.0 / 9007199254740992.0)


@njit(fastmath=_FASTMATH, cache=True)
def _normal_pair(st):
    """Two independent standard normals: Marsaglia's polar method (no trigonometry)."""
    while True:
        u = 2.0 * _uniform(st) - 1.0
        v = 2.0 * _uniform(st) - 1.0
        r2 = u * u + v * v
        if 0.0 < r2 < 1.0:
            f = math.sqrt(-2.0 * math.log(r2) / r2)
            return u * f, v * f


@njit(fastmath=_FASTMATH, cache=True)
def _fill_normals(st, out):
    """out (flat) <- standard normals, in pairs (the partner of an odd last one is dropped)."""
    N = out.shape[0]
    i = 0
    while i + 1 < N:
        a, b = _normal_pair(st)
        out[i] = a
        out[i + 1] = b
        i += 2
    if i < N:
        out[i] = _normal_pair(st)[0]


@njit(fastmath=_FASTMATH, cache=True)
def _normal(st):
    return _normal_pair(st)[0]


@njit(fastmath=_FASTMATH, cache=True)
def _gamma(st, a):
    """Gamma(a, 1), a > 0: Marsaglia & Tsang (2000); a < 1 via Gamma(a + 1) U^(1/a)."""
    boost = 1.0
    if a < 1.0:
        boost = (1.0 - _uniform(st)) ** (1.0 / a)
        a = a + 1.0
    dd = a - 1.0 / 3.0
    cc = 1.0 / math.sqrt(9.0 * dd)
    while True:
        x = _normal(st)
        v = 1.0 + cc * x
        if v <= 0.0:
            continue
        v = v * v * v
        u = 1.0 - _uniform(st)
        x2 = x * x
        if u < 1.0 - 0.0331 * x2 * x2:
            return dd * v * boost
        if math.log(u) < 0.5 * x2 + dd * (1.0 - v + math.log(v)):
            return dd * v * boost


@njit(cache=True)
def _chi2(st, k):
    """chi^2 with k > 0 degrees of freedom (k may be huge: the sampler is exact for any k)."""
    return 2.0 * _gamma(st, 0.5 * k)


def rng_states(seed: int, run_ids: Sequence[int]) -> np.ndarray:
    """Generator states (S, 4) uint64: run i from ``SeedSequence(seed, spawn_key=(i, 2))``."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: must be an integer >= 0, got {seed!r}")
    ids = np.asarray(run_ids, dtype=np.int64).ravel()
    st = np.empty((ids.size, 4), dtype=np.uint64)
    for j, i in enumerate(ids):
        s = np.random.SeedSequence(int(seed), spawn_key=(int(i), _STREAM))
        v = s.generate_state(4, np.uint64)
        if not v.any():                          # the forbidden all-zero state
            v[0] = 1
        st[j] = v
    return st


# ----------------------------------------------------------------------------------------
# small dense linear algebra
# ----------------------------------------------------------------------------------------

@njit(fastmath=_FASTMATH, cache=True)
def _householder_r(A, m, nc, v):
    """In place: the first min(m, nc) rows of A[:m, :nc] become R of ``A = Q R`` (Householder).

    A zero column is left as it is (H = I), so rank-deficient inputs are fine: Q stays
    orthogonal and R upper triangular with zeros on the diagonal.  Every column is scaled by
    its largest entry before its norm is taken (as LAPACK's dlarfg does): noise coefficients
    of a component far from the others are ~1e-160 or denormal, whose squares would underflow
    and turn the reflector into inf/NaN.  A column whose entries are all below
    :data:`_NEGLIGIBLE` (1e-290) is treated as zero: its reciprocal scale would overflow (the
    compiler may turn ``x / scale`` into ``x * (1 / scale)``: Numba compiles a callee with its
    caller's fastmath flags), and dropping it changes R^T R by less than 1e-290 times the
    other entries.  v (>= m,) is work space.
    """
    for j in range(min(m, nc)):
        scale = 0.0
        for i in range(j, m):
            a = abs(A[i, j])
            if a > scale:
                scale = a
        if scale < _NEGLIGIBLE:
            continue
        nrm2 = 0.0
        for i in range(j, m):
            v[i] = A[i, j] / scale
            nrm2 += v[i] * v[i]
        nrm = math.sqrt(nrm2)                 # >= 1: the largest scaled entry is 1
        alpha = -nrm if v[j] >= 0.0 else nrm
        v[j] -= alpha
        vn2 = 0.0
        for i in range(j, m):
            vn2 += v[i] * v[i]                # >= nrm2 >= 1, no underflow
        A[j, j] = alpha * scale
        for i in range(j + 1, m):
            A[i, j] = 0.0
        for c in range(j + 1, nc):
            dot = 0.0
            for i in range(j, m):
                dot += v[i] * A[i, c]
            f = 2.0 * dot / vn2
            for i in range(j, m):
                A[i, c] -= f * v[i]


@njit(fastmath=_FASTMATH, cache=True)
def _softmax_lse(x, need_lse):
    """x <- softmax(x) in place; returns the log-sum-exp of the input if need_lse, else 0."""
    im = 0
    mx = x[0]
    for j in range(1, x.shape[0]):
        if x[j] > mx:
            mx = x[j]
            im = j
    z = 1.0
    for j in range(x.shape[0]):
        if j != im:
            e = math.exp(x[j] - mx)
            x[j] = e
            z += e
    x[im] = 1.0
    inv = 1.0 / z
    for j in range(x.shape[0]):
        x[j] *= inv
    return mx + math.log(z) if need_lse else 0.0


# ----------------------------------------------------------------------------------------
# one step of one run
# ----------------------------------------------------------------------------------------

@njit(fastmath=_FASTMATH, cache=True)
def _step(E, tdiag, logpi, X, alpha, st, beta, gamma, eta, n, s, delta, sigma0_sq, d,
          reparam, train_w, Z, RHO, C, G, B, F, Y, Hj, work, W2, z_given=False):
    """One SGD step of one run, in place on X (M, D) and alpha (M,) (module docstring).

    ``z_given``: Z already holds the in-frame noise (tests); otherwise it is drawn from st.

    Work arrays: Z (N, D), RHO (N, M), C (M, N), G (M, D), B (M, M mb), F (M mb, M mb),
    Y (M + M mb, M), Hj (n, M), work (12, max(M, K, n, M + M mb)), W2 (4, M, max(M, K)).
    """
    K, rT = E.shape
    M, D = X.shape
    N = M * n
    mb = min(M, n)
    Np = M * mb
    dof = d - D
    ss = math.sqrt(s)
    inv_s = 1.0 / s
    w = work[0, :M]
    logw = work[1, :M]
    cq = work[2, :M]
    cp = work[3, :K]
    rho = work[4, :M]
    r = work[5, :K]
    lqb = work[6, :M]
    lpb = work[7, :M]
    x2b = work[8, :M]
    fbar = work[9, :M]
    ga = work[10, :M]
    hv = work[11]
    # weights and their logs (the one softmax rule: alpha - logsumexp)
    for k in range(M):
        w[k] = alpha[k]
    lz = _softmax_lse(w, True)
    for k in range(M):
        logw[k] = alpha[k] - lz
    rhobar = W2[0, :M, :M]
    rbar = W2[1, :M, :K]
    Qm = W2[2, :M, :M]
    Rm = W2[3, :M, :K]
    for k in range(M):
        for j in range(M):
            rhobar[k, j] = 0.0
        for a in range(K):
            rbar[k, a] = 0.0
    for k in range(M):
        for j in range(M):
            acc = 0.0
            for c in range(D):
                acc += X[k, c] * X[j, c]
            Qm[k, j] = acc
        for a in range(K):
            acc = 0.0
            for c in range(rT):
                acc += X[k, c] * E[a, c]
            Rm[k, a] = acc
    # 1. in-frame noise and the responsibilities at every sample
    if not z_given:
        _fill_normals(st, Z.reshape(N * D))
    aq = ss * inv_s
    ap = ss / delta
    for k in range(M):
        lqb[k] = 0.0
        lpb[k] = 0.0
        x2b[k] = 0.0
        for j in range(M):
            cq[j] = logw[j] + (Qm[k, j] - 0.5 * Qm[j, j]) * inv_s
        for a in range(K):
            cp[a] = logpi[a] + (Rm[k, a] - 0.5 * tdiag[a]) / delta
        for i in range(n):
            idx = k * n + i
            z = Z[idx]
            emk = 0.0
            for j in range(M):
                acc = 0.0
                for c in range(D):
                    acc += z[c] * X[j, c]
                rho[j] = cq[j] + aq * acc
                if j == k:
                    emk = acc
            for a in range(K):
                acc = 0.0
                for c in range(rT):
                    acc += z[c] * E[a, c]
                r[a] = cp[a] + ap * acc
            lse_q = _softmax_lse(rho, train_w)
            lse_p = _softmax_lse(r, train_w)
            for j in range(M):
                RHO[idx, j] = rho[j]
                rhobar[k, j] += rho[j]
            for a in range(K):
                rbar[k, a] += r[a]
            if train_w:
                sq = 0.0
                for c in range(D):
                    sq += z[c] * z[c]
                lqb[k] += lse_q
                lpb[k] += lse_p
                x2b[k] += Qm[k, k] + 2.0 * ss * emk + s * sq
    inv_n = 1.0 / n
    for k in range(M):
        for j in range(M):
            rhobar[k, j] *= inv_n
        for a in range(K):
            rbar[k, a] *= inv_n
    cc = -inv_s + beta / delta + (gamma / sigma0_sq if gamma != 0.0 else 0.0)
    # 2. noise coefficients C (M, N) and the in-frame gradient G (M, D)
    for k in range(M):
        for idx in range(N):
            j = idx // n
            v = 0.0
            if j == k:
                v = w[k] * cc * ss * inv_n
            if reparam:
                v += w[j] * ss * inv_s * inv_n * RHO[idx, k]
            C[k, idx] = v
    for k in range(M):
        for c in range(D):
            G[k, c] = w[k] * cc * X[k, c]
        for j in range(M):
            f = w[k] * inv_s * rhobar[k, j]
            if reparam:
                f += w[j] * inv_s * rhobar[j, k]
            for c in range(D):
                G[k, c] += f * X[j, c]
        if reparam:
            f = 0.0
            for j in range(M):
                f += w[j] * inv_s * rhobar[j, k]
            for c in range(D):
                G[k, c] -= f * X[k, c]
        for a in range(K):
            f = w[k] * beta / delta * rbar[k, a]
            for c in range(rT):
                G[k, c] -= f * E[a, c]
        for idx in range(N):
            f = C[k, idx]
            if f != 0.0:
                z = Z[idx]
                for c in range(D):
                    G[k, c] += f * z[c]
    # 3. the out-of-frame noise: per-block QR of C_j^T, Bartlett factor of the stacked Gram
    q = 0
    if dof > 0:
        for j in range(M):
            for i in range(n):
                for k in range(M):
                    Hj[i, k] = C[k, j * n + i]
            _householder_r(Hj, n, M, hv)
            for l in range(mb):
                for k in range(M):
                    B[k, j * mb + l] = Hj[l, k] if k >= l else 0.0
        if dof >= Np:
            q = Np
            for i in range(Np):
                F[i, i] = math.sqrt(_chi2(st, dof - i))
                for l in range(i):
                    F[i, l] = _normal(st)
                for l in range(i + 1, Np):
                    F[i, l] = 0.0
        else:
            q = dof
            for i in range(Np):
                for l in range(q):
                    F[i, l] = _normal(st)
        if train_w:
            rest = (n - mb) * dof
            for j in range(M):
                Sj = 0.0
                for l in range(j * mb, (j + 1) * mb):
                    for c in range(q):
                        Sj += F[l, c] * F[l, c]
                if rest > 0:
                    Sj += _chi2(st, rest)
                x2b[j] += s * Sj
    # 4. logits
    if train_w:
        kappa = inv_s - beta / delta
        const = 0.5 * d * (math.log(2.0 * math.pi * s) - beta * math.log(2.0 * math.pi * delta))
        if gamma != 0.0:
            kappa -= gamma / sigma0_sq
            const -= 0.5 * d * gamma * math.log(2.0 * math.pi * sigma0_sq)
        fmean = 0.0
        for k in range(M):
            fbar[k] = (lqb[k] - beta * lpb[k] - 0.5 * kappa * x2b[k]) * inv_n - const
            fmean += w[k] * fbar[k]
        for k in range(M):
            ga[k] = w[k] * (fbar[k] - fmean)
            if reparam:
                extra = -w[k]
                for j in range(M):
                    extra += w[j] * rhobar[j, k]
                ga[k] += extra
    # 5. the update, then re-orthonormalise the part of the means perpendicular to mu
    for k in range(M):
        for c in range(D):
            X[k, c] -= eta * G[k, c]
    if train_w:
        for k in range(M):
            alpha[k] -= eta * ga[k]
    if q > 0:
        rows = M + q
        for k in range(M):
            for l in range(M):
                Y[l, k] = X[k, rT + l]
            for l in range(q):
                acc = 0.0
                for c in range(Np):
                    acc += B[k, c] * F[c, l]
                Y[M + l, k] = -eta * acc
        _householder_r(Y, rows, M, hv)
        for k in range(M):
            for l in range(M):
                X[k, rT + l] = Y[l, k] if l <= k else 0.0


@njit(parallel=True, fastmath=_FASTMATH, cache=True)
def sgd_block(E, tdiag, logpi, X, alpha, rng, active, betas, gammas, eta, n, s, delta,
              sigma0_sq, d, estimator_code, train_w):
    """Advance S independent runs by ``len(betas)`` SGD steps (in place).

    E (K, r_T): target-mean coordinates (T = E E^T); tdiag (K,) = diag T; logpi (K,);
    X (S, M, D), D = r_T + M: mean coordinates per run; alpha (S, M) logits (updated only if
    train_w); rng (S, 4) uint64 generator states (:func:`rng_states`); active (S,) bool: a run
    whose state stops being finite is frozen and marked inactive; betas, gammas (nsteps,):
    beta and gamma at the start of every step (t = eta * step); eta step; n samples per
    component; s, delta, sigma0_sq variances; d ambient dimension (>= D); estimator_code
    (:data:`STL`, :data:`REPARAM`).  One ``prange`` iteration per run; runs share nothing.
    """
    S, M, D = X.shape
    nsteps = betas.shape[0]
    mb = min(M, n)
    Np = M * mb
    N = M * n
    K = E.shape[0]
    reparam = estimator_code == REPARAM
    wdim = max(max(M, K), max(n, M + Np))
    for run in prange(S):
        if active[run]:
            Z = np.empty((N, D))
            RHO = np.empty((N, M))
            C = np.empty((M, N))
            G = np.empty((M, D))
            B = np.empty((M, Np))
            F = np.empty((Np, Np))
            Y = np.empty((M + Np, M))
            Hj = np.empty((n, M))
            work = np.empty((12, wdim))
            W2 = np.empty((4, M, max(M, K)))
            Xr = X[run]
            ar = alpha[run]
            st = rng[run]
            for it in range(nsteps):
                _step(E, tdiag, logpi, Xr, ar, st, betas[it], gammas[it], eta, n, s, delta,
                      sigma0_sq, d, reparam, train_w, Z, RHO, C, G, B, F, Y, Hj, work, W2,
                      False)
            ok = True
            for k in range(M):
                if not math.isfinite(ar[k]):
                    ok = False
                for c in range(D):
                    if not math.isfinite(Xr[k, c]):
                        ok = False
            if not ok:
                active[run] = False


@njit(cache=True)
def _step_given(E, tdiag, logpi, X, alpha, st, Z, beta, gamma, eta, n, s, delta, sigma0_sq,
                d, estimator_code, train_w):
    M, D = X.shape
    K = E.shape[0]
    mb = min(M, n)
    Np = M * mb
    wdim = max(max(M, K), max(n, M + Np))
    _step(E, tdiag, logpi, X, alpha, st, beta, gamma, eta, n, s, delta, sigma0_sq, d,
          estimator_code == REPARAM, train_w, Z, np.empty((M * n, M)), np.empty((M, M * n)),
          np.empty((M, D)), np.empty((M, Np)), np.empty((Np, Np)), np.empty((M + Np, M)),
          np.empty((n, M)), np.empty((12, wdim)), np.empty((4, M, max(M, K))), True)


def step_given_noise(E: np.ndarray, tdiag: np.ndarray, logpi: np.ndarray, X: np.ndarray,
                     alpha: np.ndarray, rng: np.ndarray, Z: np.ndarray, *, beta: float,
                     gamma: float, eta: float, n: int, s: float, delta: float,
                     sigma0_sq: float, d: int, estimator: str = "stl",
                     train_w: bool = False) -> None:
    """One step of one run with the in-frame noise given (for tests), in place.

    X (M, D), alpha (M,), rng (4,) uint64 (draws only the out-of-frame part, if d > D),
    Z (M n, D): row ``k n + i`` holds the frame coordinates of xi_ki.
    """
    code = _estimator_code(estimator)
    M, D = X.shape
    if Z.shape != (M * n, D):
        raise ValueError(f"Z: must have shape ({M * n}, {D}), got {Z.shape}")
    if d < D:
        raise ValueError(f"d: the reduced chain needs d >= rank T + M = {D}, got {d}")
    _step_given(E, tdiag, logpi, X, alpha, rng, np.ascontiguousarray(Z, dtype=float),
                float(beta), float(gamma), _positive("eta", eta), _count("n", n, 1),
                float(s), float(delta), float(sigma0_sq), int(d), code, bool(train_w))


# ----------------------------------------------------------------------------------------
# Python side: frames, validation, whole runs
# ----------------------------------------------------------------------------------------

def _target_factor(T: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(E (K, r_T) with T = E E^T, kept eigenvectors (K, r_T), kept eigenvalues (r_T,))."""
    T = 0.5 * (T + T.T)
    lam, V = np.linalg.eigh(T)
    keep = lam > _RANK_RTOL * max(1.0, float(np.max(np.abs(T))))
    return V[:, keep] * np.sqrt(lam[keep]), V[:, keep], lam[keep]


def frame_dimension(T: Any, M: int) -> int:
    """Frame dimension ``D = rank(T) + M`` of the reduced state (the chain needs d >= D)."""
    return _target_factor(np.asarray(T, dtype=float))[0].shape[1] + int(M)


def initial_frame(T: Any, Q0: Any, R0: Any) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of the target means and of every run's means in an orthonormal frame.

    T (K, K) PSD; Q0 (S, M, M), R0 (S, M, K) the overlaps of each run (jointly realisable:
    ``[[T, R^T], [R, Q]]`` PSD).  Returns E (K, r_T) with ``E E^T = T`` and X (S, M, r_T + M):
    ``X[:, :, :r_T] = R0 V diag(lambda)^(-1/2)`` (the projections on span{mu}) and the last M
    columns a factor of ``Q0 - X_par X_par^T`` (eigen-factor, negative rounding clipped).
    """
    T = np.asarray(T, dtype=float)
    if T.ndim != 2 or T.shape[0] != T.shape[1]:
        raise ValueError(f"T: must have shape (K, K), got {T.shape}")
    K = T.shape[0]
    Q0 = np.asarray(Q0, dtype=float)
    R0 = np.asarray(R0, dtype=float)
    if Q0.ndim != 3 or Q0.shape[1] != Q0.shape[2]:
        raise ValueError(f"Q0: must have shape (S, M, M), got {Q0.shape}")
    S, M = Q0.shape[:2]
    if R0.shape != (S, M, K):
        raise ValueError(f"R0: must have shape ({S}, {M}, {K}), got {R0.shape}")
    E, V, lam = _target_factor(T)
    rT = E.shape[1]
    Xp = (R0 @ V) / np.sqrt(lam) if rT else np.zeros((S, M, 0))
    scale = max(1.0, float(np.max(np.abs(T))), float(np.max(np.abs(Q0), initial=0.0)))
    if np.max(np.abs(Xp @ E.T - R0), initial=0.0) > 1e-7 * scale:
        raise ValueError("R0: the overlaps m_k . mu_a must lie in the range of T")
    Cp = Q0 - Xp @ Xp.transpose(0, 2, 1)
    Cp = 0.5 * (Cp + Cp.transpose(0, 2, 1))
    mu_c, Vc = np.linalg.eigh(Cp)
    if np.min(mu_c, initial=0.0) < -1e-7 * scale:
        raise ValueError("Q0: the joint Gram matrix [[T, R0^T], [R0, Q0]] is not PSD")
    Xq = Vc * np.sqrt(np.clip(mu_c, 0.0, None))[:, None, :]
    X = np.ascontiguousarray(np.concatenate([Xp, Xq], axis=2))
    return np.ascontiguousarray(E), X


def frame_overlaps(E: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``Q = X X^T`` (..., M, M) and ``R = X[..., :r_T] E^T`` (..., M, K)."""
    X = np.asarray(X, dtype=float)
    rT = E.shape[1]
    Q = X @ np.swapaxes(X, -1, -2)
    return 0.5 * (Q + np.swapaxes(Q, -1, -2)), X[..., :rT] @ E.T


def _positive(name: str, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"{name}: must be a real number > 0, got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and v > 0.0):
        raise ValueError(f"{name}: must be a finite number > 0, got {value!r}")
    return v


def _count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < minimum:
        raise ValueError(f"{name}: must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _estimator_code(estimator: Any) -> int:
    if isinstance(estimator, str) and estimator.lower() == "adam":
        raise ValueError("estimator: 'adam' is an optimiser, and Adam is not rotation invariant "
                         "(no exact reduction); use the R^d simulator")
    if estimator not in ESTIMATOR_CODES:
        raise ValueError(f"estimator: must be one of {tuple(ESTIMATOR_CODES)}, got {estimator!r}")
    return ESTIMATOR_CODES[estimator]


def advance(E: np.ndarray, tdiag: np.ndarray, logpi: np.ndarray, X: np.ndarray,
            alpha: np.ndarray, rng: np.ndarray, active: np.ndarray, betas: Any, gammas: Any,
            *, eta: float, n: int, s: float, delta: float, sigma0_sq: float, d: int,
            estimator: str = "stl", train_w: bool = False, optimizer: str = "sgd") -> None:
    """Advance every run by ``len(betas)`` SGD steps, in place (validated :func:`sgd_block`).

    Shapes: E (K, r_T), tdiag (K,), logpi (K,), X (S, M, r_T + M), alpha (S, M), rng (S, 4)
    uint64, active (S,) bool, betas and gammas (nsteps,) at the step start times
    ``t = eta * step``.  ``optimizer`` other than ``"sgd"`` is refused: Adam's coordinate-wise
    scaling is not rotation invariant, so it has no exact reduction (DESIGN.md section 7).
    """
    if optimizer != "sgd":
        raise ValueError(f"optimizer: the reduced chain is exact for plain SGD only; "
                         f"{optimizer!r} is not rotation invariant (Adam's coordinate-wise "
                         "scaling) and has no reduction: use the R^d simulator")
    eta = _positive("eta", eta)
    n = _count("n", n, 1)
    s, delta, sigma0_sq = (_positive(k, v) for k, v in
                           (("s", s), ("delta", delta), ("sigma0_sq", sigma0_sq)))
    d = _count("d", d, 1)
    code = _estimator_code(estimator)
    S, M, D = X.shape
    K, rT = E.shape
    if D != rT + M:
        raise ValueError(f"X: must have shape (S, M, rank T + M) = (S, {M}, {rT + M}), "
                         f"got {X.shape}")
    if d < D:
        raise ValueError(f"d: the reduced chain needs d >= rank T + M = {D}, got {d}")
    for name, arr, shape, dt in (("alpha", alpha, (S, M), np.float64),
                                 ("rng", rng, (S, 4), np.uint64),
                                 ("active", active, (S,), np.bool_),
                                 ("tdiag", tdiag, (K,), np.float64),
                                 ("logpi", logpi, (K,), np.float64)):
        if arr.shape != shape or arr.dtype != dt or not arr.flags.c_contiguous:
            raise ValueError(f"{name}: must be a contiguous {np.dtype(dt).name} array of shape "
                             f"{shape}, got {arr.dtype} {arr.shape}")
    if X.dtype != np.float64 or not X.flags.c_contiguous:
        raise ValueError("X: must be a contiguous float64 array")
    betas = np.ascontiguousarray(betas, dtype=float).ravel()
    gammas = np.ascontiguousarray(np.broadcast_to(gammas, betas.shape), dtype=float)
    if betas.size == 0:
        return
    sgd_block(E, tdiag, logpi, X, alpha, rng, active, betas, gammas, eta, n, s, delta,
              sigma0_sq, d, code, bool(train_w))


@dataclass(frozen=True)
class SgdRun:
    """Result of :func:`run_sgd`.

    Q (S, M, M), R (S, M, K), alpha (S, M): final state; active (S,) bool (False: diverged);
    steps: steps taken (t_end = eta * steps); record_steps (n_rec,) and Q_rec
    (n_rec, S, M, M), R_rec (n_rec, S, M, K), alpha_rec (n_rec, S, M): the state at those step
    counts (empty if none were asked for).
    """

    Q: np.ndarray
    R: np.ndarray
    alpha: np.ndarray
    active: np.ndarray
    steps: int
    record_steps: np.ndarray
    Q_rec: np.ndarray
    R_rec: np.ndarray
    alpha_rec: np.ndarray


def run_sgd(T: Any, logpi: Any, Q0: Any, R0: Any, alpha0: Any, betas: Any, gammas: Any, *,
            eta: float, n: int, s: float, delta: float, sigma0_sq: float, d: int,
            estimator: str = "stl", train_w: bool = False, seed: int = 0,
            run_ids: Sequence[int] | None = None,
            record_steps: Sequence[int] = ()) -> SgdRun:
    """S runs of the exact reduced SGD chain from given initial overlaps.

    T (K, K); logpi (K,); Q0 (S, M, M), R0 (S, M, K); alpha0 (M,) or (S, M) logits; betas,
    gammas (nsteps,): beta and gamma at the start of every step (step i at t = eta * i);
    the chain takes ``nsteps`` steps (t_end = eta * nsteps).  Run j's noise comes from
    ``SeedSequence(seed, spawn_key=(run_ids[j], 2))`` (run_ids default arange(S)).
    ``record_steps``: step counts in [0, nsteps] at which (Q, R, alpha) is recorded.
    """
    T = np.asarray(T, dtype=float)
    E, X = initial_frame(T, Q0, R0)
    S, M, _ = X.shape
    K = T.shape[0]
    logpi = np.ascontiguousarray(logpi, dtype=float)
    if logpi.shape != (K,):
        raise ValueError(f"logpi: must have shape ({K},), got {logpi.shape}")
    alpha = np.ascontiguousarray(np.broadcast_to(np.asarray(alpha0, dtype=float), (S, M)).copy())
    ids = np.arange(S) if run_ids is None else np.asarray(run_ids, dtype=np.int64)
    if ids.shape != (S,):
        raise ValueError(f"run_ids: must have shape ({S},), got {ids.shape}")
    rng = rng_states(seed, ids)
    active = np.ones(S, dtype=bool)
    betas = np.ascontiguousarray(betas, dtype=float).ravel()
    gammas = np.ascontiguousarray(np.broadcast_to(gammas, betas.shape), dtype=float)
    total = betas.size
    rec = sorted({int(r) for r in record_steps})
    if rec and (rec[0] < 0 or rec[-1] > total):
        raise ValueError(f"record_steps: must lie in [0, {total}], got {rec}")
    tdiag = np.ascontiguousarray(np.diag(T))
    Qr, Rr, ar = [], [], []
    step = 0
    for target in rec + [total]:
        if target > step:
            advance(E, tdiag, logpi, X, alpha, rng, active, betas[step:target],
                    gammas[step:target], eta=eta, n=n, s=s, delta=delta, sigma0_sq=sigma0_sq,
                    d=d, estimator=estimator, train_w=train_w)
            step = target
        if rec and target in rec and len(Qr) < len(rec):
            q_, r_ = frame_overlaps(E, X)
            Qr.append(q_)
            Rr.append(r_)
            ar.append(alpha.copy())
    Q, R = frame_overlaps(E, X)
    Q[~active] = np.nan
    R[~active] = np.nan
    return SgdRun(Q=Q, R=R, alpha=alpha, active=active, steps=total,
                  record_steps=np.array(rec, dtype=np.int64),
                  Q_rec=np.array(Qr) if Qr else np.zeros((0, S, M, M)),
                  R_rec=np.array(Rr) if Rr else np.zeros((0, S, M, K)),
                  alpha_rec=np.array(ar) if ar else np.zeros((0, S, M)))
