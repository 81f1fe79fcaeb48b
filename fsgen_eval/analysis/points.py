"""The points a scaling fit is made of: one per (collaborative run, task), with the pair's sizes and the rate
under the convention its method defines.

Which rate: FS-GEN counts a proxy-tuning handoff against the *untuned base* small model's greedy token
(``base_collaboration_rate``), every other method's against System 1's (``collaboration_rate``); a point
carries the one its method defines, named in ``rate_field``, so a proxy group is fitted on the paper's quantity.

Which runs: never a run that never calls System 2 (``router=never``: System 1 alone, or a replaying sweep's
internal System 2 run with small = large), whatever the router filter — they have no collaboration to fit.
"""

from __future__ import annotations

from typing import Any

RATE_BY_METHOD = {"proxy": "base_collaboration_rate"}  # every other method: collaboration_rate


def method_label(method: Any, variant: Any = None) -> str:
    """``method`` or ``method[variant]``: how tables, legends and fit groups name a method (a method with
    published variants, e.g. ``contrastive[fsgen]``, is never shown without the one it ran)."""
    return str(method) if variant is None else f"{method}[{variant}]"


def rate_field(method: str | None) -> str:
    """The summary field holding the collaboration rate as ``method`` defines it."""
    return RATE_BY_METHOD.get(method or "", "collaboration_rate")


def is_collaborative(fsgen: Any) -> bool:
    """False for a run with no collaboration to fit: router ``never`` or small = large (System 2 alone)."""
    return fsgen.router != "never" and fsgen.small != fsgen.large


def fit_points(runs: list[Any], params: Any, router: str) -> list[dict[str, Any]]:
    """One point per (collaborative run, task), runs filtered by ``router`` (``any`` keeps every
    collaborative one): sizes from ``params`` (a ``ParamTable``), the rate from ``config['fsgen']`` under
    :func:`rate_field`, and the run's settings (``Run.settings``: method, router, threshold, dtype, few-shot,
    batch size in half precision) so that a fit never mixes runs that differ in one of them.
    Raises ``ValueError`` naming the run when its rate or a model's size is missing."""
    rows = []
    for run in runs:
        f = run.fsgen
        if not is_collaborative(f) or (router != "any" and f.router != router):
            continue
        per_task = f.per_task or {task: f.summary for task in run.results}
        field = rate_field(f.method)
        for task, summary in per_task.items():
            rate = (summary or {}).get(field)
            if rate is None:
                raise ValueError(f"{run.path}: no {field} for task {task!r} in config['fsgen']")
            try:
                sizes = {"small_params": params.get(f.small), "large_params": params.get(f.large)}
            except ValueError as err:
                raise ValueError(f"{run.path}: {err}") from None
            rows.append({**run.settings(task), "small": f.small, "large": f.large, **sizes,
                         "collaboration_rate": float(rate), "rate_field": field})
    return rows
