"""The ROS-free runtime of the nodes: what schedules the core, without any message.

* ``map_session`` / ``refined_session``: a map owned for a node (one writer, snapshots that
  readers never wait for) and the refined layer derived from it;
* ``training_worker``: chunked background training of the refined field;
* ``sync``: stamp matching of the input streams and the keep-latest frame queue;
* ``node_stats``: counters, problems and rolling timings for diagnostics;
* ``node_config`` / ``mapper_config``: the nodes' root config dataclasses (1:1 ROS parameters);
* ``params_yaml``: ``config/mapper.yaml`` generated from those dataclasses;
* ``launch_plan`` / ``launch_playback``: which nodes a launch starts, and how a bag feeds them.

Nothing here imports rclpy or a message package, so the offline evaluation, the launcher and the
tests run the same scheduling code as the nodes.
"""
