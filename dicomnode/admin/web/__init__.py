"""The administrators' web page: static files served by the admin app itself.

One HTML page, one script and one style sheet, all shipped in the package, so the page
works on a hospital network with no internet access (no CDN, no build step). The page
talks to the same ``/api`` the CLI and scripts use, with the same bearer token (asked
for once and kept in the browser tab's session storage), so it can do nothing the API
does not allow, and everything it changes is audited like any other API call.

::

    /        redirects to /ui/
    /ui/     the page (hash routes: #/, #/series/UID, #/jobs/ID, #/rules, #/audit)
    /ui/assets/...   its script, style sheet and icon

None of these need the token: they hold no data, only the code that asks the API for it.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.base import RequestResponseEndpoint

STATIC = Path(__file__).parent / "static"

# Only this origin's own script and style; the API is on the same origin. No inline
# script or style anywhere, so a value shown on the page can never run as code.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def mount_web(app: FastAPI) -> None:
    """Serve the page and its assets on ``app`` (kept out of the OpenAPI document)."""

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("ui/", status_code=307)

    @app.get("/ui", include_in_schema=False)
    def ui_without_slash() -> RedirectResponse:
        return RedirectResponse("ui/", status_code=307)

    @app.get("/ui/", include_in_schema=False)
    def page() -> FileResponse:
        # no-cache: after an upgrade the page must not pair an old script with a new API
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/ui/assets", StaticFiles(directory=STATIC), name="ui-assets")

    @app.middleware("http")
    async def security_headers(request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        if request.url.path == "/" or request.url.path.startswith("/ui"):
            response.headers.update(SECURITY_HEADERS)
        return response
