"""The operator's dashboard: one static page (HTML, CSS and a hand-written SVG chart in plain JS, no
build step) served by the gateway, and the JSON it draws, `GET /dashboard/data`.

The page itself holds no data and is served to anyone; its script asks for the admin or viewer key,
keeps it in the tab's `sessionStorage` and sends it as a bearer header to `/dashboard/data`, which
answers 401 without it. A bearer header (not a cookie) means no session state across replicas and
no cross-site request can ride on it; the strict Content-Security-Policy (scripts from the gateway
only, no inline code, data written as text, never as HTML) protects the key in the tab.
"""

from gateway.dashboard.stats import RequestStats

__all__ = ["RequestStats"]  # the routes: gateway.dashboard.view (it needs the pipeline, which needs this)
