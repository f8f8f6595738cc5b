"""The embedded runtimes over the engine host: replay, the embedded (demo) runtime, the input readers and what-if."""
