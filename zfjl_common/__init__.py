"""Helpers shared by the agent, the server and the firmware tools; standard library only."""

__all__: list[str] = []
