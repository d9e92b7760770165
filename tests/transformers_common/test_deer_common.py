"""transformers' own common model tests (`ModelTesterMixin`, `ConfigTester`) against DEER, as every model inside
transformers passes them: `make test-transformers` assembles them from the installed version's source distribution
(fetch.py) and runs this file with DEER_TRANSFORMERS_TESTS set to them. Without it the file is skipped.

A test that does not apply to a non-autoregressive model is skipped here with its reason.
"""

import os
import sys
import unittest

import pytest
import torch
from conftest import BOS, EOS, tiny_config


COMMON = os.environ.get("DEER_TRANSFORMERS_TESTS")
if not COMMON:
    pytest.skip("transformers' common tests run with `make test-transformers`", allow_module_level=True)
sys.path.insert(0, COMMON)

from tf_common.test_configuration_common import ConfigTester  # noqa: E402
from tf_common.test_modeling_common import ModelTesterMixin, ids_tensor  # noqa: E402
from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES  # noqa: E402

from modeling_deer import DeerConfig, DeerForConditionalGeneration, DeerModel  # noqa: E402


class DeerModelTester:
    """A tiny DEER (2 layers, hidden 32) and a batch of `bos ... eos` sources; labels `bos ... eos` for training."""

    def __init__(
        self,
        parent,
        batch_size=3,
        seq_length=7,
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        is_training=True,
    ):
        self.parent = parent
        self.batch_size, self.seq_length, self.vocab_size = batch_size, seq_length, vocab_size
        self.hidden_size, self.num_hidden_layers = hidden_size, num_hidden_layers
        self.num_attention_heads, self.intermediate_size = num_attention_heads, intermediate_size
        self.is_training = is_training

    def get_config(self) -> DeerConfig:
        """The tests' tiny config (conftest.py: special ids 0-3, words from 4 up) at this tester's sizes."""
        return tiny_config(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
        )

    def rows(self, length: int) -> torch.Tensor:
        ids = ids_tensor([self.batch_size, length], self.vocab_size - 4) + 4
        ids[:, 0], ids[:, -1] = BOS, EOS
        return ids

    def prepare_config_and_inputs_for_common(self):
        input_ids = self.rows(self.seq_length)
        self.labels = self.rows(self.seq_length - 2)  # the targets of this batch, for the tests that train
        return self.get_config(), {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


class DeerModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (DeerModel, DeerForConditionalGeneration)
    # DEER's generate is its own (a draft and refinement rounds), not GenerationMixin's search strategies: it has
    # its own tests (tests/test_generation.py), and GenerationTesterMixin's do not apply.
    all_generative_model_classes = ()

    @classmethod
    def setUpClass(cls):
        # A model inside transformers has its base class in this table; the common tests read it to tell the base
        # model (no loss, not trained by `test_training`) from the heads.
        MODEL_MAPPING_NAMES["deer"] = "DeerModel"

    @classmethod
    def tearDownClass(cls):
        MODEL_MAPPING_NAMES.pop("deer", None)

    def setUp(self):
        self.model_tester = DeerModelTester(self)
        self.config_tester = ConfigTester(self, config_class=DeerConfig, hidden_size=48)

    def test_config(self):
        self.config_tester.run_common_tests()

    @unittest.skip(
        "DEER refuses a config whose special ids lie outside its vocabulary; without them its defaults are BERT's ids "
        "(bos 101 of 30,522), outside this tester's 99 words"
    )
    def test_model_forward_default_config_values(self):
        pass

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs = super()._prepare_for_class(inputs_dict, model_class, return_labels=False)
        if return_labels and model_class is DeerForConditionalGeneration:
            inputs["labels"] = self.model_tester.labels.to(inputs["input_ids"].device)
        return inputs
