"""metalstm: the Meta-Learner LSTM of Ravi & Larochelle (ICLR 2017), rebuilt for a course."""
__version__ = "0.1.0"
