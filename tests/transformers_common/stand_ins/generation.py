"""Stand-in for transformers' tests/generation/test_utils.py (not in the source distribution). Its
`GenerationTesterMixin` runs `GenerationMixin.generate`'s search strategies (beams, sampling, caches), which DEER's
own `generate` does not implement; DEER's tester does not inherit it, and its decoding has its own tests."""


class GenerationTesterMixin:
    pass
