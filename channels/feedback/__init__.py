"""What comes back: feedback events (delivered, opened, clicked, ...) and their sinks, and the decision log."""
