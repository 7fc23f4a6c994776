"""An interactive stepper through one episode's inner loop (ipywidgets), with a static fallback.

    explorer = InnerLoopExplorer(learner, metalearner, sampler_for(cfg, "val"), cfg)
    explorer.show()                     # episode / layer / step controls in a live notebook
    explorer.static_figure(3, "conv2.weight", step=5)   # the same picture as a figure

For one episode the explorer shows, in six panels sized for a slide (metalstm.viz.style), the
support set, the learner's query predictions and accuracy at theta_t, the histograms of
1 - f_t (log scale) and i_t over the chosen layer's coordinates at step t, and one
coordinate's gates up to step t over the layer's 10%-90% band.
The T steps of an episode are computed once (`trace_episode`) and cached;
moving the step slider only indexes into them.
"""
from __future__ import annotations

import base64
import io
import math

import matplotlib
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter

from metalstm.viz.record import LAYER_TITLES, LAYERS, EpisodeTrace, pick_coordinates, trace_episode
from metalstm.viz.style import BODY, HEADLINE, RC, SMALL, TITLE, WIDE

PAD = 0.15   # grey between the tiles of an image mosaic
FLOOR = 1e-8   # where a forget gate that rounds to 1 in float32 (1 - f_t = 0) is drawn on the log scale


def mosaic(images: torch.Tensor, n_cols: int) -> torch.Tensor:
    """Tile images [n, 1, H, W] (or [n, H, W]) column-major into one [rows*(H+1)+1, cols*(W+1)+1]
    picture: image j goes to column j // rows, row j % rows."""
    images = images.reshape(images.shape[0], images.shape[-2], images.shape[-1])
    n, h, w = images.shape
    rows = -(-n // n_cols)
    out = torch.full((rows * (h + 1) + 1, n_cols * (w + 1) + 1), PAD)
    for j, image in enumerate(images):
        r, c = j % rows, j // rows
        out[1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + c * (w + 1): 1 + c * (w + 1) + w] = image
    return out


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    """The figure as PNG bytes (backend-independent)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


class InnerLoopExplorer:
    """Step through the inner loop of the trained meta-learner on meta-validation episodes.

    Controls: episode (0 .. episodes-1 of `sampler`), layer (conv 1-4, linear),
    step t (0 = c_0 .. T). Episode i runs with the mini-batch order of
    `episode_generator(sampler.seed, i)`, like `record_gates` and `evaluate_rule`.
    """

    def __init__(self, learner, metalearner, sampler, cfg, episodes: int = 20, layers=LAYERS,
                 seed: int = 0, queries_per_class: int = 2, device: str | torch.device = "cpu") -> None:
        if episodes < 1:
            raise ValueError(f"episodes must be at least 1, got {episodes}")
        self.learner, self.metalearner, self.sampler, self.cfg = learner, metalearner, sampler, cfg
        self.n_episodes, self.layers, self.device = episodes, tuple(layers), device
        self.queries_per_class = queries_per_class
        self.coordinates = pick_coordinates(learner.slices(), self.layers, seed)
        self.episode, self.layer, self.step = 0, self.layers[0], cfg.steps
        self._traces: dict[int, tuple] = {}
        self.figure: Figure | None = None     # the last figure the widget drew
        self.redraws = 0
        self.controls: dict = {}
        self._box = None

    # -- the data: one trace per episode, computed once --------------------------------
    def trace(self, episode: int):
        """(Episode, EpisodeTrace) of episode index `episode`, computed on first use and cached."""
        if not 0 <= episode < self.n_episodes:
            raise ValueError(f"episode must be in 0..{self.n_episodes - 1}, got {episode}")
        if episode not in self._traces:
            from metalstm.episodes import episode_generator
            ep = self.sampler[episode].to(self.device)
            trace = trace_episode(self.learner, self.metalearner, ep, self.cfg.steps, self.cfg.batch_size,
                                  generator=episode_generator(self.sampler.seed, episode))
            self._traces[episode] = (ep.to("cpu"), _to_cpu(trace))
        return self._traces[episode]

    @property
    def accuracy(self) -> float:
        """Query accuracy of theta_t for the current episode and step."""
        return self.trace(self.episode)[1].query_acc[self.step].item()

    # -- the picture ----------------------------------------------------------------------
    def static_figure(self, episode: int | None = None, layer: str | None = None,
                      step: int | None = None) -> Figure:
        """The explorer's picture for (episode, layer, step), as a matplotlib Figure
        (not registered with pyplot: display it, or save it with fig.savefig)."""
        episode = self.episode if episode is None else episode
        layer = self.layer if layer is None else layer
        step = self.step if step is None else step
        if layer not in self.layers:
            raise ValueError(f"layer must be one of {', '.join(self.layers)}, got {layer!r}")
        if not 0 <= step <= self.cfg.steps:
            raise ValueError(f"step must be in 0..{self.cfg.steps}, got {step}")
        with matplotlib.rc_context(RC):
            return self._figure(episode, layer, step)

    def _figure(self, episode: int, layer: str, step: int) -> Figure:
        ep, trace = self.trace(episode)
        T, n_way = trace.steps, ep.n_way
        part = self.learner.slices()[layer]
        coord = self.coordinates[layer]
        title = LAYER_TITLES.get(layer, layer)

        # fixed margins, not constrained layout: the figure is redrawn at every slider move. Six panels
        # sized for a slide (metalstm.viz.style): every text at least style.SMALL points on a WIDE figure.
        fig = Figure(figsize=WIDE)
        grid = fig.add_gridspec(2, 3, width_ratios=[1.1, 1, 1], left=0.015, right=0.985, bottom=0.1,
                                top=0.84, wspace=0.2, hspace=0.62)
        fig.suptitle(f"{self.cfg.name}, episode {episode}: step t = {step} of {T}"
                     + ("  ($\\theta_0 = c_0$)" if step == 0 else ""), fontsize=HEADLINE)

        # support set: column j = label j
        ax = fig.add_subplot(grid[0, 0])
        ax.imshow(mosaic(ep.support_x, n_way).numpy(), cmap="gray_r", vmin=0, vmax=1)
        tile = ep.support_x.shape[-1] + 1
        for j in range(n_way):          # the label (the images show the class)
            ax.text(j * tile + tile / 2, -1, f"{j}", ha="center", va="bottom", fontsize=SMALL)
        ax.set_title(f"support ({ep.k_shot}-shot)", fontsize=TITLE, pad=SMALL + 8)
        ax.axis("off")

        # query predictions at theta_t: a few images per class, predicted label in the corner
        ax = fig.add_subplot(grid[1, 0])
        q, per = ep.n_query, min(self.queries_per_class, ep.n_query)
        shown = torch.tensor([j * q + r for j in range(n_way) for r in range(per)])
        ax.imshow(mosaic(ep.query_x[shown], n_way).numpy(), cmap="gray_r", vmin=0, vmax=1)
        predicted = trace.query_logits[step].argmax(dim=1)
        for k, idx in enumerate(shown.tolist()):
            r, c = k % per, k // per
            ok = bool(predicted[idx] == ep.query_y[idx])
            ax.text(c * tile + tile - 1, r * tile + tile - 1, f"{int(predicted[idx])}", ha="right",
                    va="bottom", fontsize=SMALL, fontweight="bold", color="green" if ok else "red")
        for j in range(n_way):
            ax.text(j * tile + tile / 2, -1, f"{j}", ha="center", va="bottom", fontsize=SMALL)
        ax.set_title(f"query: {trace.query_acc[step]:.0%} right", fontsize=TITLE, pad=SMALL + 8)
        ax.axis("off")

        # per gate: a histogram over the layer's coordinates at step t (top) and one coordinate's
        # trace up to step t over the layer's band (bottom). The forget gate is drawn as 1 - f_t on a
        # log scale: f_t lies within about 1e-3 of 1, so a histogram of f_t itself is one bar at 1.0000;
        # a gate that rounds to 1 is drawn at FLOOR.
        for col, (gate, values) in enumerate((("forget", trace.forget), ("input", trace.input)), start=1):
            values = values[:, part]                                             # [T, n_layer]
            log = gate == "forget"
            color = "C0" if log else "C1"
            symbol = "$1 - f_t$" if log else "$i_t$"
            if log:
                values = (1 - values.double()).clamp_min(FLOOR)
            low, high = (values.min().item(), values.max().item()) if T else ((FLOOR, 1.0) if log else (0.0, 1.0))
            if log:
                low, high = low / 1.5, max(high * 1.5, low * 10)
                bins = torch.logspace(math.log10(low), math.log10(high), 41)
            else:
                pad = 0.05 * (high - low) or 1e-3
                low, high = low - pad, high + pad
                bins = torch.linspace(low, high, 41)
            ax = fig.add_subplot(grid[0, col])
            if log:
                ax.set_xscale("log")
            if step == 0:
                ax.text(0.5, 0.5, "no update yet", ha="center", va="center", transform=ax.transAxes,
                        color="0.4", fontsize=BODY)
                ax.set_xlim(low, high)
            else:
                ax.hist(values[step - 1].numpy(), bins=bins.numpy(), histtype="stepfilled", color=color)
                ax.axvline(values[step - 1, coord].item(), color="k", lw=1.5, ls="--")
            ax.xaxis.set_major_locator(LogLocator(numticks=4) if log else MaxNLocator(3))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.tick_params(labelsize=SMALL)
            ax.set_title(f"{title}: {gate}, {symbol}", fontsize=TITLE)
            ax.set_yticks([])

            ax = fig.add_subplot(grid[1, col])
            steps = torch.arange(1, T + 1)
            if step:
                qs = torch.quantile(values[:step].double(), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64),
                                    dim=1).float()
                x = steps[:step].numpy()
                ax.fill_between(x, qs[0].numpy(), qs[2].numpy(), color="0.85")
                ax.plot(x, qs[1].numpy(), "k--", lw=1.5)
                ax.plot(x, values[:step, coord].numpy(), marker="o", color=color)
            ax.set_xlim(0.5, T + 0.5)
            if log:
                ax.set_yscale("log")
                ax.yaxis.set_major_locator(LogLocator(numticks=4))
                ax.yaxis.set_minor_formatter(NullFormatter())
            else:
                ax.yaxis.set_major_locator(MaxNLocator(3))
            ax.set_ylim(low, high)
            ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
            ax.tick_params(labelsize=SMALL)
            ax.set_xlabel("step t", fontsize=SMALL, labelpad=1)
            ax.set_title(f"coordinate #{coord}", fontsize=TITLE)       # over the layer's band and median
        return fig

    # -- the widget -----------------------------------------------------------------------
    def widget(self):
        """The ipywidgets box: episode, layer and step controls above the picture."""
        if self._box is not None:
            return self._box
        import ipywidgets as w

        self.controls = {
            "episode": w.IntSlider(value=self.episode, min=0, max=self.n_episodes - 1, description="episode",
                                   continuous_update=False),
            "layer": w.Dropdown(options=[(LAYER_TITLES.get(n, n), n) for n in self.layers], value=self.layer,
                                description="layer"),
            "step": w.IntSlider(value=self.step, min=0, max=self.cfg.steps, description="step t"),
        }
        play = w.Play(value=self.step, min=0, max=self.cfg.steps, interval=800, description="play")
        w.jslink((play, "value"), (self.controls["step"], "value"))
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        self._out = w.Output()
        self._box = w.VBox([w.HBox([self.controls["episode"], self.controls["layer"]]),
                            w.HBox([play, self.controls["step"]]), self._out])
        self._redraw()
        return self._box

    def _on_change(self, change) -> None:
        self.episode = self.controls["episode"].value
        self.layer = self.controls["layer"].value
        self.step = self.controls["step"].value
        self._redraw()

    def _redraw(self) -> None:
        from IPython.display import Image, display

        self.figure = self.static_figure()
        self.redraws += 1
        png = figure_png(self.figure)
        self._out.clear_output(wait=True)
        with self._out:
            display(Image(png))

    def show(self, static: bool = False) -> None:
        """Display the explorer. In a live notebook: the widget. Where no widget can be drawn
        (no ipywidgets, a headless run such as nbval, an HTML export) the same output carries
        the static picture of the current (episode, layer, step), which is then shown instead;
        static=True shows only that picture."""
        from IPython.display import Image, display

        try:
            import ipywidgets  # noqa: F401
        except ImportError:
            static = True
        if static:
            display(Image(figure_png(self.static_figure())))
            return
        bundle = dict(self.widget()._repr_mimebundle_())
        # the frontend picks the richest type it can show: the widget where widgets work, else the PNG
        bundle["image/png"] = base64.b64encode(figure_png(self.figure)).decode("ascii")
        display(bundle, raw=True)


def _to_cpu(trace: EpisodeTrace) -> EpisodeTrace:
    fields = {k: (v.cpu() if torch.is_tensor(v) else v) for k, v in vars(trace).items()}
    return EpisodeTrace(**fields)
