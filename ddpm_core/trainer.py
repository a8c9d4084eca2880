"""Training: Ho et al.'s simplified loss ‖ε − ε_θ(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t)‖² with t uniform, plus what the
course left out — EMA weights, warm-up, gradient clipping, checkpoints, resume, and a run folder the app can follow.

CLI (ddpm_core/train.py): python -m ddpm_core.train --dataset digits --steps 3000 --out runs/digits
     python -m ddpm_core.train --out runs/digits --resume --steps 6000
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddpm_core import distributed, run_history, runs
from ddpm_core.config import TrainConfig
from ddpm_core.data import DatasetError
from ddpm_core.devices import for_sampling, precision, resolve_device
from ddpm_core.diffusion import Diffusion
from ddpm_core.ema import EMA
from ddpm_core.evaluate import evaluate_model
from ddpm_core.likelihood_run import bound_is_cheap, bound_report, run_bound, run_bound_data
from ddpm_core.models import build_model, describe_model
from ddpm_core.objectives import loss_weight, training_target
from ddpm_core.sample import SamplingConfig, every_class, sample_progressive
from ddpm_core.sharing import CoreSharing

N_BUCKETS = 10  # loss is also logged per tenth of the t range: which noise levels are hard


class TrainingError(RuntimeError):
    """The run cannot go on (NaN loss, …); the message is recorded in status.json."""


class StopRequested(Exception):
    """A stop arrived while the finished run was being evaluated: the evaluation is dropped."""


class Trainer:
    """One run: build everything from a TrainConfig, then train() writes the run folder as it goes."""

    def __init__(self, config: TrainConfig, run_dir: Path, resume: bool = False, log=print):
        self.config, self.run_dir, self.log = config, Path(run_dir), log
        self.stop_requested = False
        self.world = distributed.world_from_env()  # one process, or one of torchrun's
        self.device = distributed.start(self.world, resolve_device(config.device))
        self.sharing = CoreSharing(self.run_dir, self.device)  # one thread fewer while the app computes
        torch.manual_seed(config.seed)  # the same initial weights on every rank
        self.data = config.load_data()
        self.x = self.data.x.to(self.device)
        self.y = self._labels()
        shape = self.data.sample_shape
        num_classes = len(self.data.classes) if config.class_conditional else 0
        self.model_config = config.model_config(in_channels=shape[0], image_size=shape[-1], num_classes=num_classes)
        self.model = build_model(self.model_config).to(self.device)
        if config.init_from and not resume:
            self._init_from(config.init_from)
        self.net = distributed.wrap(self.model, self.world, self.device)  # what train_step runs: DDP under torchrun
        self.ema = EMA(self.model, config.ema_decay)
        self.diffusion = Diffusion(config.make_schedule()).to(self.device)
        # fused: one kernel for the whole update (the same maths): 1.13× images/s on digits (bench/RESULTS.md)
        fused = self.device.type in ("cpu", "cuda")
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=fused
        )
        warmup = max(1, config.warmup)
        self.lr_schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min(1.0, (s + 1) / warmup))
        # t, ε and data order, drawn on the device (no copies per step); each rank its own stream under torchrun
        self.generator = torch.Generator(self.device).manual_seed(config.seed + self.world.rank)
        self.total_steps = config.total_steps(len(self.data.x))
        self.step = 0
        self.precision = lambda: precision(self.device, config)  # bf16 autocast or float32, for every forward pass
        if resume:
            self._resume()

    # ------------------------------------------------------------------------------------------------------------

    def loss(self, x0: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """The simplified objective ‖target − f_θ(x_t, t[, y])‖² (Ho et al. eq. 14 and Algorithm 1), target ε, x_0 or
        v (ddpm_core.objectives), with t uniform and optionally min-SNR-γ weights. x0: (B, ...); y: (B,) labels of a
        conditional model, each swapped for the null label with probability label_dropout (Ho & Salimans 2022).
        Returns (mean, per-sample (B,), t (B,))."""
        c, B = self.config, x0.shape[0]
        t = torch.randint(0, self.diffusion.num_timesteps, (B,), generator=self.generator, device=self.device)
        noise = torch.randn(x0.shape, generator=self.generator, device=self.device)
        x_t = self.diffusion.q_sample(x0, t, noise)
        if y is not None:
            drop = torch.rand(B, generator=self.generator, device=self.device) < c.label_dropout
            y = torch.where(drop, self.model_config.num_classes, y)
        with self.precision():
            output = self.net(x_t, t) if y is None else self.net(x_t, t, y=y)
        target = training_target(self.diffusion, c.prediction_type, x0, t, noise)  # type: ignore[arg-type]
        per_sample = F.mse_loss(output.float(), target.float(), reduction="none").flatten(1).mean(1)
        if c.loss_weighting != "none":  # uniform weights need no multiply per step
            per_sample = per_sample * loss_weight(
                self.diffusion, c.prediction_type, c.loss_weighting, t, c.min_snr_gamma
            )  # type: ignore[arg-type]
        return per_sample.mean(), per_sample.detach(), t

    def train_step(self, batch: Tensor | tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """One optimiser step on a batch from batches() — x0 (B, ...), or (x0, y) for a conditional model — then
        the EMA update. Returns what loss() returns."""
        self.model.train()
        loss, per_sample, t = self.loss(*batch) if isinstance(batch, tuple) else self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.lr_schedule.step()
        if self.world.is_main:  # only rank 0 saves, so only rank 0 keeps the average
            self.ema.update(self.model, self.step)
        self.step += 1
        return loss, per_sample, t

    def batches(self):
        """Minibatches of x (with y for a conditional model), reshuffled every epoch; this rank's share under
        torchrun."""
        n, world = len(self.x), self.world
        B = min(distributed.per_rank_batch(self.config.batch_size, world), n // world.size)
        for idx in distributed.batch_indices(n, B, world, self.config.seed, self.generator):
            yield self.x[idx] if self.y is None else (self.x[idx], self.y[idx])

    def train(self) -> dict:
        try:
            return self._train() if self.world.is_main else self._train_follower()
        finally:
            distributed.finish(self.world)

    def _train_follower(self) -> dict:
        """Ranks 1 … N−1 under torchrun: the same steps, writing nothing."""
        previous = signal.signal(signal.SIGTERM, self._request_stop) if _main_thread() else None
        try:
            state = self._loop()
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        return {"state": state, "step": self.step}

    def _train(self) -> dict:
        c = self.config
        (self.run_dir / runs.PREVIEWS).mkdir(parents=True, exist_ok=True)
        (self.run_dir / runs.STOP).unlink(missing_ok=True)
        (self.run_dir / runs.EVALUATION).unlink(missing_ok=True)  # it scored the weights this run will replace
        runs.write_text(self.run_dir / runs.CONFIG, c.to_json())
        # before "running" is written: the app sends SIGTERM only to a trainer whose status says it runs
        previous = signal.signal(signal.SIGTERM, self._request_stop) if _main_thread() else None
        try:
            runs.write_status(
                self.run_dir,
                "running",
                pid=os.getpid(),
                host=run_history.HOST,
                job=os.environ.get(runs.JOB_ENV) or None,  # the engine's job id, when one started this run (a cluster)
                step=self.step,
                total_steps=self.total_steps,
                started=time.time(),
                error=None,
                evaluation=None,
                device=str(self.device) + (f" × {self.world.size} processes" if self.world.active else ""),
                model=describe_model(self.model_config, self.model),
                data=runs.data_info(self.data),
            )
            self.log(
                f"{self.data.name}: {len(self.data.x)} samples of shape {tuple(self.data.sample_shape)}; "
                f"{describe_model(self.model_config, self.model)}; device {self.device}; run folder {self.run_dir}"
            )
            state = self._loop()
            evaluation = self.evaluate() if state == "done" else "skipped: the run was stopped"
        except BaseException as e:
            message = str(e) if isinstance(e, TrainingError) else f"{type(e).__name__}: {e}"
            if isinstance(e, KeyboardInterrupt):
                self._checkpoint()
                runs.write_status(self.run_dir, "stopped", step=self.step, error=None)
            else:
                runs.write_status(self.run_dir, "failed", step=self.step, error=message)
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        return runs.write_status(self.run_dir, state, step=self.step, error=None, evaluation=evaluation)

    def stop_wanted(self) -> bool:
        """Whether this process was asked to stop: SIGTERM, or the run folder's STOP file (the app's Stop; one stat).
        Asked between steps, so a stop takes effect after the current step, however slow the steps are."""
        return self.stop_requested or (self.run_dir / runs.STOP).exists()

    def _loop(self) -> str:
        c = self.config
        sums = torch.zeros(N_BUCKETS, device=self.device)
        counts = torch.zeros(N_BUCKETS, device=self.device)
        loss_sum, n_logged, started, train_time = torch.zeros((), device=self.device), 0, time.perf_counter(), 0.0
        progress = _progress_bar(self.total_steps, self.step)
        batches = self.batches()
        while self.step < self.total_steps:
            self.sharing.update()
            tick = time.perf_counter()
            loss, per_sample, t = self.train_step(next(batches))
            self.sharing.observe(time.perf_counter() - tick)  # the thread count is chosen by measuring steps
            bucket = (t * N_BUCKETS // self.diffusion.num_timesteps).clamp(max=N_BUCKETS - 1)
            sums.index_add_(0, bucket, per_sample.float())
            counts.index_add_(0, bucket, torch.ones_like(per_sample, dtype=torch.float))
            loss_sum += loss.detach().float()
            n_logged += 1
            train_time += time.perf_counter() - tick
            stop = distributed.any_rank(self.stop_wanted(), self.world, self.device)  # every step, not every log
            if stop or self.step % c.log_every == 0 or self.step == self.total_steps:
                mean_loss = distributed.mean_across(loss_sum / n_logged, self.world).item()  # one sync per interval
                if not math.isfinite(mean_loss):
                    raise TrainingError(
                        f"the loss became {mean_loss} at step {self.step}: training diverged. Lower the learning "
                        f"rate (now {c.lr:g}) or keep gradient clipping on; the last checkpoint is kept."
                    )
                sums, counts = distributed.mean_across(sums, self.world), distributed.mean_across(counts, self.world)
                buckets = (sums / counts.clamp(min=1)).tolist()
                record = {
                    "step": self.step,
                    "loss": mean_loss,
                    "loss_buckets": [b if n else None for b, n in zip(buckets, counts.tolist(), strict=True)],
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "images_per_s": n_logged * c.batch_size / train_time,
                    "cpu_threads": self.sharing.threads,  # measured fastest; one fewer while the app computes
                    "elapsed": time.perf_counter() - started,
                    "time": time.time(),
                }
                if self.world.is_main:
                    runs.append_metrics(self.run_dir, record)
                    runs.write_status(self.run_dir, "running", step=self.step)
                progress.update(self.step - progress.n)
                progress.set_postfix(loss=f"{mean_loss:.4f}")
                sums.zero_(), counts.zero_(), loss_sum.zero_()
                n_logged, train_time = 0, 0.0
            if stop:  # the last record is the checkpoint's step, as a resume expects
                break
            if self.world.is_main and c.preview_every and self.step % c.preview_every == 0:
                self.preview()
            if self.world.is_main and c.checkpoint_every and self.step % c.checkpoint_every == 0:
                self._checkpoint()
        progress.close()
        done = self.step >= self.total_steps
        if self.world.is_main:
            if done and (not c.preview_every or self.step % c.preview_every):
                self.preview()  # a stopped run skips it: a stop is a checkpoint and an exit, within seconds
            self._checkpoint()
        return "done" if done else "stopped"

    # ------------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def preview(self) -> None:
        """Sample grids from the raw and the EMA weights (DDIM, fixed seed) into previews/."""
        from ddpm_core.pictures import image_grid, points_frame, save_png

        c = self.config
        for tag, model in (("raw", self.model), ("ema", self.ema.model)):
            model.eval()
            config = SamplingConfig(sampler="ddim", steps=c.preview_steps, clip_x0=not c.is_points)
            *_, last = sample_progressive(for_sampling(model, c), self.diffusion, c.preview_n,
                                          tuple(self.data.sample_shape), config, seed=c.seed,
                                          y=self.cycled_labels(c.preview_n))  # fmt: skip
            x = last.x_t.float().cpu()
            save_png(
                points_frame(x) if c.is_points else image_grid(x),
                self.run_dir / runs.PREVIEWS / f"step_{self.step:06d}_{tag}.png",
            )

    def evaluate(self) -> str:
        """Score the EMA weights (ddpm_core.evaluate, DDIM-50) into evaluation.json, the metric of the run history.
        A failed evaluation is logged and recorded there; it never fails a run whose weights are saved. A stop
        (STOP, SIGTERM) ends it between two sampling steps, and nothing is written. Returns what status.json's
        "evaluation" says: "done", "off", "failed: …" or "skipped: …"."""
        n = self.config.evaluation_samples(str(self.device))
        if not n:
            return "off"
        self.log(f"evaluating {n} samples of the EMA weights (DDIM-50)…")
        runs.write_status(self.run_dir, "running", step=self.step, phase="evaluating")
        try:
            report = evaluate_model(for_sampling(self.ema.model, self.config), self.diffusion, self.config,
                                    tuple(self.data.sample_shape), n, seed=self.config.seed,
                                    y=self.cycled_labels(n), progress=self._raise_if_stopped)  # fmt: skip
        except StopRequested:
            return self._evaluation_skipped()
        except (DatasetError, ValueError, RuntimeError) as e:  # e.g. reference images gone, out of memory
            self.log(f"evaluation failed: {e}")
            report = {"error": f"{type(e).__name__}: {e}"}
        if bound_is_cheap(self.config, tuple(self.data.sample_shape)):
            if self.stop_wanted():
                return self._evaluation_skipped()
            report["bound"] = self.measure_bound(n)
        runs.write_json(self.run_dir / runs.EVALUATION, {"step": self.step, "n": n, **report})
        runs.write_status(self.run_dir, "running", step=self.step, phase=None)
        return f"failed: {report['error']}" if "error" in report else "done"

    def _raise_if_stopped(self, *_) -> None:
        if self.stop_wanted():
            raise StopRequested

    def _evaluation_skipped(self) -> str:
        self.log("evaluation skipped: a stop was asked for")
        runs.write_status(self.run_dir, "running", step=self.step, phase=None)
        return "skipped: a stop was asked for during the evaluation"

    def measure_bound(self, n: int) -> dict:
        """The variational bound of the EMA weights (ddpm_core.likelihood_run): evaluation.json's "bound"."""
        c = self.config
        try:
            x0, y = run_bound_data(c, self.data, n, seed=c.seed)
            b = run_bound(for_sampling(self.ema.model, c), self.diffusion, c, x0.to(self.device),
                          None if y is None else y.to(self.device), seed=c.seed)  # fmt: skip
        except (ValueError, RuntimeError) as e:
            self.log(f"the bound failed: {e}")
            return {"error": f"{type(e).__name__}: {e}"}
        how = f"σ_t² = β_t, {b.strata} strata, {len(x0)} samples"
        self.log(f"bound: {b.bits_per_dim:.3f} ± {b.stderr:.3f} bits/dim ({how})")
        return bound_report(b)

    def cycled_labels(self, n: int) -> Tensor | None:
        """Every class in turn (n,) for a conditional model, None otherwise."""
        return every_class(n, self.model_config.num_classes, self.device)

    def _labels(self) -> Tensor | None:
        if not self.config.class_conditional:
            return None
        if self.data.y is None or len(self.data.classes) < 2:
            raise ValueError(
                f"class_conditional needs a data set with at least two classes; {self.data.name} has "
                f"{len(self.data.classes) if self.data.y is not None else 'no'} classes"
            )
        return self.data.y.to(self.device)

    def _init_from(self, path: str) -> None:
        """Fine-tuning: the checkpoint's weights, which must fit this run's network (same shape, classes, target)."""
        ckpt = runs.load_checkpoint(path)
        if ckpt.model_config != self.model_config:
            raise runs.CheckpointError(
                f"cannot fine-tune {ckpt.path}: it holds {describe_model(ckpt.model_config)}, this run builds "
                f"{describe_model(self.model_config)}; pass its settings (width, T, prediction type, classes, "
                "data shape) or start from its config"
            )
        self.model.load_state_dict(ckpt.model.state_dict())
        self.log(f"fine-tuning from {ckpt.path} (step {ckpt.step})")

    def _checkpoint(self) -> None:
        # the loss is only checked every log_every steps: never let NaN weights replace the last good checkpoint
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            raise TrainingError(
                f"the weights became nan/inf by step {self.step}: training diverged. Lower the learning rate "
                f"(now {self.config.lr:g}) or keep gradient clipping on; the last checkpoint is kept."
            )
        info = runs.data_info(self.data)
        runs.save_training_state(
            self.run_dir / runs.STATE, self.step, self.optimizer, self.lr_schedule, self.generator.get_state()
        )
        runs.save_weights(self.run_dir / runs.EMA, self.ema.model, self.config, self.model_config, self.step, info)
        runs.save_weights(self.run_dir / runs.MODEL, self.model, self.config, self.model_config, self.step, info)
        runs.write_status(self.run_dir, "running", step=self.step, checkpoint_step=self.step)

    def _resume(self) -> None:
        raw = runs.load_checkpoint(self.run_dir, prefer_ema=False)
        ema = runs.load_checkpoint(self.run_dir / runs.EMA)
        if raw.model_config != self.model_config:
            raise runs.CheckpointError(
                f"{self.run_dir} was trained with another model ({describe_model(raw.model_config)}); "
                "resume it with the same model and data settings"
            )
        state = runs.load_training_state(self.run_dir / runs.STATE)
        self.model.load_state_dict(raw.model.state_dict())
        self.ema.model.load_state_dict(ema.model.state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_schedule.load_state_dict(state["lr_schedule"])
        # the saved state carries the old lr and weight decay; the config's win, so a resume can lower them
        warmup = self.lr_schedule.lr_lambdas[0](self.lr_schedule.last_epoch)
        for group in self.optimizer.param_groups:
            group.update(lr=self.config.lr * warmup, initial_lr=self.config.lr, weight_decay=self.config.weight_decay)
        self.lr_schedule.base_lrs = [self.config.lr] * len(self.optimizer.param_groups)
        self.step = raw.step  # the weights are the source of truth for the step count
        if self.world.is_main:
            self.generator.set_state(state["rng"])
            runs.truncate_metrics(self.run_dir, self.step)
        else:  # the saved stream is rank 0's: the others start fresh ones of their own
            self.generator.manual_seed(self.config.seed + self.world.rank + self.step)

    def _request_stop(self, signum, frame) -> None:
        self.stop_requested = True


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _progress_bar(total: int, initial: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="training", unit="step", disable=not sys.stderr.isatty())
