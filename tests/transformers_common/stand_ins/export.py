"""Stand-in for transformers' tests/exporters/test_export.py (not in the source distribution): the export tests are
transformers' own (torch.export of its model zoo), so `ExportTesterMixin` adds none here."""


class ExportTesterMixin:
    pass
