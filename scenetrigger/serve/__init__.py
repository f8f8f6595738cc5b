"""HTTP serving: start an aiohttp app on a port, or swap the app behind one listening socket; routes of ``scenetrigger serve``."""
