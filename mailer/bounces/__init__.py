"""The report pipeline: delivery reports and complaints read, tied to a message we
sent, and acted on."""
