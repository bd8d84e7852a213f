"""What every stage of the pipeline shares and that knows no stage: one-line errors, quiet logs,
device and environment facts, the recipe schema's parser, peak memory, clean-up, stop signals and
progress lines. Nothing here imports a pipeline stage."""
