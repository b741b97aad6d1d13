"""The master of a run: jobs from one policy per (environment, object) pair, leased to render workers,
frames batched to evaluator workers, rows written to the :class:`~threedb.sim.store.RunStore`.

* **Jobs.** Pairs are walked environment by environment (a worker switching HDRI re-syncs the
  scene); a worker gets the next job of the environment it last rendered where there is one. Job id
  ``f"{env}-{obj}-{proposal.id}"`` is stable, so a resumed run skips what ``details.log`` holds and
  feeds the logged scores back to the policies (adaptive policies replay the same proposals).
* **Leases.** A job handed to a render worker (or a batch to an evaluator) is leased to it; every
  message of a worker (heartbeats every second while it renders) renews its lease. A worker silent
  for ``lease_timeout_s`` is dropped and its job re-queued. A job that fails ``max_attempts`` times
  (raised in the worker, or lost with its worker) is recorded with ``write_failure``.
* **Idempotence.** The first result of a job wins; a late duplicate is dropped.
"""
from __future__ import annotations

import collections
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from threedb.sim.errors import ThreeDBError
from threedb.sim.jobs import make_job
from threedb.sim.run.messages import MessageError
from threedb.sim.run.messages import parse as parse_message
from threedb.sim.run.peer_limits import PeerLimiter
from threedb.sim.run.preflight import check_run
from threedb.sim.run.progress import Progress
from threedb.sim.store import RunStore, read_rows
from threedb.sim.transport import MasterEndpoint

log = logging.getLogger(__name__)

DEFAULT_LEASE_TIMEOUT_S = 10.0
#: A render is shown as overdue past this multiple of the slowest recent render (and this many seconds).
OVERDUE_FACTOR = 3.0
OVERDUE_FLOOR_S = 10.0
MAX_ATTEMPTS = 2


@dataclass
class Pair:
    env: Any
    obj: Any
    policy: Any
    outstanding: set[str] = field(default_factory=set)   #: issued, not yet recorded

    @property
    def finished(self) -> bool:
        return self.policy.exhausted and not self.outstanding


@dataclass
class Worker:
    wid: str
    role: str
    peer: bytes
    last_seen: float
    job: str | None = None                    #: render worker: the job id it holds
    job_since: float = 0.0                    #: when it was given that job (monotonic)
    batch: list[str] = field(default_factory=list)   #: evaluator: job ids it holds
    env: str | None = None


class Master:
    """Serve one run on ``endpoint``; call :meth:`run` (returns when every job is recorded)."""

    def __init__(self, prepared: Any, run_dir: str | Path, endpoint: MasterEndpoint, *, resume: bool = False,
                 lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S, max_attempts: int = MAX_ATTEMPTS,
                 progress: Progress | None = None, command: list[str] | None = None, check_model: bool = True) -> None:
        exp = prepared.experiment
        # before anything is written: a config error leaves no run directory
        plan = check_run(prepared, load_model_check=check_model)
        self.exp = exp
        self.endpoint = endpoint
        self.lease_timeout_s = lease_timeout_s
        self.max_attempts = max_attempts
        #: No model: renders are logged as they arrive (e.g. to make a training set).
        self.render_only = plan.render_only
        self.base_dir = Path(exp.source).parent
        self.extra_passes = plan.extra_passes
        self.send_passes = sorted(set(plan.needs) | set(self.extra_passes))
        kwargs = dict(output_keys=plan.output_keys, output_type=plan.output_type,
                      class_names=plan.class_names, log_images=plan.log_images,
                      extra_passes=self.extra_passes, config=exp.resolved, seed=exp.seed, command=command)
        self.store = RunStore.open(run_dir, **kwargs) if resume else RunStore(run_dir, **kwargs)
        self.tensorboard = None
        if "tensorboard" in plan.loggers:
            from threedb.sim.tensorboard_log import TensorBoardLogger

            render = exp.render
            self.tensorboard = TensorBoardLogger(run_dir, already=len(self.store.done_ids()), hparams={
                "policy": exp.policy["type"], "seed": exp.seed, "resolution": render.resolution[0],
                "samples": render.samples, "objects": len(prepared.objects),
                "environments": len(prepared.environments), "searched_parameters": prepared.space.ndim})
        self.logged_scores: dict[str, float] = {}
        if resume:
            for row in read_rows(run_dir):
                ok = row.get("status") == "ok" and row.get("is_correct") is not None
                self.logged_scores[str(row["id"])] = (1.0 if row["is_correct"] else 0.0) if ok else math.nan
        self.done = self.store.done_ids()
        pairs = [(env, obj) for env in prepared.environments for obj in prepared.objects]
        self.pairs = [Pair(env, obj, policy) for (env, obj), policy in zip(pairs, plan.policies)]
        totals = [p.policy.total() for p in self.pairs]
        self.total = sum(totals) if all(t is not None for t in totals) else None
        self.controls = exp.controls
        self.jobs: dict[str, dict[str, Any]] = {}           # issued, not yet recorded
        self.pair_of: dict[str, Pair] = {}
        self.proposal_of: dict[str, str] = {}
        self.retry: collections.deque[str] = collections.deque()
        self.attempts: collections.Counter[str] = collections.Counter()
        self.rendered: dict[str, tuple[dict[str, Any], dict[str, np.ndarray]]] = {}  # awaiting evaluation
        self.eval_queue: collections.deque[str] = collections.deque()
        self.leased: set[str] = set()
        self.workers: dict[str, Worker] = {}
        self.dropped = 0   #: well-framed messages that broke the protocol (see .messages)
        self.limiter = PeerLimiter()   #: a flooding peer is ignored, not answered
        self.unsent = 0    #: replies dropped because their peer's queue was full (it re-asks)
        #: Seconds from handing out a job to its result, for the last renders (what "overdue" compares to).
        self.render_times: collections.deque[float] = collections.deque(maxlen=32)
        self.batch_size = plan.batch_size
        #: Renders held for evaluation at most; beyond it render workers wait (bounded memory).
        self.max_rendered = max(4 * self.batch_size, 32)
        self.fatal: str | None = None
        self.progress = progress or Progress(self.total, already=len(self.done))
        self.replayed = 0
        #: High-water mark of renders held awaiting evaluation (never above max_rendered).
        self.max_held = 0

    def overdue(self) -> tuple[int, float]:
        """``(jobs, longest seconds)`` of renders running past :data:`OVERDUE_FACTOR` times the slowest recent
        one (at least :data:`OVERDUE_FLOOR_S`), or past half the time at which their worker will kill them
        (``render.job_timeout`` on the same measurements), whichever comes first: what the progress line shows
        while a hung render waits to be killed and re-issued."""
        recent = list(self.render_times)
        kill_at = self.exp.render.job_timeout.seconds(recent)
        limit = min(max(OVERDUE_FACTOR * max(recent, default=0.0), OVERDUE_FLOOR_S), kill_at / 2)
        now = time.monotonic()
        late = [now - w.job_since for w in self.workers.values() if w.job is not None and now - w.job_since > limit]
        return len(late), max(late, default=0.0)

    # ------------------------------------------------------------------------------ job generation
    def _propose(self, pair: Pair, n: int) -> list[str]:
        """Up to ``n`` new job ids of ``pair`` (logged ones are replayed into the policy, not issued)."""
        out: list[str] = []
        while not pair.policy.exhausted and len(out) < n:
            batch = pair.policy.propose(n - len(out))
            if not batch:
                break
            for proposal in batch:
                job_id = f"{pair.env.name}-{pair.obj.asset.uid}-{proposal.id}"
                if job_id in self.done:
                    pair.policy.observe(proposal.id, self.logged_scores.get(job_id, math.nan))
                    self.replayed += 1
                    continue
                self.jobs[job_id] = make_job(job_id, self.exp.seed, pair.obj, pair.env, self.controls, proposal.values)
                self.pair_of[job_id] = pair
                self.proposal_of[job_id] = proposal.id
                pair.outstanding.add(job_id)
                out.append(job_id)
        return out

    def _next_job(self, env: str | None) -> str | None:
        while self.retry:
            job_id = self.retry.popleft()
            if job_id in self.jobs and job_id not in self.leased and job_id not in self.rendered:
                return job_id
        pairs = sorted(self.pairs, key=lambda p: p.env.name != env)  # stable: keeps environment order
        for pair in pairs:
            if pair.policy.exhausted:
                continue
            ids = self._propose(pair, 1)
            if ids:
                return ids[0]
        return None

    # ---------------------------------------------------------------------------------- recording
    def _record(self, job_id: str, outputs: dict[str, Any] | None, *, error: str | None = None,
                rgb: Any = None, passes: Any = None, meta: dict[str, Any] | None = None) -> None:
        job = self.jobs.pop(job_id, None)
        if job is None:
            return
        report = (meta or {}).get("controls_report")
        if outputs is None:
            wrote = self.store.write_failure(job, error or "failed", rgb=rgb, controls_report=report)
            score = math.nan
        else:
            wrote = self.store.write(job, outputs, rgb=rgb, passes=passes, controls_report=report)
            score = math.nan if "is_correct" not in outputs else (1.0 if outputs["is_correct"] else 0.0)
        self.leased.discard(job_id)
        pair = self.pair_of.pop(job_id)
        pair.outstanding.discard(job_id)
        if wrote and self.tensorboard is not None:
            failed = outputs is None
            self.tensorboard.log(self.store.row(job, self.store.failure_outputs() if failed else outputs,
                                                status="failed" if failed else "ok", error=error), rgb)
        if wrote:
            self.done.add(job_id)
            pair.policy.observe(self.proposal_of.pop(job_id), score)
            self.progress.update(ok=outputs is not None)

    def _attempt_failed(self, job_id: str, error: str) -> None:
        if job_id not in self.jobs:
            return
        self.leased.discard(job_id)
        self.attempts[job_id] += 1
        if self.attempts[job_id] >= self.max_attempts:
            log.warning("job %s failed %d times, recording it as failed: %s", job_id, self.attempts[job_id], error)
            self._record(job_id, None, error=error)
        else:
            log.info("job %s failed (%s); re-queued", job_id, error)
            self.retry.append(job_id)

    # -------------------------------------------------------------------------------- messaging
    def finished(self) -> bool:
        return all(p.finished for p in self.pairs) and not self.jobs

    def _welcome(self) -> dict[str, Any]:
        return {"type": "welcome", "render": self.exp.render.model_dump(mode="json"),
                "send_passes": self.send_passes, "inference": self.exp.inference,
                "evaluation": self.exp.evaluation, "base_dir": str(self.base_dir),
                "config_file": str(self.exp.source), "batch_size": self.batch_size,
                "lease_timeout_s": self.lease_timeout_s}

    def _reply(self, worker: Worker, header: dict[str, Any], seq: Any,
               arrays: dict[str, np.ndarray] | None = None, *, quiet: bool = False) -> None:
        # never wait on one peer: a full queue means it does not read (workers re-send unanswered requests)
        try:
            self.endpoint.send(worker.peer, {**header, "seq": seq}, arrays, timeout=0.0)
        except ThreeDBError as exc:
            self.unsent += 1
            (log.debug if quiet or self.unsent > 10 else log.warning)("cannot reach %s: %s", worker.wid, exc)

    def _release(self, worker: Worker, count_attempt: bool, reason: str) -> None:
        if worker.job is not None:
            job_id, worker.job = worker.job, None
            if count_attempt:
                self._attempt_failed(job_id, reason)
            elif job_id in self.jobs:
                self.leased.discard(job_id)
                self.retry.appendleft(job_id)
        if worker.batch:
            for job_id in reversed(worker.batch):
                if job_id in self.rendered:
                    self.eval_queue.appendleft(job_id)
            worker.batch = []

    def handle(self, peer: bytes, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Serve one message; one that breaks the protocol (:mod:`.messages`) is dropped, counted and logged,
        and so is one beyond its peer's message budget (:mod:`.peer_limits`)."""
        if not self.limiter.allow(peer):
            return
        try:
            message = parse_message(header, arrays, resolution=tuple(self.exp.render.resolution),
                                    passes=self.send_passes)
        except MessageError as exc:
            self.dropped += 1
            log.warning("dropping a message from peer %s: %s", peer.hex()[:16], exc)
            return
        kind, wid, role = message.type, message.wid, message.role
        now = time.monotonic()
        worker = self.workers.get(wid)
        if worker is not None and worker.role != role:
            self.dropped += 1
            log.warning("dropping a %s message claiming %s, a %s worker, is a %s one", kind, wid, worker.role, role)
            return
        if worker is None:
            worker = self.workers[wid] = Worker(wid, role, peer, now)
        worker.peer, worker.last_seen = peer, now
        seq = message.seq
        if kind == "heartbeat":
            return
        if kind == "bye":
            self._release(worker, False, "worker left")
            del self.workers[wid]
            return
        if kind == "fatal":
            self.fatal = f"{wid}: {message.error}"
            return
        if kind == "hello":
            self._reply(worker, self._welcome(), seq)
            return
        if kind == "result":
            job_id = message.job_id
            if worker.job == job_id:
                worker.job = None
                self.render_times.append(now - worker.job_since)
            if self.render_only and job_id in self.jobs:
                frames = dict(arrays)
                rgb = frames.pop("rgb")
                self._record(job_id, {}, rgb=rgb, passes=frames, meta=message.meta)
            elif job_id in self.jobs and job_id not in self.rendered:
                self.leased.discard(job_id)
                self.rendered[job_id] = (message.meta, arrays)
                self.eval_queue.append(job_id)
                self.max_held = max(self.max_held, len(self.rendered))
            else:
                log.info("dropping a duplicate result of %s from %s", job_id, wid)
            self.progress.rendered()
        elif kind == "failed":
            job_id = message.job_id
            if worker.job == job_id:
                worker.job = None
                self._attempt_failed(job_id, message.error)
        elif kind == "outputs":
            for item in message.results:
                job_id = item.job_id
                if job_id in worker.batch and job_id in self.rendered:
                    meta, frames = self.rendered.pop(job_id)
                    rgb = frames.get("rgb")
                    passes = {k: v for k, v in frames.items() if k != "rgb"}
                    try:
                        self._record(job_id, item.outputs, rgb=rgb, passes=passes, meta=meta)
                    except (ValueError, TypeError) as exc:  # outputs lacking declared keys, or of the wrong kind
                        self._record(job_id, None, error=f"bad evaluator outputs: {exc}", rgb=rgb, meta=meta)
            worker.batch = [j for j in worker.batch if j in self.rendered]
            self._release(worker, False, "")
        elif kind == "eval_failed":
            for job_id in message.job_ids:
                if job_id in worker.batch and job_id in self.rendered:
                    meta, frames = self.rendered.pop(job_id)
                    self._record(job_id, None, error=f"evaluation failed: {message.error}",
                                 rgb=frames.get("rgb"), meta=meta)
            worker.batch = []
        elif kind != "ready":
            log.warning("dropping an unknown %r message from %s", kind, wid)
            return
        # every request (ready / result / failed / outputs / eval_failed) wants the next piece of work
        if role == "render":
            self._release(worker, False, "")      # asking again: it holds nothing any more
            if self.fatal or self.finished():
                self._reply(worker, {"type": "die"}, seq)
                return
            # evaluators are behind: back-pressure (counting renders in flight keeps the bound strict)
            if len(self.rendered) + len(self.leased) >= self.max_rendered:
                self._reply(worker, {"type": "wait", "retry_s": 0.1}, seq)
                return
            job_id = self._next_job(worker.env)
            if job_id is None:
                self._reply(worker, {"type": "wait", "retry_s": 0.2}, seq)
                return
            worker.job, worker.job_since = job_id, time.monotonic()
            self.leased.add(job_id)
            worker.env = self.jobs[job_id]["environment"]["name"]
            self._reply(worker, {"type": "job", "job": self.jobs[job_id]}, seq)
        else:
            self._release(worker, False, "")
            if self.fatal or self.finished():
                self._reply(worker, {"type": "die"}, seq)
                return
            n = getattr(message, "batch_size", None) or self.batch_size
            batch: list[str] = []
            while self.eval_queue and len(batch) < n:
                job_id = self.eval_queue.popleft()
                if job_id in self.rendered and job_id not in batch:
                    batch.append(job_id)
            if not batch:
                self._reply(worker, {"type": "wait", "retry_s": 0.05}, seq)
                return
            worker.batch = batch
            items, out = [], {}
            for i, job_id in enumerate(batch):
                meta, frames = self.rendered[job_id]
                job = self.jobs[job_id]
                items.append({"job_id": job_id, "object_uid": job["object"]["uid"],
                              "meta": {"id": job_id, "environment": job["environment"]["name"]}})
                for name, array in frames.items():
                    out[f"{i}/{name}"] = array
            self._reply(worker, {"type": "batch", "items": items}, seq, out)

    def check_leases(self) -> None:
        now = time.monotonic()
        for wid, worker in list(self.workers.items()):
            if now - worker.last_seen > self.lease_timeout_s:
                log.warning("worker %s silent for %.1f s: dropping it and re-issuing its work",
                            wid, now - worker.last_seen)
                self._release(worker, True, f"lost with worker {wid} (silent > {self.lease_timeout_s:.0f} s)")
                del self.workers[wid]

    def run(self, *, alive: Callable[[], str | None] | None = None, poll_s: float = 0.2) -> dict[str, Any]:
        """Serve until every job is recorded. ``alive()`` may return a reason to abort (e.g. no workers left)."""
        last_lease_check = time.monotonic()
        while not self.finished():
            if self.fatal:
                raise ThreeDBError(f"run aborted: {self.fatal}")
            got = self.endpoint.recv(timeout=poll_s)
            if got is not None:
                self.handle(*got)
            now = time.monotonic()
            if now - last_lease_check > 0.5:
                last_lease_check = now
                self.check_leases()
                self.progress.tick()
                if alive is not None:
                    reason = alive()
                    if reason:
                        raise ThreeDBError(f"run aborted: {reason}")
        self.progress.tick(force=True)
        return {"done": len(self.store.done_ids()), "failed": len(self.store.failed_ids()),
                "rejected": self.endpoint.rejected, "dropped": self.dropped, "replayed": self.replayed,
                "throttled": self.limiter.throttled, "unsent": self.unsent,
                "max_held": self.max_held}

    def shutdown(self, grace_s: float = 2.0) -> None:
        """Tell every known worker to stop (answering their requests with ``die`` for ``grace_s``)."""
        deadline = time.monotonic() + grace_s
        for worker in self.workers.values():   # one that already left (told to die earlier) is no news
            self._reply(worker, {"type": "die"}, None, quiet=True)
        while self.workers and time.monotonic() < deadline:
            got = self.endpoint.recv(timeout=0.1)
            if got is None:
                continue
            peer, header, _ = got
            wid = header.get("wid")
            if header.get("type") == "bye" and isinstance(wid, str):
                self.workers.pop(wid, None)
            else:
                try:
                    self.endpoint.send(peer, {"type": "die", "seq": header.get("seq")}, timeout=0.5)
                except ThreeDBError:
                    pass
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None
        self.store.close()
