"""Stage one of the method: a per-fold generator and the synthetic CT it makes.

``train_generator`` learns (or, for ``morph``, records) a generator from a fold's training
cases; ``synthesize`` writes N synthetic versions of each of them with a manifest and QC;
``check_no_leakage`` guards the fold's held-out cases.
"""
from hepred.synth.config import synthesis_settings
from hepred.synth.generate import synthesize
from hepred.synth.train import train_generator

__all__ = ["synthesis_settings", "synthesize", "train_generator"]
