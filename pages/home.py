"""Home: what DDPM is, the four parts of the tool, the device found, and where a run's files live."""

import streamlit as st

from ddpm_core import equations
from explorer.backends import backend_for
from explorer.jobs import runs_root
from explorer.links import classroom
from explorer.ui import PARTS, device_description, page_for, page_path

st.title("DDPM Explorer")
st.markdown(
    r"""
A **denoising diffusion probabilistic model** (Ho, Jain & Abbeel 2020) learns to undo noise.
The *forward process* destroys an image $x_0$ in $T$ small Gaussian steps of variance $\beta_t$,
until $x_T$ is pure noise. With $\alpha_t = 1 - \beta_t$ and $\bar\alpha_t = \prod_{s \le t} \alpha_s$,
any $x_t$ can be drawn in one shot from $x_0$. A network $\epsilon_\theta(x_t, t)$ is trained to predict the noise
$\epsilon$ that was added — a plain mean-squared error.
Sampling runs the chain backwards: start from $x_T \sim \mathcal{N}(0, I)$ and remove the predicted noise step by step.
"""
)
left, right = st.columns(2)
with left:
    st.caption("Forward process, in closed form")
    st.latex(equations.latex("q_sample"))
    st.caption("Training loss")
    st.latex(equations.latex("loss_simple"))
with right:
    st.caption("One reverse (sampling) step")
    st.latex(equations.latex("ddpm_step"))

st.header("The four parts of the tool")
for title, text in PARTS:
    page = page_for(title)
    if page is not None:
        st.page_link(page_path(page), label=f"**{title}** — {text}", icon=page.icon)
    else:
        st.markdown(f"**{title}** — {text} *(hidden on this server by its classroom settings)*")

st.header("This machine")
st.markdown(f"Device found: **{device_description()}**")
st.markdown(backend_for(classroom()).describe())
st.markdown(
    f"""
Training runs live in `{runs_root()}/<run name>/`, one folder per run, which is all the app reads:
`config.json` (the settings), `metrics.jsonl` (loss as it trains), `status.json` (running, done, stopped or failed),
`model.safetensors` and `ema.safetensors` (weights) and `previews/` (sample grids). Bundled models are in
`assets/checkpoints/`.
"""
)

room = classroom()
if room.source or room.problems:
    st.header("Classroom settings")
    training = "on" if room.training else "**off** (runs can be watched and sampled, not launched)"
    st.markdown(
        f"From `{room.source or 'the environment'}`: training from the UI {training}; at most "
        f"{room.per_session} run(s) per browser session; sampling up to {room.max_n} samples and "
        f"{room.max_steps} steps; data sets read from `{room.data_root}`."
    )
    for problem in room.problems:
        st.warning(problem)
