"""The dashboard's HTTP server (Starlette app, served by uvicorn): static front end + JSON API.

Every request re-reads only what was appended to each ``details.log`` since the last one (and each
robustness ``report.json`` when it changed), so the API is live while runs and jobs are still
writing. Ids and pass names from URLs are only looked up among a run's known ids and
:data:`~threedb.dashboard.loader.PASSES`, report files by their index in the list the server built
when reading the report; nothing from a URL is joined into a path.
See docs/dashboard.md for the endpoints.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Sequence

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from threedb.dashboard import analysis, imaging
from threedb.dashboard.companion import Companion, CompanionMissing
from threedb.dashboard.loader import PASSES, Run
from threedb.dashboard.reports import MEDIA, Report, ReportError
from threedb.sim.errors import ThreeDBError

STATIC = Path(__file__).parent / "static"
#: Content-Security-Policy: everything comes from this server (no CDN), inline code is not allowed.
CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; style-src 'self'; "
       "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; object-src 'none'")


class NotFound(ThreeDBError):
    """An unknown run, job id, pass or file (404)."""


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _int(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise analysis.QueryError(f"query parameter {name!r} must be an integer, not {raw!r}") from None


def _bins(request: Request, key: str) -> dict[str, int]:
    """``?fix=PARAM:BIN&fix=...`` -> {PARAM: BIN} (the bin index follows the last colon)."""
    out = {}
    for item in request.query_params.getlist(key):
        name, sep, code = item.rpartition(":")
        if not sep or not code.lstrip("-").isdigit():
            raise analysis.QueryError(f"{key}={item!r}: expected PARAMETER:BIN_INDEX")
        out[name] = int(code)
    return out


class Dashboard:
    """The runs being served and the request handlers."""

    def __init__(self, runs: Sequence[Run], companion_dirs: Sequence[Path | None] | None = None,
                 reports: Sequence[Report] = ()) -> None:
        self.runs = list(runs)
        self.reports = list(reports)
        dirs = list(companion_dirs) if companion_dirs is not None else [None] * len(self.runs)
        self.companions = [Companion(run, d) for run, d in zip(self.runs, dirs)]
        self._lock = threading.Lock()

    def run(self, request: Request) -> Run:
        r = request.path_params["r"]
        if not 0 <= r < len(self.runs):
            raise NotFound(f"no run {r} (runs 0..{len(self.runs) - 1} are open)")
        return self.runs[r]

    def snap(self, request: Request) -> analysis.Snapshot:
        return analysis.snapshot(self.run(request))

    def job(self, request: Request) -> tuple[Run, str]:
        run = self.run(request)
        job_id = request.path_params["job_id"]
        if run.index_of(job_id) is None:
            raise NotFound(f"unknown id {job_id!r} in run {run.name!r}")
        return run, job_id

    def report(self, request: Request) -> Report:
        i = request.path_params["i"]
        if not 0 <= i < len(self.reports):
            raise NotFound(f"no report {i} ({len(self.reports)} robustness report(s) are open)")
        return self.reports[i]

    # -- handlers (sync: Starlette runs them in its thread pool) ---------------------------------------
    def reports_info(self, request: Request) -> Any:
        out = []
        for report in self.reports:
            try:
                out.append(report.info())
            except ReportError as exc:  # one broken report does not hide the others
                out.append({"index": report.index, "name": report.name, "path": str(report.path),
                            "state": "error", "error": str(exc), "job": None, "title": report.name,
                            "created": None, "headline": {}, "version": -1, "problems": []})
        return {"reports": out}

    def report_full(self, request: Request) -> Any:
        return self.report(request).full()

    def report_file(self, request: Request) -> Response:
        report = self.report(request)
        k = request.path_params["k"]
        f = report.file_at(k)
        if f is None:
            raise NotFound(f"report {report.index} ({report.name!r}) has no servable file {k}")
        headers = {"Cache-Control": "no-cache"}
        if f.kind == "svg":  # an SVG can carry scripts: opened directly, it runs sandboxed (no script, no origin)
            headers["Content-Security-Policy"] = "sandbox"
        return FileResponse(f.path, media_type=MEDIA[f.kind], headers=headers)

    def runs_info(self, request: Request) -> Any:
        out = []
        for run in self.runs:
            snap = analysis.snapshot(run)
            out.append({"index": run.index, "name": run.name, "path": str(run.path), "rows": snap.n,
                        "version": snap.version, "skipped": run.skipped, "output_type": run.output_type,
                        "classes": len(run.class_names),
                        "total": analysis.stats(snap.verdict, snap.failed)})
        return {"runs": out}

    def params(self, request: Request) -> Any:
        snap = self.snap(request)
        return {"run": snap.run.index, "version": snap.version, "rows": snap.n,
                "params": analysis.parameters(snap)}

    def heatmap(self, request: Request) -> Any:
        q = request.query_params
        return analysis.heatmap(self.snap(request), q.get("x") or None, q.get("y") or None, _bins(request, "fix"))

    def select(self, request: Request) -> Any:
        return analysis.select(self.snap(request), _bins(request, "filter"), request.query_params.get("outcome", "all"),
                               _int(request, "page", 0), _int(request, "per_page", 24))

    def failures(self, request: Request) -> Any:
        return analysis.failure_modes(self.snap(request), min_count=max(1, _int(request, "min_count", 5)),
                                      top=min(100, max(1, _int(request, "top", 10))))

    def objects(self, request: Request) -> Any:
        return analysis.objects(self.snap(request))

    def environments(self, request: Request) -> Any:
        return analysis.environments(self.snap(request))

    def complexity(self, request: Request) -> Any:
        return imaging.complexity(self.snap(request))

    def surface(self, request: Request) -> Any:
        return imaging.surface(self.snap(request), request.query_params.get("model") or None)

    def surface_png(self, request: Request) -> Response:
        result = imaging.surface(self.snap(request), request.query_params.get("model") or None)
        if not result["rows"]:
            raise NotFound(f"run {self.run(request).name!r} has no uv passes for this object")
        return Response(imaging.surface_png(result), media_type="image/png", headers={"Cache-Control": "no-store"})

    def compare(self, request: Request) -> Any:
        a, b = _int(request, "a", 0), _int(request, "b", 1)
        for r in (a, b):
            if not 0 <= r < len(self.runs):
                raise NotFound(f"no run {r} (runs 0..{len(self.runs) - 1} are open)")
        snap_a, snap_b = analysis.snapshot(self.runs[a]), analysis.snapshot(self.runs[b])
        return analysis.compare(snap_a, snap_b, request.query_params.get("param") or None)

    def row(self, request: Request) -> Any:
        run, job_id = self.job(request)
        i = run.index_of(job_id)
        return {"run": run.index, "row": run.row(i), "item": analysis.items(run, [i])[0]}

    def image(self, request: Request) -> Response:
        run, job_id = self.job(request)
        name = request.path_params["name"]
        if name not in PASSES:
            raise NotFound(f"unknown pass {name!r} (one of {', '.join(PASSES)})")
        path = run.pass_path(job_id, name)
        if path is None:
            raise NotFound(f"id {job_id!r} of run {run.name!r} has no logged {name} image")
        if name == "uv":
            return Response(imaging.uv_png(path), media_type="image/png")
        return FileResponse(path, media_type="image/png")

    def companion_info(self, request: Request) -> Any:
        run, job_id = self.job(request)
        return self.companions[run.index].info(job_id)

    def companion_export(self, request: Request) -> Any:
        # A custom header makes a cross-site POST need a CORS preflight, which this server never grants.
        if request.headers.get("x-threedb") != "1":
            return _error(403, "missing header X-Threedb: 1 (exports are started from the dashboard's pages)")
        run, job_id = self.job(request)
        return JSONResponse(self.companions[run.index].start_export(job_id), status_code=202)

    def companion_file(self, request: Request) -> Response:
        run, job_id = self.job(request)
        path, media = self.companions[run.index].file(job_id, request.path_params["kind"])
        return FileResponse(path, media_type=media)


def _wrap(handler: Callable[[Request], Any]) -> Callable[[Request], Response]:
    """A sync handler returning JSON data or a Response; user errors become 400/404 JSON messages."""
    def endpoint(request: Request) -> Response:
        try:
            result = handler(request)
        except (NotFound, CompanionMissing) as exc:
            return _error(404, str(exc))
        except analysis.QueryError as exc:
            return _error(400, str(exc))
        except ThreeDBError as exc:
            return _error(409, str(exc))
        if isinstance(result, Response):
            return result
        return JSONResponse(result, headers={"Cache-Control": "no-store"})
    endpoint.__name__ = handler.__name__
    return endpoint


class _SecurityHeaders:
    """Adds CSP, nosniff and no-referrer headers to every response (plain ASGI middleware)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                            (b"referrer-policy", b"no-referrer")]
                message["headers"] = headers
            await send(message)
        await self.app(scope, receive, send_with_headers)


def _page(name: str) -> Callable[[Request], Response]:
    def endpoint(request: Request) -> Response:
        return FileResponse(STATIC / name, media_type="text/html")
    return endpoint


def create_app(runs: Sequence[Run], *, allowed_hosts: Sequence[str] = ("127.0.0.1", "localhost", "::1"),
               companion_dirs: Sequence[Path | None] | None = None, reports: Sequence[Report] = ()) -> Starlette:
    """The dashboard application over ``runs`` and robustness ``reports`` (each one's ``index`` must be
    its position in its list)."""
    d = Dashboard(runs, companion_dirs, reports)

    def api(path: str, handler: Callable[[Request], Any], methods: Sequence[str] = ("GET",)) -> Route:
        return Route(path, _wrap(handler), methods=list(methods))

    routes = [
        Route("/", _page("index.html")),
        Route("/m/{r:int}/{job_id}", _page("companion.html")),
        api("/api/runs", d.runs_info),
        api("/api/runs/{r:int}/params", d.params),
        api("/api/runs/{r:int}/heatmap", d.heatmap),
        api("/api/runs/{r:int}/select", d.select),
        api("/api/runs/{r:int}/failures", d.failures),
        api("/api/runs/{r:int}/objects", d.objects),
        api("/api/runs/{r:int}/environments", d.environments),
        api("/api/runs/{r:int}/complexity", d.complexity),
        api("/api/runs/{r:int}/surface", d.surface),
        api("/api/runs/{r:int}/surface.png", d.surface_png),
        api("/api/compare", d.compare),
        api("/api/runs/{r:int}/rows/{job_id}", d.row),
        api("/api/runs/{r:int}/images/{job_id}/{name}", d.image),
        api("/api/runs/{r:int}/companion/{job_id}", d.companion_info),
        api("/api/runs/{r:int}/companion/{job_id}/export", d.companion_export, ("POST",)),
        api("/api/runs/{r:int}/companion/{job_id}/files/{kind}", d.companion_file),
        api("/api/reports", d.reports_info),
        api("/api/reports/{i:int}", d.report_full),
        api("/api/reports/{i:int}/files/{k:int}", d.report_file),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(404, f"no such page or endpoint: {request.url.path}")

    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)),
                  Middleware(_SecurityHeaders)]
    return Starlette(routes=routes, middleware=middleware, exception_handlers={404: not_found})


class BackgroundServer:
    """Serve an app with uvicorn in a thread (tests, benchmark): ``with BackgroundServer(app) as url: ...``.

    ``port=0`` picks a free port; the URL is known once the socket is bound."""

    def __init__(self, app: Starlette, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="dashboard-server")
        self.url = ""

    def __enter__(self) -> str:
        import time

        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the dashboard server did not start")
            time.sleep(0.01)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
