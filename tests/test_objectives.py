"""Prediction targets (ε, x_0, v), min-SNR-γ weights, classifier-free guidance and fine-tuning: the conversions
against diffusers' `prediction_type` on identical inputs, the weights against their formula, and the trainer and
samplers using them end to end on tiny digits runs."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from ddpm_core import runs
from ddpm_core.config import TrainConfig
from ddpm_core.diffusion import Diffusion
from ddpm_core.objectives import loss_weight, output_to_eps, training_target
from ddpm_core.sample import sample_progressive
from ddpm_core.schedules import make_schedule
from ddpm_core.trainer import Trainer
from tests.runs_helpers import TINY, call_cli
from tests.test_diffusion import TOL, their_scheduler, x_T

THEIR_NAMES = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}
PREDICTIONS = list(THEIR_NAMES)
BUNDLED = "assets/checkpoints/digits.safetensors"


def toy_output(x: torch.Tensor, t: int) -> torch.Tensor:
    """A stand-in network output of any target: depends on x and t, and large enough that clipping matters."""
    return 0.8 * torch.tanh(1.3 * x) + 0.2 * torch.cos(torch.tensor(t / 50.0, dtype=x.dtype))


@pytest.fixture
def d() -> Diffusion:
    return Diffusion(make_schedule("cosine", 1000))


# ----------------------------------------------------------------------------------------------------------------
# The targets and their conversion to ε


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_the_target_of_noisy_data_converts_back_to_its_noise(d, prediction):
    x0, noise = x_T(seed=1).tanh(), x_T(seed=2)
    t = torch.tensor([0, 10, 500, 999, 3, 700])[:3]
    x_t = d.q_sample(x0, t, noise)
    target = training_target(d, prediction, x0, t, noise)
    torch.testing.assert_close(output_to_eps(d, prediction, target, x_t, t), noise, rtol=1e-7, atol=1e-7)


def test_velocity_matches_diffusers_get_velocity(d):
    theirs = their_scheduler(DDPMScheduler, d, prediction_type="v_prediction")
    x0, noise, t = x_T(seed=3), x_T(seed=4), torch.tensor([5, 400, 999])
    torch.testing.assert_close(d.velocity(x0, t, noise), theirs.get_velocity(x0, noise, t), **TOL)


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("clip_x0", [False, True])
def test_ddpm_steps_on_any_target_match_diffusers_prediction_type(d, prediction, clip_x0):
    theirs = their_scheduler(
        DDPMScheduler, d, variance_type="fixed_small", clip_sample=clip_x0, prediction_type=THEIR_NAMES[prediction]
    )
    x = x_T(seed=5)
    for t in (999, 640, 77, 1, 0):
        output = toy_output(x, t)
        eps = output_to_eps(d, prediction, output, x, t)
        ours = d.ddpm_step(eps, t, x, variance="posterior", clip_x0=clip_x0, generator=torch.Generator().manual_seed(t))
        ref = theirs.step(output, t, x, generator=torch.Generator().manual_seed(t))
        torch.testing.assert_close(ours.x0_pred, ref.pred_original_sample, rtol=1e-7, atol=1e-7)
        torch.testing.assert_close(ours.x_prev, ref.prev_sample, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_a_ddim_loop_on_any_target_matches_diffusers_prediction_type(d, prediction):
    theirs = their_scheduler(DDIMScheduler, d, clip_sample=True, prediction_type=THEIR_NAMES[prediction])
    theirs.set_timesteps(20)
    ts = d.timesteps(20, "leading")
    ours = out = x_T(seed=6)
    for i, t in enumerate(ts.tolist()):
        t_prev = ts[i + 1].item() if i + 1 < len(ts) else -1
        eps = output_to_eps(d, prediction, toy_output(ours, t), ours, t)
        ours = d.ddim_step(eps, t, ours, t_prev, clip_x0=True).x_prev
        out = theirs.step(toy_output(out, t), t, out, use_clipped_model_output=True).prev_sample
    torch.testing.assert_close(ours, out, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# min-SNR-γ


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_min_snr_weights_are_min_snr_gamma_over_the_targets_own_weight(d, prediction):
    t = torch.arange(1000)
    snr = d.alpha_bars / (1 - d.alpha_bars)
    w = loss_weight(d, prediction, "min_snr", t, gamma=5.0)
    in_x0_terms = w.double() * {"eps": snr, "x0": torch.ones_like(snr), "v": snr + 1}[prediction]
    torch.testing.assert_close(in_x0_terms, snr.clamp(max=5.0), rtol=1e-6, atol=1e-12)
    assert torch.equal(loss_weight(d, prediction, "none", t, gamma=5.0), torch.ones(1000))
    if prediction == "eps":  # ε-prediction only loses weight where the data is nearly clean
        assert (w <= 1).all() and w[-1] == 1 and w[0] < 0.01


# ----------------------------------------------------------------------------------------------------------------
# Training and sampling with them


def tiny_trainer(tmp_path, **settings) -> Trainer:
    config = TrainConfig(**{**TINY, "warmup": 0, "log_every": 5, "preview_every": 0, **settings})
    return Trainer(config, tmp_path / "run", log=lambda *_: None)


@pytest.mark.parametrize(("prediction", "weighting"), [("x0", "none"), ("v", "min_snr"), ("eps", "min_snr")])
def test_every_target_trains_and_samples_in_range(tmp_path, prediction, weighting):
    trainer = tiny_trainer(tmp_path, prediction_type=prediction, loss_weighting=weighting, lr=5e-3)
    batches = trainer.batches()
    first = [trainer.train_step(next(batches))[0].item() for _ in range(5)]
    for _ in range(60):
        trainer.train_step(next(batches))
    last = [trainer.train_step(next(batches))[0].item() for _ in range(5)]
    assert sum(last) < 0.7 * sum(first)
    assert trainer.model.config.prediction == prediction
    *_, final = sample_progressive(trainer.model.eval(), trainer.diffusion, 16, (1, 8, 8), sampler="ddim", steps=10)
    assert final.x_t.abs().max() <= 1.0 + 1e-6 and final.x_t.std() > 0.1  # clipped x̂₀ keeps it in range, not flat


def test_label_dropout_swaps_that_share_of_labels_for_the_null_label(tmp_path):
    trainer = tiny_trainer(tmp_path, class_conditional=True, label_dropout=0.3, batch_size=1000)
    seen = []
    trainer.model.time_embed.register_forward_hook(lambda module, args, out: seen.append(args[1].clone()))
    x, y = next(trainer.batches())
    trainer.loss(x, y)
    null = (seen[0] == 10).float().mean().item()
    assert 0.25 < null < 0.35 and set(seen[0][seen[0] != 10].tolist()) <= set(range(10))
    assert torch.equal(seen[0][seen[0] != 10], y[seen[0] != 10])  # the others keep their own label


def test_guidance_one_is_conditional_and_zero_is_unconditional_sampling(tmp_path):
    trainer = tiny_trainer(tmp_path, class_conditional=True, lr=5e-3)
    batches = trainer.batches()
    for _ in range(20):  # a freshly built network outputs zeros (its last layer starts at 0): labels need training
        trainer.train_step(next(batches))
    model = trainer.model.eval()
    diffusion = Diffusion(make_schedule("linear", 100))
    y = torch.arange(8) % 10

    def final(**kw):
        return list(sample_progressive(model, diffusion, 8, (1, 8, 8), sampler="ddim", steps=5, seed=3, **kw))[-1]

    torch.testing.assert_close(final(y=y, guidance=1.0).x_t, final(y=y).x_t)
    torch.testing.assert_close(final(y=y, guidance=0.0).x_t, final().x_t, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(final(y=y, guidance=3.0).x_t, final(y=y).x_t)


def test_a_conditional_run_scores_the_class_it_was_asked_for(tmp_path):
    result = call_cli("train", *_flags(TINY), "--steps", 30, "--class-conditional", "--evaluate-n", 40,
                     "--out", tmp_path / "run", runs_root=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = runs.read_json(tmp_path / "run" / runs.EVALUATION)
    assert report["guidance"] == 1.0 and 0.0 <= report["class_accuracy"] <= 1.0
    ckpt = runs.load_checkpoint(tmp_path / "run")
    assert ckpt.model_config.num_classes == 10 and ckpt.classes == [str(i) for i in range(10)]
    out = call_cli("sample", "--checkpoint", tmp_path / "run", "--class-label", "7", "--guidance", "2", "--n", 4,
                  "--sampler", "ddim", "--steps", 5, "--device", "cpu", runs_root=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    wrong = call_cli("sample", "--checkpoint", tmp_path / "run", "--class-label", "cat", runs_root=tmp_path)
    assert wrong.returncode == 2 and "unknown class 'cat'; this model knows 0, 1, 2" in wrong.stderr
    plain = call_cli("sample", "--checkpoint", BUNDLED, "--class-label", "3", runs_root=tmp_path)
    assert plain.returncode == 2 and "is not class-conditional" in plain.stderr


def _flags(settings: dict) -> list[str]:
    return [a for k, v in settings.items() for a in (f"--{k.replace('_', '-')}", str(v))]


# ----------------------------------------------------------------------------------------------------------------
# Fine-tuning


def test_fine_tuning_starts_from_the_checkpoints_weights_and_keeps_its_settings(tmp_path):
    ckpt = runs.load_checkpoint(BUNDLED)
    trainer = Trainer(ckpt.config.replace(init_from=BUNDLED, classes=["3"], out=""), tmp_path / "ft", log=print)
    for (name, ours), theirs in zip(trainer.model.state_dict().items(), ckpt.model.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs), name
    assert torch.equal(next(trainer.ema.model.parameters()), next(ckpt.model.parameters()))
    assert (trainer.data.y == 3).all()


def test_the_cli_fine_tunes_the_bundled_digits_on_threes(tmp_path):
    result = call_cli("train", "--init-from", BUNDLED, "--classes", "3", "--steps", 20, "--warmup", 0,
                     "--preview-every", 0, "--evaluate-n", 50, "--device", "cpu", "--out", tmp_path / "threes",
                     runs_root=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "fine-tuning from" in result.stdout
    saved = TrainConfig.from_json_file(tmp_path / "threes" / runs.CONFIG)
    base = runs.load_checkpoint(BUNDLED).config
    assert (saved.classes, saved.steps, saved.base_channels, saved.T) == (["3"], 20, base.base_channels, base.T)
    assert runs.read_json(tmp_path / "threes" / runs.EVALUATION)["pixel_fd"] > 0


def test_fine_tuning_a_different_network_says_what_differs(tmp_path):
    config = runs.load_checkpoint(BUNDLED).config.replace(init_from=BUNDLED, base_channels=8, out="")
    with pytest.raises(runs.CheckpointError, match=r"cannot fine-tune .* it holds UNet .*widths 16, 32.*builds UNet"):
        Trainer(config, tmp_path / "ft", log=print)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"prediction_type": "score"}, "prediction_type must be eps, x0 or v"),
        ({"loss_weighting": "p2"}, "loss_weighting must be none or min_snr"),
        ({"min_snr_gamma": 0.0}, "min_snr_gamma must be positive"),
        ({"label_dropout": 1.0}, r"label_dropout must lie in \[0, 1\)"),
        ({"class_conditional": True, "dataset": "moons"}, "class_conditional needs labelled images"),
    ],
)
def test_bad_objective_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**settings)


def test_the_cli_trains_and_samples_an_x0_model_with_min_snr_weights(tmp_path):
    result = call_cli("train", *_flags(TINY), "--steps", 10, "--prediction-type", "x0", "--loss-weighting", "min_snr",
                     "--min-snr-gamma", 2, "--out", tmp_path / "x0", runs_root=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    ckpt = runs.load_checkpoint(tmp_path / "x0")
    assert ckpt.model_config.prediction == "x0" and ckpt.config.min_snr_gamma == 2.0
    out = call_cli("sample", "--checkpoint", tmp_path / "x0", "--sampler", "ddim", "--steps", 5, "--n", 4,
                  "--npy", tmp_path / "x.npy", runs_root=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    bad = call_cli("train", "--prediction-type", "score", "--out", tmp_path / "bad", runs_root=tmp_path)
    assert bad.returncode == 2 and "prediction_type must be eps, x0 or v, got 'score'" in bad.stderr
