"""Why some rules break out of domain: the inner loop measured step by step on glyphs and digits.

    python -m metalstm.tools.ood --shot 5 --threads 1 --json data/results/ood-5shot.json
    python -m metalstm.tools.ood --shot 1 --threads 1 --interventions --json data/results/ood-1shot.json
    python -m metalstm.tools.ood --table data/results/ood-1shot.json data/results/ood-5shot.json

For every shipped rung of the ladder (data/checkpoints/ladder/glyphs-Kshot-RUNG.pt)
and the shipped LSTM, on the same meta-test episodes of glyphs and of the
out-of-domain digits, it keeps per step t the gradient norm ||grad_t||, the
support loss L_t, the step length ||theta_t - theta_{t-1}|| and the query
accuracy, and per episode the final accuracy; an episode "collapses" when it
ends at or below 30% (chance is 20%).

Then an intervention tests the explanation that follows from those numbers -
a rule whose step does not shrink with the gradient overshoots where the
gradients stay larger than anything it met in training - by changing only the
gradient the rule is fed: `clip` rescales grad_t so that its norm is at most
the 90% quantile of ||grad_t|| that the same rule met at step t on 50 glyph
meta-validation episodes; `half` halves every step. Each intervention is
compared with the rule itself on the same episodes (paired). `--interventions` names
the rules that get them (sgd and schedule, the two that fail at 5-shot; none at 1-shot,
where nothing fails).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn

from metalstm.cli import positive_int
from metalstm.episodes import episode_generator, sampler_for
from metalstm.evaluate import evaluate_methods, meta_test_sampler, rule_accuracy
from metalstm.model import load_trained
from metalstm.rules import RUNG_NAMES
from metalstm.stats import mean_ci95
from metalstm.tools.measure_cli import difference, parser, run
from metalstm.paths import shipped_checkpoint
from metalstm.viz.record import trace_episode

RULES = ("sgd", "init", "meta-sgd", "schedule", "lstm")
COLLAPSED = 0.3               # an episode ending at or below 30% (5-way: chance 20%) has collapsed


class FedGradient(nn.Module):
    """`rule` fed a changed gradient: grad_t * scale, then rescaled to norm at most limits[t] (if given)."""

    def __init__(self, rule: nn.Module, scale: float = 1.0, limits: torch.Tensor | None = None) -> None:
        super().__init__()
        self.rule, self.scale, self.limits = rule, float(scale), limits
        self.c0 = rule.c0

    def initial_state(self):
        return (0, self.rule.initial_state())

    def step(self, loss, grad, theta, state):
        t, inner = state
        grad = grad * self.scale
        if self.limits is not None:
            limit = self.limits[min(t, len(self.limits) - 1)]
            grad = grad * torch.clamp(limit / grad.norm().clamp_min(1e-30), max=1.0)
        theta, inner, gates = self.rule.step(loss, grad, theta, inner)
        return theta, (t + 1, inner), gates


def load_rule(k_shot: int, name: str):
    path = shipped_checkpoint(f"glyphs-{k_shot}shot") if name == "lstm" else \
        shipped_checkpoint(f"glyphs-{k_shot}shot", rung=name)
    return load_trained(path)


def per_step(learner, rule, cfg, sampler, episodes: int) -> dict:
    """Per step over the episodes: the median grad norm (and its 90% quantile), support loss and step
    length; the mean query accuracy."""
    rows = {"grad_norm": [], "support_loss": [], "step_length": [], "query_acc": []}
    for i in range(episodes):
        tr = trace_episode(learner, rule, sampler[i], cfg.steps, cfg.batch_size, episode_generator(sampler.seed, i))
        rows["grad_norm"].append(tr.grad.norm(dim=1))
        rows["support_loss"].append(tr.support_loss)
        rows["step_length"].append((tr.theta[1:] - tr.theta[:-1]).norm(dim=1))
        rows["query_acc"].append(tr.query_acc)
    out = {key: torch.stack(v).median(dim=0).values.tolist() for key, v in rows.items() if key != "query_acc"}
    out["grad_norm_q90"] = torch.quantile(torch.stack(rows["grad_norm"]), 0.9, dim=0).tolist()
    out["query_acc"] = torch.stack(rows["query_acc"]).mean(dim=0).tolist()
    return out


def glyph_limits(learner, rule, cfg, episodes: int = 50) -> torch.Tensor:
    """The 90% quantile of ||grad_t|| per step on glyph meta-validation episodes: [T]."""
    sampler = sampler_for(cfg, "val")
    norms = torch.stack([trace_episode(learner, rule, sampler[i], cfg.steps, cfg.batch_size,
                                       episode_generator(sampler.seed, i)).grad.norm(dim=1) for i in range(episodes)])
    return torch.quantile(norms, 0.9, dim=0)


def measure(k_shot: int, episodes: int, steps_episodes: int, interventions=("schedule", "sgd"),
            progress: bool = True) -> dict:
    report = {"k_shot": k_shot, "episodes": episodes, "steps_episodes": steps_episodes, "rules": {}}
    for name in RULES:
        learner, rule, cfg, _ = load_rule(k_shot, name)
        entry = {"name": RUNG_NAMES[name], "per_step": {}, "accuracies": {}}
        variants = {"as trained": rule}
        if name in interventions:
            limits = glyph_limits(learner, rule, cfg)
            entry["clip_limits"] = limits.tolist()
            variants.update({"clip": FedGradient(rule, limits=limits), "half": FedGradient(rule, scale=0.5)})
        for test_set in ("glyphs", "digits"):
            sampler = meta_test_sampler(cfg, test_set)
            entry["per_step"][test_set] = per_step(learner, rule, cfg, sampler, steps_episodes)
            results = evaluate_methods({v: rule_accuracy(learner, r, cfg, sampler.seed) for v, r in variants.items()},
                                       sampler, episodes, progress)
            entry["accuracies"][test_set] = {r.name: r.accuracies for r in results}
        report["rules"][name] = entry
    return report


def table(reports) -> str:
    """Per rule and shot: accuracy on glyphs and digits, the share of collapsed digit episodes, the
    late gradient norm (the 90% quantile of ||grad_T|| over the episodes) on each, and the interventions' paired gains on digits and glyphs. reports: JSON
    paths or the dicts `measure` returns."""
    lines = ["| rule | shot | glyphs | digits | collapsed on digits | norm of grad_T (90% quantile), glyphs / digits | "
             "clip: gain on digits | clip: gain on glyphs | half step: gain on digits |", "|---|---|---|---|---|---|---|---|---|"]
    for p in reports:
        r = p if isinstance(p, dict) else json.loads(Path(p).read_text())
        for name, e in r["rules"].items():
            acc = e["accuracies"]
            g, d = acc["glyphs"]["as trained"], acc["digits"]["as trained"]
            cells = ["{:.2f} +- {:.2f}".format(*(100 * v for v in mean_ci95(x))) for x in (g, d)]
            collapsed = f"{100 * sum(a <= COLLAPSED for a in d) / len(d):.1f}%"
            q90 = {t: e["per_step"][t]["grad_norm_q90"][-1] for t in ("glyphs", "digits")}
            norms = f"{q90['glyphs']:.2f} / {q90['digits']:.2f}"
            if "clip" in acc["digits"]:
                extra = [difference(acc["digits"]["clip"], d), difference(acc["glyphs"]["clip"], g), difference(acc["digits"]["half"], d)]
            else:
                extra = ["", "", ""]
            lines.append(f"| {e['name']} | {r['k_shot']}-shot | " + " | ".join(cells + [collapsed, norms] + extra) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = parser("python -m metalstm.tools.ood", __doc__)
    ap.add_argument("--episodes", type=positive_int, default=600, help="meta-test episodes for the accuracies")
    ap.add_argument("--steps-episodes", type=positive_int, default=50,
                    help="meta-test episodes for the per-step medians")
    ap.add_argument("--interventions", nargs="*", default=["sgd", "schedule"], choices=RULES,
                    help="the rules to run with clipped and with halved steps as well")
    return run(ap, argv, measure=lambda args: measure(args.shot, args.episodes, args.steps_episodes,
                                                      tuple(args.interventions)),
               tables=table, summary=lambda report: table([report]))


if __name__ == "__main__":
    sys.exit(main())
