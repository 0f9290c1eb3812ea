"""The framework every family runs in (the Family interface, the stage runner, params, paths, errors, outputs, model
cards, report params) and the retrieval code several families use (sources, collections, metrics, search, models)."""
