"""What a run does with a model: read its recipe, train (or fine-tune), evaluate, generate and
diagnose, with the checks and folder layout those steps share. Each step reads and writes its files
through the artifact layer."""
