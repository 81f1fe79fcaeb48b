"""One DecodeConfig per run; each request's decoding settings derive from it (``for_request``)."""

from __future__ import annotations

import pytest

from fsgen_eval.engine.config import make_config


def test_for_request_keeps_the_run_and_checks_the_request():
    run = make_config("contrastive", "entropy", threshold=1.5, alpha=0.2)
    route = run.route
    req = run.for_request(max_new_tokens=7, temperature=0.5, top_p=0.9, top_k=3, stop=["\n\n", "Q:"])
    assert (req.method, req.router, req.params, req.router_params) == (run.method, run.router, run.params,
                                                                        run.router_params)
    assert (req.max_new_tokens, req.temperature, req.top_p, req.top_k, req.stop) == (7, 0.5, 0.9, 3, ("\n\n", "Q:"))
    assert req.route is route  # the router built once per run, not per batch
    assert run.max_new_tokens == 64 and run.stop == ()  # the run's own config is unchanged (frozen)
    assert run.for_request(stop="x").max_new_tokens == run.max_new_tokens
    for bad, message in ((dict(temperature=-1), "temperature"), (dict(top_p=0), "top_p"), (dict(top_k=-2), "top_k"),
                         (dict(max_new_tokens=0), "max_new_tokens"), (dict(stop=["ok", ""]), "stop strings")):
        with pytest.raises(ValueError, match=message):
            run.for_request(**bad)


def test_for_request_equals_make_config_with_the_same_settings():
    settings = dict(max_new_tokens=5, temperature=0.7, top_p=0.8, top_k=4, stop=("a",), seed=3)
    direct = make_config("speculative", "max_prob", threshold=0.4, num_draft=3, **settings)
    derived = make_config("speculative", "max_prob", threshold=0.4, num_draft=3).for_request(**settings)
    assert direct == derived
