"""Behaviour knobs on a composition: λ/β/α sweeps and the emulated-disalignment audit."""
