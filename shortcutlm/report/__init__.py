"""The recipe report: one Markdown and HTML page per run folder, read from the run's artifacts
(checkpoints, evaluation records, sample sidecars, diagnostics) and never from the recipe's defaults."""
