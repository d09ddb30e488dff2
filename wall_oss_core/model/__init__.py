"""Wall-OSS policy model: configuration, modeling, loading, processing."""
