"""What a person runs: the ``lineguard`` command, the launcher of ``lineguard serve``, and the demo."""
