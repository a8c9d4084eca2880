"""DDPM Explorer — run with `streamlit run explorer/app.py` from the repository root.

This file only builds the page list. Streamlit puts only this folder on sys.path, so the repository root is added
first, which makes `import ddpm_core` and `import explorer` work from a plain `streamlit run`.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from explorer.ui import PAGES, page_path  # noqa: E402

st.set_page_config(page_title="DDPM Explorer", page_icon=":material/blur_on:", layout="wide")
st.navigation([st.Page(page_path(p), title=p.title, icon=p.icon, default=p.default) for p in PAGES]).run()
