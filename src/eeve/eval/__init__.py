"""Evaluation of the base model (stage 0) and of every stage export on the same held-out bytes.

bpb.py (bits per byte, characters per token, byte-fallback share), texts.py (which held-out bytes), samples.py
(greedy continuations), harness.py (lm-evaluation-harness, optional), tasks.py (the demo's local benchmark tasks),
stage_eval.py (evaluating one export / the base, cached), table.py (the base -> stages table), schedule.py
(TensorBoard on one axis of training tokens), report.py (report.png).
"""
