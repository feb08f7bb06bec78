"""BINfoon: the telephone chain for Belgian neighbourhood information networks."""
