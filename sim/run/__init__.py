"""``threedb run``: a master handing render jobs to render workers and frames to evaluator workers.

* :mod:`threedb.sim.run.master` -- job generation (one policy per (environment, object) pair), leases
  and heartbeats, result handling, store writes, policy feedback, resume.
* :mod:`threedb.sim.run.render_worker` -- ``threedb worker --connect tcp://HOST:PORT``.
* :mod:`threedb.sim.run.evaluator_worker` -- ``threedb evaluator --connect tcp://HOST:PORT``.
* :mod:`threedb.sim.run.local` -- ``threedb run``: the master plus local worker subprocesses.
* :mod:`threedb.sim.run.progress` -- progress line and final accuracy summary.

Protocol (JSON headers + raw array frames, :mod:`threedb.sim.transport`; every peer message has
``wid``, a worker id the peer picks, and ``role``):

=================  =====================================================================
peer -> master     ``hello`` (-> ``welcome``), ``ready`` (-> ``job``/``batch``/``wait``/``die``),
                   ``heartbeat``, ``result`` (+ rgb and pass frames), ``failed``, ``outputs``,
                   ``eval_failed``, ``bye``
master -> peer     ``welcome`` (config), ``job``, ``batch`` (frames ``<i>/rgb``, ``<i>/<pass>``),
                   ``wait``, ``die``
=================  =====================================================================
"""
