"""LightningModules, one per training stage, sharing :class:`base.CompressionLightningModule`."""
