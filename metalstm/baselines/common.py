"""What every baseline shares: the method interface, accuracy, 95% intervals, grid search.

A few-shot method is any object with a `name` and `predict(episode)` returning
scores [N*Q, N] for the episode's queries (logits, log-probabilities or
similarities: only the argmax matters). Every method is run on the SAME
episodes (paper notes 5: 600 meta-test episodes, mean accuracy +- t_{0.975, n-1} std / sqrt(n), 1.96 for n = 600).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Hashable, Iterable, Protocol, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from metalstm.checkpoint import atomic_write
from metalstm.episodes import Episode
from metalstm.stats import mean_ci95 as confidence_interval  # one 95% interval for all (paper notes 5)


def cache_candidates(path: str | Path, settings: dict) -> tuple[Path, Path]:
    """(the cache file, its variant for these settings): a cached baseline made with other
    settings is never overwritten; the new one goes to NAME-<digest of settings>.pt beside it."""
    path = Path(path)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return path, path.with_name(f"{path.stem}-{digest}{path.suffix}")


def find_cached(path: str | Path | None, settings: dict, load: Callable, matches: Callable):
    """The first of `cache_candidates(path, settings)` that exists and whose loaded
    contents satisfy `matches` (loaded with `load`), or None."""
    for candidate in cache_candidates(path, settings) if path is not None else ():
        if candidate.is_file():
            found = load(candidate)
            if matches(found):
                return found
    return None


def cache_target(path: str | Path, settings: dict) -> Path:
    """Where to save a baseline made with `settings`: `path` if free, else its variant."""
    plain, variant = cache_candidates(path, settings)
    return variant if plain.exists() else plain


class FewShotMethod(Protocol):
    """A few-shot classifier: learns from episode.support_*, scores episode.query_x."""

    name: str

    def predict(self, episode: Episode) -> Tensor:
        """Scores [N*Q, N] of every query image for every episode label."""
        ...


def accuracy(method: FewShotMethod, episode: Episode) -> float:
    """Fraction of the episode's queries whose highest score is their label."""
    scores = method.predict(episode)
    expected = (episode.query_y.numel(), episode.n_way)
    if tuple(scores.shape) != expected:
        raise ValueError(f"{method.name}: predict() must return scores {list(expected)}, "
                         f"got {list(scores.shape)}")
    return (scores.argmax(dim=1) == episode.query_y).float().mean().item()


@dataclass
class Evaluation:
    """Accuracies of one method on a list of episodes."""

    name: str
    accuracies: list[float] = field(repr=False)
    seconds: float

    @property
    def mean(self) -> float:
        return confidence_interval(self.accuracies)[0]

    @property
    def ci95(self) -> float:
        return confidence_interval(self.accuracies)[1]

    def __str__(self) -> str:
        return f"{self.name}: {100 * self.mean:.2f} +- {100 * self.ci95:.2f} % ({len(self.accuracies)} episodes)"


def evaluate(method: FewShotMethod, episodes: Iterable[Episode], progress: bool = True) -> Evaluation:
    """Accuracy of `method` on every episode, with the wall time it took."""
    episodes = list(episodes)
    start = time.perf_counter()
    accs = [accuracy(method, ep) for ep in tqdm(episodes, desc=method.name, disable=not progress or None, leave=False)]
    return Evaluation(method.name, accs, time.perf_counter() - start)


def markdown_table(results: Sequence[Evaluation], title: str = "accuracy (%)") -> str:
    """One markdown table: method | accuracy +- 95% interval | episodes | seconds."""
    lines = [f"| method | {title} | episodes | seconds |", "|---|---|---|---|"]
    lines += [f"| {r.name} | {100 * r.mean:.2f} +- {100 * r.ci95:.2f} | {len(r.accuracies)} | {r.seconds:.1f} |"
              for r in results]
    return "\n".join(lines)


def report(title: str, results: Sequence[Evaluation], notes: dict[str, str], json_path=None,
           **extra) -> str:
    """The printed report (title, table, one note per method); also written as JSON to json_path."""
    text = "\n".join([f"**{title}**", "", markdown_table(results), ""] +
                      [f"- {name}: {note}" for name, note in notes.items()])
    if json_path:
        atomic_write(json_path, json.dumps(
            {"title": title, **extra,
             "results": [{"name": r.name, "mean": r.mean, "ci95": r.ci95, "seconds": r.seconds,
                          "note": notes.get(r.name, "")} for r in results]}, indent=2))
    return text


def grid_search(make_method: Callable[..., FewShotMethod], grid: Iterable[tuple],
                episodes: Sequence[Episode], progress: bool = True) -> tuple[tuple, dict[tuple, float]]:
    """Mean accuracy of make_method(*point) on `episodes` for every point of `grid`.

    Returns (best point, {point: mean accuracy}). Ties go to the point listed
    first, so list the cheaper settings first. Choose on meta-VALIDATION
    episodes only (paper notes 1, 9).
    """
    grid = list(grid)
    if not grid:
        raise ValueError("grid_search needs at least one grid point")
    table: dict[Hashable, float] = {}
    for point in tqdm(grid, desc="grid", disable=not progress or None, leave=False):
        method = make_method(*point)
        table[point] = sum(accuracy(method, ep) for ep in episodes) / len(episodes)
    best = max(grid, key=lambda p: (table[p], -grid.index(p)))
    return best, table
