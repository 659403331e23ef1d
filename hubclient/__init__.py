"""hub's client library: model loading, tracing runner, storage, plotting and the CLI.

Analyses (``analyses/``) build on it; see ``hubclient.analysis`` for what an analysis is.
"""

from hubclient.errors import HubError

__all__ = ["HubError"]
__version__ = "0.1.0"
