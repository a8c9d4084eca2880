"""Bound: Ho et al.'s variational bound made numeric for a trained model — each term L_T, L_{t−1}, L_0 in bits/dim,
σ_t² = β_t against β̃_t, the weights λ_t that L_simple drops, and for 2D models the exact likelihood of the
probability-flow ODE (ddpm_core/likelihood.py)."""

import streamlit as st

from ddpm_core.equations import latex
from explorer import bound_views, checkpoints, sampling_progress

st.title("Variational bound")
st.markdown(
    r"""
The course derives the loss from the variational bound, then drops its weights and keeps
$\lVert\epsilon-\epsilon_\theta\rVert^2$. Here is what each term of the bound is worth, in bits per dimension, for a
trained model, and what dropping the weights changes.
"""
)
st.latex(latex("vlb"))
loaded = checkpoints.checkpoint_picker()
if loaded is None:
    st.info("Pick another checkpoint: the bundled ones always work.")
    st.stop()

st.subheader("The weights that L_simple drops")
st.latex(latex("lambda_t"))
st.plotly_chart(bound_views.weights_chart(loaded), key="bound_weights")
st.caption("L_{t−1} weighs ‖ε − ε_θ‖² by λ_t; L_simple weighs every t alike. With σ_t² = β̃_t, λ_t is largest at "
           "small t: the bound cares most about the last, finest steps, which L_simple down-weights.")  # fmt: skip

st.subheader("Measure the bound")
settings = bound_views.settings(loaded)
if sampling_progress.was_cancelled():
    st.warning("Cancelled: nothing was kept. Press **Measure** to measure again.")
bound_views.measure(loaded, settings)
if (view := bound_views.shown(loaded, settings)) is None:
    st.stop()
bound_views.totals(loaded, view)

st.subheader("Term by term")
st.latex(latex("kl_term"))
st.latex(latex("decoder" if not loaded.points else "decoder_points"))
st.plotly_chart(bound_views.terms_chart(loaded, view), key="bound_terms")
st.caption("The two σ_t² give similar samples but different bounds: the KL terms differ most at small t, where β_t "
           "and β̃_t differ most.")  # fmt: skip

if view.ode is not None:
    st.subheader("The bound against the exact likelihood")
    st.latex(latex("ode_likelihood"))
    st.plotly_chart(bound_views.ode_chart(view), key="bound_ode")
    gap = view.bounds["posterior"].bits_per_dim - view.ode.mean_bits_per_dim
    st.markdown(
        rf"Bound ($\sigma_t^2 = \tilde\beta_t$) − exact NLL = **{gap:+.3f} bits/dim**. The two score the same "
        r"$\epsilon_\theta$ as two models: the bound is an upper bound on the NLL of the DDPM chain $p_\theta$, while "
        "the ODE's is the exact NLL of the deterministic flow, so for a trained model the gap can have either sign. "
        r"Where $\epsilon_\theta$ is the exact $\epsilon$ (Gaussian data; tests/test_likelihood.py) the ODE gives "
        r"the true NLL, and the bound with $\sigma_t^2 = \beta_t$ meets it as T grows; with $\tilde\beta_t$ it stays "
        "about 0.8 bits/dim above: it is too small at the first steps, whatever T is."
    )
