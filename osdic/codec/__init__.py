"""Real bitstreams: the compressed-file format, codec packages and the compress/decompress CLI."""
