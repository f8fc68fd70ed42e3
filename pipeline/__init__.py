"""meshcast pipeline schedules: GPipe, 1F1B and eager-1F1B, and a simulator that prices the
transfers between stages with their cross-mesh plans (DESIGN §6)."""
