"""Serving engines: exports they accept, a vLLM resolver plugin, and alias following.

Only ``vllm_plugin`` imports vLLM (and only vLLM imports it, through its entry point); the
rest works without vLLM installed.
"""
