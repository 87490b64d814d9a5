"""Pure nn.Modules: codecs, backbone wrappers, guidance, discriminators (no Lightning)."""
