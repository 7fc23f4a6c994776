"""Tools beside the course, not part of what a student reads.

    python -m metalstm.tools.bench          # how fast is one episode (docs/speed.md)
    python -m metalstm.tools.diagnose       # where a trained meta-learner loses to the baselines
    python -m metalstm.tools.course         # run the six notebooks headless (`make course`)
    python -m metalstm.tools.build_glyphs   # draw the glyph data set again from the fonts
    python -m metalstm.tools.episode_rate   # how many episodes per second the sampler draws

The teaching modules (everything else in `metalstm`) never import from here;
tests/delivery/test_imports.py checks it.
"""
