"""Q/DQ insertion and calibration on the real U2-NetP graph."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="quantization needs onnx: pip install -e '.[export]'")
from onnx import numpy_helper  # noqa: E402

from u2edge.export import export_onnx, quantize  # noqa: E402
from u2edge.processing import Preprocessing, preprocess  # noqa: E402


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    return onnx.load(str(export_onnx(tmp_path_factory.mktemp("q") / "fp32.onnx").path))


@pytest.fixture(scope="module")
def ranges(fp32, photos):
    return quantize.calibrate(fp32, [preprocess(photos[n], Preprocessing())[None] for n in ("chelsea.png",
                                                                                              "coffee.png")], "minmax")


def test_calibration_covers_every_conv_input(fp32, ranges):
    inputs = {n.input[0] for n in quantize.conv_nodes(fp32)}
    assert set(ranges) == inputs
    assert all(v > 0 for v in ranges.values())
    with pytest.raises(ValueError, match="choose one of minmax"):
        quantize.calibrate(fp32, [], "random")


def test_qdq_scheme(fp32, ranges):
    keep = [quantize.conv_nodes(fp32)[5].name]
    q = quantize.quantize(fp32, ranges, keep_float=keep)
    onnx.checker.check_model(q)
    produced = {o: n for n in q.graph.node for o in n.output}
    inits = {t.name: t for t in q.graph.initializer}
    convs = quantize.conv_nodes(q)
    tail = quantize.tail_convs(q)
    quantized = 0
    for conv in convs:
        x, w = produced.get(conv.input[0]), produced.get(conv.input[1])
        if conv.name in tail or conv.name in keep:
            assert x is None or x.op_type != "DequantizeLinear", conv.name
            assert conv.input[1] in inits  # float weights
            continue
        quantized += 1
        assert x.op_type == "DequantizeLinear" and w.op_type == "DequantizeLinear"
        weight = numpy_helper.to_array(inits[w.input[0]])
        scale = numpy_helper.to_array(inits[w.input[1]])
        assert weight.dtype == np.int8 and scale.shape == (weight.shape[0],)  # per-channel
        assert {a.name: a.i for a in w.attribute}["axis"] == 0
        assert numpy_helper.to_array(inits[x.input[2]]).item() == 0  # symmetric
        assert conv.input[2] in inits and numpy_helper.to_array(inits[conv.input[2]]).dtype == np.float32  # bias float
    assert quantized == 112 - 1
    assert not any(n.op_type == "QuantizeLinear" and n.output[0] in {s.input[0] for s in q.graph.node
                                                                   if s.op_type == "Sigmoid"} for n in q.graph.node)


def test_kl_threshold_clips_a_long_tail_and_keeps_a_uniform_range():
    rng = np.random.default_rng(0)
    uniform = rng.uniform(0, 10, 100_000)
    assert quantize._kl_threshold(uniform, 10.0) > 9.0
    tailed = np.concatenate([rng.exponential(1.0, 100_000), [500.0]])
    assert quantize._kl_threshold(tailed, 500.0) < 100.0


def test_cpu_scheme_makes_relu_fed_activations_unsigned(fp32, ranges):
    convs = quantize.conv_nodes(fp32)
    positive = quantize.nonnegative_inputs(fp32)
    # all but the first conv (the normalized image) and outconv (the side logits) follow a ReLU
    assert positive == {c.input[0] for c in convs[1:-1]}
    q = quantize.quantize(fp32, ranges, unsigned=positive)
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    for node in (n for n in q.graph.node if n.op_type == "QuantizeLinear"):
        scale, zero = inits[node.input[1]], inits[node.input[2]]
        assert zero.item() == 0
        if node.input[0] in positive:
            assert zero.dtype == np.uint8 and np.isclose(scale, ranges[node.input[0]] / 255)
        else:
            assert zero.dtype == np.int8 and np.isclose(scale, ranges[node.input[0]] / 127)


def test_unsigned_activations_are_never_negative_on_a_photo(fp32, photos):
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(fp32)
    first = quantize.conv_nodes(fp32)[0].input[0]
    names = sorted(quantize.nonnegative_inputs(fp32))
    for name in names:
        probe.graph.output.add().name = name
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    x = preprocess(photos["astronaut.png"], Preprocessing())[None]
    values = dict(zip(names, session.run(names, {first: x})))
    assert min(float(v.min()) for v in values.values()) >= 0.0
    assert x.min() < 0  # while the image input is signed
