"""The architecture tables, without torch."""

import pytest

from conftest import DATA
from u2edge.config import CONFIGS, arch_of_conv_shapes, conv_layout, conv_shapes, state_dict_shapes


def test_stage_tables_match_the_paper():
    u2net = {s.name: (s.height, s.in_ch, s.mid_ch, s.out_ch, s.dilated) for s in CONFIGS["u2net"]}
    assert u2net["stage1"] == (7, 3, 32, 64, False)
    assert u2net["stage4"] == (4, 256, 128, 512, False)
    assert u2net["stage6"] == (4, 512, 256, 512, True)
    assert u2net["stage5d"] == (4, 1024, 256, 512, True)
    assert u2net["stage3d"] == (5, 512, 64, 128, False)
    assert u2net["stage1d"] == (7, 128, 16, 64, False)
    assert all(s.mid_ch == 16 and s.out_ch == 64 for s in CONFIGS["u2netp"])


def test_conv_layout_counts_and_dilations():
    for arch in CONFIGS:
        convs = conv_layout(arch)
        assert len(convs) == 119  # 112 RSU convs + 6 side convs + outconv
        stage5 = {c.name.split(".")[1]: c.dilation for c in convs if c.name.startswith("stage5.")}
        assert stage5 == {"rebnconvin": 1, "rebnconv1": 1, "rebnconv2": 2, "rebnconv3": 4, "rebnconv4": 8,
                          "rebnconv3d": 4, "rebnconv2d": 2, "rebnconv1d": 1}
        stage1 = {c.name.split(".")[1]: c.dilation for c in convs if c.name.startswith("stage1.")}
        assert stage1["rebnconv7"] == 2 and set(stage1.values()) == {1, 2}


def test_arch_is_recognised_from_conv_shapes():
    assert arch_of_conv_shapes(conv_shapes("u2net")) == "u2net"
    assert arch_of_conv_shapes(conv_shapes("u2netp")) == "u2netp"
    assert arch_of_conv_shapes(conv_shapes("u2netp")[:-1]) is None


@pytest.mark.parametrize("arch", ["u2net", "u2netp"])
def test_state_dict_layout_equals_the_official_checkpoint(arch):
    want = [tuple(line.split("\t")) for line in (DATA / f"{arch}_state_dict_keys.txt").read_text().splitlines()]
    assert [(k, str(list(v))) for k, v in state_dict_shapes(arch).items()] == want
