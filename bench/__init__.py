"""Benchmarks of the heart-risk service: the predictor alone and the HTTP service under load.

Figures from here are medians of several interleaved runs, reported as ratios
against reference servers measured in the same run on the same machine, so a
slower or busier machine changes the absolute numbers but not the comparison.
See BENCHMARKS.md for how to run them and what they showed.
"""
