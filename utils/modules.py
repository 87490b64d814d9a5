"""Module markers shared by models and LightningModules."""

from torch import nn


class ExternalWeights(nn.Module):
    """A frozen module whose weights come from outside the run (a pretrained download or the
    backbone id). Its parameters never go into checkpoints: they are rebuilt from the source."""
