"""LineGuard: anomaly detection for production lines.

One namespace, one folder per layer (``docs/architecture.md``): ``lineguard.models`` (the math),
``lineguard.registry`` (the contract between fitting and serving), ``lineguard.training`` and
``lineguard.history``, ``lineguard.deployments`` (the Ray Serve application), ``lineguard.cluster`` and
``lineguard.cli``. Importing this package imports nothing else, so light processes stay light.
"""

__version__ = "0.1.0"
