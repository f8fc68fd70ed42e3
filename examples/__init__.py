"""Worked examples of meshcast on a local world."""
