"""Settings of the tiny runs the tests use (a few steps on a 4-class SynthBirds)."""
TINY_SYNTH = {"n_genera": 2, "species_per_genus": 2, "train_per_class": 12, "test_per_class": 4}
TINY = {"train.epochs": 2, "train.max_steps": 3, "train.batch_size": 8, "data.synth": TINY_SYNTH}
