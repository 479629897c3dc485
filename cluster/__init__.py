"""Kubernetes: the KubeRay RayService rendered from ``serve_config.yaml``, and the container image beside it."""
