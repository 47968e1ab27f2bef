"""Thinking with images: tools, runtime, a synthetic world, chain synthesis, a small VLM."""
