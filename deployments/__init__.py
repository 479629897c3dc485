"""Ray Serve deployments: thin wrappers that load a line's model from the store and call it."""
