"""The outbox: a durable, per-destination send queue with retries."""
