"""Extending the registries from outside the package: this module alone registers a new method with a new
parameter (``mix``, ``mix_weight``) and a new parametrised router that loads its weights from a file
(``linear``, ``router_weights``), and both run through ``generate``, ``lm_eval --model fsgen`` and
``fsgen-eval sweep`` without any other file knowing them.

In this process a fixture registers them (and removes them afterwards, so other tests see the built-ins
only); the lm-eval and sweep subprocesses get them through ``FSGEN_PLUGINS=<this file>:register``
(core/registry.py), which is why nothing at module level imports pytest's conftest helpers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor

from fsgen_eval.core import registry
from fsgen_eval.core.registry import REQUIRED, MethodSpec, Param, RouterSpec, number
from fsgen_eval.core.sampling import stats

REPO = Path(__file__).resolve().parents[1]
PLUGIN = f"{Path(__file__).resolve()}:register"


# ------------------------------------------------------------------------------- the extension itself
def mix(small: Tensor, large: Tensor, small_base: Tensor | None = None, mix_weight: float = 0.5) -> Tensor:
    """System 2's logits ``[B, V]`` = (1 − w)·log p_small + w·log p_large: w = 1 is the oracle, w = 0 System 1."""
    return (1 - mix_weight) * small + mix_weight * large


def _weights(value: object) -> str:
    """``router_weights``: a JSON file ``{"w": [3 numbers], "b": number}``; ``ValueError`` naming the key."""
    path = Path(str(value))
    try:
        obj = json.loads(path.read_text())
        ok = len(obj["w"]) == 3 and all(isinstance(x, (int, float)) for x in [*obj["w"], obj["b"]])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"router_weights: cannot read {path} ({type(err).__name__})") from None
    if not ok:
        raise ValueError(f"router_weights: {path} needs w (3 numbers) and b (a number)")
    return str(path)


def linear(router_weights: str):
    """A learned-router stand-in: call where w·[entropy, top-1 prob, margin] + b > 0 (weights from a file)."""
    obj = json.loads(Path(router_weights).read_text())
    w, b = torch.tensor(obj["w"], dtype=torch.float32), float(obj["b"])

    def route(small: Tensor) -> Tensor:  # [B, V] -> [B]
        feats = torch.stack(stats(small), -1)  # (B, 3)
        return feats @ w.to(feats) + b > 0

    return route


def register() -> None:
    registry.register_method(MethodSpec(
        "mix", mix, (Param("mix_weight", 0.5, number("mix_weight must be in [0, 1], got {v!r}", lambda v: 0 <= v <= 1),
                           "the large model's share of the log-probs"),),
        doc="geometric mix of System 1 and the large model"), replace=True)
    registry.register_router(RouterSpec(
        "linear", linear, (Param("router_weights", REQUIRED, _weights, "a JSON file of w and b"),),
        doc="w . [entropy, top1, margin] + b > 0"), replace=True)


@pytest.fixture()
def registered():
    register()
    yield
    registry.METHODS.remove("mix")
    registry.ROUTERS.remove("linear")


def weights_file(folder: Path, name: str, w: list[float], b: float) -> str:
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"w": w, "b": b}))
    return str(path)


# --------------------------------------------------------------------------------------- generate
PROMPTS = ["Question: What is 3 + 4? Answer:", "def add(a, b):", "The capital of"]


def test_generate_runs_the_new_method_and_router(pair, registered, tmp_path):
    from fsgen_eval import generate

    def run(**kw):
        return generate(pair, PROMPTS, max_new_tokens=12, **kw)

    calls = weights_file(tmp_path, "calls", [0, 0, 0], 1.0)
    # w = 1: the mix is the large model; a linear router whose b > 0 calls everywhere: the oracle itself
    full = run(method="mix", mix_weight=1.0, router="linear", router_weights=calls)
    oracle = run(method="oracle")
    assert full.token_ids == oracle.token_ids and full.summary["llm_call_rate"] == 1.0
    # w = 0: System 2 is System 1, so the output is System 1's and no call is a handoff
    small = run(method="mix", mix_weight=0.0, router="linear", router_weights=calls)
    assert small.token_ids == run(router="never").token_ids and small.summary["collaboration_rate"] == 0.0
    # weights on the entropy alone: the same calls as the entropy router at that threshold
    thr = float(sorted(oracle.traces[0]["s1_entropy"])[6]) - 1e-3
    ent_w = weights_file(tmp_path, "ent", [1, 0, 0], -thr)
    mixed = run(method="mix", mix_weight=1.0, router="linear", router_weights=ent_w)
    ent = run(method="oracle", router="entropy", threshold=thr)
    assert mixed.token_ids == ent.token_ids
    assert [t["llm_called"].tolist() for t in mixed.traces] == [t["llm_called"].tolist() for t in ent.traces]
    assert 0 < mixed.summary["llm_call_rate"] < 1
    # teacher forcing takes them too
    ll = __import__("fsgen_eval").loglikelihood(pair, [("The capital of", " France")], method="mix", mix_weight=1.0,
                                                 router="linear", router_weights=calls)
    assert ll.summary["llm_call_rate"] == 1.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="mix", mix_weight=2), "mix_weight must be in \\[0, 1\\], got 2"),
    (dict(method="mix", mix_weight="heavy"), "mix_weight must be in \\[0, 1\\], got 'heavy'"),
    (dict(method="oracle", mix_weight=0.5), "method 'oracle' does not use parameter\\(s\\) mix_weight"),
    (dict(router="linear"), "router 'linear' needs a router_weights"),
    (dict(router="linear", router_weights="/nonexistent.json"), "router_weights: cannot read /nonexistent.json"),
    (dict(router="always", router_weights="w.json"), "router 'always' does not use parameter\\(s\\) router_weights"),
])
def test_bad_extension_input_fails_naming_the_key(registered, kwargs, message):
    from fsgen_eval.engine.config import make_config

    with pytest.raises(ValueError, match=message):
        make_config(**kwargs)


def test_registration_refuses_clashing_parameter_names(registered):
    with pytest.raises(ValueError, match="parameter name\\(s\\) mix_weight belong to a method"):
        registry.register_router(RouterSpec("r2", linear, (Param("mix_weight", 1, float),)))
    with pytest.raises(ValueError, match="parameter name\\(s\\) temperature are reserved"):
        registry.register_method(MethodSpec("m2", mix, (Param("temperature", 1, float),)))
    with pytest.raises(ValueError, match="method 'mix' is already registered"):
        registry.register_method(MethodSpec("mix", mix))


def test_a_required_method_parameter_must_be_given():
    from fsgen_eval.engine.config import make_config

    registry.register_method(MethodSpec("needy", mix, (Param("mix_level", REQUIRED, float, "how much"),)))
    try:
        with pytest.raises(ValueError, match="method 'needy' needs a mix_level \\(how much\\)"):
            make_config(method="needy")
        assert make_config(method="needy", mix_level="0.5").params == {"mix_level": 0.5}
    finally:
        registry.METHODS.remove("needy")


def test_the_model_args_schema_comes_from_the_registries(registered):
    from fsgen_eval.lm_eval.model import FSGenLM

    names = FSGenLM.model_arg_names()
    assert {"threshold", "num_draft", "alpha", "beta", "contrastive_variant", "mix_weight", "router_weights"} <= set(names)
    assert names[:2] == ["small", "large"] and "params" not in names
    assert not set(names) - registry.RESERVED - set(registry.param_names())  # fixed keywords are reserved


# ------------------------------------------------------------------------ lm-eval and the sweep
def _env() -> dict[str, str]:
    from _lm_eval_helpers import DATASETS
    from conftest import skip_or_fail

    if not DATASETS.is_dir():
        skip_or_fail(f"offline datasets folder {DATASETS} is absent")
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
            registry.PLUGINS_ENV: PLUGIN}


@pytest.mark.slow
def test_lm_eval_runs_them_from_model_args(llama_pair, tmp_path):
    large, small = llama_pair
    calls = weights_file(tmp_path, "calls", [0, 0, 0], 1.0)
    args = f"small={small},large={large},method=mix,mix_weight=1.0,router=linear,router_weights={calls},device=cpu"
    cmd = [sys.executable, "-m", "fsgen_eval.cli", "run", "--model", "fsgen", "--model_args", args, "--tasks", "gsm8k",
           "--limit", "2", "--num_fewshot", "0", "--gen_kwargs", "max_gen_toks=6", "--output_path", str(tmp_path)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (results,) = (tmp_path / "llama-small__llama-large").glob("results_*.json")
    fsgen = json.loads(results.read_text())["config"]["fsgen"]
    assert (fsgen["method"], fsgen["router"]) == ("mix", "linear")
    assert fsgen["params"] == {"mix_weight": 1.0} and fsgen["router_params"] == {"router_weights": calls}
    assert fsgen["per_task"]["gsm8k"]["llm_call_rate"] == 1.0
    # an ill-typed parameter: one line naming it, before any model loads
    at = cmd.index("--model_args") + 1
    bad = [*cmd[:at], args.replace("mix_weight=1.0", "mix_weight=heavy"), *cmd[at + 1:]]
    proc = subprocess.run(bad, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "fsgen-eval run: error: mix_weight must be in [0, 1], got 'heavy'")  # the model's check, said by the CLI


@pytest.mark.slow
def test_sweep_runs_them(llama_pair, tmp_path):
    large, small = llama_pair
    family = tmp_path / "family.yaml"
    family.write_text(f"models:\n- {{name: small, hub_id: {small}, total_params: 100}}\n"
                      f"- {{name: large, hub_id: {large}, total_params: 200}}\n")
    calls = weights_file(tmp_path, "calls", [0, 0, 0], 1.0)
    cmd = [sys.executable, "-m", "fsgen_eval.cli", "sweep", "--family", str(family), "--methods", "mix:mix_weight=1",
           "--routers", f"linear:router_weights={calls}", "--tasks", "gsm8k", "--limit", "1",
           "--output-path", str(tmp_path / "sweep"), "--model-args-extra", "device=cpu",
           "--lm-eval-args", "--num_fewshot 0 --gen_kwargs max_gen_toks=4"]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "1 ran" in proc.stdout
    (results,) = (tmp_path / "sweep").rglob("results_*.json")
    assert "mix+mix_weight=1-linear+router_weights=" in str(results)
    fsgen = json.loads(results.read_text())["config"]["fsgen"]
    assert fsgen["params"] == {"mix_weight": 1} and fsgen["per_task"]["gsm8k"]["llm_call_rate"] == 1.0
    # a bad parameter stops the sweep in one line before any cell
    bad = [*cmd[:7], "mix:mix_weight=3", *cmd[8:]]
    proc = subprocess.run(bad, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and proc.stderr.strip() == "fsgen-eval sweep: error: mix_weight must be in [0, 1], got '3'"


def test_fsgen_eval_methods_lists_the_extension(registered, capsys):
    from fsgen_eval.cli import main

    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "  mix [loop=step]  geometric mix of System 1 and the large model\n    mix_weight=0.5  the large model's share" in out
    assert "  linear  w . [entropy, top1, margin] + b > 0\n    router_weights=REQUIRED  a JSON file of w and b" in out
    assert "  entropy [signal=s1_entropy (above)]" in out and "  never [never calls System 2]" in out
