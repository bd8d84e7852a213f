"""Mutated copies of real MIDI, WAV and text files, for fuzzing prepare.

Every mutation is a function ``(data, rng) -> bytes``. Besides random damage (truncation,
flipped bytes) each format gets the header lies that parsers trip on: chunk lengths far
beyond the file, zero or odd sample rates and channel counts, zero time division, tempos of
0 and 2^24-1 microseconds per quarter, a delta time of 2^28-1 ticks.
"""
from __future__ import annotations

import struct
from collections.abc import Callable

import numpy as np

Mutation = Callable[[bytes, np.random.Generator], bytes]


def truncate(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(0, len(data)))]


def flip_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    for at in rng.integers(0, len(out), size=int(rng.integers(1, 24))):
        out[at] = int(rng.integers(0, 256))
    return bytes(out)


def flip_header(data: bytes, rng: np.random.Generator) -> bytes:
    """Random bytes within the first 64, where the headers are."""
    out = bytearray(data)
    for at in rng.integers(0, min(64, len(out)), size=int(rng.integers(1, 4))):
        out[at] = int(rng.integers(0, 256))
    return bytes(out)


def _put(data: bytes, at: int, fmt: str, value: int) -> bytes:
    if at < 0 or at + struct.calcsize(fmt) > len(data):
        return data
    out = bytearray(data)
    struct.pack_into(fmt, out, at, value)
    return bytes(out)


# ------------------------------------------------------------------------------------ WAV

def _fmt(data: bytes) -> int:
    return data.find(b"fmt ")


def wav_riff_size(data, rng):
    return _put(data, 4, "<I", int(rng.choice([0, 0xFFFFFFFF, 0x7FFFFFFF, 3])))


def wav_data_size(data, rng):
    return _put(data, data.find(b"data") + 4, "<I", int(rng.choice([0, 1, 0xFFFFFFFF, 0x7FFFFFFF, 0x7FFFFFF0])))


def wav_fmt_size(data, rng):
    return _put(data, _fmt(data) + 4, "<I", int(rng.choice([0, 2, 0xFFFFFFFF, 1 << 20])))


def wav_sample_rate(data, rng):
    return _put(data, _fmt(data) + 12, "<I", int(rng.choice([0, 1, 7, 44101, 47999, 1 << 31, 0xFFFFFFFF])))


def wav_channels(data, rng):
    return _put(data, _fmt(data) + 10, "<H", int(rng.choice([0, 3, 255, 1024, 0xFFFF])))


def wav_bits(data, rng):
    return _put(data, _fmt(data) + 22, "<H", int(rng.choice([0, 1, 7, 12, 64, 0xFFFF])))


def wav_format_tag(data, rng):
    return _put(data, _fmt(data) + 8, "<H", int(rng.choice([0, 2, 3, 6, 0xFFFE, 0x1234])))


def wav_block_align(data, rng):
    return _put(data, _fmt(data) + 20, "<H", int(rng.choice([0, 1, 0xFFFF])))


WAV_MUTATIONS: list[Mutation] = [truncate, flip_bytes, flip_header, wav_riff_size, wav_data_size, wav_fmt_size,
                                 wav_sample_rate, wav_channels, wav_bits, wav_format_tag, wav_block_align]


# ------------------------------------------------------------------------------------ MIDI

def midi_header_length(data, rng):
    return _put(data, 4, ">I", int(rng.choice([0, 5, 0x7FFFFFFF, 0xFFFFFFFF])))


def midi_track_count(data, rng):
    return _put(data, 10, ">H", int(rng.choice([0, 2, 0x7FFF, 0xFFFF])))


def midi_division(data, rng):
    """Ticks per quarter of 0 or 1, or an SMPTE division (negative frames per second)."""
    return _put(data, 12, ">H", int(rng.choice([0, 1, 0x8000, 0xE250, 0xFFFF])))


def midi_format(data, rng):
    return _put(data, 8, ">H", int(rng.choice([2, 3, 0xFFFF])))


def midi_track_length(data, rng):
    at = data.find(b"MTrk")
    return _put(data, at + 4, ">I", int(rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF]))) if at >= 0 else data


def midi_tempo(data, rng):
    """Every Set Tempo event to 0, 1 or 2^24-1 microseconds per quarter."""
    out, at = bytearray(data), data.find(b"\xff\x51\x03")
    value = int(rng.choice([0, 1, 0xFFFFFF])).to_bytes(3, "big")
    while at >= 0 and at + 6 <= len(out):
        out[at + 3:at + 6] = value
        at = data.find(b"\xff\x51\x03", at + 1)
    return bytes(out)


def midi_huge_delta(data, rng):
    """A note-on 2^28-1 ticks after the start of the first track (chunk length kept consistent)."""
    at = data.find(b"MTrk")
    if at < 0 or at + 8 > len(data):
        return data
    event = b"\xff\xff\xff\x7f\x90\x3c\x40" if rng.random() < 0.5 else b"\xff\xff\xff\x7f\xff\x51\x03\x00\x00\x00"
    size = int.from_bytes(data[at + 4:at + 8], "big") + len(event)
    return data[:at + 4] + size.to_bytes(4, "big") + event + data[at + 8:]


MIDI_MUTATIONS: list[Mutation] = [truncate, flip_bytes, flip_header, midi_header_length, midi_track_count,
                                  midi_division, midi_format, midi_track_length, midi_tempo, midi_huge_delta]


# ------------------------------------------------------------------------------------ text

def text_cut_character(data, rng):
    """Cut inside a multi-byte UTF-8 character when there is one."""
    starts = [i for i, b in enumerate(data) if b >= 0xC0]
    return data[: starts[int(rng.integers(len(starts)))] + 1] if starts else data[:-1]


def text_nul_and_controls(data, rng):
    out = bytearray(data)
    for at in rng.integers(0, len(out), size=8):
        out[at] = int(rng.choice([0, 7, 8, 27, 127]))
    return bytes(out)


def text_one_long_line(data, rng):
    return data.replace(b"\n", b" ") * int(rng.integers(1, 30))


def text_bom_and_crlf(data, rng):
    return b"\xef\xbb\xbf" + data.replace(b"\n", b"\r\n")


def text_whitespace_only(data, rng):
    return b" \n\t\r\n" * int(rng.integers(0, 50))


def text_space_marks(data, rng):
    return data.replace(b" ", "\u2581".encode())


TEXT_MUTATIONS: list[Mutation] = [truncate, flip_bytes, text_cut_character, text_nul_and_controls, text_one_long_line,
                                  text_bom_and_crlf, text_whitespace_only, text_space_marks]


def mutants(originals: list[bytes], mutations: list[Mutation], n: int, seed: int) -> list[tuple[str, bytes]]:
    """``n`` mutated copies (``(mutation name, bytes)``), cycling through the mutations, from seeded choices."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        mutation = mutations[i % len(mutations)]
        data = originals[int(rng.integers(len(originals)))]
        for _ in range(1 + int(rng.random() < 0.2)):  # now and then two mutations at once
            data = mutation(data, rng)
        out.append((mutation.__name__, data))
    return out
