"""What every family shares: params, paths, data sources, models, metrics and the stage runner."""
