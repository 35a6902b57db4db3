"""tsdf."""
