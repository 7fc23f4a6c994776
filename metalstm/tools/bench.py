"""How fast is one episode? `python -m metalstm.tools.bench`

For each episode shape (5-way 5-shot T=8 B=25 and 5-way 1-shot T=12 B=5, at
28x28x1 and 84x84x3, random images, 15 queries per class) it times
    (a) floor: the learner as an ordinary nn.Module, T SGD steps
        (forward + backward) on the support set, then the query forward pass;
    (b) one meta-training episode: run_episode(mode="train"), the query loss's
        backward, gradient clipping to 0.25 and an Adam step;
    (b0) the same meta-training episode with plain SGD as the update rule (c_0
        trained, no LSTM): the learner's own share of (b), above all the backward
        pass through the query set that no floor pays - (b)/(a) cannot go below
        (b0)/(a);
    (g) the meta-learner's three matrix products of each of the T steps alone
        (layer 1's [4H, H+3] @ [H+3, n] forward and its two backward products,
        over all n coordinates): the float32 work no implementation of the
        coordinate-wise LSTM avoids, so (b) >= (b0) + (g);
    (c) one meta-test episode: run_episode(mode="test");
    (d) drawing one episode from an EpisodeSampler (glyphs at 28x28, random
        images at 84x84);
and prints the median with min / max over the repeats (wall clock and CPU
time), (b)/(a), (b0)/(a), (c)/(a), and the process's peak memory (resident set size on
CPU, torch.cuda.max_memory_allocated on a GPU). The four take turns, so that
they run under the same conditions.

    python -m metalstm.tools.bench --repeats 10 --threads 2 --shapes 28 84 --shots 5 1

On Linux, glibc hands large freed buffers back to the system, and the next
episode pays page faults for them again: 84x84 episodes run 1.2-1.8x faster with
    MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TRIM_THRESHOLD_=4000000000
in the environment (or with jemalloc / tcmalloc preloaded).
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from metalstm.data.base import ImageSet
from metalstm.episodes import Episode, EpisodeSampler
from metalstm.learner import Learner
from metalstm.metalearner import MetaLearner, SGDCell, run_episode, support_batches


@dataclass
class Shape:
    size: int
    channels: int
    k_shot: int
    steps: int
    batch_size: int
    n_way: int = 5
    n_query: int = 15

    def __str__(self) -> str:
        return (f"{self.size}x{self.size}x{self.channels} {self.n_way}-way {self.k_shot}-shot "
                f"T={self.steps} B={self.batch_size}")


def shapes(sizes: list[int], shots: list[int]) -> list[Shape]:
    """SPEC 5's settings: T=8 B=25 for 5-shot, T=12 B=5 for 1-shot."""
    setting = {5: (8, 25), 1: (12, 5)}
    return [Shape(size, 1 if size == 28 else 3, k, *setting[k]) for size in sizes for k in shots]


def random_episode(s: Shape, g: torch.Generator, device) -> Episode:
    n_support, n_query = s.n_way * s.k_shot, s.n_way * s.n_query
    return Episode(torch.rand(n_support, s.channels, s.size, s.size, generator=g),
                   torch.arange(s.n_way).repeat_interleave(s.k_shot),
                   torch.rand(n_query, s.channels, s.size, s.size, generator=g),
                   torch.arange(s.n_way).repeat_interleave(s.n_query), torch.arange(s.n_way)).to(device)


def timed(fns: dict, repeats: int, warmup: int, device) -> dict:
    """key -> (wall-clock seconds, CPU seconds of this process, peak memory MB) of each of
    `repeats` calls of every fn, after `warmup` untimed calls (the first one also gives its
    peak memory). The functions take turns, so that all run under the same conditions: the
    same load from other processes, the same state of the memory allocator. On a shared
    machine the CPU time is the steadier: it does not count waiting for a core."""
    cuda = torch.device(device).type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    out = {}
    for key, fn in fns.items():
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(max(warmup, 1)):
            fn()
        out[key] = ([], [], peak_memory_mb(device))
    for _ in range(repeats):
        for key, fn in fns.items():
            sync()
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            sync()
            out[key][0].append(time.perf_counter() - start)
            out[key][1].append(time.process_time() - start_cpu)
    return out


def peak_memory_mb(device) -> float:
    """The process's peak so far: resident set size on CPU (it only grows, so each row shows
    the peak after its own first run, in the order a, c, b, d), allocated memory on a GPU."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024     # kB on Linux


def floor_fn(learner: Learner, theta0, ep: Episode, s: Shape):
    """(a): T plain SGD steps of an nn.Module on the support set, then the query pass."""
    net = learner.to_module(theta0).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    batches = [b.to(ep.support_x.device) for b in support_batches(len(ep.support_y), s.batch_size, s.steps)]

    def run():
        for idx in batches:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(ep.support_x[idx]), ep.support_y[idx]).backward()
            opt.step()
        with torch.no_grad():
            net(ep.query_x)
    return run


def train_fn(learner: Learner, meta, ep: Episode, s: Shape):
    """(b): one meta-training episode with its meta-update; (b0) with rule = SGDCell."""
    params = list(meta.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)

    def run():
        opt.zero_grad(set_to_none=True)
        result = run_episode(learner, meta, ep, s.steps, s.batch_size, mode="train")
        result.query_loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.25)
        opt.step()
    return run


def gemm_fn(n: int, hidden: int, s: Shape, device):
    """(g): for each of the T steps, z = W [x; h; 1], then dW = dz [x; h; 1]^T and dh = W_h^T dz."""
    g = torch.Generator().manual_seed(1)
    W = torch.randn(4 * hidden, hidden + 3, generator=g).to(device)
    x = torch.randn(hidden + 3, n, generator=g).to(device)
    dz = torch.randn(4 * hidden, n, generator=g).to(device)

    def run():
        for _ in range(s.steps):
            W @ x
            dz @ x.T
            W[:, 2:-1].T @ dz
    return run


def test_fn(learner: Learner, meta: MetaLearner, ep: Episode, s: Shape):
    """(c): one meta-test episode."""
    return lambda: run_episode(learner, meta, ep, s.steps, s.batch_size, mode="test")


def sampler_for(s: Shape) -> tuple[EpisodeSampler, str]:
    if s.size == 28 and s.channels == 1:
        try:
            from metalstm.data.glyphs import load_glyphs
            return EpisodeSampler(load_glyphs("train"), s.n_way, s.k_shot, s.n_query), "glyphs/train"
        except (ImportError, FileNotFoundError):
            pass
    g = torch.Generator().manual_seed(0)
    n_classes, per_class = 64, 40        # Mini-ImageNet has 64 train classes (of 600 images)
    images = torch.randint(0, 256, (n_classes * per_class, s.channels, s.size, s.size),
                           dtype=torch.uint8, generator=g)
    data = ImageSet(images, torch.arange(n_classes).repeat_interleave(per_class),
                    [str(c) for c in range(n_classes)], name="random")
    return EpisodeSampler(data, s.n_way, s.k_shot, s.n_query), f"random {n_classes}x{per_class} images"


def bench_shape(s: Shape, repeats: int, warmup: int, device) -> dict:
    g = torch.Generator().manual_seed(0)
    learner = Learner(s.n_way, s.channels, s.size, bn_momentum=0.95 if s.k_shot > 1 else 0.9)
    theta0 = learner.init_params(g)
    meta = MetaLearner(learner.n_params, theta0=theta0, generator=g).to(device)
    ep = random_episode(s, g, device)
    sampler, source = sampler_for(s)
    counter = iter(range(10**9))
    sgd = SGDCell(theta0, lr=0.01, train_c0=True).to(device)
    rows = timed({"a": floor_fn(learner, theta0.to(device), ep, s),
                  "c": test_fn(learner, meta, ep, s),
                  "b": train_fn(learner, meta, ep, s),
                  "b0": train_fn(learner, sgd, ep, s),
                  "g": gemm_fn(learner.n_params, meta.hidden, s, device),
                  "d": lambda: sampler[next(counter)].to(device)}, repeats, warmup, device)
    rows["source"] = source
    return rows


def report(s: Shape, rows: dict) -> None:
    names = {"a": "(a) floor: nn.Module SGD", "b": "(b) meta-train episode",
             "b0": "(b0) same, SGD as the rule", "g": "(g) LSTM matmuls alone",
             "c": "(c) meta-test episode", "d": "(d) episode sampling"}
    keys = ["a", "b", "b0", "g", "c", "d"]
    med = {k: statistics.median(rows[k][0]) for k in keys}
    cpu = {k: statistics.median(rows[k][1]) for k in keys}
    print(f"\n{s}")
    print(f"  {'':<28} {'wall ms: median':>15} {'min':>8} {'max':>8}   {'CPU ms: median':>14}   peak memory")
    for k in keys:
        wall, cpu_times, mem = rows[k]
        extra = f"  [{rows['source']}]" if k == "d" else ""
        print(f"  {names[k]:<28} {1e3 * med[k]:15.2f} {1e3 * min(wall):8.2f} {1e3 * max(wall):8.2f}   "
              f"{1e3 * cpu[k]:14.2f}   {mem:7.0f} MB{extra}")
    print(f"  lower bound of (b)/(a): ((b0) + (g)) / (a) = {(med['b0'] + med['g']) / med['a']:.2f}")
    print(f"  ratios, wall: (b)/(a) = {med['b'] / med['a']:.2f}  (b0)/(a) = {med['b0'] / med['a']:.2f}  "
          f"(c)/(a) = {med['c'] / med['a']:.2f}   CPU: (b)/(a) = {cpu['b'] / cpu['a']:.2f}  "
          f"(b0)/(a) = {cpu['b0'] / cpu['a']:.2f}  (c)/(a) = {cpu['c'] / cpu['a']:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metalstm.tools.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per measurement (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    parser.add_argument("--shapes", type=int, nargs="+", default=[28, 84], choices=[28, 84],
                        help="image sizes: 28 (28x28x1) and/or 84 (84x84x3)")
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 1], choices=[5, 1],
                        help="5 (T=8, B=25) and/or 1 (T=12, B=5)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} runs after {args.warmup} warm-up runs")
    for s in shapes(args.shapes, args.shots):
        report(s, bench_shape(s, args.repeats, args.warmup, args.device))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
