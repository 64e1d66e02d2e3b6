"""The review web page: FastAPI routes over the review store, rendered with Jinja.

Every page is server-rendered HTML; every change is a POSTed form carrying the CSRF token,
stored at once, answered with a redirect (so a reload never repeats it). Model output and
captions are untrusted: Jinja autoescapes everything and no data is marked safe.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import sqlite3
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated
from urllib.parse import quote, urlencode

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.middleware.trustedhost import TrustedHostMiddleware

from instructgen.errors import InstructgenError
from instructgen.review import queries, store
from instructgen.review.rescue import rescue_draft

HERE = Path(__file__).parent
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif"}
# Okabe-Ito palette: distinct for colour-blind readers, readable over photos
BOX_COLORS = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7")
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
FilterForm = Annotated[str, Form()]


def form_filters(
    f_task: FilterForm = "",
    f_status: FilterForm = "",
    f_flag: FilterForm = "",
    f_quarantine: FilterForm = "",
    f_q: FilterForm = "",
) -> queries.Filters:
    """The list filters a record page posts back with each change, so "next" keeps them."""
    return queries.Filters(f_task, f_status, f_flag, f_quarantine, f_q.strip())


FormFilters = Annotated[queries.Filters, Depends(form_filters)]


def box_color(category: str) -> str:
    """A stable colour per category name, so a category looks the same on every record."""
    return BOX_COLORS[zlib.crc32(category.encode()) % len(BOX_COLORS)]


def safe_image_path(images: Path | None, name: str) -> Path | None:
    """The file `name` inside `images`, or None if absent, outside it, or not an image."""
    if images is None or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        return None
    root = images.resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root) or path.suffix.lower() not in IMAGE_SUFFIXES:
        return None
    return path if path.is_file() else None


def _templates() -> Jinja2Templates:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template, whatever its extension
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["box_color"] = box_color
    env.filters["pathpart"] = lambda s: quote(s, safe="")
    env.filters["thousands"] = lambda n: f"{n:,}"
    env.filters["percent"] = lambda x: "–" if x is None else f"{100 * x:.0f}%"
    env.filters["percent1"] = lambda x: "–" if x is None else f"{100 * x:.1f}%"
    return Jinja2Templates(env=env)


def _filters(request: Request) -> queries.Filters:
    q = request.query_params
    return queries.Filters(
        task=q.get("task", ""),
        status=q.get("status", ""),
        flag=q.get("flag", ""),
        quarantine=q.get("quarantine", ""),
        q=q.get("q", "").strip(),
    )


def _record_url(key: str | None, filters: queries.Filters) -> str:
    query = urlencode(filters.params())
    return f"/records/{quote(key, safe='')}" + (f"?{query}" if query else "") if key else ""


def _connection(request: Request) -> Iterator[sqlite3.Connection]:
    """One connection per request (sqlite3 connections are cheap and not thread-safe)."""
    conn = store.connect(request.app.state.db)
    try:
        yield conn
    finally:
        conn.close()


def _check_csrf(request: Request, csrf: Annotated[str, Form()] = "") -> None:
    if not secrets.compare_digest(csrf, request.app.state.csrf):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and retry")


Conn = Annotated[sqlite3.Connection, Depends(_connection)]


def create_app(
    db: Path, images: Path | None = None, allowed_hosts: list[str] | None = None
) -> FastAPI:
    """The review app over an imported store `db`, serving images from inside `images` only.

    `allowed_hosts` (Host header names) guards a loopback server against DNS rebinding.
    """
    db = Path(db)
    setup = store.open_store(db)
    token = store.csrf_token(setup)
    setup.close()
    templates = _templates()
    app = FastAPI(title="instructgen review", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.db, app.state.csrf = db, token
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    if allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    def render(request: Request, name: str, conn: sqlite3.Connection, **context) -> Response:
        base = {
            "csrf": token,
            "progress": queries.progress(conn),
            "filters": _filters(request),
            "page_name": name.removesuffix(".html"),
        }
        return templates.TemplateResponse(request, name, base | context)

    def error_page(request: Request, conn: sqlite3.Connection, message: str, code: int) -> Response:
        response = render(request, "error.html", conn, message=message)
        response.status_code = code
        return response

    @app.get("/")
    def list_view(
        request: Request, conn: Conn, after: int | None = None, before: int | None = None
    ):
        filters = _filters(request)
        page = queries.list_page(conn, filters, after=after, before=before)
        return render(
            request,
            "list.html",
            conn,
            page=page,
            facets=queries.facets(conn),
            record_url=lambda key: _record_url(key, filters),
            page_url=lambda **cursor: "/?" + urlencode(filters.params() | cursor),
        )

    def record_page(
        request: Request,
        conn: sqlite3.Connection,
        key: str,
        filters: queries.Filters,
        error: str = "",
        draft: str | None = None,
    ) -> Response:
        try:
            view = store.get_record(conn, key)
        except store.ReviewError as e:
            return error_page(request, conn, str(e), 404)
        if draft is None:
            draft = rescue_draft(view.task, view.quarantine.raw) if view.quarantine else ""
        response = render(
            request,
            "record.html",
            conn,
            view=view,
            filters=filters,
            image_url=f"/images/{quote(view.image)}"
            if safe_image_path(images, view.image)
            else None,
            next_url=_record_url(queries.neighbour(conn, filters, view.seq, True), filters),
            prev_url=_record_url(queries.neighbour(conn, filters, view.seq, False), filters),
            position=queries.position(conn, filters, view.seq),
            total=queries.count(conn, filters),
            list_url="/?" + urlencode(filters.params()),
            draft=draft,
            error=error,
        )
        # a refused change answers 400 with the page and the message, keeping what was typed
        response.status_code = 400 if error else 200
        return response

    @app.get("/records/{key}")
    def record_view(request: Request, key: str, conn: Conn):
        return record_page(request, conn, key, _filters(request))

    def after_change(key: str, conn: sqlite3.Connection, filters: queries.Filters, go_next: bool):
        seq = conn.execute("SELECT seq FROM records WHERE key = ?", (key,)).fetchone()[0]
        target = queries.neighbour(conn, filters, seq, True) if go_next else None
        return RedirectResponse(_record_url(target or key, filters), status_code=303)

    @app.post("/records/{key}/decision", dependencies=[Depends(_check_csrf)])
    def decision(
        request: Request,
        key: str,
        conn: Conn,
        status: FilterForm,
        filters: FormFilters,
        reason: FilterForm = "",
    ):
        try:
            store.decide(conn, key, status, reason)
        except InstructgenError as e:
            return record_page(request, conn, key, filters, str(e))
        return after_change(key, conn, filters, go_next=status != "pending")

    @app.post("/records/{key}/turns/{turn}", dependencies=[Depends(_check_csrf)])
    def edit(
        request: Request,
        key: str,
        turn: int,
        conn: Conn,
        value: FilterForm,
        filters: FormFilters,
    ):
        try:
            store.edit_turn(conn, key, turn, value)
        except InstructgenError as e:
            return record_page(request, conn, key, filters, str(e))
        return after_change(key, conn, filters, go_next=False)

    @app.post("/records/{key}/rescue", dependencies=[Depends(_check_csrf)])
    def rescue(
        request: Request,
        key: str,
        conn: Conn,
        text: FilterForm,
        filters: FormFilters,
    ):
        try:
            store.rescue(conn, key, text)
        except InstructgenError as e:
            return record_page(request, conn, key, filters, str(e), draft=text)
        return after_change(key, conn, filters, go_next=False)

    @app.get("/summary")
    def summary_view(request: Request, conn: Conn):
        return render(
            request,
            "summary.html",
            conn,
            summary=queries.summary(conn),
            chair=store.chair_figures(conn),
        )

    @app.get("/images/{name:path}")
    def image(name: str):
        path = safe_image_path(images, name)
        if path is None:
            raise HTTPException(404, "no such image")
        return FileResponse(path)

    return app


def check_port_free(host: str, port: int) -> None:
    """Fail with a clear message, before the long import, when the address is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise InstructgenError(
                f"cannot listen on {host}:{port} ({e.strerror}); pass another --port"
            ) from None


def loopback_hosts(host: str) -> list[str] | None:
    """The Host header names a server bound to `host` answers, if `host` is loopback; else None.

    A page on another site that rebinds its name to a loopback address sends its own name.
    """
    if host != "localhost":
        try:
            if not ipaddress.ip_address(host).is_loopback:
                return None
        except ValueError:  # a host name other than localhost
            return None
    bound = f"[{host}]" if ":" in host else host
    return list(dict.fromkeys([bound, "localhost", "127.0.0.1", "[::1]"]))


def serve(db: Path, images: Path | None, host: str, port: int) -> None:
    """Run the review app with uvicorn until interrupted."""
    import uvicorn

    app = create_app(db, images, loopback_hosts(host))
    uvicorn.run(app, host=host, port=port, log_level="warning")
