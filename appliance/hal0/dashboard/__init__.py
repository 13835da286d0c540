"""Layer 4: the dashboard served at `/`: server-rendered tabs (Jinja2) with a little JavaScript
that polls HTML fragments and sends the human's approve/deny to the approval API."""

from hal0.dashboard.pages import routes

__all__ = ["routes"]
