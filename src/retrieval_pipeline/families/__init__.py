"""One package per model family; each exposes FAMILY, a core.family.Family subclass, and a module per stage."""
