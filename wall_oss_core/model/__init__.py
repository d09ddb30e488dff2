"""Wall-OSS model core: configuration, native PyTorch model, strict checkpoint loading."""
