"""The artifact layer: every file a run writes and reads back, with one atomic writer.

``files`` holds the writer and the JSON conventions every artifact shares; the modules beside it
own one kind of object each (checkpoint folder, shard manifest, evaluation results, sample
sidecars, ablation run records). No other module names those files or parses them by hand.
"""
