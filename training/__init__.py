"""Fitting and evaluating lines (in process or with Ray Data), the model store, and the ``lineguard`` CLI."""
