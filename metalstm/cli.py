"""What every command line of the package checks before it starts work.

A person's mistake gets one line that names the bad value and what would be
valid, and exit code 2, never a traceback or a silently changed request:

    ap.add_argument("--episodes", type=positive_int)     # 0 or -5: "must be at least 1"
    ap.add_argument("--threads", type=positive_int)      # 0 would silently mean "torch's choice"
    check_device(args.device)                            # "cuda" without a GPU, "gpu", "cuda:7"
    check_output_file(args.json, "--json")               # a folder, or under a file
    check_path_runs(args.path, args.device)              # --path native without a C compiler, a GPU

Type functions raise argparse.ArgumentTypeError, which argparse prints as
"error: argument --episodes: must be a whole number >= 1, got '0'" (after its
usage line) and exits with 2; the checks raise ValueError, which each main()
prints as "error: ..." and turns into exit code 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from metalstm.checkpoint import atomic_write


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number >= 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """An argparse type: a finite number >= 0 (a learning rate: 0 freezes, which tests use)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def seed_int(text: str) -> int:
    """An argparse type: a seed, a whole number from 0 to 2**63 - 1 (what torch's generators take)."""
    value = _int(text)
    if not 0 <= value < 2 ** 63:
        raise argparse.ArgumentTypeError(f"must be a whole number from 0 to 2**63 - 1, got {text!r}")
    return value


def check_png(path: str | os.PathLike | None, flag: str = "--sample-grid") -> None:
    """check_output_file for a picture: also a name that ends in .png (the file written is the
    file named, never NAME.png beside it)."""
    if path is None:
        return
    if Path(path).suffix.lower() != ".png" and not Path(path).is_dir():
        raise ValueError(f"{flag} {path}: give a file name ending in .png, e.g. {path}.png")
    check_output_file(path, flag)


def save_png(fig, path: str | os.PathLike, **kwargs) -> Path:
    """fig.savefig as PNG to `path`, atomically (`atomic_write`: a failed write keeps the old file)."""
    return atomic_write(path, lambda f: fig.savefig(f, format="png", **kwargs))

def check_device(device: str) -> str:
    """`device` if torch can compute on it here, else one ValueError saying what can."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return device
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: torch sees no CUDA GPU on this machine "
                             f"(torch.cuda.is_available() is False); use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"--device {device}: this machine has {count} CUDA GPU(s), "
                             f"cuda:0 .. cuda:{count - 1}")
        return device
    if dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"--device {device}: torch sees no Apple GPU here; use --device cpu")
        return device
    raise ValueError(f"device {device!r} is not supported; use cpu, cuda or cuda:N")


def check_output_file(path: str | os.PathLike | None, flag: str = "--json") -> None:
    """ValueError unless a file can be written at `path` (checked before the work, not after):
    not a folder or a device, and the nearest existing folder above it is a writable folder."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give a file name, e.g. {p / 'results.json'}")
    if p.exists() and not p.is_file():
        raise ValueError(f"{flag} {path} is not a regular file (a device or a pipe); give a file name "
                         f"in a writable folder")
    _check_writable_folder(p.parent, f"{flag} {path}")


def _check_writable_folder(folder: Path, what: str) -> None:
    """ValueError unless `folder`, or the nearest existing folder above it, is a folder that a
    file can be created in (tried: a read-only file system passes os.access for root)."""
    parent = folder
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{what}: {parent} is a file, so nothing can be written under it")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"{what}: the folder {parent} is not writable")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".metalstm-probe.", suffix=".tmp")
    except OSError as exc:
        raise ValueError(f"{what}: nothing can be written in the folder {parent} "
                         f"({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)


def write_json(path: str | os.PathLike | None, data: dict, printed: str = "the table above",
               indent: int = 2) -> int:
    """Write `data` as JSON to `path` after the results were printed: 0, or one error line and 2
    (what was printed stays complete; nothing is raised). No path: nothing to do, 0."""
    if path is None:
        return 0
    try:
        atomic_write(path, json.dumps(data, indent=indent))
    except OSError as exc:
        print(f"error: could not write --json {path} ({exc.strerror or exc}); {printed} is complete"
              + ("; the previous file is unchanged" if Path(path).exists() else ""), file=sys.stderr)
        return 2
    return 0


def check_folder(path: str | os.PathLike | None, flag: str, writable: bool = False) -> None:
    """ValueError when `path` exists and is not a folder (e.g. --cache pointing at a file), and,
    with writable=True, when nothing could be written in it (checked before the work starts)."""
    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise ValueError(f"{flag} {path} is a file; it must be a folder (or not exist yet)")
    if path is not None and writable:
        _check_writable_folder(Path(path), f"{flag} {path}")


def set_threads(n: int | None) -> None:
    """torch.set_num_threads(n) when n is given (argparse has checked n >= 1)."""
    if n is not None:
        torch.set_num_threads(n)


PATH_HELP = ("which implementation runs the model, the same numbers to rounding: reference "
             "(MetaLearner.reference_step and plain pooling: the readable one), fused (the default: "
             "metalstm.fast.fused's hand-written backward and channels-last pooling) or native (fused, "
             "with each meta-learner step as the C loops of metalstm/fast/native.c: CPU only, compiled on "
             "first use with the system's C compiler, one thread; docs/speed.md)")


def add_path_option(ap: argparse.ArgumentParser) -> None:
    """--path {reference,fused,native}, default fused (metalstm.config.PATHS)."""
    from metalstm.config import PATHS
    ap.add_argument("--path", choices=PATHS, default="fused", help=PATH_HELP)


def check_path_runs(path: str, device: str) -> None:
    """One ValueError, before any work, when `--path path` cannot run here: native on a device
    other than the CPU, or native.c not compiling (no C compiler; it is compiled now, once)."""
    if path != "native":
        return
    if torch.device(device).type != "cpu":
        raise ValueError(f"--path native runs on the CPU; with --device {device}, pass --path fused")
    from metalstm.fast import native
    try:
        native.library()
    except native.NativeUnavailable as exc:
        raise ValueError(f"--path native: {exc}") from None


# -- the description of a run, shared by train, evaluate, baselines and diagnose -----------------
class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default: "(default: X)" is added where the help text does
    not already say it and the default is a value (an option whose default is the configuration's
    says so in its own help)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" not in text and not any(action.default is v for v in (None, False, argparse.SUPPRESS))
                and action.option_strings and action.nargs != 0):
            text += " (default: %(default)s)"
        return text


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An ArgumentParser whose usage line names the command as it is typed (`prog`, e.g.
    "python -m metalstm.train"), with every default shown (`HelpFormatter`)."""
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if script.startswith("metalstm-"):              # a console script (metalstm-train ...): its own name
        prog = script
    return argparse.ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)


def _channels(text: str) -> int:
    value = _int(text)
    if value not in (1, 3):
        raise argparse.ArgumentTypeError(f"must be 1 (gray) or 3 (RGB), got {text!r}")
    return value


def _rule(text: str) -> str:
    from metalstm.config import RUNGS
    if text not in RUNGS:
        raise argparse.ArgumentTypeError(f"unknown update rule {text!r}; the ladder is: {', '.join(RUNGS)}")
    return text


def _dataset(text: str) -> str:
    if text not in TRAINABLE:
        raise argparse.ArgumentTypeError(f"unknown data set {text!r}; one of: {', '.join(TRAINABLE)}")
    return text


# data sets a run can be trained on ("digits" is a meta-test set only) and what each reads
TRAINABLE = ("glyphs", "omniglot", "mini-imagenet", "folder")
ROOTED = ("omniglot", "mini-imagenet", "folder")               # read from --data-root
GRAY, RGB = ("glyphs", "digits", "omniglot"), ("mini-imagenet",)  # fixed channels; "folder" converts

# (field of metalstm.config.Config, flag, argparse type, help): the options of every command that
# describes a run; DATA_OPTIONS for every command, TRAINING_OPTIONS for train only
DATA_OPTIONS = [
    ("dataset", "--dataset", _dataset, f"the data set: {', '.join(TRAINABLE)} (folder: DATA_ROOT holds "
     "train/, val/, test/, one sub-folder per class)"),
    ("data_root", "--data-root", str, "the folder a real data set lives in (omniglot, mini-imagenet, "
     "folder); refused for glyphs, which ship with the package"),
    ("val_alphabets", "--val-alphabets", str, "Omniglot only: the background alphabets held out for "
     "meta-validation (folder names; metalstm.data.omniglot.VAL_ALPHABETS)"),
    ("image_size", "--image-size", positive_int, "pixels per side the images are resized to"),
    ("in_channels", "--channels", _channels, "1 (gray) or 3 (RGB); image folders are converted to it"),
    ("n_way", "--n-way", positive_int, "classes per episode (N)"),
    ("k_shot", "--k-shot", positive_int, "support images per class (K)"),
    ("n_query", "--n-query", positive_int, "query images per class"),
    ("steps", "--steps", positive_int, "inner-loop updates per episode (T)"),
    ("batch_size", "--batch-size", positive_int, "support images per inner-loop update (B)"),
    ("seed", "--seed", seed_int, "the seed of every episode and initialisation"),
]
TRAINING_OPTIONS = [
    ("episodes", "--episodes", positive_int, "meta-training episodes"),
    ("val_every", "--val-every", positive_int, "validate every this many episodes"),
    ("val_episodes", "--val-episodes", positive_int, "meta-validation episodes"),
    ("test_episodes", "--test-episodes", positive_int, "meta-test episodes evaluate uses by default"),
    ("lr", "--lr", non_negative_float, "Adam's learning rate (paper notes 5: 1e-3; 0 freezes the rule)"),
    ("clip", "--clip", positive_float, "largest norm of the meta-gradient (inf: no clipping)"),
    ("meta_batch", "--meta-batch", positive_int, "episodes per meta-update and process"),
    ("rule", "--rule", _rule, "the update rule: sgd, init, meta-sgd, schedule, magnitude or lstm (the "
     "paper's; paper notes 11)"),
    ("rule_lr", "--rule-lr", non_negative_float, "the fixed or initial step size of sgd, init, meta-sgd "
     "and schedule"),
    ("hidden", "--hidden", positive_int, "the meta-learner's hidden units per coordinate"),
    ("bn_momentum", "--bn-momentum", non_negative_float, "the learner's batch-norm momentum"),
    ("bn_eps", "--bn-eps", positive_float, "the learner's batch-norm epsilon"),
    ("learner", "--learner", str, "the learner network: conv4 (the paper's) or an importable factory "
     "package.module:function (docs/own-network.md)"),
]
FLAGS = {name: flag for name, flag, _, _ in DATA_OPTIONS + TRAINING_OPTIONS}
METAVARS = {"dataset": "NAME", "data_root": "FOLDER", "val_alphabets": "ALPHABET", "image_size": "PIXELS",
            "in_channels": "{1,3}", "n_way": "N", "k_shot": "K", "n_query": "Q", "steps": "T",
            "batch_size": "B", "seed": "SEED", "lr": "X", "clip": "X", "rule": "RULE", "rule_lr": "X",
            "bn_momentum": "X", "bn_eps": "X", "learner": "NET"}


def add_run_options(ap: argparse.ArgumentParser, training: bool = True, config_help: str | None = None,
                    config_required: bool = False) -> None:
    """--config (a built-in name or a .toml/.json file, `load_config`) and one option per
    Configuration field (DATA_OPTIONS; with training=True also TRAINING_OPTIONS): each
    defaults to the configuration's value; `config_from_args` builds the Config."""
    from metalstm.config import CONFIGS
    ap.add_argument("--config", required=config_required, metavar="NAME|FILE",
                    help=config_help or f"a built-in configuration ({', '.join(CONFIGS)}) or a .toml / "
                    f".json file of Config fields (optionally base = \"NAME\"; docs/command-line.md)")
    group = ap.add_argument_group("the run's description (each default: the configuration's value)")
    for name, flag, kind, text in DATA_OPTIONS + (TRAINING_OPTIONS if training else []):
        extra = {"nargs": "+"} if name == "val_alphabets" else {}
        group.add_argument(flag, dest=name, type=kind, default=None, metavar=METAVARS.get(name, "N"),
                           help=text + " (default: the configuration's)", **extra)


def load_config(spec: str):
    """The Config that --config names: a built-in name (metalstm.config.CONFIGS) or a .toml / .json
    file whose keys are Config fields, optionally `base = "NAME"` (the built-in configuration it
    changes; default: Config's own defaults) and `name` (default: the file's stem). A relative
    data_root in a file is relative to the file's folder. One ValueError for anything else."""
    from metalstm.config import CONFIGS, Config
    if spec in CONFIGS:
        return CONFIGS[spec]
    path = Path(spec).expanduser()
    if path.suffix.lower() not in (".toml", ".json"):
        raise ValueError(f"unknown configuration {spec!r}; known: {', '.join(CONFIGS)}, or a .toml / .json "
                         f"file of configuration fields")
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"--config {spec}: cannot read it ({exc.strerror or exc})") from None
    try:
        if path.suffix.lower() == ".toml":
            import tomllib
            fields = tomllib.loads(text)
        else:
            fields = json.loads(text)
    except ValueError as exc:                     # tomllib.TOMLDecodeError and JSONDecodeError
        raise ValueError(f"--config {spec} is not valid {path.suffix[1:].upper()}: "
                         f"{str(exc).splitlines()[0][:160]}") from None
    if not isinstance(fields, dict):
        raise ValueError(f"--config {spec} holds {type(fields).__name__}, not a table of configuration fields")
    base_name = fields.pop("base", None)
    if base_name is not None and base_name not in CONFIGS:
        raise ValueError(f"--config {spec}: base {base_name!r} is not a built-in configuration; "
                         f"known: {', '.join(CONFIGS)}")
    known = {f.name for f in dataclasses.fields(Config)} - {"path"}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"--config {spec}: unknown field(s) {', '.join(unknown)}; known: "
                         f"base, {', '.join(sorted(known))}")
    if isinstance(fields.get("data_root"), str):
        root = Path(fields["data_root"]).expanduser()
        fields["data_root"] = str(root if root.is_absolute() else (path.parent / root).resolve())
    base = CONFIGS[base_name].to_dict() if base_name else {"name": path.stem}
    if not base_name:
        base.update({k: v for k, v in Config("x").to_dict().items() if k != "name"})
    merged = {**base, "name": fields.pop("name", path.stem), **fields}
    if base_name and "description" not in fields:
        merged["description"] = f"{path.name} (from {base_name})"
    try:
        return Config.from_dict(merged)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"--config {spec}: {exc}") from None


def config_from_args(args: argparse.Namespace, base=None, fixed: tuple[str, ...] = ()):
    """The Config the options describe: --config (or `base`, e.g. a checkpoint's configuration) with
    every run option given on the command line in place of its field. One ValueError for an option
    the configuration does not use or contradicts (`check_data_options`); `fixed` fields (a trained
    model's shape: n_way, image_size, in_channels) may be given only with the value they have."""
    cfg = load_config(args.config) if getattr(args, "config", None) else base
    if cfg is None:
        raise ValueError("give --config (a built-in name or a .toml / .json file)")
    given = {name: getattr(args, name) for name in FLAGS if getattr(args, name, None) is not None}
    typed = dict(given)                             # for messages: the values as typed
    if "data_root" in given:                        # stored in the checkpoint: valid from any folder
        given["data_root"] = str(Path(given["data_root"]).expanduser().resolve())
    if "val_alphabets" in given:
        given["val_alphabets"] = tuple(given["val_alphabets"])
    for name in fixed:
        if name in given and given[name] != getattr(cfg, name):
            raise ValueError(f"{FLAGS[name]} {given[name]}: the checkpoint's model was trained with "
                             f"{name} {getattr(cfg, name)}; leave {FLAGS[name]} out")
    if "dataset" in given and given["dataset"] != cfg.dataset and "data_root" not in given:
        given["data_root"] = None                   # another data set: the old one's folder does not carry over
    new = cfg.replace(**given) if given else cfg
    check_data_options(new, typed, cfg.name)
    return new


def check_data_options(cfg, given: dict, name: str) -> None:
    """One ValueError when the data options do not fit the data set: a folder for a data set that
    ships with the package, no folder for one that does not, Omniglot's alphabets for another data
    set, colour for a gray data set (or gray for an RGB one; image folders are converted)."""
    if cfg.dataset not in ROOTED and "data_root" in given:
        raise ValueError(f"--data-root {given['data_root']}: configuration {name!r} uses the {cfg.dataset} "
                         f"data set, which ships with the package and reads no folder; for images of "
                         f"yours add --dataset folder (or omniglot, mini-imagenet)")
    if cfg.dataset in ROOTED and not cfg.data_root:
        raise ValueError(f"the {cfg.dataset} data set needs --data-root, the folder that holds it "
                         f"(docs/command-line.md)")
    if cfg.val_alphabets is not None and cfg.dataset != "omniglot":
        raise ValueError(f"--val-alphabets is for Omniglot; configuration {name!r} uses the {cfg.dataset} "
                         f"data set")
    if cfg.dataset in GRAY and cfg.in_channels != 1:
        raise ValueError(f"--channels {cfg.in_channels}: the {cfg.dataset} images are gray (1 channel); "
                         f"only image folders (--dataset folder) are converted")
    if cfg.dataset in RGB and cfg.in_channels != 3:
        raise ValueError(f"--channels {cfg.in_channels}: the {cfg.dataset} images are RGB (3 channels); "
                         f"only image folders (--dataset folder) are converted")


def shipped_cache() -> Path | None:
    """data/checkpoints/baselines, the baselines that ship with the course (None without a data folder)."""
    from metalstm import paths
    try:
        return paths.data_dir() / "checkpoints" / "baselines"
    except FileNotFoundError:
        return None


def default_cache() -> Path:
    """Where trained baselines are kept by default: baselines/ in the user's cache folder
    (metalstm.paths.cache_dir: $METALSTM_CACHE, else platformdirs'), never the current folder."""
    from metalstm import paths
    return paths.cache_dir("baselines")


# -- messages: the `metalstm` logger -------------------------------------------------------
log = logging.getLogger("metalstm")


def add_logging_options(ap: argparse.ArgumentParser, every: bool = True) -> None:
    """--quiet / --verbose (and --log-every): what the `metalstm` logger shows on stderr."""
    group = ap.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true",
                       help="no progress bars or progress lines: only warnings, errors and the results")
    group.add_argument("-v", "--verbose", action="store_true", help="also debugging messages")
    if every:
        ap.add_argument("--log-every", type=non_negative_int, default=100, metavar="N",
                        help="where stderr is not a terminal (a log file), a progress line every N "
                             "episodes (0: none; a terminal shows a progress bar instead)")


class _Handler(logging.StreamHandler):
    """Writes to the stderr of the moment, through tqdm.write (a progress bar on a terminal is
    redrawn below the line, not broken by it)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm.auto import tqdm
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:                          # logging's own convention: never raise from emit
            self.handleError(record)


@contextmanager
def logging_to_stderr(args: argparse.Namespace | None = None) -> Iterator[None]:
    """`setup_logging` for the block (a command's work), then the `metalstm` logger as it was: a
    library call after a command in the same process (a notebook, a test) logs as before."""
    before = (list(log.handlers), log.level, log.propagate)
    setup_logging(args)
    try:
        yield
    finally:
        log.handlers[:] = before[0]
        log.setLevel(before[1])
        log.propagate = before[2]


def setup_logging(args: argparse.Namespace | None = None) -> None:
    """Send the `metalstm` logger to stderr: INFO (progress and validation lines), WARNING with
    --quiet, DEBUG with --verbose; lines carry the time. Calling it again replaces its handler."""
    quiet, verbose = bool(getattr(args, "quiet", False)), bool(getattr(args, "verbose", False))
    for h in [h for h in log.handlers if isinstance(h, _Handler)]:
        log.removeHandler(h)
    handler = _Handler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    log.propagate = False
