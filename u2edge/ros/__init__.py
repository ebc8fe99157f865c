"""ROS 2: the ``u2edge`` node (``u2edge ros``) and sensor_msgs/Image conversion with plain numpy.

rclpy is imported only when the node runs (``u2edge.ros.node.run``); ``u2edge.ros.convert`` needs no ROS.
"""

from __future__ import annotations

__all__ = []  # the node is run by the CLI; import u2edge.ros.convert or u2edge.ros.node
