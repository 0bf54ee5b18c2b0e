"""Auth backend of the InputLayer administration shell: engine, store, security, server, client."""

__version__ = "0.1.0"
