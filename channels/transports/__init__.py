"""How a message leaves: the channels (webhook, inbox, email, provider, log), their registry and sender, retries, batching, the wire format and the dead letter."""
