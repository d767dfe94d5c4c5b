"""Solver contracts: method and event registries, the one state layout, the compiled-model
protocol, realisability of user-given states, and the disk cache of the compiled driver."""

import inspect
import os
import subprocess
import sys
from dataclasses import dataclass
from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import pytest
from numba import njit
from numba.core.dispatcher import Dispatcher

from derivations.spec import (
    ConstantSchedule,
    ModelStructure,
    ProblemSpec,
    TargetMixture,
    VariationalFamily,
    parameter_names,
    state_names,
)
from solvers import integrate as integrate_module
from solvers.ensemble import solve, solve_ensemble
from solvers.events import EVENT_CODES, EVENTS, Event
from solvers.geometry import check_realisable, gram_min_eigenvalue, gram_min_eigenvalues
from solvers.integrate import STATUS_EVENT, STATUS_SUCCESS, integrate
from solvers.layout import StateLayout, state_layout
from solvers.model import CompiledModelProtocol, ModelFunctions, require_model
from solvers.signatures import EVENT_SIG, JAC_SIG, RHS_SIG
from solvers.tableaux import METHODS, IntegratorMethod, Tableau

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@njit(RHS_SIG, cache=True)
def rhs_k1(y, beta, theta, out):
    """K = M = 1 tempering flow in (Q_1_1, R_1_1); theta = (T_1_1, pi_1, Delta, s, w_1)."""
    b = beta / theta[2]
    out[0] = 2.0 * b * (y[1] - y[0])
    out[1] = b * (theta[0] - y[1])


@njit(JAC_SIG, cache=True)
def jac_k1(y, beta, theta, J):
    b = beta / theta[2]
    J[0, 0] = -2.0 * b
    J[0, 1] = 2.0 * b
    J[1, 0] = 0.0
    J[1, 1] = -b


THETA = np.array([9.0, 1.0, 1.0, 1.0, 1.0])


def exact_k1(t, Q0, R0, T=9.0):
    """Closed form at beta = 1, Delta = 1: R = T + (R0 - T) e^-t,
    Q = T + 2 (R0 - T) e^-t + (Q0 - 2 R0 + T) e^-2t."""
    e = np.exp(-t)
    return np.array([T + 2 * (R0 - T) * e + (Q0 - 2 * R0 + T) * e * e, T + (R0 - T) * e])


def k1_spec():
    return ProblemSpec(target=TargetMixture(gram=[[9.0]], weights=[1.0], variance=1.0),
                       family=VariationalFamily(n_components=1),
                       schedule=ConstantSchedule(1.0))


def k1_model():
    return SimpleNamespace(rhs=rhs_k1, jac=jac_k1, structure=ModelStructure(1, 1),
                           state_names=state_names(1, 1, False))


# ----------------------------------------------------------------------------------------
# method registry
# ----------------------------------------------------------------------------------------

class BogackiShampine(IntegratorMethod):
    """Bogacki-Shampine 3(2): FSAL, 4 stages, 3 new evaluations per step."""

    name = "bs3_test"
    tableau = Tableau(A=[[0, 0, 0, 0], [0.5, 0, 0, 0], [0, 0.75, 0, 0],
                         [2 / 9, 1 / 3, 4 / 9, 0]],
                      c=[0, 0.5, 0.75, 1.0], order=3,
                      e=[2 / 9 - 7 / 24, 1 / 3 - 1 / 4, 4 / 9 - 1 / 3, -1 / 8], error_order=2)


class Heun(IntegratorMethod):
    """Heun's method (order 2, fixed step), written with the end evaluation as stage 3."""

    name = "heun_test"
    tableau = Tableau(A=[[0, 0, 0], [1.0, 0, 0], [0.5, 0.5, 0]], c=[0, 1.0, 1.0], order=2)


def test_builtin_methods_are_registered_with_their_order():
    assert {"dopri5", "rk4"} <= set(METHODS)
    for name in ("dopri5", "rk4"):
        tb = METHODS[name].tableau
        assert tb.order_conditions() < 1e-14
    assert METHODS["dopri5"].adaptive() and not METHODS["rk4"].adaptive()


def test_registered_fixed_step_method_converges_at_its_order():
    """Heun's global error is O(h^2): halving h divides it by ~4 (not 2, not 16)."""
    y0 = np.array([0.5, 0.2])
    errs = []
    for h in (0.1, 0.05, 0.025):
        sol = integrate(rhs_k1, y0, (0.0, 2.0), THETA, method="heun_test", h=h)
        assert sol.status == STATUS_SUCCESS and sol.n_rhs == 1 + 2 * sol.n_steps
        errs.append(np.max(np.abs(sol.y_final - exact_k1(2.0, *y0))))
    ratios = np.array(errs[:-1]) / np.array(errs[1:])
    assert np.all((ratios > 3.6) & (ratios < 4.4)), ratios


def test_registered_adaptive_method_meets_its_tolerance():
    y0 = np.array([0.5, 0.2])
    for rtol in (1e-5, 1e-8):
        sol = integrate(rhs_k1, y0, (0.0, 5.0), THETA, method="bs3_test", rtol=rtol,
                        atol=rtol * 1e-2, t_eval=np.linspace(0, 5, 11))
        assert sol.status == STATUS_SUCCESS
        err = np.max(np.abs(sol.y - exact_k1(sol.t[:, None], *y0).T))
        assert err < 100 * rtol * 9.0
    # dense output is the cubic Hermite interpolant (no d): still accurate between steps
    assert sol.n_steps < sol.n_rhs


def test_method_registry_rejects_bad_methods():
    with pytest.raises(ValueError, match="registered already"):
        class Again(IntegratorMethod):
            name = "rk4"
            tableau = METHODS["rk4"].tableau
    with pytest.raises(ValueError, match="strictly lower"):
        Tableau(A=[[0.5, 0], [1.0, 0]], c=[0.5, 1.0], order=1)
    with pytest.raises(ValueError, match="row sums"):
        Tableau(A=[[0, 0], [1.0, 0]], c=[0.0, 0.5], order=1)
    with pytest.raises(ValueError, match="first same as last"):
        Tableau(A=[[0, 0, 0], [0.5, 0, 0], [0, 0.5, 0]], c=[0, 0.5, 0.5], order=1)
    with pytest.raises(ValueError, match="sum to 0"):
        Tableau(A=[[0, 0], [1.0, 0]], c=[0, 1.0], order=1, e=[1.0, 0.0], error_order=1)
    with pytest.raises(ValueError, match="method"):
        integrate(rhs_k1, [0.5, 0.2], (0.0, 1.0), THETA, method="no-such-method")
    with pytest.raises(ValueError, match="h: the fixed step of method 'heun_test'"):
        integrate(rhs_k1, [0.5, 0.2], (0.0, 1.0), THETA, method="heun_test")


# ----------------------------------------------------------------------------------------
# event registry
# ----------------------------------------------------------------------------------------

@njit(EVENT_SIG, cache=True)
def _r_level(t, y, f, beta, params):
    return y[1] - params[0]


@dataclass(frozen=True)
class RLevelEvent(Event):
    """R_1_1 crosses a level (a user event type registered by subclassing)."""

    level: float = 0.0
    name: ClassVar[str] = "r_level_test"
    code: ClassVar[int] = 901
    kind: ClassVar[str] = "crossing"
    needs_f: ClassVar[bool] = False

    @property
    def direction(self) -> int:
        return 1

    def function(self):
        return _r_level

    def parameters(self, n):
        return np.array([self.level])


def test_user_event_type_fires_at_the_analytic_time():
    """R(t) = T + (R0 - T) e^-t reaches L at t* = log((T - R0) / (T - L))."""
    y0 = np.array([0.5, 0.2])
    L = 6.0
    sol = integrate(rhs_k1, y0, (0.0, 10.0), THETA, event=RLevelEvent(L), rtol=1e-12,
                    atol=1e-14)
    assert sol.status == STATUS_EVENT
    assert sol.t_event == pytest.approx(np.log((9.0 - 0.2) / (9.0 - L)), abs=1e-9)
    assert sol.y_final[1] == pytest.approx(L, abs=1e-9)
    assert EVENTS["r_level_test"] is RLevelEvent and EVENT_CODES["r_level_test"] == 901


def test_event_registry_contents_and_rejections():
    assert {"none": 0, "converged": 1, "threshold": 2, "predicate": 3}.items() \
        <= EVENT_CODES.items()
    for ev in (Event.none(), Event.converged(1e-6), Event.threshold([1.0, 0.0], 0.5)):
        fn = ev.function()
        assert isinstance(fn, Dispatcher) and fn.overloads.get(EVENT_SIG.args) is not None
        assert EVENTS[ev.name] is type(ev)
    with pytest.raises(ValueError, match="new integer code"):
        @dataclass(frozen=True)
        class Clash(Event):
            name: ClassVar[str] = "clash_test"
            code: ClassVar[int] = 2
            kind: ClassVar[str] = "crossing"
    with pytest.raises(ValueError, match="kind"):
        @dataclass(frozen=True)
        class NoKind(Event):
            name: ClassVar[str] = "nokind_test"
            code: ClassVar[int] = 902
            kind: ClassVar[str] = "sometimes"
    with pytest.raises(ValueError, match="event"):
        integrate(rhs_k1, [0.5, 0.2], (0.0, 1.0), THETA, event="threshold")
    with pytest.raises(ValueError, match="unknown event code"):
        integrate(rhs_k1, [0.5, 0.2], (0.0, 1.0), THETA, event=(77, [1.0]))


# ----------------------------------------------------------------------------------------
# state layout and the model protocol
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("K, M, tw", [(1, 1, False), (2, 2, False), (3, 2, True), (2, 3, True)])
def test_one_layout_from_structure_names_and_model(K, M, tw):
    st = ModelStructure(K, M, tw)
    names = state_names(K, M, tw)
    lay = StateLayout(st)
    assert state_layout(names).names == lay.names == tuple(names)
    assert state_layout(ModelFunctions(None, None, st)) == lay
    # every index points at the entry of that name
    for k in range(M):
        for l in range(M):
            a, b = min(k, l), max(k, l)
            assert names[lay.q_index[k, l]] == f"Q_{a + 1}_{b + 1}"
        for j in range(K):
            assert names[lay.r_index[k, j]] == f"R_{k + 1}_{j + 1}"
        if tw:
            assert names[lay.alpha_index[k]] == f"alpha_{k + 1}"
    assert lay.n == len(names) == st.n_state
    rng = np.random.default_rng(0)
    y = rng.normal(size=(4, lay.n))
    Q, R, alpha = lay.unpack(y)
    np.testing.assert_array_equal(lay.pack(Q, R, alpha), y)
    assert (alpha is None) == (not tw)


def test_layout_from_names_is_canonical_and_knows_no_parameters():
    names = state_names(2, 2, False)
    with pytest.raises(ValueError, match="canonical"):
        state_layout([names[1], names[0]] + names[2:])
    with pytest.raises(ValueError, match="parameter layout"):
        state_layout(names).T(np.zeros(len(parameter_names(2, 2, False, "tempering"))))
    lay = StateLayout(ModelStructure(2, 2, False, "geometric"))
    theta = np.arange(len(lay.parameter_names), dtype=float)
    np.testing.assert_array_equal(lay.weights(None, theta), theta[-2:])


def test_require_model_enforces_the_protocol():
    st = ModelStructure(1, 1)
    good = k1_model()
    assert require_model(good, structure=st) == StateLayout(st)
    with pytest.raises(ValueError, match="'rhs'"):
        require_model(SimpleNamespace(structure=st, state_names=st.state_names))
    with pytest.raises(ValueError, match="state names"):
        require_model(SimpleNamespace(rhs=rhs_k1, jac=jac_k1, structure=st,
                                      state_names=["R_1_1", "Q_1_1"]))
    with pytest.raises(ValueError, match="compiled for structure"):
        require_model(good, structure=ModelStructure(2, 1))
    with pytest.raises(ValueError, match="jac"):
        require_model(SimpleNamespace(rhs=rhs_k1, jac=None, structure=st,
                                      state_names=st.state_names), need_jac=True)


def test_codegen_compiled_model_provides_the_protocol():
    """Every protocol member exists on derivations.codegen.CompiledModel (looked up
    statically: nothing is generated)."""
    from derivations.codegen import CompiledModel
    members = [m for m in ("structure", "state_names", "rhs", "jac")
               if m in CompiledModelProtocol.__dict__]
    assert members == ["structure", "state_names", "rhs", "jac"]
    cm = CompiledModel(ModelStructure(1, 1))
    for m in members:
        inspect.getattr_static(cm, m)
    assert "rhs" not in cm.__dict__       # not generated by the check
    assert ModelFunctions(rhs_k1, jac_k1, ModelStructure(1, 1)).state_names == ["Q_1_1",
                                                                                 "R_1_1"]


# ----------------------------------------------------------------------------------------
# realisability of user-given states (reliability issue)
# ----------------------------------------------------------------------------------------

def test_gram_min_eigenvalue_against_explicit_vectors():
    rng = np.random.default_rng(3)
    mu = rng.normal(size=(2, 5))
    m = rng.normal(size=(3, 5))
    T, Q, R = mu @ mu.T, m @ m.T, m @ mu.T
    assert gram_min_eigenvalue(Q, R, T) > 1e-6        # 5 independent vectors in R^5
    # rank-deficient but realisable (d = 4 < K + M = 5): smallest eigenvalue 0 to round-off
    m4, mu4 = m.copy(), mu.copy()
    m4[:, 4] = 0.0
    mu4[:, 4] = 0.0
    assert abs(gram_min_eigenvalue(m4 @ m4.T, m4 @ mu4.T, mu4 @ mu4.T)) < 1e-12
    Qb = np.stack([Q, Q - 10 * np.eye(3)])
    lam = gram_min_eigenvalues(Qb, R, T)
    assert lam[0] > 0 > lam[1]


def test_solve_rejects_unrealisable_initial_states():
    spec, model = k1_spec(), k1_model()
    # |R| > sqrt(Q T): 2 > sqrt(0.3 * 9) = 1.64
    with pytest.raises(ValueError, match=r"y0: not realisable.*\[\[T, R\^T\], \[R, Q\]\].*"
                                         r"positive semi-definite.*R_1_1"):
        solve(spec, model, [0.3, 2.0], 1.0)
    # Q < 0
    with pytest.raises(ValueError, match="y0: not realisable"):
        solve(spec, model, {"Q": [[-0.5]], "R": [[0.0]]}, 1.0)
    # the ensemble names Y0 and the offending member
    Y0 = np.array([[0.3, 0.1], [0.3, 0.1], [0.3, 2.0]])
    with pytest.raises(ValueError, match=r"Y0: not realisable \(member 2; 1 of 3"):
        solve_ensemble(spec, model, Y0, 1.0, progress=False)
    # boundary states (m parallel to mu: Q T = R^2) are realisable and accepted
    tr = solve(spec, model, [1.0, 3.0], 1.0)
    assert tr.success
    res = solve_ensemble(spec, model, Y0[:2], 1.0, progress=False)
    assert np.all(res.success)
    # the check can be switched off explicitly
    assert solve(spec, model, [0.3, 2.0], 1.0, psd_tol=np.inf).success


def test_unrealisable_two_component_state_is_rejected_before_integrating():
    """Q not PSD with M = 2 (|Q_12| > sqrt(Q_11 Q_22)) although every |R_ka| is small."""
    T = np.array([[9.0]])
    Q = np.array([[1.0, 2.0], [2.0, 1.0]])
    R = np.array([[0.1], [0.1]])
    with pytest.raises(ValueError, match="Y0: not realisable"):
        check_realisable(Q[None], R[None], T, "Y0")
    check_realisable(np.eye(2)[None], R[None], T, "Y0")


# ----------------------------------------------------------------------------------------
# disk cache of the compiled driver
# ----------------------------------------------------------------------------------------

def _compiled_modules(dispatcher, seen=None):
    """Modules whose compiled functions ``dispatcher`` calls (transitively)."""
    seen = set() if seen is None else seen
    fn = dispatcher.py_func
    codes = [fn.__code__]
    names = set()
    while codes:
        co = codes.pop()
        names.update(co.co_names)
        codes.extend(c for c in co.co_consts if inspect.iscode(c))
    mods = set()
    for nm in names:
        obj = fn.__globals__.get(nm)
        if isinstance(obj, Dispatcher) and obj not in seen:
            seen.add(obj)
            mods.add(sys.modules[obj.py_func.__module__])
            mods |= _compiled_modules(obj, seen)
    return mods


def test_cache_key_covers_every_module_the_driver_calls():
    from solvers import ensemble
    deps = set(integrate_module.CORE_DEPENDENCIES) | {integrate_module}
    called = _compiled_modules(integrate_module.integrate_core)
    assert called, "the walk found no compiled callees"
    assert called <= deps, f"missing from CORE_DEPENDENCIES: {called - deps}"
    assert _compiled_modules(ensemble.integrate_ensemble) <= deps | {ensemble}


def test_compiled_driver_is_loaded_from_the_disk_cache():
    """A fresh process loads integrate_core / integrate_ensemble from the cache (no
    compilation), once a first process has written it."""
    code = ("import numpy as np, solvers.integrate as m, solvers.ensemble as e, solvers.rk as rk;"
            "import solvers.events as ev;"
            "fs = [m.integrate_core, e.integrate_ensemble, rk.rk_step, ev.locate_crossing];"
            "print(sum(sum(f.stats.cache_misses.values()) for f in fs),"
            " min(sum(f.stats.cache_hits.values()) for f in fs))")
    env = dict(os.environ, NUMBA_NUM_THREADS="1")
    out = None
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, cwd=REPO, env=env).stdout.split()
    misses, hits = int(out[0]), int(out[1])
    assert misses == 0 and hits >= 1
