"""The analyses of ``hub``: one module each, registered as ``hub.analyses`` entry points."""
