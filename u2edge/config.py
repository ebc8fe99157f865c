"""The U-2-Net architecture as data: the stage table and every conv it implies, without torch.

``model.py`` builds PyTorch modules from these tables; the ONNX tools use them to recognise
U2NET and U2NETP graphs by their conv shapes.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from .errors import WeightsError

__all__ = ["Stage", "Conv", "CONFIGS", "rsu_convs", "side_channels", "conv_layout", "conv_shapes", "state_dict_shapes",
           "arch_of_conv_shapes", "wrong_arch_error"]


class Stage(NamedTuple):
    """One RSU stage: name, height L, channels in/mid/out, and whether it is the dilated RSU-LF."""

    name: str
    height: int
    in_ch: int
    mid_ch: int
    out_ch: int
    dilated: bool


class Conv(NamedTuple):
    name: str
    in_ch: int
    out_ch: int
    kernel: int
    dilation: int


def _table(mid: tuple[int, ...], out: tuple[int, ...]) -> tuple[Stage, ...]:
    """Encoder stage1..6 then decoder stage5d..1d; decoder inputs are the concatenated skips."""
    enc_in = (3,) + out[:5]
    heights = (7, 6, 5, 4, 4, 4)
    encoder = [Stage(f"stage{i + 1}", heights[i], enc_in[i], mid[i], out[i], i >= 4) for i in range(6)]
    decoder = []
    deeper = out[5]
    for j, k in enumerate(range(5, 0, -1)):  # decoder stage k mirrors encoder stage k
        decoder.append(Stage(f"stage{k}d", heights[k - 1], deeper + out[k - 1], mid[6 + j], out[6 + j], k == 5))
        deeper = out[6 + j]
    return tuple(encoder + decoder)


CONFIGS: dict[str, tuple[Stage, ...]] = {
    "u2net": _table(mid=(32, 32, 64, 128, 256, 256, 256, 128, 64, 32, 16),
                    out=(64, 128, 256, 512, 512, 512, 512, 256, 128, 64, 64)),
    "u2netp": _table(mid=(16,) * 11, out=(64,) * 11),
}


def rsu_convs(height: int, in_ch: int, mid_ch: int, out_ch: int, dilated: bool) -> list[Conv]:
    """The 3x3 convs of an RSU-L (or RSU-LF) block, in definition and execution order.

    Levels 1..L go down (RSU-L: dilation 1, the bottom level 2; RSU-LF: 1, 2, 4, ...), then
    levels L-1..1 come back up, each taking the concatenated skip (2 * mid channels).
    """
    convs = [Conv("rebnconvin", in_ch, out_ch, 3, 1)]
    for i in range(1, height + 1):
        dilation = 2 ** (i - 1) if dilated else (2 if i == height else 1)
        convs.append(Conv(f"rebnconv{i}", out_ch if i == 1 else mid_ch, mid_ch, 3, dilation))
    for i in range(height - 1, 0, -1):
        dilation = 2 ** (i - 1) if dilated else 1
        convs.append(Conv(f"rebnconv{i}d", 2 * mid_ch, out_ch if i == 1 else mid_ch, 3, dilation))
    return convs


def side_channels(config: tuple[Stage, ...]) -> dict[int, int]:
    """Input channels of side k: decoder stage k (k = 1..5) or encoder stage 6."""
    channels = {**{int(s.name[5]): s.out_ch for s in config[6:]}, 6: config[5].out_ch}
    return dict(sorted(channels.items()))


@functools.lru_cache(maxsize=None)
def conv_layout(arch: str) -> tuple[Conv, ...]:
    """Every conv of ``arch`` in definition order, which is also execution order."""
    config = CONFIGS[arch]
    convs = [c._replace(name=f"{s.name}.{c.name}") for s in config for c in rsu_convs(*s[1:])]
    convs += [Conv(f"side{k}", ch, 1, 3, 1) for k, ch in side_channels(config).items()]
    return tuple(convs + [Conv("outconv", 6, 1, 1, 1)])


def state_dict_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """Every key of the official checkpoint with its shape, in the official order."""
    shapes: dict[str, tuple[int, ...]] = {}
    for conv in conv_layout(arch):
        weight = (conv.out_ch, conv.in_ch, conv.kernel, conv.kernel)
        if conv.name.startswith("stage"):  # conv + BatchNorm + ReLU block
            shapes.update({f"{conv.name}.conv_s1.weight": weight, f"{conv.name}.conv_s1.bias": (conv.out_ch,)})
            shapes.update({f"{conv.name}.bn_s1.{k}": (conv.out_ch,)
                           for k in ("weight", "bias", "running_mean", "running_var")})
            shapes[f"{conv.name}.bn_s1.num_batches_tracked"] = ()
        else:
            shapes.update({f"{conv.name}.weight": weight, f"{conv.name}.bias": (conv.out_ch,)})
    return shapes


def conv_shapes(arch: str) -> list[tuple[int, int, int, int]]:
    return [(c.out_ch, c.in_ch, c.kernel, c.kernel) for c in conv_layout(arch)]


def arch_of_conv_shapes(shapes: list[tuple[int, ...]]) -> str | None:
    """The architecture whose convs have exactly these weight shapes, in order, if any."""
    return next((arch for arch in CONFIGS if list(shapes) == conv_shapes(arch)), None)


def wrong_arch_error(arch: str, other: str, what: str) -> WeightsError:
    return WeightsError(f"this is a {other.upper()} {what}, you asked for {arch}; "
                        f"pass --model {other} or {arch} weights")
