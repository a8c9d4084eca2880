"""The course's DDPM recipe, ported as the BASELINE of bench/bench_race.py — its faults kept on purpose.

Source: the course module (ddpm-module.md: the DDPM class, the training loop, `step`) and the MNIST notebook it
links (ddpm_nano_sol), which provides the tiny UNet and the time table. Kept as the course has them:
- the tiny UNet: blocks of three (LayerNorm over (C, H, W) → 3×3 conv → SiLU), channels 10/20/40, three stride-2
  downsamplings and three transposed-conv upsamplings with skip concatenations, and a frozen 100-d time table fed
  through Linear–SiLU–Linear and added to every block's input;
- the time table with its indexing fault (see `sinusoidal_table`);
- float32 tables, linear β_t from 1e-4 to 0.02, T = 1000;
- Adam, lr 1e-3, no EMA, no warm-up, no gradient clipping; loss = MSE between ε and ε_θ(x_t, t), t uniform;
- the sampler: 1000 ancestral steps x_{t−1} = (x_t − β_t/√(1−ᾱ_t) ε_θ)/√α_t + √β_t z, σ_t² = β_t, no x̂₀ clipping,
  no noise on the last step — the course's own loop, timed as it is.

Adapted to the 8×8 scikit-learn digits (the choices bench_race.py reports):
- data scaling: the course maps MNIST to [-1, 1] (ToTensor, then Normalize(0.5, 0.5)); load_dataset("digits") is already
  in [-1, 1], so nothing changes and samples are compared as they come out (unclipped; the metric clips to [-1, 1]).
- size: the course resizes MNIST 28 → 32 only so that its three halvings divide it; 8 already divides, so by default
  the UNet runs on the digits' own 8×8 (bottleneck 1×1) — the cheapest and least handicapped baseline. `size=16`
  pads the digits with background (−1) to 16×16 (bottleneck 2×2; 4× the pixels, so a costlier baseline: no run of
  it is in bench/RESULTS.md yet, `bench_race.py --course-size 16` measures it) and crops the centre 8×8 of the
  samples back for the metric.
- batch: the course's 4096 is sized for MNIST's 60 000 images (more than the 1797 digits), so 128; shuffled every
  epoch with the last short batch kept, like its DataLoader(shuffle=True).
- random numbers come from one seeded generator instead of the global one (same distributions).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

T = 1000  # diffusion steps
BETA_START, BETA_END = 1e-4, 0.02  # linear β_t, float32 as in the course
LR = 1e-3  # Adam
BATCH_SIZE = 128  # see the module docstring
TIME_EMB_DIM = 100  # width of the course's time table
DIGIT_SIZE = 8  # the scikit-learn digits are 8×8


def sinusoidal_table(n: int, d: int) -> Tensor:
    """The course's (n, d) float32 time table, row t for time index t — with its fault.

    Meant: the transformer table, sin in even columns and cos in odd ones, of t·ω_j, ω_j = 10000^(−2j/d).
    What the course's code does: its "sin mask" arange(0, n, 2) indexes ROWS (time steps), not columns, so every even t
    gets sin(t·ω_j) in every column; its cos line then writes cos(·) of those already-sined even rows into rows
    1 − mask = 1, −1, −3, …, which Python wraps to the odd rows counted from the end. So row 1 ← cos(sin(0)) = all ones,
    row n−1 ← cos(sin(2·ω)), row n−3 ← cos(sin(4·ω)), …, row 3 ← cos(sin((n−2)·ω)): every odd t sees the embedding of a
    mirrored even time (t = 999, pure noise, is labelled like t = 2, almost clean) squashed into [cos 1, 1] ≈
    [0.54, 1]. (Also, 2j/d runs j over all d columns, so the exponent reaches ≈ 2 rather than 1.)
    """
    j = torch.arange(d, dtype=torch.float64)
    table = (torch.arange(n, dtype=torch.float64)[:, None] / 10_000 ** (2 * j / d)).float()  # (n, d)
    even = torch.arange(0, n, 2)
    table[even] = torch.sin(table[even])
    table[1 - even] = torch.cos(table[even])  # the fault: rows 1, −1, −3, … ← cos of the sined even rows
    return table


class CourseConv(nn.Module):
    """LayerNorm over the whole (C, H, W) of each image → 3×3 conv → SiLU; (B, c_in, s, s) → (B, c_out, s, s)."""

    def __init__(self, shape: tuple[int, int, int], c_in: int, c_out: int):
        super().__init__()
        self.ln = nn.LayerNorm(shape)
        self.conv = nn.Conv2d(c_in, c_out, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(self.conv(self.ln(x)))


def tiny_block(size: int, c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        CourseConv((c_in, size, size), c_in, c_out),
        CourseConv((c_out, size, size), c_out, c_out),
        CourseConv((c_out, size, size), c_out, c_out),
    )


def tiny_up(size: int, c_in: int) -> nn.Sequential:
    """c_in → c_in/4 channels (the course's up path halves, then halves again)."""
    return nn.Sequential(
        CourseConv((c_in, size, size), c_in, c_in // 2),
        CourseConv((c_in // 2, size, size), c_in // 2, c_in // 4),
        CourseConv((c_in // 4, size, size), c_in // 4, c_in // 4),
    )


def time_mlp(c: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(TIME_EMB_DIM, c), nn.SiLU(), nn.Linear(c, c))


class CourseUNet(nn.Module):
    """ε_θ(x_t, t) of the course: x (B, 1, s, s) with s divisible by 8, t (B,) or (B, 1) long → (B, 1, s, s)."""

    def __init__(self, size: int):
        super().__init__()
        self.time_embed = nn.Embedding(T, TIME_EMB_DIM)
        self.time_embed.weight.data = sinusoidal_table(T, TIME_EMB_DIM)
        self.time_embed.requires_grad_(False)
        s = size
        self.te1, self.b1, self.down1 = time_mlp(1), tiny_block(s, 1, 10), nn.Conv2d(10, 10, 4, 2, 1)
        self.te2, self.b2, self.down2 = time_mlp(10), tiny_block(s // 2, 10, 20), nn.Conv2d(20, 20, 4, 2, 1)
        self.te3, self.b3, self.down3 = time_mlp(20), tiny_block(s // 4, 20, 40), nn.Conv2d(40, 40, 4, 2, 1)
        self.te_mid = time_mlp(40)
        m = s // 8
        self.b_mid = nn.Sequential(
            CourseConv((40, m, m), 40, 20), CourseConv((20, m, m), 20, 20), CourseConv((20, m, m), 20, 40)
        )
        self.up1, self.te4, self.b4 = nn.ConvTranspose2d(40, 40, 4, 2, 1), time_mlp(80), tiny_up(s // 4, 80)
        self.up2, self.te5, self.b5 = nn.ConvTranspose2d(20, 20, 4, 2, 1), time_mlp(40), tiny_up(s // 2, 40)
        self.up3, self.te_out, self.b_out = nn.ConvTranspose2d(10, 10, 4, 2, 1), time_mlp(20), tiny_block(s, 20, 10)
        self.conv_out = nn.Conv2d(10, 1, 3, 1, 1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        emb, n = self.time_embed(t), len(x)

        def te(mlp: nn.Module) -> Tensor:  # (B, C, 1, 1), added to a block's input
            return mlp(emb).reshape(n, -1, 1, 1)

        out1 = self.b1(x + te(self.te1))  # (B, 10, s, s)
        out2 = self.b2(self.down1(out1) + te(self.te2))  # (B, 20, s/2, s/2)
        out3 = self.b3(self.down2(out2) + te(self.te3))  # (B, 40, s/4, s/4)
        mid = self.b_mid(self.down3(out3) + te(self.te_mid))  # (B, 40, s/8, s/8)
        out4 = self.b4(torch.cat((out3, self.up1(mid)), 1) + te(self.te4))  # (B, 20, s/4, s/4)
        out5 = self.b5(torch.cat((out2, self.up2(out4)), 1) + te(self.te5))  # (B, 10, s/2, s/2)
        out = self.b_out(torch.cat((out1, self.up3(out5)), 1) + te(self.te_out))  # (B, 10, s, s)
        return self.conv_out(out)


class CourseDDPM:
    """The course's DDPM tables (float32, index t = 0 … T−1 is the paper's t + 1), forward noising and reverse step."""

    def __init__(self):
        self.betas = torch.linspace(BETA_START, BETA_END, T, dtype=torch.float32)
        self.alphas = 1.0 - self.betas
        alpha_bars = torch.cumprod(self.alphas, 0)
        # add_noise
        self.sqrt_alpha_bars = alpha_bars**0.5
        self.sqrt_one_minus_alpha_bars = (1 - alpha_bars) ** 0.5
        # step (the course recomputes these two on every step; same values)
        self.coef_eps = (1 - self.alphas) / self.sqrt_one_minus_alpha_bars
        self.coef_first = 1 / self.alphas**0.5

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε; x0, noise (B, 1, s, s), t (B,)."""
        return (
            self.sqrt_alpha_bars[t].reshape(-1, 1, 1, 1) * x0
            + self.sqrt_one_minus_alpha_bars[t].reshape(-1, 1, 1, 1) * noise
        )

    def step(self, eps: Tensor, t: int, x_t: Tensor, generator: torch.Generator) -> Tensor:
        """x_{t−1} = (x_t − β_t/√(1−ᾱ_t) ε_θ)/√α_t + √β_t z, z ~ N(0, I), no noise at t = 0; no clipping."""
        mean = self.coef_first[t] * (x_t - self.coef_eps[t] * eps)
        if t == 0:
            return mean
        return mean + self.betas[t] ** 0.5 * torch.randn(x_t.shape, generator=generator)


class CourseRecipe:
    """Train and sample the course recipe on images x (N, 1, s, s) in [-1, 1] (the 8×8 digits, or MNIST's 28×28 padded
    to 32 as the course does), on the CPU."""

    def __init__(self, x: Tensor, size: int = DIGIT_SIZE, batch_size: int = BATCH_SIZE, seed: int = 0):
        self.data_size = x.shape[-1]
        if size < self.data_size or size % 8:
            raise ValueError(f"size must be a multiple of 8 and ≥ {self.data_size}, got {size}")
        torch.manual_seed(seed)  # the initial weights
        self.size, self.batch_size, self.step = size, batch_size, 0
        self.pad = (size - self.data_size) // 2
        self.x = F.pad(x, (self.pad,) * 4, value=-1.0)  # (N, 1, size, size), background −1 around
        self.network = CourseUNet(size)
        self.ddpm = CourseDDPM()
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=LR)
        self.generator = torch.Generator().manual_seed(seed)

    def batches(self):
        """Minibatches of the padded digits, reshuffled every epoch, the last short batch kept."""
        while True:
            perm = torch.randperm(len(self.x), generator=self.generator)
            for i in range(0, len(self.x), self.batch_size):
                yield self.x[perm[i : i + self.batch_size]]

    def train_step(self, x0: Tensor) -> float:
        """One Adam step on the MSE between ε and ε_θ(x_t, t); x0 (B, 1, size, size). Returns the loss."""
        self.network.train()
        noise = torch.randn(x0.shape, generator=self.generator)
        t = torch.randint(0, T, (len(x0),), generator=self.generator)
        loss = F.mse_loss(self.network(self.ddpm.add_noise(x0, noise, t), t), noise)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return loss.item()

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, steps: int = T) -> Tensor:
        """The course's sampler: x_T ~ N(0, I), then `steps` ancestral steps from t = T−1 down (all T for samples;
        fewer only to time a few). Returns the centre s×s, (n, 1, s, s), unclipped."""
        self.network.eval()
        g = torch.Generator().manual_seed(seed)
        x = torch.randn((n, 1, self.size, self.size), generator=g)
        for t in list(range(T))[::-1][:steps]:
            eps = self.network(x, torch.full((n, 1), t, dtype=torch.long))  # t as (n, 1), as the course passes it
            x = self.ddpm.step(eps, t, x, g)
        p, s = self.pad, self.data_size
        return x[..., p : p + s, p : p + s]
