"""The four panels of the Edit page (pages/edit.py): SDEdit, inpainting (RePaint), DDIM inversion and
interpolation. Each draws its own widgets (bound to the link), runs its method of ddpm_core/edit.py on a press of its
Run button (with a progress bar and Cancel), keeps the result in session state, and shows it. Bad input is an
st.error with the core's message (every check there raises ValueError)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import plotly.graph_objects as go
import streamlit as st
import torch
from torch import Tensor

from ddpm_core.edit import inpaint, interpolate, invert, repaint_path, round_trip_errors, sdedit
from ddpm_core.edit_inputs import IMAGE_PRESETS, POINT_PRESETS, mask_preset
from ddpm_core.gif import axis_limit, trajectory_gif
from ddpm_core.pictures import MAX_ROW_WIDTH, labelled_row, png_bytes, to_picture
from ddpm_core.sample import npy_bytes
from explorer import links, mask_canvas, sample_views, sampling_progress
from explorer.checkpoints import Loaded
from explorer.edit_widgets import Settings, Source, batch_size, max_interpolate, max_steps, refusal

RESULT = "edit.result"  # session state: the last run's EditView
ROUND_TRIP_STEPS = (5, 10, 20, 50)
STRIP_PARTS = 5  # the SDEdit strip: t_start = 0, T/5, 2T/5 … T
MAX_RESAMPLE = 20
SIDE = 192  # px a side of a shown picture
PAINTED = "paint"  # the inpainting mask painted on a canvas (explorer/mask_canvas.py) rather than a preset
MASK_NAMES = {PAINTED: "paint it (brush or rectangles)"}
MIME = {".png": "image/png", ".gif": "image/gif", ".npy": "application/octet-stream"}


@dataclass(frozen=True)
class EditView:
    key: tuple  # (checkpoint, method, input): a result of another checkpoint, method or input is not shown
    out: dict


def _key(loaded: Loaded, method: str, source: Source | None) -> tuple:
    return str(loaded.ckpt.path), method, None if source is None else source.id


def _one(x: Tensor) -> Tensor:
    """One image (C, H, W) out of a batch of one, or a point cloud (N, 2) as it is."""
    return x[0] if x.dim() == 4 else x


def picture_png(x: Tensor, side: int = SIDE) -> bytes:
    return png_bytes(to_picture(_one(x).float().cpu(), side))


def _row(xs: list[Tensor], labels: list[str], side: int = 96) -> bytes:
    return png_bytes(labelled_row([to_picture(_one(x).float().cpu(), side) for x in xs], labels,
                                  max_width=MAX_ROW_WIDTH))  # fmt: skip


def _run_button(method: str, refused: str) -> bool:
    if refused:
        st.warning(refused)
    return st.button("Run", key=f"run_{method}", type="primary", disabled=bool(refused)) and not refused


def _run(key: tuple, work: Callable[[Callable[[int, int], None]], dict]) -> None:
    """work(progress) under a progress bar and Cancel; its dict is kept as the result, a ValueError shown."""
    state = st.session_state
    state.pop(RESULT, None)  # it no longer matches what is asked for, whether or not this run finishes
    with sampling_progress.cancellable("edit"):
        bar = st.progress(0.0, text="Sampling…")
        try:
            out = work(sampling_progress.progress_callback(bar))
        except ValueError as e:
            bar.empty()
            st.error(str(e))
            return
        bar.empty()
    state[RESULT] = EditView(key, out)


def _shown(key: tuple) -> dict | None:
    view = st.session_state.get(RESULT)
    if view is None or view.key != key:
        st.info("Press **Run** to edit with this checkpoint.")
        return None
    return view.out


def _files(samples: Tensor, stem: str, png: bytes | None = None, gif: bytes | None = None) -> dict[str, bytes]:
    """A result's downloads by file name: the array (for python -m ddpm_core.edit and numpy), the picture, the GIF."""
    files = {f"{stem}.npy": npy_bytes(samples), f"{stem}.png": png, f"{stem}.gif": gif}
    return {name: data for name, data in files.items() if data is not None}


def _downloads(files: dict[str, bytes]) -> None:
    for col, (name, data) in zip(st.columns(max(3, len(files))), files.items(), strict=False):
        col.download_button(f"Download {name}", data, file_name=name, mime=MIME[name[name.rindex("."):]],
                            key=f"download_edit_{name}", on_click="ignore")  # fmt: skip


def _where(loaded: Loaded) -> str:
    return f"on {loaded.device}"


# ----------------------------------------------------------------------------------------------------------------
# SDEdit


def sdedit_panel(loaded: Loaded, source: Source, settings: Settings) -> None:
    T, c = loaded.T, settings.config
    st.markdown("Noise the input up to $t_0$, then denoise it with the model: the larger $t_0$, the less survives.")
    t_start = int(links.slider("t₀ (t_start)", key="t_start", default=T // 2, min_value=0, max_value=T,
                               help="0 returns the input; T samples from (almost) pure noise"))  # fmt: skip
    strip = [round(k * T / STRIP_PARTS) for k in range(STRIP_PARTS + 1)]
    costs = [min(c.steps, t) for t in (t_start, *strip) if t > 0]
    key = _key(loaded, "sdedit", source)
    if _run_button("sdedit", refusal(loaded, batch_size(source), costs, "SDEdit")):

        def work(progress):
            run = sdedit(loaded.net, loaded.diffusion, source.x0, t_start, c, seed=settings.seed, progress=progress)
            row = [sdedit(loaded.net, loaded.diffusion, source.x0, t, c, seed=settings.seed, progress=progress)
                   for t in strip]  # fmt: skip
            labels = [f"t₀ = {t}" for t in strip]
            result = picture_png(run.samples)
            return {"t_start": t_start, "steps": min(c.steps, t_start), "wall": run.wall_time, "result": result,
                    "strip": _row([r.samples for r in row], labels),
                    "files": _files(run.samples, f"sdedit_t{t_start}", result)}  # fmt: skip

        _run(key, work)
    if (out := _shown(key)) is None:
        return
    left, right = st.columns(2)
    left.image(picture_png(source.x0), output_format="PNG", caption="x_0: the input")
    right.image(out["result"], output_format="PNG", caption=f"edited from t₀ = {out['t_start']}")
    st.markdown(f"{out['steps']:,} steps from t₀ = {out['t_start']} (seed {settings.seed}) in **{out['wall']:.2f} s** "
                f"{_where(loaded)}.")  # fmt: skip
    st.image(out["strip"], output_format="PNG", caption="The same input and noise at several t₀: how much survives")
    _downloads(out["files"])


# ----------------------------------------------------------------------------------------------------------------
# Inpainting


def _evaluations(steps: int, resample: int, jump: int) -> list[int]:
    """The network calls of a RePaint walk (one per step down), as cells of at most `steps` for the gate."""
    path = repaint_path(steps, jump, resample)
    calls = sum(b > a for a, b in itertools.pairwise(path))
    return [steps] * (calls // steps) + ([calls % steps] if calls % steps else [])


def inpaint_panel(loaded: Loaded, source: Source, settings: Settings) -> None:
    c, shape = settings.config, tuple(loaded.ckpt.sample_shape)
    presets = list(POINT_PRESETS if loaded.points else (*IMAGE_PRESETS, PAINTED))
    st.markdown("Keep the input where the mask is 0 and let the model regenerate it where the mask is 1, "
                "resampling $U$ times per step to harmonise the two.")  # fmt: skip
    cols = st.columns(3)
    name = links.selectbox("Mask (1 = regenerate)", presets, key="mask", default=presets[-2 if loaded.points else 4],
                           format_func=lambda m: MASK_NAMES.get(m, m), where=cols[0],
                           help="Points: regenerate one coordinate of every point")  # fmt: skip
    resample = int(links.number("Resample U", key="resample", default=2, min_value=1, max_value=MAX_RESAMPLE, step=1,
                                where=cols[1], help="RePaint's resampling: U − 1 jumps back per step"))  # fmt: skip
    links.in_range("jump", 1, c.steps)
    jump = int(links.number("Jump length j", key="jump", default=1, min_value=1, max_value=c.steps, step=1,
                            where=cols[2], help="Steps each jump goes back up (RePaint's j), when U > 1"))  # fmt: skip
    mask = mask_canvas.painted_mask(source.x0) if name == PAINTED else mask_preset(name, shape, seed=settings.seed)
    calls = _evaluations(c.steps, resample, jump)
    refused = "" if mask is not None else "Paint a mask first."
    refused = refused or refusal(loaded, batch_size(source), calls, "Inpainting")
    key = _key(loaded, "inpaint", source)
    if _run_button("inpaint", refused):

        def work(progress):
            run = inpaint(loaded.net, loaded.diffusion, source.x0, mask, c, resample=resample, jump=jump,
                          seed=settings.seed, progress=progress)  # fmt: skip
            lim = axis_limit(run.trajectory) if loaded.points else None
            x0 = source.x0 if loaded.points else source.x0[None]
            gif, result = trajectory_gif(run.trajectory, lim=lim), picture_png(run.samples)
            images = not loaded.points
            return {"mask": "painted" if name == PAINTED else name, "resample": resample, "jump": jump,
                    "wall": run.wall_time, "evaluations": sum(calls),
                    "mask_png": mask_canvas.overlay_png(source.x0, mask, SIDE) if images else None,
                    "kept_png": picture_png(x0 * (1 - mask)) if images else None,
                    "result": result, "gif": gif, "files": _files(run.samples, "inpainted", result, gif)}  # fmt: skip

        _run(key, work)
    if (out := _shown(key)) is None:
        return
    cols = st.columns(4)
    cols[0].image(picture_png(source.x0), output_format="PNG", caption="x_0: the input")
    if out["mask_png"] is not None:
        cols[1].image(out["mask_png"], output_format="PNG", caption=f"mask {out['mask']}: red = regenerate")
        cols[2].image(out["kept_png"], output_format="PNG", caption="what is kept")
    else:
        cols[1].markdown(f"Mask **{out['mask']}**: the {out['mask']} coordinate of every point is regenerated.")
    cols[3].image(out["result"], output_format="PNG", caption="inpainted")
    jumps = f", j = {out['jump']}" if out["resample"] > 1 else ""
    st.markdown(f"Mask {out['mask']}, U = {out['resample']}{jumps}: {out['evaluations']:,} network calls in "
                f"**{out['wall']:.2f} s** {_where(loaded)}.")  # fmt: skip
    st.markdown(sample_views.gif_html(out["gif"], "the inpainting chain"), unsafe_allow_html=True)
    st.caption("x_t (left) and x̂₀ (right) along the chain, from t = T down to 0")
    _downloads(out["files"])


# ----------------------------------------------------------------------------------------------------------------
# Inversion


def invert_panel(loaded: Loaded, source: Source, settings: Settings) -> None:
    c = settings.config
    st.markdown("Run deterministic DDIM *upward* from x_0 to a latent x_T, then back down: how close does it return?")
    curve = [s for s in ROUND_TRIP_STEPS if s <= min(max_steps(loaded), loaded.T)]
    key = _key(loaded, "invert", source)
    steps = [s for s in (c.steps, *curve) for _way in ("up", "down")]  # each way is one chain of s steps
    if _run_button("invert", refusal(loaded, batch_size(source), steps, "Inversion")):

        def work(progress):
            inv = invert(loaded.net, loaded.diffusion, source.x0, c, progress=progress)
            errors = round_trip_errors(loaded.net, loaded.diffusion, source.x0, curve, c)
            pictures = _row([source.x0, inv.x_T, inv.reconstruction], ["x_0", "x_T", "x0_hat"], side=SIDE)
            files = {"x_T.npy": npy_bytes(inv.x_T), "reconstruction.npy": npy_bytes(inv.reconstruction),
                     "inversion.png": pictures}  # fmt: skip
            return {"steps": c.steps, "error": inv.error, "pictures": pictures, "curve": curve, "errors": errors,
                    "files": files}  # fmt: skip

        _run(key, work)
    if (out := _shown(key)) is None:
        return
    st.image(out["pictures"], output_format="PNG", caption=f"x_0 → x_T → x̂_0 with DDIM, {out['steps']} steps")
    st.metric("RMS round-trip error", f"{out['error']:.4f}", help="Of x̂_0 − x_0, in the data's [-1, 1] scale")
    if out["curve"]:
        fig = go.Figure(go.Scatter(x=out["curve"], y=out["errors"], mode="lines+markers", name="RMS error"))
        fig.update_layout(height=320, margin={"l": 10, "r": 10, "t": 40, "b": 10}, title="Round-trip error vs steps",
                          xaxis={"title": "DDIM steps", "type": "log"}, yaxis={"title": "RMS error"})  # fmt: skip
        st.plotly_chart(fig, key="round_trip")
    _downloads(out["files"])


# ----------------------------------------------------------------------------------------------------------------
# Interpolation


def interpolate_panel(loaded: Loaded, settings: Settings) -> None:
    c, most = settings.config, max_interpolate(loaded)
    st.markdown("Two seeds give two noises x_T; slerp between them and decode each with deterministic DDIM.")
    cols = st.columns(3)
    seed_a = int(links.number("Seed A", key="seed_a", default=0, min_value=0, max_value=2**31 - 1, where=cols[0]))
    seed_b = int(links.number("Seed B", key="seed_b", default=1, min_value=0, max_value=2**31 - 1, where=cols[1]))
    value = st.session_state.get("n")
    if isinstance(value, int | float) and not 2 <= value <= most:  # left by the Sample page's N
        st.session_state["n"] = min(max(int(value), 2), most)
    n = int(links.number(f"n (≤ {most})", key="n", default=min(8, most), min_value=2, max_value=most, step=1,
                         where=cols[2], help="Decoded samples, both ends included"))  # fmt: skip
    key = _key(loaded, "interpolate", None)
    if _run_button("interpolate", refusal(loaded, n, [c.steps], "Interpolation")):

        def work(progress):
            run = interpolate(loaded.net, loaded.diffusion, seed_a, seed_b, n, c, progress=progress)
            return {"samples": run.samples, "seeds": (seed_a, seed_b), "steps": c.steps, "wall": run.wall_time,
                    "files": _files(run.samples, f"interpolation_{seed_a}_{seed_b}")}  # fmt: skip

        _run(key, work)
    if (out := _shown(key)) is None:
        return
    samples, (a, b) = out["samples"], out["seeds"]
    alphas = [i / (len(samples) - 1) for i in range(len(samples))]
    st.markdown(f"{len(samples)} samples from seed {a} to seed {b}, DDIM {out['steps']} steps, in "
                f"**{out['wall']:.2f} s** {_where(loaded)}.")  # fmt: skip
    if loaded.points:
        x, y = samples[:, 0].tolist(), samples[:, 1].tolist()
        marker = {"color": alphas, "colorscale": "Viridis", "size": 8, "showscale": True}
        text = [f"λ = {v:.2f}" for v in alphas]
        fig = go.Figure(go.Scatter(x=x, y=y, mode="lines+markers", text=text, marker=marker))
        fig.update_layout(height=420, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                          yaxis={"scaleanchor": "x", "scaleratio": 1})  # fmt: skip
        st.plotly_chart(fig, key="interpolation_points")
        _downloads(out["files"])
        return
    row = _row([s[None] for s in torch.unbind(samples)], [f"λ = {v:.2f}" for v in alphas])
    st.image(row, output_format="PNG", caption=f"seed {a} (λ = 0) → seed {b} (λ = 1)")
    _downloads({**out["files"], f"interpolation_{a}_{b}.png": row})
