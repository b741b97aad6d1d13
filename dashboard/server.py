"""The dashboard's HTTP server (Starlette app, served by uvicorn): static front end + JSON API.

Every request re-reads only what was appended to each ``details.log`` since the last one (and each
robustness ``report.json`` when it changed), so the API is live while runs and jobs are still
writing. Ids and pass names from URLs are only looked up among a run's known ids and
:data:`~threedb.dashboard.loader.PASSES`, report files by their index in the list the server built
when reading the report; nothing from a URL is joined into a path.
See docs/dashboard.md for the endpoints.
"""
from __future__ import annotations

import logging
import re
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

from threedb.dashboard import analysis, files, imaging
from threedb.dashboard.companion import Companion, CompanionMissing
from threedb.dashboard.loader import PASSES, Run
from threedb.dashboard.responses import SafeJSONResponse, json_safe
from threedb.dashboard.reports import MEDIA, Report, ReportError
from threedb.sim.errors import ThreeDBError

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
#: An index or integer from a URL: at most 9 ASCII digits (int() of 5,000 digits raises, "²".isdigit() is True).
INDEX = re.compile(r"[0-9]{1,9}")
INTEGER = re.compile(r"-?[0-9]{1,9}")
#: Content-Security-Policy: everything comes from this server (no CDN), inline code is not allowed.
CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; style-src 'self'; "
       "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; object-src 'none'")


class NotFound(ThreeDBError):
    """An unknown run, job id, pass or file (404)."""


def _error(status: int, message: str) -> JSONResponse:
    return SafeJSONResponse({"error": message}, status_code=status)


def _shown(text: str, limit: int = 60) -> str:
    """Request text quoted in a message, cut short."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _int(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not INTEGER.fullmatch(raw):
        raise analysis.QueryError(f"query parameter {name!r} must be an integer of at most 9 digits, not {_shown(raw)}")
    return int(raw)


def _index(request: Request, name: str, what: str) -> int:
    """A path parameter that numbers something (a run, a report, a file): NotFound unless plain digits."""
    raw = request.path_params[name]
    if not INDEX.fullmatch(raw):
        raise NotFound(f"no {what} {_shown(raw)} ({what}s are numbered 0, 1, ...)")
    return int(raw)


def _bins(request: Request, key: str) -> dict[str, int]:
    """``?fix=PARAM:BIN&fix=...`` -> {PARAM: BIN} (the bin index follows the last colon)."""
    out = {}
    for item in request.query_params.getlist(key):
        name, sep, code = item.rpartition(":")
        if not sep or not INTEGER.fullmatch(code):
            raise analysis.QueryError(f"{key}={_shown(item)}: expected PARAMETER:BIN_INDEX")
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
        r = _index(request, "r", "run")
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
        i = _index(request, "i", "report")
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
        k = _index(request, "k", "report file")
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
                        "version": snap.version, "skipped": run.skipped,
                        "skipped_reasons": dict(run.skipped_reasons), "bad_values": run.bad_values,
                        "output_type": run.output_type,
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
                                      top=min(100, max(1, _int(request, "top", 10))),
                                      rank=request.query_params.get("rank") or analysis.DEFAULT_RANK)

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
        return {"run": run.index, "row": json_safe(run.row(i)), "item": analysis.items(run, [i])[0]}

    def image(self, request: Request) -> Response:
        run, job_id = self.job(request)
        name = request.path_params["name"]
        if name not in PASSES:
            raise NotFound(f"unknown pass {name!r} (one of {', '.join(PASSES)})")
        path = run.pass_file(job_id, name)   # Refused (403): a symlink out of the run, not a regular file
        data = files.read_inside(run.path, path) if path is not None else None
        if data is None:
            raise NotFound(f"id {job_id!r} of run {run.name!r} has no logged {name} image")
        if name == "uv":
            return Response(imaging.uv_png(data, path.name), media_type="image/png")
        files.check_size(data, path.name)   # served as is, but a browser would decode it
        return Response(data, media_type="image/png", headers={"Cache-Control": "no-cache"})

    def companion_info(self, request: Request) -> Any:
        run, job_id = self.job(request)
        return self.companions[run.index].info(job_id)

    def companion_export(self, request: Request) -> Any:
        # A custom header makes a cross-site POST need a CORS preflight, which this server never grants.
        if request.headers.get("x-threedb") != "1":
            return _error(403, "missing header X-Threedb: 1 (exports are started from the dashboard's pages)")
        run, job_id = self.job(request)
        return SafeJSONResponse(self.companions[run.index].start_export(job_id), status_code=202)

    def companion_file(self, request: Request) -> Response:
        run, job_id = self.job(request)
        data, media = self.companions[run.index].file(job_id, request.path_params["kind"])
        return Response(data, media_type=media)


def _wrap(handler: Callable[[Request], Any]) -> Callable[[Request], Response]:
    """A sync handler returning JSON data or a Response; user errors become 400/404 JSON messages."""
    def endpoint(request: Request) -> Response:
        try:
            result = handler(request)
        except (NotFound, CompanionMissing) as exc:
            return _error(404, str(exc))
        except analysis.QueryError as exc:
            return _error(400, str(exc))
        except files.Refused as exc:
            return _error(403, str(exc))
        except ThreeDBError as exc:
            return _error(409, str(exc))
        except Exception as exc:  # a bug: a JSON message the page can show, and the traceback in the log
            log.exception("%s %s failed", request.method, request.url.path)
            return _error(500, f"internal error in {handler.__name__}: {type(exc).__name__}: {exc}")
        if isinstance(result, Response):
            return result
        return SafeJSONResponse(result, headers={"Cache-Control": "no-store"})
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
        Route("/m/{r}/{job_id}", _page("companion.html")),
        api("/api/runs", d.runs_info),
        api("/api/runs/{r}/params", d.params),
        api("/api/runs/{r}/heatmap", d.heatmap),
        api("/api/runs/{r}/select", d.select),
        api("/api/runs/{r}/failures", d.failures),
        api("/api/runs/{r}/objects", d.objects),
        api("/api/runs/{r}/environments", d.environments),
        api("/api/runs/{r}/complexity", d.complexity),
        api("/api/runs/{r}/surface", d.surface),
        api("/api/runs/{r}/surface.png", d.surface_png),
        api("/api/compare", d.compare),
        api("/api/runs/{r}/rows/{job_id}", d.row),
        api("/api/runs/{r}/images/{job_id}/{name}", d.image),
        api("/api/runs/{r}/companion/{job_id}", d.companion_info),
        api("/api/runs/{r}/companion/{job_id}/export", d.companion_export, ("POST",)),
        api("/api/runs/{r}/companion/{job_id}/files/{kind}", d.companion_file),
        api("/api/reports", d.reports_info),
        api("/api/reports/{i}", d.report_full),
        api("/api/reports/{i}/files/{k}", d.report_file),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(404, f"no such page or endpoint: {_shown(request.url.path, 200)}")

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
