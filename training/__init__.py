"""The training side's helpers, beside lightning_modules/, callbacks/ and datamodules/: composing
and checking configs (config), a run's identity under Hydra (run), chains of stages (pipeline),
loggers, atomic checkpoints with checksums (checkpoint_io), the preflight, the demo and its report,
and the stand-in for SD 2.1 the demo and the miniature tables train. The library (``osdic``) never
imports any of it."""
