"""DDPM Explorer — run with `streamlit run explorer/app.py` from the repository root.

This file only builds the page list (less the pages the classroom file hides) and puts each page between
explorer.links' page_setup and page_end. Streamlit puts only this folder on sys.path, so the repository root is added
first, which makes `import ddpm_core` and `import explorer` work from a plain `streamlit run`.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from explorer import links  # noqa: E402
from explorer.cpu_share import share_cpu  # noqa: E402
from explorer.ui import page_path, visible_pages  # noqa: E402

st.set_page_config(page_title="DDPM Explorer", page_icon=":material/blur_on:", layout="wide")
pages = {p.name: st.Page(page_path(p), title=p.title, icon=p.icon, default=p.default) for p in visible_pages()}
current = st.navigation(list(pages.values()))
share_cpu()  # one torch thread in this run while a run trains on the CPU (explorer/cpu_share.py)
links.page_setup(next(name for name, page in pages.items() if page is current))  # notices and the view's link
try:
    current.run()
finally:  # also after a page's st.stop(): a link to a view that stopped early is still a link
    links.page_end()
