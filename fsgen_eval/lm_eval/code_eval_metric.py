"""``code_eval`` as an ``evaluate`` metric script: fsgen_eval's sandboxed pass@k under the hub metric's name.

Not imported by fsgen_eval itself: ``fsgen-eval offline-cache`` copies this file into evaluate's module cache
(:func:`fsgen_eval.lm_eval.offline.cache_code_eval`), where an offline ``evaluate.load("code_eval")`` (lm-eval's
``mbpp`` task calls it) finds it by evaluate's own rules. Same inputs and return value as the hub's metric:
``compute(predictions=[[candidate, ...], ...], references=[tests, ...], k=[1, ...])`` returns
``({"pass@k": ...}, {problem: [(candidate, result), ...]})``; the programs run contained
(:mod:`fsgen_eval.lm_eval.sandbox`) and only with ``HF_ALLOW_CODE_EVAL=1``.
"""

import datasets
import evaluate

from fsgen_eval.lm_eval.code_eval import CodeEval


class SandboxedCodeEval(evaluate.Metric):
    """pass@k of generated programs against their tests, each run in fsgen_eval's sandbox."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="pass@k of generated Python programs, each run with its tests in fsgen_eval's sandbox",
            citation="",
            inputs_description="predictions: list of candidate programs per problem; references: each problem's "
                               "test code; k: the pass@k to report",
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("string")),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, k=(1, 10, 100), num_workers=4, timeout=3.0):
        return CodeEval().compute(predictions, references, k=k, num_workers=num_workers, timeout=timeout)
