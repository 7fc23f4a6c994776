# Set-up for Colab (or any Python without the course): clones the course and installs it, only when
# `metalstm` cannot be imported. In a local checkout (`make lab`) it only prints the versions.
REPO = "https://github.com/OWNER/metalstm"   # SET ME: where the course is published (a git URL or a path)
BRANCH = "main"
import importlib, importlib.util, os, subprocess, sys  # noqa: E401,E402

if importlib.util.find_spec("metalstm") is None:
    target = os.path.abspath("metalstm-course")
    if not os.path.isdir(os.path.join(target, ".git")):
        subprocess.run(["git", "clone", "--quiet", "--depth", "1", "--branch", BRANCH, REPO, target], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-e", target], check=True)
    sys.path.insert(0, target)                      # this kernel sees it without a restart
    importlib.invalidate_caches()
    os.chdir(os.path.join(target, "notebooks"))     # the notebooks find ../data from here
import metalstm, torch  # noqa: E401,E402

_commit = subprocess.run(["git", "-C", os.path.dirname(os.path.dirname(metalstm.__file__)), "rev-parse",
                          "--short", "HEAD"], capture_output=True, text=True).stdout.strip() or "unknown"
print(f"metalstm {metalstm.__version__} (commit {_commit}) from {os.path.dirname(metalstm.__file__)}; "
      f"torch {torch.__version__}; Python {sys.version.split()[0]}")
