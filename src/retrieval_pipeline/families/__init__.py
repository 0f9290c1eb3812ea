"""One module per model family; each exposes FAMILY, a core.family.Family subclass."""
