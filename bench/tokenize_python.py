"""Tokenization throughput of the Python `tokenizers` package, for the
side-by-side numbers in bench/RESULTS.md.

Reads the text field of JSON Lines files (optionally .zst-compressed), then
encodes every document with `Tokenizer.encode_batch` (no special tokens) in
batches, timing only the encoding. Prints bytes of UTF-8 text, tokens,
seconds and MB/s.

    python3 bench/tokenize_python.py TOKENIZER_JSON FILE [FILE ...]
"""

import io
import json
import sys
import time

import tokenizers
import zstandard

BATCH_BYTES = 8 << 20


def documents(path):
    with open(path, "rb") as raw:
        stream = raw
        if path.endswith(".zst"):
            stream = zstandard.ZstdDecompressor(max_window_size=1 << 31).stream_reader(raw)
        for line in io.TextIOWrapper(stream, encoding="utf-8"):
            if line.strip():
                yield json.loads(line)["text"]


def batches(paths):
    batch, size = [], 0
    for path in paths:
        for text in documents(path):
            batch.append(text)
            size += len(text.encode("utf-8"))
            if size >= BATCH_BYTES:
                yield batch, size
                batch, size = [], 0
    if batch:
        yield batch, size


def main():
    tokenizer = tokenizers.Tokenizer.from_file(sys.argv[1])
    tokenizer.no_truncation()
    tokenizer.no_padding()
    total_bytes = total_tokens = 0
    seconds = 0.0
    for batch, size in batches(sys.argv[2:]):
        start = time.perf_counter()
        encodings = tokenizer.encode_batch(batch, add_special_tokens=False)
        seconds += time.perf_counter() - start
        total_bytes += size
        total_tokens += sum(len(e.ids) for e in encodings)
    print(
        f"tokenizers {tokenizers.__version__}: {total_bytes} bytes, {total_tokens} tokens, "
        f"{seconds:.2f} s encoding, {total_bytes / 1e6 / seconds:.2f} MB/s"
    )


if __name__ == "__main__":
    main()
