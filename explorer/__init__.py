"""The Streamlit front end of DDPM Explorer: navigation and the widgets that pages share."""
