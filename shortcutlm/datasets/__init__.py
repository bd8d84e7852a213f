"""Raw datasets → documents → WebDataset shards → packed training windows.

* :mod:`~shortcutlm.datasets.sources` / :mod:`~shortcutlm.datasets.embedded`: readers of
  published layouts and of package-shipped corpora (``read_source(spec)``);
* :mod:`~shortcutlm.datasets.splits`: stable hash splits for data without a published one
  (and contiguous parts inside the files of collections too small to split by file);
* :mod:`~shortcutlm.datasets.prepare`: ``prepare(source, tokenizer, out_dir)`` and the CLI, joining
  one module per job: :mod:`~shortcutlm.datasets.encode` (in the worker processes),
  :mod:`~shortcutlm.datasets.tokenizer_fit`, :mod:`~shortcutlm.datasets.resume` (an earlier run's
  shards; the scope of a run or a job), :mod:`~shortcutlm.datasets.shard_loop` and
  :mod:`~shortcutlm.datasets.prepare_cli` (arguments, printing, the error policy);
* :mod:`~shortcutlm.datasets.isolation`: worker processes in which a reader that crashes costs
  one file, not the run;
* :mod:`~shortcutlm.datasets.shards`: shard files, checksums, ``manifest.json``;
* :mod:`~shortcutlm.datasets.loader`: ``train_batches`` / ``eval_batches`` for the trainer.

Submodules are imported on use, so reading a manifest does not import tokenizers.
"""
