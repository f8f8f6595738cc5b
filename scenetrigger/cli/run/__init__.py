"""Commands that run something: the engine (replay, demo, worker), delivery, journeys, the collector, the HTTP server, the console, a producer."""
