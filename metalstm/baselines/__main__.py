"""python -m metalstm.baselines: see metalstm.baselines.suite."""
import sys

from metalstm.baselines.suite import main

sys.exit(main())
