"""GGUF / llama.cpp export of a stage export: ``python -m eeve.export gguf outputs/<run>/stage7`` (docs/gguf.md).

Modules, lowest first: ``source`` (the pinned llama.cpp tree), ``converter_main`` (a script: llama.cpp's converter
with two vocabulary hooks, run in a subprocess), ``check`` (llama.cpp's tokenization against the HF tokenizer),
``convert`` (convert, check, rename into place).
"""
