"""Paired documents across domains: a score and its rendering, a transcript and its speech.

A pair becomes one sequence over a joint vocabulary, ``<source marker> source <task marker> target``
(UniAudio's and AnyGPT's recipe, PAPERS.md), for four tasks (:mod:`~shortcutlm.pairs.tasks`). The
jobs, one module each: collecting pairs from a source (:mod:`~shortcutlm.pairs.collect`), preparing
the halves and the sequences (:mod:`~shortcutlm.pairs.prepare`), the sequences' layout
(:mod:`~shortcutlm.pairs.sequences`), what the source is worth to the target
(:mod:`~shortcutlm.pairs.worth`), generating a target from a source file
(:mod:`~shortcutlm.pairs.generate`) and the field's metrics (:mod:`~shortcutlm.pairs.metrics`).
"""
