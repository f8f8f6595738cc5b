"""The operator console: its aiohttp app, the state it shows and the sources that feed it."""
