"""Whether and when a message goes: the delivery policy (caps, quiet hours, dedupe, back-off), its store, control groups."""
