"""Durable state: the spool of received files, the index database, series completion."""
