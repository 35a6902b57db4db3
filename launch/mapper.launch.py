"""Start the panoptic mapping graph on a ROS 2 install: ``ros2 launch panoptic_mapper
mapper.launch.py [name:=value ...]`` (``ros2 launch ... --show-args`` lists the arguments).

Which nodes start, with which parameters and overrides, comes from
``panoptic_mapper.runtime.launch_plan`` - the same table ``panoptic-mapper launch`` uses in the pip
environment - so both launchers start the same graph: by default the segmenter, the instant
semantics node and the mapper node (refined map), which serves the planner API under
/panoptic_mapper; the instant and mapper nodes share one process (``mapping_process``), so the
mapper derives its refined map from the instant map in memory (``colocate_mapper:=false``: one
process each, the mapper reading the instant node's topics). ``with_mapper:=false`` runs the instant map only (it then serves the API);
with the mapper on another machine, launch ``with_mapper:=false api_server:=mapper`` here and
``with_segmenter:=false with_instant:=false`` there (same ROS_DOMAIN_ID).

Replay a bag recorded by ``panoptic-mapper make-scene`` into it with
``ros2 bag play BAG --remap /panoptic/segmentation:=/panoptic/recorded_segmentation``.
"""
import os
import tempfile

import yaml
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from panoptic_mapper.runtime.launch_plan import (LAUNCH_ARGUMENTS, PACKAGE, nested, plan,
                                                processes)


def _nodes(context, *args, **kwargs):
    values = {arg.name: LaunchConfiguration(arg.name).perform(context)
              for arg in LAUNCH_ARGUMENTS}
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", "mapper.yaml")
    actions = []
    for process in processes(plan(values, default_params)):
        if len(process.nodes) == 1:
            node = process.nodes[0]
            actions.append(Node(package=PACKAGE, executable=process.executable,
                                name=node.spec.name,
                                parameters=[process.params_file, node.overrides],
                                output="screen", emulate_tty=True))
            continue
        # Several nodes in one process (the instant node and the mapper sharing its map): a
        # parameter dict or a node name would apply to every node of the process, so the
        # overrides go into a file with one section per node.
        overrides = tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix=process.name,
                                                delete=False)
        with overrides:
            yaml.safe_dump({node.spec.name: {"ros__parameters": nested(node.overrides)}
                            for node in process.nodes}, overrides, sort_keys=True)
        actions.append(Node(package=PACKAGE, executable=process.executable,
                            parameters=[process.params_file, overrides.name], output="screen",
                            emulate_tty=True))
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(arg.name, default_value=arg.default, description=arg.description)
         for arg in LAUNCH_ARGUMENTS] + [OpaqueFunction(function=_nodes)])
