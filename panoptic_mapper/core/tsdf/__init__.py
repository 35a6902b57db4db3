"""The TSDF voxel grid with per-voxel panoptic attributes, and label renders of its mesh."""
