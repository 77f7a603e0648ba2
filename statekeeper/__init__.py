"""statekeeper: state and memory for systems that work over time."""

__version__ = "0.1.0"
