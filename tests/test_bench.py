"""The episode benchmark runs and prints every measurement (metalstm.tools.bench)."""
import torch

from metalstm.tools.bench import main


def test_bench_runs_one_small_shape(capsys):
    threads = torch.get_num_threads()
    try:
        assert main(["--repeats", "1", "--warmup", "0", "--shapes", "28", "--shots", "1", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "1 threads" in out and "28x28x1 5-way 1-shot T=12 B=5" in out
    for row in ("(a) floor", "(b) meta-train episode", "(b0) same, SGD as the rule", "(g) LSTM matmuls alone",
                "(c) meta-test episode", "(d) episode sampling", "lower bound of (b)/(a)", "(b)/(a)", "(b0)/(a)",
                "(c)/(a)"):
        assert row in out
