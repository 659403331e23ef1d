"""Test helpers shipped with hub: an NDIF-compatible server for offline trials of ``--remote``.

See :mod:`hubclient.testing.server` (``python -m hubclient.testing.server --model gemma-3-270m``).
"""
