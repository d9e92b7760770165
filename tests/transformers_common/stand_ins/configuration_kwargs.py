"""Stand-in for `config_common_kwargs` of transformers' tests/utils/test_configuration_utils.py (not in the source
distribution): the attributes every `PreTrainedConfig` takes, each set to a value other than its default, which
`ConfigTester.check_config_arguments_init` expects a config to keep."""

config_common_kwargs = {
    "return_dict": False,
    "output_hidden_states": True,
    "dtype": "float16",
    "chunk_size_feed_forward": 5,
    "architectures": ["BertModel"],
    "id2label": {0: "label"},
    "label2id": {"label": "0"},
    "problem_type": "regression",
}
