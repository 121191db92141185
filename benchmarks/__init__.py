"""Benchmarks: quality (``benchmarks.run``) and speed (``benchmarks.speed``, ``benchmarks.gpu_speed``)."""
