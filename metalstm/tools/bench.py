"""How fast is one episode, next to its bound and to a straightforward implementation?
`python -m metalstm.tools.bench`

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
        over all n coordinates, in the operand layouts in which they run
        fastest): the float32 work no implementation of the coordinate-wise
        LSTM avoids, so (b) >= (b0) + (g);
    (g_fwd) the forward product alone, T times: a meta-test episode needs no
        backward, so (c) >= (a) + (g_fwd);
    (c) one meta-test episode: run_episode(mode="test");
    (b_naive), (c_naive) the same meta-training and meta-test episode written
        the straightforward way (`naive_episode`, the way the paper is usually
        ported to PyTorch, `metalstm.tools.naive`): two nn.Module copies of the learner
        with theta's weights copied in, nn.LSTMCell over all coordinates, autograd
        everywhere; the same numbers (tested), so (b_naive)/(b) is metalstm's speed-up;
    (b_C), (c_C) the same (b) and (c) on `path="native"` (`--path native`): each
        meta-learner step, its matrix products included, as the C loops of
        metalstm/fast/native.c (they need a C compiler; timed whenever one is found on
        a CPU);
    (g_C), (g_fwd_C) the products of (g) and (g_fwd) as native.c's own loops
        (native.products, measured with (b_C)): where they run faster than
        PyTorch's, (b0) + (g_C) and (a) + (g_fwd_C) are the tighter bounds;
    (d) drawing one episode from an EpisodeSampler (glyphs at 28x28, random
        images at 84x84);
and prints the median with min / max over the repeats (wall clock and CPU
time), the process's peak memory (resident set size on CPU,
torch.cuda.max_memory_allocated on a GPU) and, per shape, four lines of ratios
(each as the ratio of the medians, with its min-max over the rounds):
    distance to the bound   (b)/((b0)+(g)) and (c)/((a)+(g_fwd)): 1.00 is the bound
                            (and the same for (b_C), (c_C)), then all four against
                            the bounds with the C loops' products, (g_C) and (g_fwd_C);
    speed-up                (b_naive)/(b) and (c_naive)/(c) (and over (b_C), (c_C));
    to the floor            (b)/(a), (b0)/(a), (c)/(a).
The measurements take turns, round after round, so that all run under the same
conditions; the load average (os.getloadavg) is printed before and after each
shape. On a shared machine the CPU time is the steadier figure.

    python -m metalstm.tools.bench --repeats 10 --threads 1 --shapes 28 84 --shots 5 1

--steps times ONE meta-learner step instead (CPU time and wall clock: with --threads
above 1 the wall clock is the one to read), for the learner size of each --shapes
(n coordinates, hidden 20), on random inputs from a non-zero state: the meta-test
step and the meta-training step (forward and backward) of the fused path and of
the native one, the step's three matrix products alone (g / T), the same as the C
loops' (g_C / T), and a plain copy of the [4H, n] array z (the memory traffic of one
read and one write of it: a yardstick for the elementwise work, which on the fused
path must at least read z and write the gates; the native path keeps z and dz in
registers, so its step "beyond the matrix products" is its whole time less the C
loops' products alone).

    python -m metalstm.tools.bench --steps --repeats 20 --threads 1 --shapes 28

On Linux, glibc hands large freed buffers back to the system, and the next
episode pays page faults for them again; 84x84 episodes run faster with
    MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TRIM_THRESHOLD_=4000000000
in the environment (or with jemalloc / tcmalloc preloaded): docs/speed.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from metalstm.cli import check_device, non_negative_int, positive_int, set_threads
from metalstm.fast import native
from metalstm.data.base import ImageSet
from metalstm.episodes import Episode, EpisodeSampler
from metalstm.learner import Learner
from metalstm.metalearner import MetaLearner, SGDCell, run_episode, support_batches
from metalstm.tools.naive import NaiveMetaLearner, naive_episode, naive_models


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
    """Paper notes 5's settings: T=8 B=25 for 5-shot, T=12 B=5 for 1-shot."""
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
    peak memory); "first" -> key -> the wall-clock seconds of the very first call. The functions take turns, so that all run under the same conditions: the
    same load from other processes, the same state of the memory allocator. On a shared
    machine the CPU time is the steadier: it does not count waiting for a core."""
    cuda = torch.device(device).type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    out, first = {}, {}
    for key, fn in fns.items():
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        for w in range(max(warmup, 1)):
            start = time.perf_counter()
            fn()
            sync()
            if w == 0:
                first[key] = time.perf_counter() - start
        out[key] = ([], [], peak_memory_mb(device))
    for _ in range(repeats):
        for key, fn in fns.items():
            sync()
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            sync()
            out[key][0].append(time.perf_counter() - start)
            out[key][1].append(time.process_time() - start_cpu)
    out["first"] = first
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


def gemm_operands(n: int, hidden: int, device):
    """W1_folded [4H, H+3] and W1[h]^T [H, 4H] column-major, x = [pre(grad); h; 1] [H+3, n]
    coordinate-major and dz [4H, n]: the layouts in which these products run fastest on a CPU
    (and in which metalstm.fast.fused runs them), so that (g) is the least any implementation
    pays for them."""
    g = torch.Generator().manual_seed(1)
    W = torch.randn(hidden + 3, 4 * hidden, generator=g).to(device).T
    W_hT = torch.randn(4 * hidden, hidden, generator=g).to(device).T
    x = torch.randn(n, hidden + 3, generator=g).to(device).T
    dz = torch.randn(4 * hidden, n, generator=g).to(device)
    return W, W_hT, x, dz


def gemm_fn(n: int, hidden: int, steps: int, device):
    """(g): for each of the T steps, z = W [x; h; 1], then dW = dz [x; h; 1]^T and dh = W_h^T dz."""
    W, W_hT, x, dz = gemm_operands(n, hidden, device)

    def run():
        for _ in range(steps):
            W @ x
            dz @ x.T
            W_hT @ dz
    return run


def gemm_forward_fn(n: int, hidden: int, steps: int, device):
    """(g_fwd): the forward product z = W [x; h; 1] of each of the T steps alone."""
    W, _, x, _ = gemm_operands(n, hidden, device)

    def run():
        for _ in range(steps):
            W @ x
    return run


def gemm_native_fn(n: int, hidden: int, steps: int, forward_only: bool = False):
    """(g_C), (g_fwd_C): the same products, T times, as native.c's loops (native.products):
    on a CPU where they run faster than PyTorch's, the tighter bound."""
    W, _, x, dz = gemm_operands(n, hidden, "cpu")
    W1, x = W.contiguous(), x.contiguous()         # the C loops' row-major layouts, copied once
    dz = None if forward_only else dz

    def run():
        for _ in range(steps):
            native.products(W1, x, dz)
    return run


def test_fn(learner: Learner, meta: MetaLearner, ep: Episode, s: Shape):
    """(c): one meta-test episode."""
    return lambda: run_episode(learner, meta, ep, s.steps, s.batch_size, mode="test")


def on_path(fn, meta: MetaLearner, path: str):
    """fn run with `meta` on `path` (and back on its own after): (b_C) and (c_C) on "native"."""
    def run():
        before, meta.path = meta.path, path
        try:
            fn()
        finally:
            meta.path = before
    return run


def naive_train_fn(nets, meta: NaiveMetaLearner, ep: Episode, s: Shape):
    """(b_naive): `train_fn`'s episode, clipping and Adam step, the straightforward way."""
    params = [p for p in meta.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-3)

    def run():
        opt.zero_grad(set_to_none=True)
        loss, _ = naive_episode(nets, meta, ep, s.steps, s.batch_size, mode="train")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.25)
        opt.step()
    return run


def naive_test_fn(nets, meta: NaiveMetaLearner, ep: Episode, s: Shape):
    """(c_naive): one meta-test episode, the straightforward way."""
    return lambda: naive_episode(nets, meta, ep, s.steps, s.batch_size, mode="test")


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


def step_fns(n: int, hidden: int, device) -> dict:
    """--steps: one meta-learner step of each kind on n coordinates (see the module docstring)."""
    g = torch.Generator().manual_seed(0)
    meta = MetaLearner(n, hidden=hidden, theta0=torch.randn(n, generator=g), generator=g).to(device)
    rand = lambda *shape: torch.randn(*shape, generator=g).to(device)
    state = meta.initial_state()
    state.h, state.c, state.f, state.i = rand(hidden, n), rand(hidden, n), rand(n).sigmoid(), rand(n).sigmoid()
    loss, grad, r = torch.tensor(1.3, device=device), 1e-3 * rand(n), rand(n)
    z = rand(4 * hidden, n)
    z_copy = torch.empty_like(z)

    def test():
        with torch.no_grad():
            meta.step(loss, grad, meta.c0, state)

    def train():
        theta, new, gates = meta.step(loss, grad, meta.c0, state)
        ((theta * r).sum() + new.h.sum() + new.c.sum() + gates.f.sum()).backward()

    fns = {"test": test, "train": train, "gemm": gemm_fn(n, hidden, 1, device),
           "gemm_fwd": gemm_forward_fn(n, hidden, 1, device), "copy": lambda: z_copy.copy_(z)}
    if native_rows(device):
        fns["test_C"], fns["train_C"] = on_path(test, meta, "native"), on_path(train, meta, "native")
        fns["gemm_C"], fns["gemm_fwd_C"] = gemm_native_fn(n, hidden, 1), gemm_native_fn(n, hidden, 1, True)
    return fns


STEP_NAMES = {"test": "meta-test step", "test_C": "meta-test step, native",
              "train": "meta-training step (fwd + bwd)", "train_C": "meta-training step, native",
              "gemm": "its three matrix products (g/T)", "gemm_fwd": "the forward product (g_fwd/T)",
              "gemm_C": "the three products as C loops (g_C/T)", "gemm_fwd_C": "the forward one (g_fwd_C/T)",
              "copy": "copy of z [4H, n] (memory)"}


def report_steps(size: int, n: int, rows: dict) -> None:
    cpu = {k: statistics.median(rows[k][1]) for k in STEP_NAMES if k in rows}
    before, after = rows["load"]
    print(f"\none meta-learner step, n = {n} coordinates ({size}x{size} learner), hidden 20   "
          f"(load average {before[0]:.2f} before, {after[0]:.2f} after)")
    print(f"  {'':<36} {'CPU ms: median':>14} {'min':>8} {'max':>8}   {'wall ms: median':>15}")
    for k, name in STEP_NAMES.items():
        if k in rows:
            times = rows[k][1]
            print(f"  {name:<36} {1e3 * cpu[k]:14.2f} {1e3 * min(times):8.2f} {1e3 * max(times):8.2f}   "
                  f"{1e3 * statistics.median(rows[k][0]):15.2f}")
    print("  beyond the matrix products (what the elementwise work, the preprocessing and the "
          "bookkeeping cost; the native path runs its own products, so its rows are its whole time less "
          "the C loops' products alone):")
    for k in ("test", "test_C", "train", "train_C"):
        if k in cpu:
            products = ("gemm" if k.startswith("train") else "gemm_fwd") + ("_C" if k.endswith("_C") else "")
            beyond = cpu[k] - cpu[products]
            print(f"    {STEP_NAMES[k] + ':':<36} {1e3 * beyond:6.2f} ms = {beyond / cpu['copy']:.1f} copies of z")


def native_rows(device) -> bool:
    """Whether (b_C) and (c_C) are measured: on a CPU where native.c compiles."""
    return torch.device(device).type == "cpu" and native.available()


def bench_shape(s: Shape, repeats: int, warmup: int, device) -> dict:
    g = torch.Generator().manual_seed(0)
    learner = Learner(s.n_way, s.channels, s.size, bn_momentum=0.95 if s.k_shot > 1 else 0.9)
    theta0 = learner.init_params(g)
    meta = MetaLearner(learner.n_params, theta0=theta0, generator=g).to(device)
    ep = random_episode(s, g, device)
    sampler, source = sampler_for(s)
    counter = iter(range(10**9))
    sgd = SGDCell(theta0, lr=0.01, train_c0=True).to(device)
    nets, naive_meta = naive_models(learner, meta)
    fns = {"a": floor_fn(learner, theta0.to(device), ep, s),
           "c": test_fn(learner, meta, ep, s),
           "b": train_fn(learner, meta, ep, s),
           "b0": train_fn(learner, sgd, ep, s),
           "g": gemm_fn(learner.n_params, meta.hidden, s.steps, device),
           "g_fwd": gemm_forward_fn(learner.n_params, meta.hidden, s.steps, device),
           "b_naive": naive_train_fn(nets, naive_meta, ep, s),
           "c_naive": naive_test_fn(nets, naive_meta, ep, s),
           "d": lambda: sampler[next(counter)].to(device)}
    if native_rows(device):
        fns["b_C"] = on_path(train_fn(learner, meta, ep, s), meta, "native")
        fns["c_C"] = on_path(test_fn(learner, meta, ep, s), meta, "native")
        fns["g_C"] = gemm_native_fn(learner.n_params, meta.hidden, s.steps)
        fns["g_fwd_C"] = gemm_native_fn(learner.n_params, meta.hidden, s.steps, forward_only=True)
    load_before = os.getloadavg()
    rows = timed(fns, repeats, warmup, device)
    rows["source"] = source
    rows["load"] = (load_before, os.getloadavg())
    return rows


NAMES = {"a": "(a) floor: nn.Module SGD", "b": "(b) meta-train episode",
         "b0": "(b0) same, SGD as the rule", "g": "(g) LSTM matmuls alone",
         "g_fwd": "(g_fwd) forward matmul alone", "c": "(c) meta-test episode",
         "b_naive": "(b_naive) straightforward (b)", "c_naive": "(c_naive) straightforward (c)",
         "b_C": "(b_C) (b) on --path native", "c_C": "(c_C) (c) on --path native",
         "g_C": "(g_C) (g) as native.c's loops", "g_fwd_C": "(g_fwd_C) (g_fwd) as C loops",
         "d": "(d) episode sampling"}
KEYS = ["a", "b", "b0", "g", "g_fwd", "c", "b_naive", "c_naive", "b_C", "c_C", "g_C", "g_fwd_C", "d"]
# name -> (numerator keys, denominator keys): the ratio sum(numerator) / sum(denominator)
RATIOS = {"(b)/((b0)+(g))": (["b"], ["b0", "g"]), "(c)/((a)+(g_fwd))": (["c"], ["a", "g_fwd"]),
          "(b_naive)/(b)": (["b_naive"], ["b"]), "(c_naive)/(c)": (["c_naive"], ["c"]),
          "(b_C)/((b0)+(g))": (["b_C"], ["b0", "g"]), "(c_C)/((a)+(g_fwd))": (["c_C"], ["a", "g_fwd"]),
          "(b_naive)/(b_C)": (["b_naive"], ["b_C"]), "(c_naive)/(c_C)": (["c_naive"], ["c_C"]),
          "(b)/((b0)+(g_C))": (["b"], ["b0", "g_C"]), "(c)/((a)+(g_fwd_C))": (["c"], ["a", "g_fwd_C"]),
          "(b_C)/((b0)+(g_C))": (["b_C"], ["b0", "g_C"]), "(c_C)/((a)+(g_fwd_C))": (["c_C"], ["a", "g_fwd_C"]),
          "(b)/(a)": (["b"], ["a"]), "(b0)/(a)": (["b0"], ["a"]), "(c)/(a)": (["c"], ["a"]),
          "((b0)+(g))/(a)": (["b0", "g"], ["a"])}


def ratios(rows: dict, which: int = 0) -> dict:
    """name -> (ratio of the medians, min and max of the per-round ratios); which = 0: wall
    clock, 1: CPU time. The rounds are interleaved, so each round's ratio compares runs made
    within seconds of each other: its spread shows how much the load moved the ratio."""
    out = {}
    for name, (num, den) in RATIOS.items():
        if any(k not in rows for k in num + den):      # (b_C), (c_C): not measured here
            continue
        med = {k: statistics.median(rows[k][which]) for k in num + den}
        rounds = [sum(rows[k][which][r] for k in num) / sum(rows[k][which][r] for k in den)
                  for r in range(len(rows[num[0]][which]))]
        out[name] = (sum(med[k] for k in num) / sum(med[k] for k in den), min(rounds), max(rounds))
    return out


def report(s: Shape, rows: dict) -> None:
    med = {k: statistics.median(rows[k][0]) for k in KEYS if k in rows}
    cpu = {k: statistics.median(rows[k][1]) for k in KEYS if k in rows}
    before, after = rows["load"]
    print(f"\n{s}   (load average {before[0]:.2f} before, {after[0]:.2f} after)")
    print(f"  {'':<31} {'wall ms: median':>15} {'min':>8} {'max':>8}   {'CPU ms: median':>14}   peak memory")
    for k in (k for k in KEYS if k in rows):
        wall, cpu_times, mem = rows[k]
        extra = f"  [{rows['source']}]" if k == "d" else ""
        print(f"  {NAMES[k]:<31} {1e3 * med[k]:15.2f} {1e3 * min(wall):8.2f} {1e3 * max(wall):8.2f}   "
              f"{1e3 * cpu[k]:14.2f}   {mem:7.0f} MB{extra}")
    wall_r, cpu_r = ratios(rows, 0), ratios(rows, 1)
    lines = {"distance to the bound (1 = the bound)": ["(b)/((b0)+(g))", "(c)/((a)+(g_fwd))",
                                                       "(b_C)/((b0)+(g))", "(c_C)/((a)+(g_fwd))"],
             "the same with the C loops' products in the bound": [
                 "(b)/((b0)+(g_C))", "(c)/((a)+(g_fwd_C))", "(b_C)/((b0)+(g_C))", "(c_C)/((a)+(g_fwd_C))"],
             "speed-up over the straightforward code": ["(b_naive)/(b)", "(c_naive)/(c)",
                                                        "(b_naive)/(b_C)", "(c_naive)/(c_C)"],
             "to the floor": ["(b)/(a)", "(b0)/(a)", "(c)/(a)", "((b0)+(g))/(a)"]}
    for title, names in lines.items():
        if not any(n in wall_r for n in names):       # the C loops' bound: not measured here
            continue
        print(f"  {title}:")
        for label, r in (("wall", wall_r), ("CPU ", cpu_r)):
            print("    " + label + "  " + "   ".join(f"{n} = {r[n][0]:.2f} [{r[n][1]:.2f}-{r[n][2]:.2f}]"
                                                   for n in names if n in r))


def cpu_model() -> str:
    """The CPU's name as Linux gives it (/proc/cpuinfo), else platform's: the products' speed,
    and so the bound, differs from one CPU to another (docs/speed.md)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "Model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metalstm.tools.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=positive_int, default=10, help="timed runs per measurement (default 10)")
    parser.add_argument("--warmup", type=non_negative_int, default=2, help="untimed runs first (default 2)")
    parser.add_argument("--shapes", type=int, nargs="+", default=[28, 84], choices=[28, 84],
                        help="image sizes: 28 (28x28x1) and/or 84 (84x84x3)")
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 1], choices=[5, 1],
                        help="5 (T=8, B=25) and/or 1 (T=12, B=5)")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--steps", action="store_true",
                        help="time one meta-learner step of each kind instead of whole episodes")
    args = parser.parse_args(argv)
    try:
        check_device(args.device)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    set_threads(args.threads)
    load = os.getloadavg()
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} runs after {args.warmup} warm-up runs; load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1, 5, 15 min) on {os.cpu_count()} cores, "
          f"CPU: {cpu_model()}")
    if native_rows(args.device):
        print(f"(b_C), (c_C), (g_C), (g_fwd_C): the C loops of metalstm/fast/native.c, compiled as "
              f"`{native.describe()}`")
    elif torch.device(args.device).type == "cpu":
        print("(b_C), (c_C), (g_C), (g_fwd_C) not measured: metalstm/fast/native.c does not compile here "
              "(no C compiler?)")
    if args.steps:
        for size in args.shapes:
            n = Learner(5, 1 if size == 28 else 3, size).n_params
            load_before = os.getloadavg()
            rows = timed(step_fns(n, 20, args.device), args.repeats, args.warmup, args.device)
            rows["load"] = (load_before, os.getloadavg())
            report_steps(size, n, rows)
        return 0
    for s in shapes(args.shapes, args.shots):
        report(s, bench_shape(s, args.repeats, args.warmup, args.device))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
