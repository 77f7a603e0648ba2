"""Operator commands of the ``statekeeper`` command line (send, query, tail, redrive, rebuild)."""
