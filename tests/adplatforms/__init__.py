"""Local ad-platform servers for the audience-sync tests (real sockets)."""
