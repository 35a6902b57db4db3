"""panoptic_mapper: open-vocabulary panoptic 3D mapping for ROS 2.

Layout:
  core/     ROS-free library (types, config, labels, geometry, tsdf, tracking, field, query, eval,
            io, segmentation, scene, viz)
  runtime/  ROS-free scheduling of the core: map sessions, workers, stamp matching, node
            configs, launch plan, the streamed refined map
  ros/      the only conversions between ROS messages and core types
  nodes/    thin rclpy nodes (parameters -> config dataclass -> core object)
  tools/    command-line tools (`panoptic-mapper ...`)

The generated interface modules (``panoptic_mapper.msg`` / ``panoptic_mapper.srv``) are built by
rosidl into the install prefix. ``extend_path`` lets them be found even when this source tree is
first on ``sys.path`` (development); tests run against the installed package.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
