"""The methods the Meta-Learner LSTM is compared with, on the same learner network (paper notes 8, 9).

| method | module | what it learns from meta-train | what it does on an episode |
|---|---|---|---|
| Fine-tune | `finetune` | a classifier over all meta-train classes (`pretrain`) | new head, SGD/Adam on the support set |
| Nearest neighbour | `nearest` | the same pre-trained network | cosine 1-NN on its features |
| Matching Networks | `matching` | an embedding, trained episodically | cosine-attention over support labels |
| SGD / Adam from random init | `sgd` | nothing | T steps of SGD/Adam on the support set |
| SGD from learned c_0 | `sgd` | the meta-learner's c_0 | T steps of SGD, no learned update rule |

Every method has `name` and `predict(episode) -> scores [N*Q, N]`; `evaluate`
runs one on a list of episodes, `markdown_table` prints the results.
`python -m metalstm.baselines --shot 5 --episodes 600` measures them all.
"""
from metalstm.baselines.common import (Evaluation, FewShotMethod, accuracy, confidence_interval,
                                       evaluate, grid_search, markdown_table)
from metalstm.baselines.finetune import finetune, tune_finetune, with_new_head
from metalstm.baselines.matching import (MatchingNetwork, MatchingTraining, load_matching,
                                         matching_attention, matching_log_probs, save_matching,
                                         train_matching)
from metalstm.baselines.nearest import NearestNeighbour, cosine_similarity, embed_episode
from metalstm.baselines.pretrain import Pretrained, load_or_pretrain, load_pretrained, pretrain, save_pretrained
from metalstm.baselines.sgd import AdamCell, SupportFit, learned_init, random_init, tune_lr

__all__ = [
    "AdamCell", "Evaluation", "FewShotMethod", "MatchingNetwork", "MatchingTraining", "NearestNeighbour",
    "Pretrained", "SupportFit", "accuracy", "confidence_interval", "cosine_similarity", "embed_episode",
    "evaluate", "finetune", "grid_search", "learned_init", "load_matching", "load_or_pretrain",
    "load_pretrained", "markdown_table", "matching_attention", "matching_log_probs", "pretrain",
    "random_init", "save_matching", "save_pretrained", "train_matching", "tune_finetune", "tune_lr",
    "with_new_head",
]
