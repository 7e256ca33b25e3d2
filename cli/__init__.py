"""The ``stance`` command: parses arguments, calls the registry, prints; nothing more."""
