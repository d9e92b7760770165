"""ROUGE-L F1 (mean over sentences, 0-100) with Google's rouge-score, as a local `evaluate` module.

evaluate.load("training/metrics/rouge_l").compute(predictions=[...], references=[...]) -> {"rougeL": float}
"""

import datasets
import evaluate
from rouge_score import rouge_scorer


class RougeL(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="Lin, 2004. ROUGE: A Package for Automatic Evaluation of Summaries.",
            inputs_description="predictions: list of str; references: list of str (one per prediction)",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        scores = [
            scorer.score(reference, prediction)["rougeL"].fmeasure
            for prediction, reference in zip(predictions, references)
        ]
        return {"rougeL": 100 * sum(scores) / max(len(scores), 1)}
