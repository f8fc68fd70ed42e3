"""HTTP routes of the planning service."""
