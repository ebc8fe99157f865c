"""An RTSP server for the tests: real frames (PNG files) as H.264 over RTSP, with GstRtspServer.

Run it with the system's python3 (Debian's python3-gi and gir1.2-gst-rtsp-server-1.0), not a venv's,
and only inside a private network namespace (tests/netns.py):

    python3 tests/rtsp_server.py a.png b.png --mount cam --fps 10 --loop --lose-after 15

It serves the frames in the order given at ``rtsp://127.0.0.1:PORT/MOUNT``, looping with ``--loop``,
and prints ``ready rtsp://...`` on stdout once it listens. With ``--lose-after N`` it exits at once
(``os._exit``, as a crashed or unplugged server would: no RTSP teardown, connections cut) when frame
N+1 is due, after N frames were sent, and prints ``lost after N frames`` just before. Without
``--loop`` the stream ends (end of stream) after the last frame. Each client gets its own stream
from the first frame; the frame count of ``--lose-after`` is over all clients.
"""

from __future__ import annotations

import argparse
import os
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer

# pngdec decodes the files; identity sync=true releases each frame at its time, so frames reach the
# payloader (where they are counted) when they go out, not ahead of the network. x264's zerolatency
# tune sends each frame at once, in several slices (sliced threads), as many cameras do; x264 repeats
# SPS/PPS before every IDR (one a second) and the SDP carries them, so rtph264pay adds none:
# config-interval=-1 would put them before each IDR slice, and FFmpeg (OpenCV's RTSP client) would
# then decode each slice of a picture as a picture of its own (the rest of it concealed, gray smears)
LAUNCH = ("( appsrc name=src format=time max-buffers=2 caps=image/png,framerate={fps}/1 ! pngdec ! videoconvert ! "
          "video/x-raw,format=I420 ! identity sync=true ! x264enc tune=zerolatency speed-preset=ultrafast "
          "key-int-max={fps} ! rtph264pay name=pay0 pt=96 config-interval=0 )")


class Frames(GstRtspServer.RTSPMediaFactory):
    """Each client's media: an appsrc fed the PNG files in order, at ``fps``."""

    def __init__(self, frames: list[bytes], fps: int, loop: bool, lose_after: int | None) -> None:
        super().__init__()
        self.frames, self.fps, self.loop, self.lose_after = frames, fps, loop, lose_after
        self.sent = 0  # frames that reached a payloader, over all clients

    def do_create_element(self, url):
        bin_ = Gst.parse_launch(LAUNCH.format(fps=self.fps))
        src = bin_.get_by_name("src")  # need-data asks for the next frame as the stream takes them
        state = {"next": 0}
        src.connect("need-data", self._need_data, state)
        pay = bin_.get_by_name("pay0")
        pay.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, self._count)
        return bin_

    def _need_data(self, src, _length, state) -> None:
        index = state["next"]
        if index >= len(self.frames) and not self.loop:
            src.emit("end-of-stream")
            return
        data = self.frames[index % len(self.frames)]
        buf = Gst.Buffer.new_wrapped(data)
        buf.pts = index * Gst.SECOND // self.fps
        buf.duration = Gst.SECOND // self.fps
        state["next"] = index + 1
        src.emit("push-buffer", buf)

    def _count(self, _pad, _info):
        if self.lose_after is not None and self.sent >= self.lose_after:
            print(f"lost after {self.sent} frames", flush=True)
            os._exit(0)  # abruptly: no teardown, the kernel cuts the connections
        self.sent += 1
        return Gst.PadProbeReturn.OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("frames", nargs="+", help="PNG files of one size, served in this order")
    parser.add_argument("--mount", default="stream", help="the stream's path: rtsp://127.0.0.1:PORT/MOUNT")
    parser.add_argument("--port", type=int, default=8554)
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--loop", action="store_true", help="start again after the last frame")
    parser.add_argument("--lose-after", type=int, metavar="N", help="exit abruptly after N frames were sent")
    args = parser.parse_args(argv)

    Gst.init(None)
    frames = []
    for name in args.frames:
        with open(name, "rb") as f:
            frames.append(f.read())
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = Frames(frames, args.fps, args.loop, args.lose_after)
    server.get_mount_points().add_factory(f"/{args.mount}", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 2
    print(f"ready rtsp://127.0.0.1:{args.port}/{args.mount}", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
