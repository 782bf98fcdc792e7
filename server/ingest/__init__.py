"""Ingest: MQTT uplinks decoded once by protocol/, then dispatched to the domain."""
