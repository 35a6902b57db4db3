"""Start the panoptic mapping graph on a ROS 2 install: ``ros2 launch panoptic_mapper
mapper.launch.py [name:=value ...]`` (``ros2 launch ... --show-args`` lists the arguments).

Which nodes start, with which parameters and overrides, comes from
``panoptic_mapper.runtime.launch_plan`` - the same table ``panoptic-mapper launch`` uses in the pip
environment - so both launchers start the same graph: by default the segmenter, the instant
semantics node and the mapper node (refined map), which serves the planner API under
/panoptic_mapper. ``with_mapper:=false`` runs the instant map only (it then serves the API);
with the mapper on another machine, launch ``with_mapper:=false api_server:=mapper`` here and
``with_segmenter:=false with_instant:=false`` there (same ROS_DOMAIN_ID).

Replay a bag recorded by ``panoptic-mapper make-scene`` into it with
``ros2 bag play BAG --remap /panoptic/segmentation:=/panoptic/recorded_segmentation``.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from panoptic_mapper.runtime.launch_plan import LAUNCH_ARGUMENTS, PACKAGE, plan


def _nodes(context, *args, **kwargs):
    values = {arg.name: LaunchConfiguration(arg.name).perform(context)
              for arg in LAUNCH_ARGUMENTS}
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", "mapper.yaml")
    return [Node(package=PACKAGE, executable=node.spec.executable, name=node.spec.name,
                 parameters=[node.params_file, node.overrides], output="screen",
                 emulate_tty=True)
            for node in plan(values, default_params)]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(arg.name, default_value=arg.default, description=arg.description)
         for arg in LAUNCH_ARGUMENTS] + [OpaqueFunction(function=_nodes)])
