"""Flows: data sources plus an ordered list of agents, loaded by name."""
