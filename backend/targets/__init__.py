"""What the shell talks to: the Backend protocols, the local engine and a remote server."""
