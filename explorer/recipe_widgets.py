"""The Train page's recipe picker (pages/train.py): a recipe of ddpm_core.recipes fills the form's widgets through
st.session_state; a link (?recipe=<slug>) or the classroom file's [defaults.train] recipe picks the first one."""

from __future__ import annotations

import streamlit as st
import torch

from ddpm_core.config import TrainConfig
from ddpm_core.recipes import DEFAULT_RECIPE, FORMER_TITLES, RECIPES, Recipe, recipe_slug
from explorer import links
from explorer.train_widgets import FORM, TORCHVISION, data_root, on_disk

RECIPE_KEYS = tuple(dict.fromkeys(k for r in RECIPES.values() for k in r.overlay))  # what picking a recipe sets


def _apply_recipe() -> None:
    """The picked recipe fills the form: its overlay, and the fresh view's value of any setting that only other
    recipes set (cpu-mnist's evaluate_n must not stay behind when the next recipe is picked)."""
    slug = st.session_state["recipe"]
    values = {**form_defaults(slug), **RECIPES[slug].overlay}
    st.session_state.update({k: values[k] for k in RECIPE_KEYS})


def _first_recipe() -> str:
    """The recipe a fresh view starts from: the classroom file's [defaults.train] recipe, else DEFAULT_RECIPE."""
    return recipe_slug(links.classroom().default("train", "recipe")) or DEFAULT_RECIPE


def form_defaults(recipe: str) -> dict:
    """The form's values with recipe applied: TrainConfig's, the recipe's, then the classroom file's
    [defaults.train] where they have the field's type (a misfit is reported by explorer.links)."""
    values = {**TrainConfig().to_dict(), "classes": "", **RECIPES[recipe].overlay}
    room = links.classroom()
    for key, value in values.items():
        chosen = room.default("train", key)
        if isinstance(value, float) and isinstance(chosen, int) and not isinstance(chosen, bool):
            chosen = float(chosen)
        if chosen is not None and type(chosen) is type(value):
            values[key] = chosen
    return values


def _init_state() -> dict:
    """Set the form's keys that have no value yet (a first visit, or after the page's widgets were dropped by a visit
    to another page) and return the fresh view's values, which are the widgets' defaults. A link's recipe fills the
    keys on the page's first run, before the link's own values, which win (explorer.links)."""
    fresh = form_defaults(_first_recipe())
    start, keys = fresh, FORM  # not T: the schedule picker's default is fresh["T"] (config_form)
    linked = recipe_slug(st.query_params.get("recipe"))
    if "recipe" not in st.session_state and linked is not None and linked != _first_recipe():
        start, keys = form_defaults(linked), (*FORM, "T")
    for key in keys:
        st.session_state.setdefault(key, start[key])
    return fresh


def recipe_picker() -> dict:
    """The recipe selector; the fresh view's form values (the widgets' defaults)."""
    fresh = _init_state()
    left, right = st.columns([1, 2])
    slug = links.selectbox("Recipe", list(RECIPES), key="recipe", default=_first_recipe(), where=left,
                           format_func=lambda s: RECIPES[s].title, link_name=str, aliases=FORMER_TITLES,
                           on_change=_apply_recipe,
                           help="Fills the settings below; change any of them afterwards")  # fmt: skip
    right.caption(RECIPES[slug].note)
    if missing := _missing(RECIPES[slug]):
        right.warning(f"This recipe needs {' and '.join(missing)}.")
    return fresh


def _missing(recipe: Recipe) -> list[str]:
    """What this server lacks for recipe: its data set on disk (the Data set column says how to get it), a GPU."""
    missing, dataset = [], recipe.overlay.get("dataset")
    if dataset in TORCHVISION and not (found := on_disk(str(data_root()))[dataset]).present:
        missing.append(f"{found.title} on disk (not under `{found.where}`; how to get it is below)")
    if recipe.needs_gpu and not torch.cuda.is_available():
        missing.append("a CUDA GPU (none found: on this CPU it would take hours)")
    return missing
