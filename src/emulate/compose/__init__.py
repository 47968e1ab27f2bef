"""EFT and ED: a formula over models' next-token log-probs, decoded lockstep or speculatively."""
