"""Persistent 3D instances: the instance table, frame-to-map association, per-voxel id votes."""
