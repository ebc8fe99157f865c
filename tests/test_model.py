"""The PyTorch model: official keys, shapes and parameter counts, checkpoint loading, and the
golden tests against the official U2-NetP and U-2-Net ONNX files on real photos."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import DATA, PHOTOS, official_input
from u2edge.errors import WeightsError
from u2edge.weights import WEIGHTS

torch = pytest.importorskip("torch", reason="PyTorch is needed: pip install torch==2.13.0 -e '.[export]'")
from u2edge.model import from_file, load_weights, save_checkpoint, u2net, u2netp  # noqa: E402

pytestmark = pytest.mark.torch


def reference_keys(arch: str) -> list[tuple[str, str]]:
    return [tuple(line.split("\t")) for line in (DATA / f"{arch}_state_dict_keys.txt").read_text().splitlines()]


@pytest.fixture(scope="module")
def u2net_state() -> dict:
    return u2net().state_dict()


@pytest.fixture(scope="session")
def official_u2net_model(official_u2net_onnx):
    """The official U-2-Net by name: fetched into (here: found in) the user cache and imported."""
    return u2net(weights="official")


@pytest.mark.parametrize("arch, build", [("u2net", u2net), ("u2netp", u2netp)])
def test_state_dict_equals_the_official_keys_and_shapes(arch, build):
    model = build()
    got = [(k, str(list(v.shape))) for k, v in model.state_dict().items()]
    assert len(got) == 798
    assert got == reference_keys(arch)
    assert sum(p.numel() for p in model.parameters()) == WEIGHTS[arch].num_params
    assert model.arch == arch


def test_weights_table_matches_the_models():
    assert WEIGHTS["u2net"].num_params == 44_009_869
    assert WEIGHTS["u2netp"].num_params == 1_131_181
    for name, weights in WEIGHTS.items():
        assert weights.arch == name and weights.preprocessing.imgsz == 320
        assert weights.wheel.member == f"rembg/{name}.onnx" and weights.size > weights.wheel.size > 0
        assert 0.9 < weights.ecssd_max_f < 1 and 0 < weights.ecssd_mae < 0.1


def test_golden_official_weights_reproduce_the_official_onnx(official_model, official_onnx, photos):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(official_onnx), providers=["CPUExecutionProvider"])
    worst = 0.0
    for name in PHOTOS:
        x = official_input(photos[name])
        want = session.run(None, {session.get_inputs()[0].name: x})
        with torch.inference_mode():
            got = official_model(torch.from_numpy(x))
        assert len(got) == 7
        for g, w in zip(got, want):
            worst = max(worst, float(np.abs(g.numpy() - w).max()))
    assert worst <= 1e-4, f"max abs error {worst:.2e} over 7 outputs on {len(PHOTOS)} photos"


@pytest.mark.slow
def test_golden_official_u2net_reproduces_the_official_onnx(official_u2net_model, official_u2net_onnx, photos):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(official_u2net_onnx), providers=["CPUExecutionProvider"])
    inputs = [official_input(photos[name]) for name in PHOTOS]
    # the official graph has a fixed batch of 1; the PyTorch model takes all five photos at once
    want = np.concatenate([session.run(None, {session.get_inputs()[0].name: x})[0] for x in inputs])
    with torch.inference_mode():
        got = official_u2net_model(torch.from_numpy(np.concatenate(inputs)))
    assert len(got) == 7
    worst = float(np.abs(got[0].numpy() - want).max())
    assert worst <= 1e-4, f"max abs error {worst:.2e} of the fused output d0 on {len(PHOTOS)} photos"


def test_fused_only_returns_d0(official_model, photos):
    x = torch.from_numpy(official_input(photos["coffee.png"]))
    with torch.inference_mode():
        all_maps = official_model(x)
        official_model.fused_only = True
        try:
            fused = official_model(x)
        finally:
            official_model.fused_only = False
    assert torch.equal(fused, all_maps[0])


def test_dataparallel_prefix_and_human_seg_style_checkpoints_load(tmp_path, u2net_state):
    # u2net_human_seg.pth is a U2NET state dict saved from DataParallel
    path = tmp_path / "u2net_human_seg.pth"
    torch.save({f"module.{k}": v for k, v in u2net_state.items()}, path)
    model = from_file(path)
    assert model.arch == "u2net"
    assert torch.equal(model.stage3.rebnconv2.conv_s1.weight, u2net_state["stage3.rebnconv2.conv_s1.weight"])


def test_checkpoints_without_num_batches_tracked_load(tmp_path):
    state = {k: v for k, v in u2netp().state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save(state, path)
    assert from_file(path).arch == "u2netp"


def test_wrong_architecture_is_named(tmp_path, u2net_state, official_onnx, official_u2net_onnx):
    path = tmp_path / "u2net.pth"
    torch.save(u2net_state, path)
    with pytest.raises(WeightsError, match="this is a U2NET checkpoint, you asked for u2netp"):
        u2netp(weights=path)
    with pytest.raises(WeightsError, match="this is a U2NETP ONNX, you asked for u2net"):
        u2net(weights=official_onnx)
    with pytest.raises(WeightsError, match="this is a U2NET ONNX, you asked for u2netp"):
        u2netp(weights=official_u2net_onnx)


def test_corrupt_and_foreign_files_are_refused(tmp_path):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(WeightsError, match="corrupt or not a .pth"):
        u2netp(weights=corrupt)
    foreign = tmp_path / "foreign.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, foreign)
    with pytest.raises(WeightsError, match="not a u2netp state dict"):
        u2netp(weights=foreign)
    with pytest.raises(WeightsError, match="not found"):
        u2netp(weights=tmp_path / "missing.pth")


def test_u2edge_checkpoint_round_trip(official_model, tmp_path):
    path = tmp_path / "ckpt.pth"
    save_checkpoint(official_model, path)
    loaded = load_weights(u2netp(), path)
    for (k, a), b in zip(official_model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(WeightsError, match="this is a U2NETP checkpoint, you asked for u2net"):
        u2net(weights=path)
