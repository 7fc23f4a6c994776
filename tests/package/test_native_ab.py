"""metalstm.tools.native_ab times changed copies of native.c side by side: it runs each copy's
own code (a copy that does less is faster, and the real library is back afterwards), and a
copy it cannot use is one line and exit code 2."""
import pytest
import torch

from metalstm.fast import native
from metalstm.tools import native_ab
from test_native import step_args

pytestmark = pytest.mark.skipif(not native.available(), reason="no C compiler: metalstm/fast/native.c cannot be built")


@pytest.mark.slow
def test_each_copy_runs_its_own_code(tmp_path, capsys):
    """A copy whose product loop is left out (z = 0: wrong numbers, less work) is timed as
    itself: its steps give other numbers than native.c's, and afterwards native.c's are back."""
    source = native.SOURCE.read_text()
    loop = "            acc[0][v] += w0 * xk;\n"
    assert loop in source
    lazy = tmp_path / "lazy.c"
    lazy.write_text(source.replace(loop, "            acc[0][v] += 0.0f * xk;\n"))
    copies = {"native": native.load_copy(native.SOURCE, tmp_path / "a.so"),
              "lazy": native.load_copy(lazy, tmp_path / "b.so")}
    args = step_args(100, 20, torch.Generator().manual_seed(0))
    outs = {}
    for name, lib in copies.items():
        with native.use(lib):
            outs[name] = native.step(*args)[1]
    assert not torch.equal(outs["native"], outs["lazy"])
    assert torch.equal(native.step(*args)[1], outs["native"])          # the real library again
    times = native_ab.time_copies(copies, n=200, rounds=2, progress=False)
    assert set(times) == {(c, k) for c in copies for k in native_ab.KINDS}
    assert all(len(ts) == 2 and min(ts) > 0 for ts in times.values())


@pytest.mark.slow
def test_the_command_prints_each_file_and_refuses_what_it_cannot_use(tmp_path, capsys):
    assert native_ab.main([str(native.SOURCE), str(native.SOURCE), "--rounds", "2", "--n", "200"]) == 0
    out = capsys.readouterr().out
    for line in ("meta-test step", "meta-training step (fwd + bwd)", f"0: {native.SOURCE}", f"1: {native.SOURCE}",
                 "ratio 1.000 [1.00-1.00]"):
        assert line in out, line
    broken = tmp_path / "broken.c"
    broken.write_text("int metalstm_step(void) { return 0; }\n")          # the other functions missing
    assert native_ab.main([str(broken), "--rounds", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("native_ab:")
    with pytest.raises(SystemExit) as stop:
        native_ab.main([str(tmp_path / "none.c")])
    assert stop.value.code == 2
