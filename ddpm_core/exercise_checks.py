"""The checks behind ddpm_core.exercises: each runs a student's function and ddpm_core's own implementation on the
same inputs and the same noise, and when they differ, finds out why by comparing the student's output with planted
variants of the reference (√ᾱ_t written ᾱ_t, t off by one, noise on the last step …).

Index convention (as in the rest of ddpm_core and the course's code): a timestep index t = 0 … T−1 is the paper's
t + 1, so betas[0] is β_1 and t = 0 is the last reverse step. A check returns None when the function is right, else
one sentence saying what is wrong, in the course's notation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddpm_core.diffusion import Diffusion
from ddpm_core.objectives import training_target
from ddpm_core.sample import SamplingConfig, sample_progressive
from ddpm_core.schedules import make_schedule

SHAPE = (4, 1, 8, 8)  # (B, C, H, W): a batch of four 8×8 digits
ATOL, RTOL = 1e-5, 1e-4  # float32 results against the reference's float64 coefficients


class ToyEps(nn.Module):
    """A fixed stand-in for ε_θ(x_t, t): close to x_t itself (so that a wrong x_t moves the loss, not only its noise)
    and clearly different at neighbouring t (so that an off-by-one in t shows); it has a parameter, so a loss built
    on it has a gradient."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.7))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        phase = torch.sin(t.to(x.dtype) / 3.0 + 1.0).reshape(-1, *([1] * (x.dim() - 1)))
        return 0.9 * x + 0.3 * torch.tanh(self.scale * x + phase) + 0.5 * phase  # ∝ x_t: errors in x_t show


def randn(shape: tuple[int, ...], seed: int) -> Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _shape(v) -> str:
    return f"({', '.join(map(str, v.shape))})"


def compare(what: str, got, ref: Tensor, hypotheses=()) -> str | None:
    """None when got matches ref; else the message of the first hypothesis (message, value) got matches, or a
    description of the difference."""
    if not isinstance(got, Tensor):
        return f"{what} must be a tensor, got {type(got).__name__}"
    if got.shape != ref.shape:
        hint = next((m for m, h in hypotheses if h.shape == got.shape and _close(got, h)), "")
        return f"{what} has shape {_shape(got)}, expected {_shape(ref)}" + (f": {hint}" if hint else "")
    if not got.dtype.is_floating_point:
        return f"{what} is {got.dtype}, expected {ref.dtype}"
    if _close(got, ref):
        if got.dtype != ref.dtype and ref.dtype == torch.float32:
            return (
                f"{what} has the right values but dtype {got.dtype}, expected {ref.dtype}: cast the schedule's "
                "coefficients to x's dtype (extract does) — the network's weights are float32"
            )
        if got.dtype != ref.dtype:
            return f"{what} has the right values but dtype {got.dtype}: build it in {ref.dtype}"
        return None
    for message, h in hypotheses:
        if h.shape == got.shape and _close(got, h):
            return message
    diff = (got.detach().double() - ref.double()).abs().max()
    return f"{what} differs from the reference by up to {float(diff):.3g}"


def _close(a: Tensor, b: Tensor) -> bool:
    return bool(torch.allclose(a.detach().double(), b.detach().double(), atol=ATOL, rtol=RTOL, equal_nan=False))


# ----------------------------------------------------------------------------------------------------------------
# 0. x_0 in [-1, 1]


def check_to_model_range(fn) -> str | None:
    pixels = torch.rand(SHAPE, generator=torch.Generator().manual_seed(0))
    pixels[0, 0, 0, :2] = torch.tensor([0.0, 1.0])  # both ends, so that the range is exact
    ref = pixels * 2 - 1  # ddpm_core.data's scaling: 0 ↦ −1, peak ↦ 1
    return compare("to_model_range(pixels)", fn(pixels.clone()), ref, [
        ("x_0 is still in [0, 1]: map each pixel to 2x − 1 so that x_0 lies in [−1, 1] (Ho et al. §3.3)", pixels),
        ("x_0 lies in [−0.5, 0.5]: scale by 2 as well (x ↦ 2x − 1)", pixels - 0.5),
        ("x_0 lies in [0, 2]: subtract 1 as well (x ↦ 2x − 1)", pixels * 2),
        ("x_0 is upside down: 0 (background) must map to −1 and 1 to 1 (x ↦ 2x − 1)", 1 - 2 * pixels),
        ("x_0 is standardised (mean 0, std 1), not scaled to [−1, 1]: use x ↦ 2x − 1",
         (pixels - pixels.mean()) / pixels.std()),
    ])  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# 1. The schedule


def check_make_schedule(fn) -> str | None:
    for T, start, end in ((1000, 1e-4, 0.02), (10, 1e-3, 0.2)):
        out = fn(T, start, end)
        if not isinstance(out, tuple | list) or len(out) != 3:
            return "make_schedule must return the tuple (betas, alphas, alpha_bars)"
        s = make_schedule("linear", T, beta_start=start, beta_end=end)
        betas, alphas, alpha_bars = out
        if isinstance(betas, Tensor) and betas.dtype != torch.float64:
            return f"betas is {betas.dtype}: build the schedule in float64 (ᾱ_t multiplies T numbers; float32 drifts)"
        grid = torch.linspace(start, end, T + 1, dtype=torch.float64)
        message = compare("betas", betas, s.betas, [
            ("β is off by one: β_1 (betas[0]) must be beta_start and β_T (betas[T − 1]) beta_end", grid[1:]),
            ("β is off by one: β_1 (betas[0]) must be beta_start and β_T (betas[T − 1]) beta_end", grid[:-1]),
        ]) or compare("alphas", alphas, s.alphas, [
            ("alphas holds β_t: α_t = 1 − β_t", s.betas),
            ("alphas holds ᾱ_t: α_t = 1 − β_t (ᾱ_t is the third output)", s.alpha_bars),
        ]) or compare("alpha_bars", alpha_bars, s.alpha_bars, [
            ("ᾱ_t is a product, ᾱ_t = ∏_{s≤t} α_s (torch.cumprod), not a sum", torch.cumsum(s.alphas, 0)),
            ("alpha_bars holds α_t: ᾱ_t = ∏_{s≤t} α_s (torch.cumprod)", s.alphas),
            ("ᾱ_t is the product of the α_s, not of the β_s", torch.cumprod(s.betas, 0)),
            ("ᾱ_t is shifted by one: ᾱ_1 = α_1 (alpha_bars[0] = alphas[0]), you have ᾱ_{t−1}", s.alpha_bars_prev),
        ])  # fmt: skip
        if message:
            return message + (f" (T = {T})" if T != 1000 else "")
    return None


# ----------------------------------------------------------------------------------------------------------------
# 2. q(x_t | x_0), eq. 4


def _forward_variants(ab: Tensor, t: Tensor, x0: Tensor, noise: Tensor) -> list[tuple[str, Tensor]]:
    """x_t as the usual mistakes in eq. 4 compute it (t: (B,) indices in [1, T − 2], so that t ± 1 exist)."""

    def at(v: Tensor, idx: Tensor) -> Tensor:
        return v[idx].float().reshape(-1, 1, 1, 1)

    def x_t(c0: Tensor, c1: Tensor, a=x0, b=noise) -> Tensor:
        return c0 * a + c1 * b

    a = at(ab, t)
    return [
        ("ᾱ_t where √ᾱ_t belongs: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε", x_t(a, (1 - a).sqrt())),
        ("(1 − ᾱ_t) where √(1 − ᾱ_t) belongs: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε", x_t(a.sqrt(), 1 - a)),
        ("ᾱ_t and (1 − ᾱ_t) need square roots: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε", x_t(a, 1 - a)),
        ("x_0 and ε are swapped: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε", x_t(a.sqrt(), (1 - a).sqrt(), noise, x0)),
        ("t is off by one: t holds 0-based indices, so ᾱ_t is alpha_bars[t] (you used alpha_bars[t − 1])",
         x_t(at(ab, t - 1).sqrt(), (1 - at(ab, t - 1)).sqrt())),
        ("t is off by one: t holds 0-based indices, so ᾱ_t is alpha_bars[t] (you used alpha_bars[t + 1])",
         x_t(at(ab, t + 1).sqrt(), (1 - at(ab, t + 1)).sqrt())),
        ("every image got the first image's t: index ᾱ with the whole (B,) tensor t",
         x_t(at(ab, t[:1]).sqrt(), (1 - at(ab, t[:1])).sqrt())),
    ]  # fmt: skip


def _probe(seed: int = 1):
    s = make_schedule("linear", 1000)
    x0, noise = randn(SHAPE, seed).clamp(-1, 1), randn(SHAPE, seed + 1)
    t = torch.tensor([1, 250, 600, 998])
    return s, Diffusion(s), x0, t, noise


def check_add_noise(fn) -> str | None:
    s, d, x0, t, noise = _probe()
    got = fn(x0.clone(), t.clone(), noise.clone(), s.alpha_bars.clone())
    return compare("add_noise(x0, t, noise, alpha_bars)", got, d.q_sample(x0, t, noise),
                   _forward_variants(s.alpha_bars, t, x0, noise))  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# 3. L_simple, eq. 14


def check_training_loss(fn) -> str | None:
    s, d, x0, t, noise = _probe(3)
    model = ToyEps()
    loss = fn(model, x0.clone(), t.clone(), noise.clone(), s.alpha_bars.clone())
    if isinstance(loss, Tensor) and loss.dim() == 0 and not loss.requires_grad:
        return "the loss has no gradient: keep it a tensor (no .item(), .detach() or torch.no_grad())"
    x_t = d.q_sample(x0, t, noise)

    def mse(x: Tensor, tt: Tensor, target: Tensor = noise) -> Tensor:
        return F.mse_loss(model(x, tt), target).detach()

    with torch.no_grad():
        eps, err = model(x_t, t), model(x_t, t) - training_target(d, "eps", x0, t, noise)
    per_sample = err.pow(2).flatten(1).mean(1)
    variants = [
        ("reduce the squared error to one number with its mean: return a scalar, not one value per image",
         per_sample),
        ("ε_θ was given t + 1 (the paper's t): pass the 0-based indices t to the network as they are",
         mse(x_t, t + 1)),
        ("ε_θ was given t − 1: pass the 0-based indices t to the network as they are", mse(x_t, t - 1)),
        ("ε_θ was given x_0: it must see the noisy x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (add_noise)", mse(x0, t)),
        ("the target is x_0: L_simple compares ε_θ(x_t, t) with the noise ε (Ho et al. eq. 14)",
         mse(x_t, t, x0)),
        ("the loss is a sum: take the mean of the squared error over every element (F.mse_loss)",
         err.pow(2).sum()),
        ("the loss sums over pixels: take the mean over every element, pixels too (F.mse_loss)",
         err.pow(2).flatten(1).sum(1).mean()),
        ("the error is not squared: L_simple is the mean of (ε − ε_θ)², not of |ε − ε_θ|", err.abs().mean()),
        ("take the mean of the squared error, without a square root", err.pow(2).mean().sqrt()),
    ] + [
        (f"x_t is wrong — {message}", mse(x, t)) for message, x in _forward_variants(s.alpha_bars, t, x0, noise)
    ]  # fmt: skip
    ref = F.mse_loss(eps.float(), training_target(d, "eps", x0, t, noise).float())  # as Trainer.loss computes it
    return compare("training_loss(...)", loss, ref, variants)


# ----------------------------------------------------------------------------------------------------------------
# 4. One reverse step, eq. 11 / Algorithm 2


def _eq11(s, model, x: Tensor, t: int, z: Tensor, *, sqrt_a=True, sqrt_1mab=True, alpha_bar_front=False) -> Tensor:
    """Eq. 11 with σ_t² = β_t, as one of its square roots (or α_t) is miswritten."""
    beta, alpha, ab = float(s.betas[t]), float(s.alphas[t]), float(s.alpha_bars[t])
    eps = model(x, torch.full((len(x),), t))
    front = ab if alpha_bar_front else alpha
    mean = (x - beta / ((1 - ab) ** 0.5 if sqrt_1mab else 1 - ab) * eps) / (front**0.5 if sqrt_a else front)
    return mean + beta**0.5 * z


def _step_variants(d, model, x, t, z, variance, clip) -> list[tuple[str, Tensor]]:
    s = d.schedule

    def step(tt: int = t, eps_t: int = t, noise=z, var=variance, clip_x0=clip) -> Tensor:
        eps = model(x, torch.full((len(x),), eps_t))
        return d.ddpm_step(eps, tt, x, noise=noise, clip_x0=clip_x0, variance=var).x_prev

    beta, post = float(s.betas[t]), float(s.posterior_variance[t])
    sigma = beta**0.5 if variance == "beta" else post**0.5
    no_noise = step(noise=torch.zeros_like(z))
    out = (
        [
            (
                "noise is added on the last step: at t = 1 (index 0) x_0 is the mean alone, no σ_1 z",
                no_noise + sigma * z,
            ),
        ]
        if t == 0
        else [
            ("the noise σ_t z is missing: add it on every step but the last", no_noise),
            (
                "z is scaled by σ_t², not σ_t: σ_t = √β_t (or √β̃_t)",
                no_noise + (beta if variance == "beta" else post) * z,
            ),
        ]
    )
    out += [
        ("σ_t² = β_t was asked (variance='beta'), you used β̃_t", step(var="posterior")),
        ("σ_t² = β̃_t = (1 − ᾱ_{t−1})/(1 − ᾱ_t) β_t was asked (variance='posterior'), you used β_t (or an ᾱ_{t−1}"
         " equal to ᾱ_t: ᾱ_{t−1} is alpha_bars[t − 1])", step(var="beta")),
        ("clip=True: clip x̂₀ to [−1, 1] and step to the posterior mean μ̃_t(x_t, x̂₀) (eq. 7)",
         step(clip_x0=False)),
        ("clip=False asks for eq. 11 as it is: x̂₀ must not be clipped", step(clip_x0=True)),
        ("ε_θ was given t + 1 (the paper's t): pass the 0-based index t to the network", step(eps_t=t + 1)),
    ]  # fmt: skip
    if t > 0:
        out += [
            ("t is off by one: the coefficients at index t are betas[t], alphas[t], alpha_bars[t] (you used t − 1)",
             step(tt=t - 1)),
            ("t is off by one: ᾱ_{t−1} is alpha_bars[t − 1] (and ᾱ_0 = 1): you used ᾱ_t or ᾱ_{t−2}",
             step(tt=t - 1, eps_t=t)),
        ]  # fmt: skip
    if t + 1 < s.num_timesteps:
        out.append(("t is off by one: use betas[t], alphas[t], alpha_bars[t] (you used t + 1)", step(tt=t + 1)))
    if variance == "beta" and not clip and t > 0:
        out += [
            ("(1 − ᾱ_t) where √(1 − ᾱ_t) belongs: ε_θ's weight is β_t/√(1 − ᾱ_t)", _eq11(s, model, x, t, z,
                                                                                       sqrt_1mab=False)),
            ("α_t where √α_t belongs: the factor in front is 1/√α_t", _eq11(s, model, x, t, z, sqrt_a=False)),
            ("ᾱ_t where α_t belongs: the factor in front is 1/√α_t, not 1/√ᾱ_t",
             _eq11(s, model, x, t, z, alpha_bar_front=True)),
        ]  # fmt: skip
    return out


STEP_PROBES = (  # (t, variance, clip): eq. 11 with each σ_t², the last step, clipping at both ends of the chain
    (600, "beta", False),
    (600, "posterior", False),
    (0, "beta", False),
    (600, "posterior", True),
    (999, "beta", True),
    (0, "posterior", True),
)


@torch.no_grad()
def check_reverse_step(fn) -> str | None:
    s, d, _, _, _ = _probe()
    model = ToyEps()
    for i, (t, variance, clip) in enumerate(STEP_PROBES):
        x, z = randn(SHAPE, 10 + i), randn(SHAPE, 20 + i)
        got = fn(model, x.clone(), t, z.clone(), s.betas, s.alphas, s.alpha_bars, variance, clip)
        eps = model(x, torch.full((len(x),), t))
        ref = d.ddpm_step(eps, t, x, noise=z, clip_x0=clip, variance=variance).x_prev
        message = compare("x_{t−1}", got, ref, _step_variants(d, model, x, t, z, variance, clip))
        if message:
            return f"{message} (index t = {t}, the paper's t = {t + 1}; variance={variance!r}, clip={clip})"
    return None


# ----------------------------------------------------------------------------------------------------------------
# 5. The loop of Algorithm 2


def _chain(d, model, x: Tensor, gen, variance, clip, *, noise_on_last=False) -> list[Tensor]:
    """Algorithm 2 from x by ddpm_step, the noise drawn as sample()'s docstring says, optionally with σ_1 z added on
    the last step."""
    xs = [x]
    for t in reversed(range(d.num_timesteps)):
        eps = model(x, torch.full((len(x),), t))
        z = torch.randn(x.shape, generator=gen) if t > 0 or noise_on_last else None
        x = d.ddpm_step(eps, t, x, noise=z, clip_x0=clip, variance=variance).x_prev
        if t == 0 and noise_on_last:
            var = d.schedule.betas[0] if variance == "beta" else d.schedule.posterior_variance[0]
            x = x + float(var) ** 0.5 * z
        xs.append(x)
    return xs


@torch.no_grad()
def check_sample(fn) -> str | None:
    s = make_schedule("linear", 20, beta_start=1e-3, beta_end=0.3)
    d, model, T = Diffusion(s), ToyEps(), s.num_timesteps
    for seed, variance, clip in ((0, "posterior", True), (1, "beta", False)):
        xs = fn(model, SHAPE, s.betas, s.alphas, s.alpha_bars, torch.Generator().manual_seed(seed), variance, clip)
        if isinstance(xs, Tensor) or not isinstance(xs, list | tuple):
            return "sample must return the list [x_T, x_{T−1}, …, x_0] (T + 1 tensors)"
        if len(xs) != T + 1:
            return f"sample returned {len(xs)} tensors for T = {T}: expected T + 1, x_T first and x_0 last"
        config = SamplingConfig(variance=variance, clip_x0=clip)
        ref = [r.x_t for r in sample_progressive(model, d, SHAPE[0], SHAPE[1:], config, seed=seed)]
        variants = {}
        other = "beta" if variance == "posterior" else "posterior"
        for message, kw in (
            ("noise is added on the last step: x_0 is the mean alone", {"noise_on_last": True}),
            (f"σ_t² follows variance={other!r}, not the variance asked: pass `variance` on", {"variance": other}),
            ("x̂₀ clipping does not follow `clip`: pass clip on to reverse_step", {"clip": not clip}),
            (
                "variance and clip are not passed on to reverse_step (it used its defaults)",
                {"variance": "posterior", "clip": True},
            ),
        ):
            gen = torch.Generator().manual_seed(seed)
            x_T = torch.randn(SHAPE, generator=gen)
            variants[message] = _chain(d, model, x_T, gen, **{"variance": variance, "clip": clip, **kw})
        for k, (got, want) in enumerate(zip(xs, ref, strict=True)):
            hyps = [(m, v[k]) for m, v in variants.items()]
            message = compare(f"x_t at the paper's t = {T - k}", got, want, hyps)
            if message and k == 0:
                return f"{message}: start from x_T = torch.randn(shape, generator=generator), drawn first"
            if message and "differs" in message:
                message += (
                    ": draw x_T first, then one z = torch.randn(shape, generator=generator) per step with index"
                    " t ≥ 1, in the loop's order T − 1 … 0 (so the grader can replay your noise)"
                )
            if message:
                return f"{message} (variance={variance!r}, clip={clip})"
    return None
