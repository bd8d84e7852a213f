"""Matplotlib figures drawn from arrays: loss curves, attention maps, piano rolls and spectrograms.

Shared rather than part of ``report/`` because tokenizers draw their own pictures of a sample with
it (a piano roll for MIDI, a spectrogram for audio), and the tokenizer stage sits below the report."""
