"""Small shared helpers (atomic writes, devices, seeding)."""
