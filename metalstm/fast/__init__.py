"""The fast implementations of the meta-learner step, behind `Config.path` / `--path`.

    path="reference"  MetaLearner.reference_step (metalstm/metalearner.py): the equations as
                      written, differentiated by autograd - the one to read
    path="fused"      `metalstm.fast.fused`: the same step as one autograd.Function with a
                      hand-written backward (the default)
    path="native"     `metalstm.fast.native`: the fused step's forward and backward as C loops
                      (metalstm/fast/native.c), on CPU float32 arrays where a C compiler is found

The three agree to rounding (tests/package/test_fused.py, test_native.py, test_reference_path.py).
The readable modules never import this package at module level: `MetaLearner.step` imports
the fused step when its path asks for it.
"""
