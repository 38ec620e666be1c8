"""Benchmarks of the heart-risk service: medians of interleaved runs, as ratios to references
measured in the same run, so a busier machine changes the figures but not the comparison.
BENCHMARKS.md says how to run them and what they showed.
"""
