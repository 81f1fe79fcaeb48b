"""``fsgen-eval router train``: fit a learned router on trace files; ``router compare``: held-out comparison.

Torch-free (scikit-learn and numpy): the file it writes is evaluated by the engine in torch with
``router=learned,router_path=ROUTER.json``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("router", help="learned routers: fit a handoff classifier on traces, compare on held-out traces")
    rsub = p.add_subparsers(dest="router_command", metavar="SUBCOMMAND")
    t = rsub.add_parser("train", help="fit a learned router on traces recorded with router=always")
    t.add_argument("traces", nargs="+", type=Path, help="trace files (*.jsonl; topk also reads *.topk.parquet)")
    t.add_argument("--features", choices=("scalar", "topk"), default="scalar",
                   help="scalar: s1_entropy, s1_top1_prob, s1_margin, position; topk: System 1's sorted top-K "
                        "probabilities (FS-GEN's SVM input)")
    t.add_argument("--k", type=int, default=10, help="top-K probabilities used with --features topk (default 10)")
    t.add_argument("--model", choices=("logistic", "svm"), default="logistic")
    t.add_argument("--balance", choices=("downsample", "weight"), default="downsample",
                   help="downsample (default, FS-GEN's): every handoff and as many agreements at random; "
                        "weight: class-weighted over the tokens")
    t.add_argument("--max-samples", type=int, default=4000,
                   help="at most this many training tokens (bounds the SVM's support vectors)")
    t.add_argument("--target-call-rate", type=float, required=True,
                   help="the threshold is set so that at most this share of training tokens calls System 2")
    t.add_argument("--labels", choices=("handoff", "necessary"), default="handoff",
                   help="handoff (default, FS-GEN's): learn where System 2 disagrees; necessary: learn the handoffs "
                        "that change the task's outcome (outcome labels of `fsgen-eval label`, --label-dir)")
    t.add_argument("--label-dir", type=Path, help="with --labels necessary: a `fsgen-eval label` output folder "
                   "(labels.jsonl and runs.json) of the runs whose traces are given")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("-o", "--output", type=Path, required=True, help="ROUTER.json")
    t.set_defaults(func=cmd_train)
    c = rsub.add_parser("compare", help="handoffs caught at equal call rate on held-out traces: learned vs threshold routers")
    c.add_argument("traces", nargs="+", type=Path, help="held-out trace files recorded with router=always")
    c.add_argument("--routers", nargs="+", type=Path, required=True, help="ROUTER.json files")
    c.add_argument("--rates", default="0.1,0.2,0.3,0.5", help="call rates to compare at (comma-separated)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_compare)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def cmd_train(args: argparse.Namespace) -> int:
    from fsgen_eval.analysis import learned as A
    from fsgen_eval.core import learned as L

    if not 0.0 <= args.target_call_rate <= 1.0:
        raise ValueError(f"--target-call-rate must lie in [0, 1], got {args.target_call_rate}")
    if args.k < 1 or args.max_samples < 2:
        raise ValueError("--k must be >= 1 and --max-samples >= 2")
    if args.model == "svm" and args.max_samples > L.MAX_SUPPORT_VECTORS:
        raise ValueError(f"--max-samples {args.max_samples}: an SVM router may hold at most "
                         f"{L.MAX_SUPPORT_VECTORS} support vectors (every token is scored against each)")
    pair = _pair_of(args.traces)
    necessary = _necessary_labels(args, pair)  # checked before the traces are read
    data = A.load_dataset(args.traces, args.features, args.k, necessary)
    router = A.fit(data, args.model, args.target_call_rate, args.features, args.k, args.balance,
                   args.max_samples, args.seed)
    if pair:  # lets a frontier refuse this router for another pair
        router.info["pair"] = pair
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(L.to_json(router)) + "\n")
    os.replace(tmp, out)
    tr = router.info["train"]
    print(f"{out}: {args.model} on {args.features} features, {tr['fitted_on']} of {tr['tokens']} tokens "
          f"({tr['handoffs']} {'necessary handoffs' if args.labels == 'necessary' else 'handoffs'}, balance={args.balance}); threshold {router.threshold:.6g}: call rate "
          f"{tr['call_rate']:.3f} (target {args.target_call_rate}), {args.labels} caught {tr['caught']:.3f} on the "
          "training tokens")
    return 0


def _necessary_labels(args: argparse.Namespace, pair: dict[str, str] | None
                      ) -> dict[tuple[str, str, int, int], bool] | None:
    """Outcome labels keyed by (run_id, task, doc_id, position) for ``--labels necessary``; labels of another
    pair than the traces' are refused in one line."""
    from fsgen_eval.experiments.label import read_labels, record_key

    if args.labels == "handoff":
        if args.label_dir is not None:
            raise ValueError("--label-dir is read only with --labels necessary")
        return None
    if args.label_dir is None:
        raise ValueError("--labels necessary needs --label-dir (a `fsgen-eval label` output folder)")
    runs_path, labels_path = args.label_dir / "runs.json", args.label_dir / "labels.jsonl"
    for p in (runs_path, labels_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such file (not a `fsgen-eval label` output folder)")
    runs = json.loads(runs_path.read_text())
    pairs = {(r["small"], r["large"]) for r in runs.values()}
    if pair is not None:  # a folder may hold labels of several pairs: this pair's are used
        runs = {k: r for k, r in runs.items() if _same(r["small"], pair["small"]) and _same(r["large"], pair["large"])}
        if not runs:
            (s, g), *_ = sorted(pairs)
            raise ValueError(f"{args.label_dir}: labels of the pair {s} -> {g}, but the traces are of "
                             f"{pair['small']} -> {pair['large']}")
    return {record_key(r): r["label"] == "necessary" for r in read_labels(labels_path) if r["run_id"] in runs}


def _same(a: str, b: str) -> bool:
    return Path(a).resolve() == Path(b).resolve() if Path(a).exists() and Path(b).exists() else a == b


def _pair_of(traces: list[Path]) -> dict[str, str] | None:
    """The (small, large) of the runs whose results files (beside the traces) name them, when it is one pair."""
    from fsgen_eval.analysis import files

    pairs = set()
    for t in traces:
        for res in Path(t).parent.glob("results_*.json"):
            try:
                run = files.load_run(res)
            except ValueError:
                continue
            if any(Path(f).resolve() == Path(t).resolve() for f in run.trace_files):
                pairs.add((str(run.fsgen.small), str(run.fsgen.large)))
    return dict(zip(("small", "large"), pairs.pop())) if len(pairs) == 1 else None


def cmd_compare(args: argparse.Namespace) -> int:
    from fsgen_eval.analysis import learned as A
    from fsgen_eval.core import learned as L

    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    routers = {p.stem: L.load(p) for p in args.routers}
    rows = A.compare(args.traces, routers, rates)
    print(json.dumps(rows, indent=1) if args.json else A.format_comparison(rows))
    return 0
