"""Pictures of maps (off-screen, CPU only)."""
