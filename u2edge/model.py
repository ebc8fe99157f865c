"""U-2-Net and U-2-NetP in PyTorch, built from one configuration table and one RSU-L block.

The module and parameter names reproduce the official checkpoints (xuebinqin/U-2-Net), so
``u2net.pth``, ``u2netp.pth`` and ``u2net_human_seg.pth`` load as they are. Importing this
module needs torch; nothing in the runtime imports it.

    >>> from u2edge.model import u2net, u2netp
    >>> net = u2netp(weights="official")   # the official U2-NetP, fetched once into the user cache
    >>> big = u2net(weights="official")    # the official U-2-Net (a large download the first time)
"""

from __future__ import annotations

import io
import os
from collections import OrderedDict
from pathlib import Path

from ._deps import require
from ._files import write_bytes_atomic
from .config import CONFIGS, Stage, rsu_convs, side_channels, state_dict_shapes, wrong_arch_error
from .errors import WeightsError
from .weights import default_onnx

torch = require("torch")
nn = torch.nn
F = torch.nn.functional

__all__ = ["U2Net", "u2net", "u2netp", "load_weights", "save_checkpoint"]


class REBNCONV(nn.Module):
    """3x3 conv (bias) + BatchNorm + ReLU, named as in the official code."""

    def __init__(self, in_ch: int, out_ch: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv_s1 = nn.Conv2d(in_ch, out_ch, 3, padding=dilation, dilation=dilation)
        self.bn_s1 = nn.BatchNorm2d(out_ch)
        self.relu_s1 = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu_s1(self.bn_s1(self.conv_s1(x)))


def _upsample_like(src, tar):
    return F.interpolate(src, size=tar.shape[2:], mode="bilinear", align_corners=False)


def _pool() -> nn.Module:
    return nn.MaxPool2d(2, stride=2, ceil_mode=True)


class RSU(nn.Module):
    """Residual U-block of height L (RSU-L), or its dilated, pool-free variant RSU-LF.

    Levels 1..L go down (pooling between levels 1..L-2 in RSU-L; dilations 1, 2, 4, ... in RSU-LF),
    levels L-1..1 come back up, each decoder conv taking the concatenated skip.
    """

    def __init__(self, height: int, in_ch: int, mid_ch: int, out_ch: int, dilated: bool) -> None:
        super().__init__()
        self.height, self.dilated = height, dilated
        for conv in rsu_convs(height, in_ch, mid_ch, out_ch, dilated):
            setattr(self, conv.name, REBNCONV(conv.in_ch, conv.out_ch, conv.dilation))
        if not dilated:
            for i in range(1, height - 1):
                setattr(self, f"pool{i}", _pool())

    def forward(self, x):
        hxin = self.rebnconvin(x)
        skips = []
        hx = hxin
        for i in range(1, self.height):
            hx = getattr(self, f"rebnconv{i}")(hx)
            skips.append(hx)
            if not self.dilated and i <= self.height - 2:
                hx = getattr(self, f"pool{i}")(hx)
        hx = getattr(self, f"rebnconv{self.height}")(hx)
        for i in range(self.height - 1, 0, -1):
            skip = skips[i - 1]
            if not self.dilated and i < self.height - 1:
                hx = _upsample_like(hx, skip)
            hx = getattr(self, f"rebnconv{i}d")(torch.cat((hx, skip), 1))
        return hx + hxin


class U2Net(nn.Module):
    """U-2-Net. ``forward`` returns the seven sigmoid maps (d0 fused, then d1..d6), or only d0
    when ``fused_only`` is set; there is no data-dependent control flow, so it exports as is."""

    def __init__(self, config: tuple[Stage, ...], *, fused_only: bool = False) -> None:
        super().__init__()
        self.fused_only = fused_only
        encoder, decoder = config[:6], config[6:]
        for i, stage in enumerate(encoder):
            setattr(self, stage.name, RSU(*stage[1:]))
            if i < 5:
                setattr(self, f"pool{i + 1}{i + 2}", _pool())
        for stage in decoder:
            setattr(self, stage.name, RSU(*stage[1:]))
        for k, channels in side_channels(config).items():
            setattr(self, f"side{k}", nn.Conv2d(channels, 1, 3, padding=1))
        self.outconv = nn.Conv2d(6, 1, 1)

    def forward(self, x):
        if self.fused_only:
            return torch.sigmoid(self.logits(x)[0])
        return tuple(torch.sigmoid(d) for d in self.logits(x))

    def logits(self, x):
        """The seven maps before the sigmoid (d0 fused, then d1..d6): what training takes its loss on,
        since BCE on logits is the same objective as BCE on the sigmoid, without its overflow."""
        encoded = []
        hx = x
        for i in range(1, 7):
            if i > 1:
                hx = getattr(self, f"pool{i - 1}{i}")(hx)
            hx = getattr(self, f"stage{i}")(hx)
            encoded.append(hx)
        decoded = {6: hx}
        for k in range(5, 0, -1):
            skip = encoded[k - 1]
            hx = getattr(self, f"stage{k}d")(torch.cat((_upsample_like(hx, skip), skip), 1))
            decoded[k] = hx
        d1 = self.side1(decoded[1])
        sides = [d1] + [_upsample_like(getattr(self, f"side{k}")(decoded[k]), d1) for k in range(2, 7)]
        return (self.outconv(torch.cat(sides, 1)), *sides)

    @property
    def arch(self) -> str:
        return "u2net" if self.stage1.rebnconv1.conv_s1.out_channels == 32 else "u2netp"

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load an official or u2edge state dict; a ``module.`` prefix (DataParallel) is dropped,
        and a checkpoint of the other architecture is refused with one clear line."""
        state = OrderedDict((k[7:] if k.startswith("module.") else k, v) for k, v in state_dict.items())
        _check_shapes(self.arch, {k: tuple(v.shape) for k, v in state.items()}, "checkpoint")
        for key, value in self.state_dict().items():
            if key.endswith("num_batches_tracked"):
                state.setdefault(key, torch.zeros_like(value))
        return super().load_state_dict(state, strict=strict, assign=assign)


def _trainable(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    return {k: v for k, v in shapes.items() if not k.endswith("num_batches_tracked")}


def _check_shapes(arch: str, got: dict[str, tuple[int, ...]], what: str) -> None:
    """Raise WeightsError unless ``got`` (parameter name -> shape) is ``arch``'s; checkpoints saved
    before BatchNorm tracked its batch count (no ``num_batches_tracked``) are accepted."""
    want = _trainable(state_dict_shapes(arch))
    got = _trainable(got)
    if got == want:
        return
    for other in CONFIGS:
        if other != arch and got == _trainable(state_dict_shapes(other)):
            raise wrong_arch_error(arch, other, what)
    missing = sorted(set(want) - set(got))
    unexpected = sorted(set(got) - set(want))
    wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    detail = "; ".join(f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} ({len(keys)})"
                       for label, keys in (("missing", missing), ("unexpected", unexpected),
                                           ("wrong shape", wrong)) if keys)
    raise WeightsError(f"this {what} is not a {arch} state dict ({detail})")


def u2net(*, weights: str | os.PathLike | None = None, fused_only: bool = False) -> U2Net:
    """The full U-2-Net (44,009,869 parameters). ``weights``: None (random), ``"official"`` (the
    official U-2-Net ONNX, fetched once into the user cache by ``u2edge.weights.default_onnx``), or
    a weights file (official ``u2net.pth`` or ``u2net_human_seg.pth``, ONNX, or u2edge checkpoint)."""
    return _build("u2net", weights, fused_only)


def u2netp(*, weights: str | os.PathLike | None = None, fused_only: bool = False) -> U2Net:
    """U-2-NetP (1,131,181 parameters). ``weights``: None (random), ``"official"`` (the official
    U2-NetP ONNX, fetched once into the user cache), or a weights file."""
    return _build("u2netp", weights, fused_only)


def _build(arch: str, weights, fused_only: bool) -> U2Net:
    model = U2Net(CONFIGS[arch], fused_only=fused_only)
    if weights == "official":
        weights = default_onnx(arch)
    if weights is not None:
        load_weights(model, weights)
    return model.eval()


def load_weights(model: U2Net, path: str | os.PathLike) -> U2Net:
    """Load an official ``.pth``, a u2edge checkpoint, or a BatchNorm-folded U-2-Net ONNX into ``model``."""
    path = _existing(path)
    if path.suffix.lower() == ".onnx":
        from .onnx_weights import import_onnx_weights

        return import_onnx_weights(model, path)
    arch, state = _read_checkpoint(path)
    if arch is not None and arch != model.arch:
        raise wrong_arch_error(model.arch, arch, "checkpoint")
    model.load_state_dict(state)
    return model


def from_file(path: str | os.PathLike, *, fused_only: bool = False) -> U2Net:
    """Build whichever architecture a weights file holds and load it."""
    path = _existing(path)
    if path.suffix.lower() == ".onnx":
        from .onnx_weights import onnx_arch

        arch = onnx_arch(path)
    else:
        arch = _read_checkpoint(path)[0] or "u2netp"  # unknown layouts fail in load_state_dict
    return _build(arch, path, fused_only)


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    return path


def load_pth(path: Path):
    """What a ``.pth`` holds, on the CPU, loaded without running code; one WeightsError line if
    it cannot be read."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged archive
        raise WeightsError(f"cannot read {path} as a PyTorch checkpoint ({type(exc).__name__}); "
                           "the file is corrupt or not a .pth") from exc


def _read_checkpoint(path: Path) -> tuple[str | None, dict]:
    """(architecture if known, state dict) of an official or u2edge ``.pth``."""
    ckpt = load_pth(path)
    arch = None
    if isinstance(ckpt, dict) and ckpt.get("format") == "u2edge":
        arch, ckpt = ckpt.get("arch"), ckpt.get("state_dict")
    if not isinstance(ckpt, dict) or not ckpt or not all(hasattr(v, "shape") for v in ckpt.values()):
        raise WeightsError(f"{path} holds a {type(ckpt).__name__}, not a U-2-Net state dict")
    if arch is None:
        key = next((k for k in ckpt if k.endswith("stage1.rebnconv1.conv_s1.weight")), None)
        arch = {32: "u2net", 16: "u2netp"}.get(ckpt[key].shape[0]) if key else None
    return arch, ckpt


def save_checkpoint(model: U2Net, path: str | os.PathLike, *, train: dict | None = None) -> None:
    """Save a u2edge checkpoint: the state dict (on the CPU) plus the architecture, written
    atomically. ``train`` is what ``u2edge train --resume`` needs to continue (optimizer, epoch,
    history); loading the weights ignores it."""
    state = OrderedDict((k, v.detach().cpu()) for k, v in model.state_dict().items())
    ckpt = {"format": "u2edge", "arch": model.arch, "state_dict": state}
    if train is not None:
        ckpt["train"] = train
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    write_bytes_atomic(path, buffer.getvalue())
