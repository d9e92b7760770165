import pytest
from conftest import tiny_config

from modeling_deer import DeerConfig, DeerGenerationConfig


@pytest.mark.parametrize(
    "field, value",
    [
        ("upsample_ratio", 0.5),
        ("upsample_ratio", float("nan")),
        ("max_insertions", 1),
        ("max_insertions", "many"),
        ("hidden_size", 30),  # not a multiple of 4 heads
        ("num_hidden_layers", 0),
        ("hidden_dropout_prob", 1.0),
        ("ctc_loss_weight", -1.0),
        ("word_label_smoothing", 1.0),
        ("glancing_ratio", 1.5),
        ("sparsity_levels", [0.5, 1.0]),
        ("sparsity_levels", [-0.1]),
        ("placeholder_token_id", 0),  # same as pad
        ("bos_token_id", 40),  # outside the vocabulary
        ("position_offset", 63),
        ("layer_num_heads", [4]),
        ("layer_intermediate_sizes", [64, 65]),
    ],
)
def test_invalid_values_raise_value_error_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        tiny_config(**{field: value})


def test_round_trip(tmp_path):
    config = tiny_config(upsample_ratio=3.0, sparsity_levels=[0.0, 0.5], glancing_ratio=0.3)
    config.save_pretrained(tmp_path)
    loaded = DeerConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.layer_num_heads == [4, 4] and loaded.layer_intermediate_sizes == [64, 64]
    assert loaded.max_sequence_length == 64


def test_no_generation_parameters_in_model_config():
    keys = set(tiny_config().to_dict())
    for name in ("max_length", "num_beams", "max_new_tokens", "max_iterations", "eos_penalty", "do_sample"):
        assert name not in keys


def test_draft_length_is_upsampled_and_capped():
    import torch

    from modeling_deer import DeerForConditionalGeneration

    model = DeerForConditionalGeneration(tiny_config(upsample_ratio=2.5))
    # ceil(7.5) = 8; at least bos and eos; the position table holds 64
    assert model.draft_lengths(torch.tensor([3, 1, 40])).tolist() == [8, 3, 64]
    model = DeerForConditionalGeneration(tiny_config(upsample_ratio=1.5))
    assert model.draft_lengths(torch.tensor([10, 3, 1])).tolist() == [15, 5, 2]  # ceil(4.5) = 5


def test_generation_config_validates_and_round_trips(tmp_path):
    with pytest.raises(ValueError, match="max_iterations"):
        DeerGenerationConfig(max_iterations=-1)
    with pytest.raises(ValueError, match="num_beams"):
        DeerGenerationConfig(num_beams=4)
    config = DeerGenerationConfig(max_iterations=3, eos_penalty=1.5)
    config.save_pretrained(tmp_path)
    loaded = DeerGenerationConfig.from_pretrained(tmp_path)
    assert (loaded.max_iterations, loaded.eos_penalty, loaded.stop_when_unchanged) == (3, 1.5, True)


def test_a_bad_value_assigned_later_is_refused_by_validate_and_by_save_pretrained(tmp_path):
    config = tiny_config()
    config.glancing_ratio = 1.5
    with pytest.raises(ValueError, match=r"DeerConfig.glancing_ratio = 1.5 is invalid"):
        config.validate()
    with pytest.raises(ValueError, match=r"DeerConfig.glancing_ratio = 1.5 is invalid"):
        config.save_pretrained(tmp_path)
    assert not (tmp_path / "config.json").exists()


def test_the_decoding_knobs_have_one_definition():
    """DeerGenerationConfig defines the knobs; the pipeline's options and the commands' flags derive from it (the
    commands read it from the source, without importing torch)."""
    from modeling_deer.pipeline_deer import GENERATE_OPTIONS
    from training import cli

    assert cli.REFINEMENTS == DeerGenerationConfig.REFINEMENTS and cli.KNOBS == DeerGenerationConfig.KNOBS
    assert cli.DECODING == ("max_iterations", "refinement", *DeerGenerationConfig.KNOBS)
    assert set(GENERATE_OPTIONS) == set(DeerGenerationConfig.OPTIONS) - {
        "return_dict_in_generate",
        "output_history",
    } | {"sparsity"}
    assert set(DeerGenerationConfig.KNOBS) <= set(DeerGenerationConfig().to_dict())
