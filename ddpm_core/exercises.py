"""The grader of the DDPM exercise (notebooks/ddpm_exercise.ipynb): one check per function the student writes, in
the course's order, each run against ddpm_core's own implementation on the same inputs and noise
(ddpm_core/exercise_checks.py).

Index convention: t is a 0-based timestep index, t = 0 … T−1, the paper's t + 1 (as in the course's code).

    >>> from ddpm_core.exercises import check_all
    >>> results = check_all(globals())            # prints one row per exercise; Result(name, status, message)

CLI: python -m ddpm_core.exercises check my_ddpm.py   (exit 0: all pass; 1: some do not; 2: bad usage)
"""

from __future__ import annotations

import argparse
import runpy
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ddpm_core import exercise_checks as checks

Status = Literal["passed", "failed", "not done yet"]


@dataclass(frozen=True)
class Exercise:
    name: str  # the function the student writes
    equation: str  # what it computes, as the table shows it
    check: Callable[[Callable], str | None]  # None when right, else what is wrong
    needs: str | None = None  # an earlier exercise it calls: a failure here may be that one's


EXERCISES: tuple[Exercise, ...] = (
    Exercise("to_model_range", "pixels [0, 1] → x_0 in [−1, 1]", checks.check_to_model_range),
    Exercise("make_schedule", "β_t, α_t, ᾱ_t", checks.check_make_schedule),
    Exercise("add_noise", "q(x_t | x_0), eq. 4", checks.check_add_noise),
    Exercise("training_loss", "L_simple, eq. 14", checks.check_training_loss, needs="add_noise"),
    Exercise("reverse_step", "x_{t−1}, eq. 11", checks.check_reverse_step),
    Exercise("sample", "Algorithm 2", checks.check_sample, needs="reverse_step"),
)


@dataclass(frozen=True)
class Result:
    name: str  # the exercise's function name
    status: Status
    message: str  # "" when passed

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def done(self) -> bool:
        """Written (right or wrong): the notebook runs what depends on it."""
        return self.status != "not done yet"


def _one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


def _hint(e: BaseException) -> str:
    text = str(e)
    if "must match the size of tensor" in text:
        return " — reshape a (B,) coefficient to (B, 1, 1, 1) so it broadcasts over the image (extract does)"
    if isinstance(e, IndexError) and "out of bounds" in text:
        return " — indices run 0 … T−1 (the paper's t = 1 … T): betas[T] does not exist"
    if "expected m1 and m2 to have the same dtype" in text or "mat1 and mat2" in text:
        return " — the network takes float32: cast the float64 coefficients to x's dtype (extract does)"
    return ""


def check_one(exercise: Exercise, namespace: Mapping[str, object]) -> Result:
    fn = namespace.get(exercise.name)
    if not callable(fn):
        return Result(exercise.name, "not done yet", f"no function named {exercise.name}")
    try:
        message = exercise.check(fn)
    except NotImplementedError as e:
        return Result(exercise.name, "not done yet", str(e).strip() or "raises NotImplementedError")
    except Exception as e:
        return Result(exercise.name, "failed", f"raised {_one_line(e)}{_hint(e)}")
    return Result(exercise.name, "passed", "") if message is None else Result(exercise.name, "failed", message)


def check_all(namespace: Mapping[str, object], *, show: bool = True) -> list[Result]:
    """Check every exercise against the functions in namespace (a notebook's globals(), or a module's dict), in the
    course's order; print the table unless show is False."""
    results: dict[str, Result] = {}
    for exercise in EXERCISES:
        result = check_one(exercise, namespace)
        needed = results.get(exercise.needs) if exercise.needs else None
        if result.status == "failed" and needed is not None and not needed.passed:
            message = f"it calls {needed.name}, which fails: fix that first (here: {result.message})"
            result = Result(result.name, "failed", message)
        elif result.status == "not done yet" and needed is not None and result.message == needed.message:
            result = Result(result.name, "not done yet", f"it calls {needed.name}, which is not done yet")
        results[exercise.name] = result
    if show:
        print(table(list(results.values())))
    return list(results.values())


MARKS = {"passed": "✓", "failed": "✗", "not done yet": "·"}


def table(results: list[Result]) -> str:
    """One row per exercise: number, function, what it computes, the verdict and what is wrong."""
    by_name = {e.name: e for e in EXERCISES}
    width = max(len(r.name) for r in results)
    rows = []
    for i, r in enumerate(results):
        what = by_name[r.name].equation if r.name in by_name else ""
        verdict = f"{MARKS[r.status]} {r.status}" + (f": {r.message}" if r.message else "")
        rows.append(f"{i}. {r.name:<{width}}  {what:<30}  {verdict}")
    passed = sum(r.passed for r in results)
    return "\n".join([*rows, f"{passed} of {len(results)} passed"])


# ----------------------------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ddpm_core.exercises",
        description="Grade a file that defines the DDPM exercise's functions (the notebook's names).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="check the functions a Python file defines; exit 0 when all pass")
    check.add_argument("file", help="a .py file defining " + ", ".join(e.name for e in EXERCISES))
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse has printed its usage and message
        return 0 if e.code == 0 else 2
    path = Path(args.file)
    if not path.is_file():
        print(f"error: {path} is not a file", file=sys.stderr)
        return 2
    try:
        namespace = runpy.run_path(str(path), run_name="__exercise__")  # a fresh namespace; `if __name__` skipped
    except Exception as e:
        print(f"{path} does not import: {_one_line(e)}", file=sys.stderr)
        return 1
    results = check_all(namespace)
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
