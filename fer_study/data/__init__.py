"""Data layer: FERPlus and RAF-DB readers, PDLS priors, SynthFER, device tensors and augmentation."""

from fer_study.data.ferplus import LABEL_MODES, FERSplit, load_ferplus, process_votes
from fer_study.data.prior import PSR_FERPLUS_PRIOR, prior_from_votes, rafdb_prior

__all__ = [
    "FERSplit", "LABEL_MODES", "load_ferplus", "process_votes",
    "PSR_FERPLUS_PRIOR", "prior_from_votes", "rafdb_prior",
]
