"""The equation map: each equation of Ho et al. 2020 (and of the papers the app goes beyond them with) once, under one
id, with the function that implements it and the pages that show it. The pages take their LaTeX from here
(`st.latex(latex("q_sample"))`), in the course's notation; tests/test_equations.py checks that each function exists
and names its equation in its docstring, and that no page writes LaTeX of its own.

    id                 source                        function                                   pages
    schedule           α_t = 1 − β_t, ᾱ_t, SNR, β̃    schedules.Schedule                         schedules
    q_step             Ho et al. eq. 2               diffusion.Diffusion.q_step                 forward
    q_chain            eq. 2 iterated, to eq. 4      diffusion.Diffusion.q_step                 forward
    q_sample           Ho et al. eq. 4               diffusion.Diffusion.q_sample               home, forward
    q_posterior        Ho et al. eqs. 6–7            diffusion.Diffusion.q_posterior            sample
    ddpm_step          Ho et al. eq. 11, Alg. 2      diffusion.Diffusion.ddpm_step              home, sample
    loss_simple        Ho et al. eq. 14, Alg. 1      trainer.Trainer.loss                       home, train
    predict_x0         Ho et al. eq. 15              diffusion.Diffusion.predict_x0             sample
    ddim_step          Song et al. 2021, eq. 12      diffusion.Diffusion.ddim_step              sample
    target_eps/x0/v    ε, x_0, v (Salimans & Ho)     objectives.training_target                 train
    min_snr            Hang et al. 2023              objectives.loss_weight                     train
    guidance           Ho & Salimans 2022            sample._guided_output                      train, sample
    label_dropout      Ho & Salimans 2022            trainer.Trainer.loss                       train
    log_snr_density    p(λ) of λ_t over t            importance.log_snr_density                 sample
    zero_terminal_snr  Lin et al. 2024, Alg. 1       schedules.rescale_betas_zero_terminal_snr  schedules
    sdedit             Meng et al. 2022              edit.sdedit                                edit
    repaint            Lugmayr et al. 2022, Alg. 1   edit.inpaint                               edit
    ddim_inversion     Song et al. eq. 12, upward    diffusion.Diffusion.ddim_invert_step       edit
    slerp              Song et al. 2021, §5.3        edit.slerp                                 edit
    vlb                Ho et al. eq. 5               likelihood.bound                           bound
    kl_term            Ho et al. eq. 5, closed form  likelihood.kl_term                         bound
    decoder            Ho et al. §3.3 (eq. 13)       likelihood.decoder_term                    bound
    decoder_points     the continuous density (2D)   likelihood.decoder_term                    bound
    lambda_t           Ho et al. eq. 12              likelihood.loss_weights                    bound
    ode_likelihood     Song et al. 2021 (SDEs), D.2  likelihood_ode.ode_log_likelihood          bound

A schedule family's own formula lives with it, in the SCHEDULES registry (ddpm_core/schedules.py).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Equation:
    id: str
    source: str  # where it comes from, as the function's docstring cites it
    function: str  # "module:qualified.name", under ddpm_core
    pages: tuple[str, ...]
    latex: str


EQUATIONS = {e.id: e for e in (
    Equation("schedule", "α_t = 1 − β_t", "schedules:Schedule", ("schedules",),
             r"\alpha_t = 1-\beta_t,\quad \bar\alpha_t = \prod_{s=1}^{t}\alpha_s,\quad"
             r"\mathrm{SNR}_t = \frac{\bar\alpha_t}{1-\bar\alpha_t},\quad"
             r"\tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\,\beta_t"),
    Equation("q_step", "Ho et al. eq. 2", "diffusion:Diffusion.q_step", ("forward",),
             r"x_t = \sqrt{\alpha_t}\, x_{t-1} + \sqrt{1-\alpha_t}\,\epsilon_{t-1}"),
    Equation("q_chain", "Iterating it", "diffusion:Diffusion.q_step", ("forward",),
             r"""\begin{aligned}
x_t &= \sqrt{\alpha_t}\, x_{t-1} + \sqrt{1-\alpha_t}\,\epsilon_{t-1}\\
&= \sqrt{\alpha_t\alpha_{t-1}}\, x_{t-2} + \sqrt{\alpha_t(1-\alpha_{t-1})}\,\epsilon_{t-2}
   + \sqrt{1-\alpha_t}\,\epsilon_{t-1}\\
&= \sqrt{\alpha_t\alpha_{t-1}}\, x_{t-2} + \sqrt{1-\alpha_t\alpha_{t-1}}\,\bar\epsilon_t
\quad\Longrightarrow\quad x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon
\end{aligned}"""),
    Equation("q_sample", "Ho et al. eq. 4", "diffusion:Diffusion.q_sample", ("home", "forward"),
             r"x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon,\qquad \epsilon\sim\mathcal{N}(0, I)"),
    Equation("q_posterior", "Ho et al. eqs. 6–7", "diffusion:Diffusion.q_posterior", ("sample",),
             r"\tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t"),
    Equation("ddpm_step", "Ho et al. eq. 11 and Algorithm 2", "diffusion:Diffusion.ddpm_step", ("home", "sample"),
             r"x_{t-1} = \frac{1}{\sqrt{\alpha_t}}\left(x_t - \frac{1-\alpha_t}{\sqrt{1-\bar\alpha_t}}"
             r"\,\epsilon_\theta(x_t,t)\right) + \sigma_t z,\qquad z\sim\mathcal{N}(0,I)"),
    Equation("loss_simple", "Ho et al. eq. 14", "trainer:Trainer.loss", ("home", "train"),
             r"L_\mathrm{simple}(\theta) = \mathbb{E}_{t,\,x_0,\,\epsilon}\left\|\epsilon - \epsilon_\theta\!\left("
             r"\sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon,\ t\right)\right\|^2"),
    Equation("predict_x0", "Ho et al. eq. 15", "diffusion:Diffusion.predict_x0", ("sample",),
             r"\hat x_0 = \frac{x_t-\sqrt{1-\bar\alpha_t}\,\epsilon_\theta(x_t,t)}{\sqrt{\bar\alpha_t}}"),
    Equation("ddim_step", "Song et al. 2021, eq. 12", "diffusion:Diffusion.ddim_step", ("sample",),
             r"x_{t-1} = \sqrt{\bar\alpha_{t-1}}\underbrace{\left(\frac{x_t-\sqrt{1-\bar\alpha_t}\,"
             r"\epsilon_\theta(x_t,t)}{\sqrt{\bar\alpha_t}}\right)}_{\text{predicted } x_0}"
             r" + \underbrace{\sqrt{1-\bar\alpha_{t-1}-\sigma_t^2}\,\epsilon_\theta(x_t,t)}"
             r"_{\text{direction pointing to } x_t}"
             r" + \underbrace{\sigma_t z}_{\text{random noise}}"),
    Equation("target_eps", "ε", "objectives:training_target", ("train",),
             r"\mathcal{L} = \mathbb{E}\,\lVert \epsilon - \epsilon_\theta(x_t, t) \rVert^2"),
    Equation("target_x0", "x_0", "objectives:training_target", ("train",),
             r"\begin{aligned}\mathcal{L} &= \mathbb{E}\,\lVert x_0 - \hat x_\theta(x_t, t) \rVert^2\\"
             r"\hat\epsilon &= \frac{x_t - \sqrt{\bar\alpha_t}\,\hat x_\theta}{\sqrt{1-\bar\alpha_t}}\end{aligned}"),
    Equation("target_v", "Salimans & Ho", "objectives:training_target", ("train",),
             r"\begin{aligned}v &= \sqrt{\bar\alpha_t}\,\epsilon - \sqrt{1-\bar\alpha_t}\,x_0\\"
             r"\mathcal{L} &= \mathbb{E}\,\lVert v - v_\theta(x_t, t) \rVert^2\\"
             r"\hat\epsilon &= \sqrt{\bar\alpha_t}\,v_\theta + \sqrt{1-\bar\alpha_t}\,x_t\end{aligned}"),
    Equation("min_snr", "Hang et al. 2023", "objectives:loss_weight", ("train",),
             r"w_t = \min(\mathrm{SNR}_t,\ \gamma)\cdot\begin{cases}1/\mathrm{SNR}_t & \epsilon\\ 1 & x_0\\"
             r" 1/(\mathrm{SNR}_t + 1) & v\end{cases}"),
    Equation("guidance", "Ho & Salimans 2022", "sample:_guided_output", ("train", "sample"),
             r"\tilde\epsilon_\theta(x_t, y) = \epsilon_\theta(x_t, \varnothing)"
             r" + s\,\big(\epsilon_\theta(x_t, y) - \epsilon_\theta(x_t, \varnothing)\big)"),
    Equation("label_dropout", "Ho & Salimans 2022", "trainer:Trainer.loss", ("train",),
             r"y \to \varnothing \text{ with probability } p_\text{drop}"),
    Equation("log_snr_density", "p(λ)", "importance:log_snr_density", ("sample",),
             r"\lambda_t = \log\frac{\bar\alpha_t}{1-\bar\alpha_t},\qquad p(\lambda) = \frac{1}{T\,|d\lambda_t/dt|}"),
    Equation("zero_terminal_snr", "Lin et al. 2024", "schedules:rescale_betas_zero_terminal_snr", ("schedules",),
             r"\sqrt{\bar\alpha_t} \leftarrow \left(\sqrt{\bar\alpha_t} - \sqrt{\bar\alpha_T}\right)"
             r"\frac{\sqrt{\bar\alpha_1}}{\sqrt{\bar\alpha_1} - \sqrt{\bar\alpha_T}}"),
    Equation("sdedit", "SDEdit (Meng et al. 2022)", "edit:sdedit", ("edit",),
             r"x_{t_0} = \sqrt{\bar\alpha_{t_0}}\,x_0 + \sqrt{1-\bar\alpha_{t_0}}\,\epsilon,\qquad "
             r"x_{t_0} \to x_{t_0-1} \to \dots \to x_0 \text{ by } p_\theta(x_{t-1}\mid x_t)"),
    Equation("repaint", "RePaint (Lugmayr et al. 2022, Algorithm 1)", "edit:inpaint", ("edit",),
             r"""\begin{aligned}
x_{t-1}^{\text{known}} &\sim \mathcal{N}\big(\sqrt{\bar\alpha_{t-1}}\,x_0,\ (1-\bar\alpha_{t-1}) I\big),\qquad
x_{t-1}^{\text{unknown}} \sim p_\theta(x_{t-1}\mid x_t)\\
x_{t-1} &= (1-m)\odot x_{t-1}^{\text{known}} + m\odot x_{t-1}^{\text{unknown}},\qquad
x_t \sim \mathcal{N}\big(\sqrt{1-\beta_t}\,x_{t-1},\ \beta_t I\big) \text{ to resample}
\end{aligned}"""),
    Equation("ddim_inversion", "Song et al. 2021, eq. 12 with η = 0 run upward", "diffusion:Diffusion.ddim_invert_step",
             ("edit",),
             r"x_{t} = \sqrt{\bar\alpha_{t}}\,\frac{x_{t-1} - \sqrt{1-\bar\alpha_{t-1}}\,\epsilon_\theta(x_{t-1}, t)}"
             r"{\sqrt{\bar\alpha_{t-1}}} + \sqrt{1-\bar\alpha_{t}}\,\epsilon_\theta(x_{t-1}, t)"),
    Equation("slerp", "Song et al. 2021, §5.3", "edit:slerp", ("edit",),
             r"x_T(\lambda) = \frac{\sin((1-\lambda)\theta)}{\sin\theta}\,x_T^{(0)}"
             r" + \frac{\sin(\lambda\theta)}{\sin\theta}\,x_T^{(1)},\qquad"
             r"\theta = \arccos\frac{\langle x_T^{(0)}, x_T^{(1)}\rangle}"
             r"{\lVert x_T^{(0)}\rVert\,\lVert x_T^{(1)}\rVert}"),
    Equation("vlb", "Ho et al. eq. 5", "likelihood:bound", ("bound",),
             r"L = \underbrace{D_\mathrm{KL}\big(q(x_T\mid x_0)\,\|\,p(x_T)\big)}_{L_T}"
             r" + \sum_{t>1}\underbrace{D_\mathrm{KL}\big(q(x_{t-1}\mid x_t,x_0)\,\|\,"
             r"p_\theta(x_{t-1}\mid x_t)\big)}_{L_{t-1}}"
             r"\ \underbrace{-\,\log p_\theta(x_0\mid x_1)}_{L_0},\qquad"
             r"\text{bits/dim} = \frac{\mathbb{E}[L]}{D\,\ln 2}"),
    Equation("kl_term", "Ho et al. eq. 5", "likelihood:kl_term", ("bound",),
             r"L_{t-1} = \frac{1}{2}\left(\ln\frac{\sigma_t^2}{\tilde\beta_t} + \frac{\tilde\beta_t}{\sigma_t^2}"
             r" - 1 + \frac{\lVert\tilde\mu_t(x_t, x_0) - \mu_\theta(x_t, t)\rVert^2}{D\,\sigma_t^2}\right)"
             r"\ \text{nats/dim},\qquad \sigma_t^2 \in \{\beta_t,\ \tilde\beta_t\}"),
    Equation("decoder", "Ho et al. §3.3", "likelihood:decoder_term", ("bound",),
             r"p_\theta(x_0\mid x_1) = \prod_{i=1}^{D}\int_{\delta_-(x_0^i)}^{\delta_+(x_0^i)}"
             r"\mathcal{N}\big(x;\ \mu_\theta^i(x_1, 1),\ \sigma_1^2\big)\,dx,\qquad"
             r"\delta_\pm(x) = x \pm \tfrac{1}{L-1}\ \ (\pm\infty \text{ at } x = \pm 1)"),
    Equation("decoder_points", "for 2D points (levels None) the density", "likelihood:decoder_term", ("bound",),
             r"L_0 = -\log \mathcal{N}\big(x_0;\ \mu_\theta(x_1, 1),\ \sigma_1^2 I\big)"
             r"\quad\text{(2D points: a density, so } L_0 \text{ can be negative)}"),
    Equation("lambda_t", "Ho et al. eq. 12", "likelihood:loss_weights", ("bound",),
             r"L_{t-1} - C = \lambda_t\,\mathbb{E}_{x_0,\epsilon}\big\lVert \epsilon - \epsilon_\theta(x_t, t)"
             r"\big\rVert^2,\qquad \lambda_t = \frac{\beta_t^2}{2\sigma_t^2\,\alpha_t\,(1-\bar\alpha_t)},"
             r"\qquad L_\mathrm{simple}:\ \lambda_t \to 1"),
    Equation("ode_likelihood", "Score-based generative modeling through SDEs", "likelihood_ode:ode_log_likelihood",
             ("bound",),
             r"\log p_0(x_0) = \log p_T(\bar x_T) + \int_0^{\bar\sigma_T}"
             r"\nabla_{\bar x}\cdot\epsilon_\theta(x_t, t)\,d\bar\sigma,\qquad"
             r"\frac{d\bar x}{d\bar\sigma} = \epsilon_\theta(x_t, t),\quad \bar x = \frac{x_t}{\sqrt{\bar\alpha_t}},"
             r"\quad \bar\sigma = \sqrt{\frac{1-\bar\alpha_t}{\bar\alpha_t}}"),
)}  # fmt: skip


def latex(equation_id: str) -> str:
    return EQUATIONS[equation_id].latex


def q_sample_at(t: int, sqrt_alpha_bar: float, sqrt_one_minus_alpha_bar: float) -> str:
    """q_sample with the numbers of one t filled in (the Forward page)."""
    return rf"x_{{{t}}} = {sqrt_alpha_bar:.4f}\,x_0 + {sqrt_one_minus_alpha_bar:.4f}\,\epsilon"


def sampling(sampler: str, variance: str, eta: float) -> list[str]:
    """The update of the chosen sampler, with its σ_t (Ho et al. Algorithm 2; Song et al. eq. 12)."""
    if sampler == "ddpm":
        sigma = r"\beta_t" if variance == "beta" else latex("q_posterior")
        return [latex("ddpm_step"), rf"\sigma_t^2 = {sigma},\qquad t = T, T-1, \dots, 1\ \ (z = 0 \text{{ at }} t = 1)"]
    return [
        latex("ddim_step"),
        rf"\sigma_t = \eta\sqrt{{\frac{{1-\bar\alpha_{{t-1}}}}{{1-\bar\alpha_t}}}}"
        rf"\sqrt{{1-\frac{{\bar\alpha_t}}{{\bar\alpha_{{t-1}}}}}},\qquad \eta = {eta:g}",
    ]
