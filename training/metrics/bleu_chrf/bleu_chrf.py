"""Corpus BLEU and chrF with sacreBLEU, as a local `evaluate` module (evaluate.load of a Hub name needs the network).

evaluate.load("training/metrics/bleu_chrf").compute(predictions=[...], references=[...])
-> {"bleu": float, "chrf": float}   (0-100, sacreBLEU's defaults: 13a tokenisation, one reference per line)
"""

import datasets
import evaluate
import sacrebleu


class BleuChrf(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="Post, 2018. A Call for Clarity in Reporting BLEU Scores.",
            inputs_description="predictions: list of str; references: list of str (one per prediction)",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        return {
            "bleu": sacrebleu.corpus_bleu(predictions, [references]).score,
            "chrf": sacrebleu.corpus_chrf(predictions, [references]).score,
        }
