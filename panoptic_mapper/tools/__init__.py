"""Command-line tools that run the core without ROS spin."""
