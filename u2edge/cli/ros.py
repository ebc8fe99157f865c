"""Run the ROS 2 node: sensor_msgs/Image on `image` in, a mono8 `mask` out, with the input's header.

Examples:
  u2edge ros --ros-args -r image:=/camera/image_raw
  u2edge ros --ros-args -r image:=/camera/image_raw -p outputs:=[mask,overlay] -p max_rate:=10
  ros2 param set /u2edge precision fp32        # applied without a restart

The node is named `u2edge`. It takes bgr8, rgb8, bgra8, rgba8 and mono8 images, always infers the
newest frame (frames that arrive meanwhile are dropped and counted), and publishes the outputs it
is asked for: mask (mono8), overlay (bgr8), cutout (bgra8), background (bgr8). Parameters: model,
engine, precision, outputs, qos (sensor_data or reliable), max_rate, bg_color, bg_image, bg_blur,
smooth. FPS, latency and drops go to /diagnostics once a second (diagnostic_msgs/DiagnosticArray).
Needs rclpy: pip install 'u2edge[ros]' (x86-64 Linux, Python 3.10 to 3.12), or source a ROS 2
installation (Jetson).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ros-args", nargs=argparse.REMAINDER, default=[], metavar="ARG",
                        help="everything after it goes to ROS: remappings (-r image:=/camera/image_raw), "
                             "parameters (-p outputs:=[mask,overlay]), --log-level")


def run(args: argparse.Namespace) -> int:
    from ..ros.node import run as run_node  # rclpy only now, and only for this command

    return run_node(args.ros_args)
