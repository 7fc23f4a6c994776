"""Gate visualisation (paper notes 10): recording, plots, and the inner-loop explorer.

    record = record_gates(learner, metalearner, sampler_for(cfg, "val"), cfg, episodes=20)
    plot_gates(record_1shot, record_5shot)        # the paper's Figure 2
    print(format_summary(record_1shot, record_5shot))
    InnerLoopExplorer(learner, metalearner, sampler, cfg).show()

Under the course build (METALSTM_FIGURE_AUDIT set) every figure rendered from the moment this package
is imported is measured as a deck projects it: metalstm.viz.audit.
"""
import os as _os

from metalstm.viz import audit
from metalstm.viz.explorer import InnerLoopExplorer, figure_png, mosaic
from metalstm.viz.plots import (accuracy_by_step, plot_gate_bands, plot_gates, plot_query_accuracy_by_step,
                                plot_step_sizes)
from metalstm.viz.record import (GATES, LAYER_TITLES, LAYERS, EpisodeTrace, GateRecord, forgetting_share,
                                 format_summary, gate_summary, implied_weight_decay, pick_coordinates,
                                 record_gates, retained_fraction, step_sizes,
                                 trace_episode, variance_shares, weight_decay_share)

__all__ = ["GATES", "LAYERS", "LAYER_TITLES", "EpisodeTrace", "GateRecord", "InnerLoopExplorer",
           "accuracy_by_step", "figure_png", "format_summary", "gate_summary", "mosaic",
           "pick_coordinates", "plot_gate_bands", "plot_gates", "plot_query_accuracy_by_step",
           "record_gates", "trace_episode", "variance_shares",
           "forgetting_share", "implied_weight_decay", "plot_step_sizes", "retained_fraction", "step_sizes",
           "weight_decay_share"]

if _os.environ.get(audit.ENV):
    audit.install(_os.environ[audit.ENV])
