"""Runs: the run folder (atomic Parquet parts, manifest), the run lifecycle (create or resume,
guard, finish, plots) and the progress display.

* :mod:`hubclient.run.folder`: :class:`RunDir`;
* :mod:`hubclient.run.lifecycle`: :class:`RunConfig`, :func:`start_run`, :func:`check_resume`,
  :func:`guard`, :func:`finish_run`;
* :mod:`hubclient.run.progress`: :func:`progress_bar`.
"""
