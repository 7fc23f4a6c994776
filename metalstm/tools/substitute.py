"""The substitution table: every distilled rule put in place of the Meta-Learner LSTM (notebook 06).

    python -m metalstm.tools.substitute --shot 1 --threads 1 --json data/results/substitution-1shot.json
    python -m metalstm.tools.substitute --shot 5 --threads 1 --json data/results/substitution-5shot.json
    python -m metalstm.tools.substitute --table data/results/substitution-1shot.json \\
        data/results/substitution-5shot.json

For one shot it loads the shipped LSTM (data/checkpoints/glyphs-Kshot.pt),
records its gates and the gradients they read on meta-validation episodes
0..R-1 (`record_gates(..., inputs=True)`), fits every candidate of
`metalstm.distill.CANDIDATES` to that record, and runs the LSTM and each
candidate - all from the LSTM's own c_0 - on the same meta-test episodes of
glyphs and of the out-of-domain digits (600 by default). The JSON keeps each
candidate's fitted numbers and every episode's accuracy; `--table` prints the
paired differences to the LSTM with their 95% intervals, the table that docs/results.md
and notebook 06 show (tests/claims/test_readme_results.py checks the copy in docs/results.md).

One intervention on the LSTM itself runs beside them: its first 3 updates only
(theta kept from step 4 on), which tests whether the large late steps matter.
It also measures Meta-SGD's learned steps (the shipped ladder rung
glyphs-Kshot-meta-sgd.pt): their distribution per layer, and two
substitutions on the glyph episodes - conv 1 frozen (its steps set to 0) and
no gradient ascent (negative steps set to 0).
"""
from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import torch

from metalstm.checkpoint import file_sha256
from metalstm.cli import positive_int
from metalstm.distill import CANDIDATES, SENTENCES, StopAfter, describe, fit_candidates
from metalstm.episodes import sampler_for
from metalstm.evaluate import evaluate_methods, meta_test_sampler, rule_accuracy
from metalstm.model import load_trained
from metalstm.rules import layer_index
from metalstm.stats import mean_ci95
from metalstm.tools.measure_cli import difference, parser, run
from metalstm.paths import shipped_checkpoint
from metalstm.viz.record import record_gates

TEST_SETS = ("glyphs", "digits")
EARLY_STEPS = 3          # "the steps after step 3, taken on near-zero gradients, add nothing"


def meta_sgd_steps(rule, learner) -> dict:
    """Meta-SGD's learned steps alpha per layer: median |alpha|, the share below 0, the 10% and 90% quantiles."""
    layer_of, names = layer_index(learner)
    alpha = rule.alpha.detach().double()
    out = {}
    for l, name in enumerate(names):
        a = alpha[layer_of == l]
        q10, q90 = torch.quantile(a, torch.tensor([0.1, 0.9], dtype=torch.float64)).tolist()
        out[name] = {"median_abs": a.abs().median().item(), "negative": (a < 0).double().mean().item(),
                     "median": a.median().item(), "q10": q10, "q90": q90}
    return out


def meta_sgd_variants(rule, learner) -> dict[str, torch.nn.Module]:
    """Meta-SGD as trained, with conv 1's steps set to 0, and with every negative step set to 0."""
    layer_of, _ = layer_index(learner)
    frozen, no_ascent = copy.deepcopy(rule), copy.deepcopy(rule)
    with torch.no_grad():
        frozen.alpha[layer_of == 0] = 0.0
        no_ascent.alpha.clamp_(min=0.0)
    return {"meta-sgd": rule, "conv 1 frozen": frozen, "no ascent": no_ascent}


def substitute(k_shot: int, episodes: int, record_episodes: int, test_sets=TEST_SETS,
               progress: bool = True) -> dict:
    """The whole measurement for one shot, as the JSON that --json writes."""
    path = shipped_checkpoint(f"glyphs-{k_shot}shot")
    learner, meta, cfg, metrics = load_trained(path)
    layer_of, _ = layer_index(learner)
    start = time.perf_counter()
    record = record_gates(learner, meta, sampler_for(cfg, "val"), cfg, episodes=record_episodes,
                          progress=progress, inputs=True)
    rules = fit_candidates(record, meta, layer_of, cfg.p)
    del record
    report = {"config": cfg.to_dict(), "checkpoint": path.name, "checkpoint_sha256": file_sha256(path),
              "record": {"split": "val", "episodes": list(range(record_episodes))},
              "episodes": episodes, "fit_seconds": time.perf_counter() - start,
              "rules": {name: {"sentence": SENTENCES[name], **describe(rule)} for name, rule in rules.items()},
              "test_sets": {}}
    for test_set in test_sets:
        sampler = meta_test_sampler(cfg, test_set)
        methods = {"lstm": rule_accuracy(learner, meta, cfg, sampler.seed)}
        methods.update({name: rule_accuracy(learner, rule, cfg, sampler.seed) for name, rule in rules.items()})
        methods[f"first {EARLY_STEPS} steps"] = rule_accuracy(learner, StopAfter(meta, EARLY_STEPS), cfg, sampler.seed)
        results = evaluate_methods(methods, sampler, episodes, progress)
        report["test_sets"][test_set] = {"seed": sampler.seed,
                                         "accuracies": {r.name: r.accuracies for r in results},
                                         "seconds": {r.name: r.seconds for r in results}}
    ladder = shipped_checkpoint(f"glyphs-{k_shot}shot", rung="meta-sgd")
    _, meta_sgd, sgd_cfg, _ = load_trained(ladder)
    sampler = meta_test_sampler(sgd_cfg, "glyphs")
    variants = meta_sgd_variants(meta_sgd, learner)
    results = evaluate_methods({name: rule_accuracy(learner, rule, sgd_cfg, sampler.seed)
                                for name, rule in variants.items()}, sampler, episodes, progress)
    report["meta_sgd"] = {"checkpoint": ladder.name, "steps": meta_sgd_steps(meta_sgd, learner),
                          "glyphs": {r.name: r.accuracies for r in results}}
    return report


def table(paths) -> str:
    """The markdown table: each candidate's paired difference to the LSTM, per test set and shot."""
    reports = [json.loads(Path(p).read_text()) for p in paths]
    columns = [(r, test_set) for test_set in reports[0]["test_sets"] for r in reports]
    head = "| rule (the sentence it tests) | numbers | " + " | ".join(
        f"{test_set} {r['config']['k_shot']}-shot" for r, test_set in columns) + " |"
    lines = [head, "|---|---|" + "---|" * len(columns)]
    accs = lambda r, t: r["test_sets"][t]["accuracies"]         # noqa: E731
    lines.append("| Meta-Learner LSTM (its own accuracy) | 2046 | " + " | ".join(
        "{:.2f} +- {:.2f}".format(*(100 * v for v in mean_ci95(accs(r, t)["lstm"]))) for r, t in columns) + " |")
    for name in CANDIDATES:
        numbers = "/".join(str(r["rules"][name]["numbers"]) for r in reports)
        cells = [difference(accs(r, t)[name], accs(r, t)["lstm"]) for r, t in columns]
        lines.append(f"| `{name}`: {SENTENCES[name]} | {numbers} | " + " | ".join(cells) + " |")
    early = f"first {EARLY_STEPS} steps"
    cells = [difference(accs(r, t)[early], accs(r, t)["lstm"]) for r, t in columns]
    lines.append(f"| (intervention) the LSTM's first {EARLY_STEPS} updates only: the later, large steps add nothing "
                 "| 0 | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def meta_sgd_table(paths) -> str:
    """Meta-SGD's conv 1 steps and the two substitutions, per shot (glyph meta-test episodes)."""
    lines = ["| shot | conv 1: median abs(alpha) | below 0 | 10%-90% | conv 1 frozen | no ascent |",
             "|---|---|---|---|---|---|"]
    for p in paths:
        r = json.loads(Path(p).read_text())
        m, s = r["meta_sgd"]["glyphs"], r["meta_sgd"]["steps"]["conv1"]
        lines.append(f"| {r['config']['k_shot']}-shot | {s['median_abs']:.3f} | {100 * s['negative']:.0f}% | "
                     f"{s['q10']:+.3f} to {s['q90']:+.3f} | {difference(m['conv 1 frozen'], m['meta-sgd'])} | "
                     f"{difference(m['no ascent'], m['meta-sgd'])} |")
    return "\n".join(lines)


def summary(report: dict) -> str:
    """One line per candidate and test set: its paired difference to the LSTM."""
    k = report["config"]["k_shot"]
    return "\n".join(f"{k}-shot {test_set:6} {name:13} {difference(accs, part['accuracies']['lstm'])}"
                     for test_set, part in report["test_sets"].items()
                     for name, accs in part["accuracies"].items() if name != "lstm")


def main(argv: list[str] | None = None) -> int:
    ap = parser("python -m metalstm.tools.substitute", __doc__)
    ap.add_argument("--episodes", type=positive_int, default=600, help="meta-test episodes per test set")
    ap.add_argument("--record", type=positive_int, default=20, help="meta-validation episodes to fit the rules on")
    return run(ap, argv, measure=lambda args: substitute(args.shot, args.episodes, args.record),
               tables=lambda files: table(files) + "\n\n" + meta_sgd_table(files), summary=summary)


if __name__ == "__main__":
    sys.exit(main())
