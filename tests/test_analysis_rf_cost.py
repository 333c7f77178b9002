"""The receptive-field recurrences, the layer language and the slides' 1x1 cost arithmetic."""

from __future__ import annotations

import pytest

from cnnlab.analysis.cost import conv_cost
from cnnlab.analysis.receptive import Window, output_size, parse_layers, receptive_fields
from cnnlab.errors import UsageError


def test_the_slides_example_two_strided_3x3_convolutions() -> None:
    first, second = receptive_fields(parse_layers("conv3s2p1,conv3s2p1"), size=224)
    assert (first.size, first.jump, first.receptive_field) == (112, 2, 3)
    assert (second.size, second.jump, second.receptive_field) == (56, 4, 7)


def test_layer_language_defaults_and_options() -> None:
    conv, pool, dilated = parse_layers("conv5, pool2, conv3d2p2s1")
    assert conv == Window("conv", 5, 1, 0, 1)
    assert pool == Window("pool", 2, 2, 0, 1)  # pooling strides by its kernel unless told
    assert dilated == Window("conv", 3, 1, 2, 2) and dilated.effective_kernel == 5
    assert dilated.spec() == "conv3s1p2d2"


def test_output_size_formula_and_lecture_simple_stack() -> None:
    # n_out = floor((n_in + 2p - k) / s) + 1: AlexNet's conv1 on 227 gives 55
    assert output_size(227, Window("conv", 11, 4)) == 55
    steps = receptive_fields(parse_layers("conv5,pool2,conv5,pool2"), size=28)
    assert [s.size for s in steps] == [24, 12, 8, 4]
    assert [s.receptive_field for s in steps] == [5, 6, 14, 16]
    assert [s.jump for s in steps] == [1, 2, 2, 4]


@pytest.mark.parametrize("bad", ["conv", "conv3x", "fc10", "conv3s0", "conv3,,pool2", "conv0"])
def test_malformed_layers_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_layers(bad)


def test_window_larger_than_input_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="needs an input of at least 5"):
        receptive_fields(parse_layers("conv5"), size=4)


def test_one_by_one_saving_of_lecture_11() -> None:
    comparison = conv_cost(192, 32, 5, 28, reduce=16)
    assert comparison.direct.mults == 5**2 * 28**2 * 192 * 32 == 120_422_400
    # the slide prints 12,433,648; the sum of its own two products is 12,443,648
    assert comparison.reduced_mults == 28**2 * 192 * 16 + 5**2 * 28**2 * 16 * 32 == 12_443_648
    assert comparison.ratio == pytest.approx(9.677, abs=1e-3)
    text = "\n".join(comparison.lines())
    assert "120,422,400" in text and "12,443,648" in text and "9.68x" in text


def test_case_study_saving_480_to_48() -> None:
    comparison = conv_cost(480, 48, 5, 14, reduce=16)
    assert round(comparison.direct.mults / 1e6, 1) == 112.9
    assert round(comparison.reduced_mults / 1e6, 1) == 5.3


@pytest.mark.parametrize("bad", [dict(in_chs=0), dict(kernel=-1), dict(reduce=0)])
def test_cost_rejects_non_positive_sizes(bad: dict) -> None:
    args = dict(in_chs=192, out_chs=32, kernel=5, size=28, reduce=16) | bad
    with pytest.raises(UsageError, match="greater than 0"):
        conv_cost(**args)
