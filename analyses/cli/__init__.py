"""The Typer commands of the analyses, apart from their science.

Pattern: ``analyses/cli/<module>.py`` holds the ``hub`` command of ``analyses/<module>.py``:
it defines ``command`` (a function decorated with :func:`hubclient.cli.options.analysis_command`)
and re-exports ``ANALYSIS`` from the science module; the ``hub.analyses`` /
``hub.interventions`` entry points in ``pyproject.toml`` name ``analyses.cli.<module>``.

A command parses and checks its options (before any model loads), decides its mode once
(text, ``--task`` or ``--modality``), refuses every option that does not apply to that mode
(:func:`hubclient.cli.options.reject`), then calls the science module's ``run_*``/``Analysis``.
Science modules never import from here; commands may import any science module.
"""
