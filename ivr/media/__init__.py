"""Audio work (speech synthesis, conversion). CPU-bound: callers run it off the event loop."""
