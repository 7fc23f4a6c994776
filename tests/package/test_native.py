"""The C loops (path="native": metalstm/fast/native.c through metalstm.fast.native) compute the
same step as the reference: values and meta-gradients to float32 rounding, the preprocessing of
paper notes 4, the meta-test step; NaNs still propagate; without a C compiler, one clear error
on the command line and the fused path in a model."""
import json
import math
import shutil

import pytest
import torch

from metalstm.fast import native
from metalstm.metalearner import MetaLearner, NonFiniteStepError
from metalstm.preprocess import preprocess
from test_fused import perturbed_meta, unroll

pytestmark = pytest.mark.skipif(not native.available(), reason="no C compiler: metalstm/native.c cannot be built")


def counting(monkeypatch) -> list:
    """How often the C forward ran (it runs once per meta-learner step)."""
    calls = []
    real = native.step
    monkeypatch.setattr(native, "step", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def run(meta: MetaLearner, path: str, steps: int = 4, every_output: bool = True):
    """theta_T, the last state and the meta-gradients of a loss that reaches every output of the
    steps (every_output) or, as in meta-training, theta_T alone (the last step's backward then
    gets no gradient for h_T, c_T and the gates: the zeros that native.step_backward puts in)."""
    meta.zero_grad()
    theta, state, gates = unroll(meta, steps, path)
    r = torch.randn(meta.n_params, generator=torch.Generator().manual_seed(2))
    loss = (theta * r).sum()
    if every_output:
        loss = loss + state.h.pow(2).sum() + 0.3 * state.c.sum() + (gates[1].f * r).sum() \
            + gates[2].i.sum() + state.f.sum() + state.i.pow(2).sum()
    loss.backward()
    return theta.detach(), state, {name: p.grad.clone() for name, p in meta.named_parameters()}


def assert_native_agrees(meta: MetaLearner, every_output: bool = True, steps: int = 4) -> None:
    (theta_n, state_n, grads_n), (theta_r, state_r, grads_r) = (run(meta, path, steps, every_output)
                                                                for path in ("native", "reference"))
    torch.testing.assert_close(theta_n, theta_r, rtol=1e-5, atol=1e-6)
    for name in ("h", "c", "f", "i"):
        torch.testing.assert_close(getattr(state_n, name), getattr(state_r, name), rtol=1e-5, atol=1e-6)
    for name, want in grads_r.items():
        assert want.abs().sum() > 0, name
        # relative to the gradient's scale: float32 rounding, summed over n coordinates
        assert (grads_n[name] - want).abs().max() <= 1e-5 * want.abs().max(), name


@pytest.mark.parametrize("prev_gate, every_output", [("value", True), ("logit", True), ("value", False)])
def test_native_step_has_the_reference_values_and_meta_gradients(prev_gate, every_output):
    assert_native_agrees(perturbed_meta(300, prev_gate).float(), every_output)


@pytest.mark.parametrize("n, hidden", [(1, 20), (63, 3), (64, 20), (65, 1), (130, native.MAX_H), (2000, 20)])
def test_every_block_and_hidden_size_has_the_reference_meta_gradients(n, hidden):
    """The C loops walk the coordinates in blocks of 64 (native.c's COLS): fewer than one block,
    exactly one, one and a bit, and many; hidden sizes from 1 to native.MAX_H."""
    assert_native_agrees(perturbed_meta(n, "value", hidden=hidden).float(), steps=3)


def test_layer1s_two_backward_products_run_only_where_wanted(monkeypatch):
    """d h_{t-1} = W'[h]^T dz is computed only when h_{t-1} needs a gradient: not for the first
    step, whose h_0 is a constant (ctx.needs_input_grad), and for every later one."""
    wanted, real = [], native.step_backward
    monkeypatch.setattr(native, "step_backward", lambda *a, want_dh: wanted.append(want_dh) or real(*a, want_dh=want_dh))
    run(perturbed_meta(100, "value").float(), "native", steps=3)
    assert wanted == [True, True, False]          # the backward pass runs the steps last to first


def test_native_step_is_not_the_default_path_bit_for_bit_but_the_same_to_rounding():
    """The C loops' exp and tanh round differently from PyTorch's: close, and yet not equal
    (were they equal, this test would not show that the C loops ran)."""
    meta = perturbed_meta(300, "value").float()
    theta_n, _, grads_n = run(meta, "native")
    theta_f, _, grads_f = run(meta, "fused")
    torch.testing.assert_close(theta_n, theta_f, rtol=1e-5, atol=1e-6)
    assert not torch.equal(grads_n["lstm_weight"], grads_f["lstm_weight"])


def test_native_meta_test_step_agrees_and_builds_no_graph():
    meta = perturbed_meta(200, "value").float()
    with torch.no_grad():
        theta_n, state_n, _ = unroll(meta, 3, "native")
        theta_r, state_r, _ = unroll(meta, 3, "reference")
    assert theta_n.grad_fn is None
    torch.testing.assert_close(theta_n, theta_r, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(state_n.h, state_r.h, rtol=1e-5, atol=1e-6)


def test_native_preprocessing_is_paper_notes_4():
    """Both branches, the threshold e^-p itself, zeros of both signs and a NaN, for p = 10 and 3."""
    g = torch.Generator().manual_seed(0)
    n, H = 3000, 20
    for p in (10.0, 3.0, native.MAX_P):
        grad = torch.randn(n, generator=g) * 10.0 ** torch.randint(-12, 3, (n,), generator=g).float()
        edge = math.exp(-p)
        grad[:6] = torch.tensor([0.0, -0.0, edge, -edge, 1e-30, float("nan")])
        grad[6:11] = torch.tensor([3e38, -1e35, float("inf"), float("-inf"), 1e-45])   # and a denormal
        h = torch.randn(H, n, generator=g)
        inputs = native.layer1_input(grad, p, h).T            # [n, H + 3]: a row per coordinate
        want = preprocess(grad, p)
        assert torch.isnan(inputs[5, 1]) and torch.isnan(want[5, 1]) and inputs[5, 0] == want[5, 0] == -1
        torch.testing.assert_close(inputs[6:, :2], want[6:], rtol=1e-6, atol=1e-7)
        assert torch.isinf(inputs[8:10, 0]).all() and inputs[8:10, 1].tolist() == [1.0, -1.0]
        torch.testing.assert_close(inputs[:5, :2], want[:5], rtol=1e-6, atol=1e-7)
        assert torch.equal(inputs[:, 2:2 + H], h.T) and bool((inputs[:, -1] == 1).all())


@pytest.mark.parametrize("where", ["grad", "c", "h"])
def test_a_nan_still_reaches_theta(where):
    """The non-finite guard of train.py sees a diverging run: a NaN in the cell state (through tanh)
    or in h (through z and every gate's exp) gives NaN in theta_t; a NaN in grad_t is refused by
    MetaLearner.step before the C loops run."""
    meta = perturbed_meta(50, "value").float()
    meta.path = "native"
    grad, state = torch.zeros(50), meta.initial_state()
    {"grad": grad, "c": state.c[3], "h": state.h[5]}[where][7] = float("nan")
    if where == "grad":
        with pytest.raises(NonFiniteStepError):
            meta.step(torch.tensor(1.0), grad, meta.c0, state)
        return
    with torch.no_grad():
        theta, new, _ = meta.step(torch.tensor(1.0), grad, meta.c0, state)
    assert torch.isnan(theta[7]) and torch.isfinite(theta[:7]).all() and torch.isfinite(theta[8:]).all()
    assert torch.isnan(new.h[:, 7]).any() and torch.isfinite(new.h[:, :7]).all()


def test_only_cpu_float32_steps_with_a_usual_p_and_hidden_size_take_the_c_loops(monkeypatch):
    calls = counting(monkeypatch)
    meta32, meta64 = perturbed_meta(30, "value").float(), perturbed_meta(30, "value")
    meta32.path = "native"
    with torch.no_grad():
        unroll(meta64, 2, "native")
        assert calls == []
        loss, state = torch.tensor(1.0), meta32.initial_state()
        theta, _, _ = meta32.step(loss, torch.ones(30, dtype=torch.float64), meta32.c0, state)  # mixed
        assert calls == []
        meta32.p = native.MAX_P + 1
        meta32.step(loss, torch.ones(30), meta32.c0, state)
        assert calls == []
        meta32.p = 10.0
        unroll(perturbed_meta(30, "value", hidden=native.MAX_H + 1).float(), 2, "native")
        assert calls == []                      # a hidden size beyond the C loops' stack buffers
        unroll(meta32, 2, "native")
    assert len(calls) == 2


def test_strided_views_are_read_as_their_values():
    meta = perturbed_meta(40, "value").float()
    meta.path = "native"
    g = torch.Generator().manual_seed(5)
    big_theta, big_grad = torch.randn(80, generator=g), 1e-3 * torch.randn(80, generator=g)
    theta, grad = big_theta[::2], big_grad[::2]
    assert not theta.is_contiguous()
    loss, state = torch.tensor(0.9), meta.initial_state()
    with torch.no_grad():
        got = meta.step(loss, grad, theta, state)[0]
        meta.path = "fused"
        want = meta.step(loss, grad.contiguous(), theta.contiguous(), state)[0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_the_c_loops_refuse_arrays_of_another_kind_or_size():
    H, n = 20, 10
    z = lambda *shape: torch.zeros(*shape)
    with pytest.raises(ValueError, match="grad must be a float32 CPU array of shape"):
        native.layer1_input(torch.zeros(n, dtype=torch.float64), 10.0, z(H, n))
    with pytest.raises(ValueError, match="hidden size must be in"):
        native.layer1_input(z(n), 10.0, z(native.MAX_H + 1, n))
    with pytest.raises(ValueError, match="p must be in"):
        native.layer1_input(z(n), native.MAX_P + 1, z(H, n))
    step_args = [z(n), 10.0, z(H, n), z(4 * H, H + 3), z(H, n), z(n), z(n), z(n), z(H + 2), z(H + 2),
                 torch.tensor(4.0), torch.tensor(-4.0)]
    with pytest.raises(ValueError, match="acts must be contiguous"):
        native.step(*step_args, acts=z(n, 4 * H).T)
    with pytest.raises(ValueError, match="W1_folded must be a float32 CPU array of shape"):
        native.step(*step_args[:3], z(4 * H, H + 2), *step_args[4:])


def test_without_a_c_compiler_the_native_path_runs_as_fused(monkeypatch, tmp_path):
    """A model on path="native" (e.g. loaded from a checkpoint trained with --path native) where
    native.c cannot be built: every step runs the fused step's PyTorch operations, bit for bit."""
    monkeypatch.setattr(native, "_LIB", {"lib": None})
    monkeypatch.setattr(native, "compiler", lambda: None)
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path))
    with pytest.raises(native.NativeUnavailable, match="needs a C compiler"):
        native.library()
    assert not native.available()
    calls = counting(monkeypatch)
    meta = perturbed_meta(20, "value").float()
    theta_n = unroll(meta, 2, "native")[0]
    theta_f = unroll(meta, 2, "fused")[0]
    assert calls == [] and torch.equal(theta_n, theta_f)


def test_a_compiler_that_fails_is_reported_and_nothing_half_built_is_kept(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_LIB", {"lib": None})
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path))
    monkeypatch.setenv("CC", "false")            # a "compiler" that always fails
    with pytest.raises(native.NativeUnavailable, match="could not compile"):
        native.library()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_the_library_is_built_once_into_the_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_LIB", {"lib": None})
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path))
    lib = native.library()
    built = sorted(p.name for p in tmp_path.iterdir())
    assert [name.rsplit(".", 1)[1] for name in built] == ["flags", "sha256", "so"]   # .sha256: verified()
    assert native.library() is lib and "-O" in native.describe()
    monkeypatch.setattr(native, "_LIB", {"lib": None})
    monkeypatch.setattr(native, "_build", lambda *a: pytest.fail("compiled again"))
    native.library()                              # a new process: loaded from the cache


@pytest.mark.slow
def test_train_and_evaluate_take_path_native(tmp_path, capsys, monkeypatch):
    from metalstm import evaluate, train
    from metalstm.checkpoint import load_checkpoint
    from metalstm.paths import shipped_checkpoint
    calls = counting(monkeypatch)
    out = tmp_path / "run"
    assert train.main(["--config", "smoke", "--episodes", "2", "--val-every", "2", "--val-episodes", "1",
                       "--out", str(out), "--threads", "1", "--path", "native"]) == 0
    assert ", --path native ->" in capsys.readouterr().err          # the start line, logged to stderr
    assert calls and load_checkpoint(out / "last.pt")[1]["path"] == "native"
    accuracy = {}
    for flag in ([], ["--path", "native"]):
        before = len(calls)
        json_path = tmp_path / f"eval{len(flag)}.json"
        assert evaluate.main(["--checkpoint", str(shipped_checkpoint("glyphs-1shot")), "--episodes", "4",
                              "--threads", "1", "--json", str(json_path), *flag]) == 0
        assert (len(calls) > before) == bool(flag)
        row = json.loads(json_path.read_text())["test_sets"]["glyphs"]["results"][0]
        accuracy[bool(flag)] = row["accuracies"]
    # 4 episodes of 75 queries: rounding may move a query or two across a decision boundary
    assert sum(abs(a - b) for a, b in zip(accuracy[True], accuracy[False])) <= 2 / 75 + 1e-9


def test_an_unknown_path_on_the_command_line_is_one_line(tmp_path, capsys):
    from metalstm import train
    with pytest.raises(SystemExit) as exc:
        train.main(["--config", "smoke", "--episodes", "1", "--out", str(tmp_path / "r"), "--path", "fast"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "argument --path: invalid choice: 'fast'" in err and "reference" in err and "native" in err
    assert not (tmp_path / "r").exists()


def test_native_refuses_a_gpu_device():
    from metalstm.cli import check_path_runs
    with pytest.raises(ValueError, match="--path native runs on the CPU; with --device cuda:0, pass --path fused"):
        check_path_runs("native", "cuda:0")
    check_path_runs("fused", "cuda:0")                 # the other paths run anywhere


def test_a_missing_compiler_on_the_command_line_is_one_line(tmp_path, capsys, monkeypatch):
    from metalstm import train
    monkeypatch.setattr(native, "_LIB", {"lib": None})
    monkeypatch.setattr(native, "compiler", lambda: None)
    assert train.main(["--config", "smoke", "--episodes", "1", "--out", str(tmp_path / "r"), "--path", "native"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: --path native: the native backend needs a C compiler (cc, gcc or clang on the PATH, "
                   "or $CC); without one, leave it off: the default path computes the same step")


def test_cc_may_carry_words_and_must_name_a_program(monkeypatch):
    monkeypatch.setenv("CC", "env cc")
    assert native.compiler() == ["env", "cc"]
    monkeypatch.setenv("CC", "no-such-compiler-here")
    with pytest.raises(native.NativeUnavailable, match="names no program"):
        native.compiler()


@pytest.mark.slow
def test_reuse_takes_a_rules_accuracies_only_from_a_run_of_the_same_path(tmp_path, capsys, monkeypatch):
    """evaluate --reuse: a --path native run recomputes the rule (its rounding differs), not the baselines."""
    from metalstm import evaluate
    from metalstm.paths import shipped_checkpoint
    first, cache = tmp_path / "first.json", tmp_path / "cache"
    cache.mkdir()
    shutil.copy(shipped_checkpoint("glyphs-1shot").parent / "baselines" / "pretrained-glyphs-28.pt", cache)
    common = ["--checkpoint", str(shipped_checkpoint("glyphs-1shot")), "--episodes", "2", "--threads", "1",
              "--baselines", "nearest", "--cache", str(cache)]
    assert evaluate.main([*common, "--json", str(first)]) == 0
    calls = counting(monkeypatch)
    assert evaluate.main([*common, "--path", "native", "--reuse", str(first), "--json", str(tmp_path / "again.json")]) == 0
    assert calls                                              # the rule ran again, with the C loops
    rows = json.loads((tmp_path / "again.json").read_text())["test_sets"]["glyphs"]["results"]
    assert rows[0]["note"].endswith("(--path native)")
    calls.clear()
    assert evaluate.main([*common, "--path", "native", "--reuse", str(tmp_path / "again.json")]) == 0
    assert not calls                                          # the same path: its accuracies are reused


def padded(t: torch.Tensor) -> torch.Tensor:
    """t's values in a contiguous slice of a NaN-filled buffer one block (64 floats) longer:
    a C loop that reads past an array's end then computes NaNs."""
    buffer = torch.full((t.numel() + 64,), float("nan"))
    buffer[:t.numel()] = t.reshape(-1)
    return buffer[:t.numel()].view(t.shape)


def step_args(n: int, H: int, g: torch.Generator) -> list:
    """Random arguments of native.step: grad, p, h, W1_folded, c, theta, f_prev, i_prev, W_F, W_I, b_F, b_I."""
    r = lambda *shape: torch.randn(*shape, generator=g)
    return [1e-3 * r(n), 10.0, r(H, n), 0.5 * r(4 * H, H + 3), r(H, n), r(n), r(n).sigmoid(), r(n).sigmoid(),
            r(H + 2), r(H + 2), torch.tensor(0.5), torch.tensor(-0.5)]


@pytest.mark.parametrize("n", [1, 64, 100])
def test_the_c_loops_read_and_write_no_column_past_an_array(n):
    H = 5
    g = torch.Generator().manual_seed(n)
    args = step_args(n, H, g)
    grad, p, h, W1, c, theta, _, _, W_F, W_I = args[:10]
    ups = [torch.randn(n, generator=g) for _ in range(5)] + [torch.randn(H, n, generator=g) for _ in range(2)]
    acts, acts_padded = torch.empty(4 * H, n), padded(torch.empty(4 * H, n))
    want = native.step(*args, acts=acts)
    got = native.step(*(padded(a) if isinstance(a, torch.Tensor) and a.dim() else a for a in args),
                      acts=acts_padded)
    for x, y in zip(want, got):
        assert torch.equal(x, y) and torch.isfinite(y).all()
    assert torch.equal(acts, acts_padded)
    assert torch.isnan(acts_padded._base[4 * H * n:]).all(), "the C forward wrote past acts"
    back = lambda f: native.step_backward(*(f(u) for u in ups), f(grad), p, f(h), f(W1), f(theta), f(acts), f(c),
                                          f(want[2]), f(want[3]), f(want[4]), f(W_F), f(W_I))
    for x, y in zip(back(lambda t: t), back(padded)):
        assert torch.equal(x, y) and torch.isfinite(y).all()


def test_two_threads_stepping_at_once_compute_what_one_does():
    """ctypes lets go of the GIL during a C call: two meta-learners stepping in two threads."""
    import threading
    metas = [perturbed_meta(500, "value", seed=s).float() for s in (0, 1)]
    serial = [unroll(m, 3, "native")[0] for m in metas]
    results = [None, None]

    def work(k):
        results[k] = unroll(metas[k], 3, "native")[0]

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for want, got in zip(serial, results):
        assert torch.equal(want, got)


def test_meta_gradients_at_the_course_size_against_float64():
    """n = 28,485 (the 28x28 learner): dW' is summed over 1,780 blocks' lanes; against the reference
    in float64, the C loops' float32 meta-gradients stay within float32's accumulated rounding."""
    meta64 = perturbed_meta(28485, "value")
    meta32 = perturbed_meta(28485, "value").float()
    _, _, grads_n = run(meta32, "native", steps=3)
    _, _, grads_r = run(meta64, "reference", steps=3)
    for name, want in grads_r.items():
        err = (grads_n[name].double() - want).abs().max() / want.abs().max()
        assert err <= 1e-5, (name, float(err))


@pytest.mark.parametrize("n, hidden", [(1, 1), (64, 20), (65, 3), (2000, 20), (130, native.MAX_H)])
def test_the_benchmarks_c_products_are_layer_1s_three_products(n, hidden):
    """native.products, the benchmark's (g_C): z = W' x, dW' = dz x^T and d h = W'[h]^T dz against
    float64, with no read past an operand (NaN-padded operands: the results stay finite)."""
    g = torch.Generator().manual_seed(n + hidden)
    W1, x = torch.randn(4 * hidden, hidden + 3, generator=g), torch.randn(hidden + 3, n, generator=g)
    dz = torch.randn(4 * hidden, n, generator=g)
    z, dW1, dh = native.products(padded(W1), padded(x), padded(dz))
    W, X, D = W1.double(), x.double(), dz.double()
    for got, want in ((z, W @ X), (dW1, D @ X.T), (dh, W[:, 2:hidden + 2].T @ D)):
        assert torch.isfinite(got).all()
        assert (got.double() - want).abs().max() <= 1e-5 * want.abs().max()
    (z_alone,) = native.products(W1, x)
    assert torch.equal(z_alone, z)
    with pytest.raises(ValueError, match="W1_folded must be"):
        native.products(torch.randn(4 * (native.MAX_H + 1), native.MAX_H + 4), torch.randn(native.MAX_H + 4, 3))
    with pytest.raises(ValueError, match="x must be"):
        native.products(W1, torch.randn(hidden + 2, n))
    with pytest.raises(ValueError, match="W1_folded must be"):
        native.products(W1, torch.randn(n))


def test_the_c_products_of_no_coordinates_are_zeros():
    W1 = torch.randn(8, 5)
    z, dW1, dh = native.products(W1, torch.randn(5, 0), torch.randn(8, 0))
    assert z.shape == (8, 0) and dh.shape == (2, 0) and torch.equal(dW1, torch.zeros(8, 5))
