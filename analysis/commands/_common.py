"""Argument helpers shared by the subcommands: presets, schedules, paths."""

from __future__ import annotations

import argparse

from derivations.spec import (AnnealingPath, ConstantSchedule, ExponentialSchedule, LinearSchedule,
                              ProblemSpec, symmetric_bimodal)

PRESETS = ("symmetric-bimodal",)


def add_problem_arguments(p: argparse.ArgumentParser, schedule_default: str = "constant") -> None:
    """--preset, --A, --sigma-init, --path, --sigma0-sq, --trainable-weights, schedule options."""
    g = p.add_argument_group("problem")
    g.add_argument("--preset", choices=PRESETS, default="symmetric-bimodal",
                   help="problem preset (default: symmetric-bimodal)")
    g.add_argument("--A", type=float, default=9.0, help="|mu_1|^2 of the preset (default 9)")
    g.add_argument("--sigma-init", type=float, default=1.0,
                   help="initialisation scale: m_k(0) ~ N(0, sigma_init^2/d I) (default 1)")
    g.add_argument("--path", choices=("tempering", "geometric"), default="tempering",
                   help="annealing path (default tempering)")
    g.add_argument("--sigma0-sq", type=float, default=1.0,
                   help="base variance sigma0^2 of the geometric path (default 1)")
    g.add_argument("--trainable-weights", action="store_true", help="train the mixture weights")
    s = p.add_argument_group("schedule")
    s.add_argument("--schedule", choices=("constant", "linear", "exponential"),
                   default=schedule_default, help=f"annealing schedule (default {schedule_default})")
    s.add_argument("--beta", type=float, default=1.0, help="beta of the constant schedule")
    s.add_argument("--T0", type=float, default=20.0, help="initial temperature (linear, exponential)")
    s.add_argument("--tau", type=float, default=100.0, help="time scale (linear, exponential)")


def spec_from_args(args: argparse.Namespace) -> ProblemSpec:
    """Build the specification named by the problem and schedule arguments."""
    if args.schedule == "constant":
        schedule = ConstantSchedule(args.beta)
    elif args.schedule == "linear":
        schedule = LinearSchedule(args.T0, args.tau)
    else:
        schedule = ExponentialSchedule(args.T0, args.tau)
    path = (AnnealingPath("geometric", args.sigma0_sq) if args.path == "geometric"
            else AnnealingPath("tempering"))
    return symmetric_bimodal(args.A, schedule, sigma_init=args.sigma_init, path=path,
                             train_weights=args.trainable_weights)
