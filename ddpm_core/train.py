"""The training CLI: `python -m ddpm_core.train` (torchrun: `torchrun --nproc_per_node=N -m ddpm_core.train …`).

Every TrainConfig field is a flag; --recipe SLUG and --config FILE.json give a base (the recipe, then the file, then
the flags given); --list-recipes shows the recipes; --resume continues a run folder; --init-from fine-tunes a
checkpoint (its settings are the base, the flags given override them).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from ddpm_core import distributed, runs
from ddpm_core.config import TrainConfig, add_config_flags, config_from_args, read_config_file
from ddpm_core.data import DatasetError
from ddpm_core.models import count_parameters
from ddpm_core.recipes import RECIPES, recipe
from ddpm_core.run_history import bound_summary, headline_metric
from ddpm_core.run_lock import LOCK, RunLock
from ddpm_core.trainer import Trainer, TrainingError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ddpm_core.train",
        description="Train a DDPM noise predictor ε_θ. Every TrainConfig field is a flag.",
    )
    recipes = ", ".join(RECIPES)
    order = "with --config too: the recipe, then the file, then the flags given"
    p.add_argument("--recipe", metavar="SLUG", help=f"a new run's base: {recipes} (see --list-recipes); {order}")
    p.add_argument("--list-recipes", action="store_true", help="print the recipes (slug, title, note) and exit")
    p.add_argument("--config", type=Path, help="a JSON file with TrainConfig fields; flags given override it")
    p.add_argument("--resume", action="store_true", help="continue the run in --out/--name from its last checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out folder that holds another run's settings and metrics")  # fmt: skip
    add_config_flags(p)
    return p


def recipe_table() -> str:
    """--list-recipes: one row per recipe, the columns aligned."""
    rows = [("slug", "title", "note"), *((r.slug, r.title, r.note) for r in RECIPES.values())]
    slug_w, title_w = (max(len(row[i]) for row in rows) for i in (0, 1))
    return "\n".join(f"{slug:<{slug_w}}  {title:<{title_w}}  {note}" for slug, title, note in rows)


def new_run_config(args: argparse.Namespace) -> TrainConfig:
    """A new run's settings: TrainConfig's defaults, --recipe's, --config's, then the flags given."""
    base = dict(recipe(args.recipe).overlay) if args.recipe else {}
    if args.config:
        base.update(read_config_file(args.config))
    config = config_from_args(args, base)
    if args.recipe and (args.resume or config.init_from):
        what = "--resume continues a run" if args.resume else "--init-from fine-tunes a checkpoint"
        raise ValueError(f"--recipe gives a new run's settings, but {what} with its own: drop one of them")
    return config


def refuse_another_run(run_dir: Path, config: TrainConfig) -> None:
    """ValueError when run_dir holds another run, whose config.json, metrics and status a new run would overwrite.

    Fine: a missing or empty folder, one whose config.json is this run's (the app writes it, then starts the CLI on
    it; or a failed start tried again), one the app queued, or one holding only the lock."""
    try:
        entries = {p.name for p in run_dir.iterdir()} - {LOCK}
    except (FileNotFoundError, NotADirectoryError):
        return  # missing; a file in the way fails when the folder is made, with its own message
    if not entries:
        return
    if runs.read_status(run_dir).get("state") == "queued":
        return
    saved = runs.read_json(run_dir / runs.CONFIG)
    if isinstance(saved, dict):
        ours, theirs = config.to_dict(), dict(saved)
        for key in ("out", "name"):  # where the run lives, not what it is
            ours.pop(key, None), theirs.pop(key, None)
        if ours == theirs:
            return
    what = "another run's config.json" if runs.CONFIG in entries else f"{len(entries)} other file(s)"
    raise ValueError(
        f"{run_dir} already holds {what}, which this run would overwrite; pick another --out/--name, pass --resume "
        f"to continue that run, or --overwrite to replace it"
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_recipes:
        print(recipe_table())
        return 0
    try:
        config = new_run_config(args)
        run_dir = runs.run_dir_for(config)
        if args.resume:
            saved = runs.read_json(run_dir / runs.CONFIG)
            if saved is None:
                raise runs.CheckpointError(f"nothing to resume: {run_dir / runs.CONFIG} is missing")
            config = config_from_args(args, {**saved, "out": config.out, "name": config.name})
        elif config.init_from:  # fine-tuning: the checkpoint's settings, then the flags given
            saved = runs.load_checkpoint(config.init_from).config.to_dict()
            config = config_from_args(args, {**saved, "out": config.out, "name": config.name,
                                             "init_from": config.init_from})  # fmt: skip
        if not args.resume and (run_dir / runs.MODEL).exists():
            raise ValueError(
                f"{run_dir} already holds a trained model; pass --resume to continue it or pick another --out/--name"
            )
        if not args.resume and not args.overwrite:
            refuse_another_run(run_dir, config)
        world = distributed.world_from_env()
        with RunLock(run_dir) if world.is_main else contextlib.nullcontext():  # torchrun: rank 0 speaks for all
            trainer = Trainer(config, run_dir, resume=args.resume)
            status = trainer.train()
    except (ValueError, DatasetError, runs.CheckpointError, TrainingError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)  # status.json records it too
        return 1 if isinstance(e, TrainingError | OSError) else 2
    except KeyboardInterrupt:
        print("stopped; the last checkpoint is saved", file=sys.stderr)
        return 130
    if not trainer.world.is_main:
        return 0  # rank 0 reports for all
    metrics = runs.read_metrics(run_dir)
    final = f", final loss {metrics[-1]['loss']:.4f}" if metrics else ""
    if score := headline_metric(run_dir):
        final += f", {score}"
    if nll := bound_summary(run_dir):
        final += f", bound {nll}"
    print(
        f"{status['state']} at step {status['step']}{final}; {count_parameters(trainer.model):,} parameters; "
        f"run folder {run_dir}"
    )
    return 0


def exit_now(code: int) -> None:
    """End the process once everything is saved and said: skips the interpreter's teardown of torch, which takes
    about a second (bench/bench_stop.py), so that a stopped run's process is gone right after its checkpoint."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
