"""Losses: triplet losses (with miners), ArcFace, surrogate precision, and a wrapper for PML losses."""

from oml.losses.arcface import ArcFaceLoss, ArcFaceLossWithMLP
from oml.losses.pml import PMLCriterion
from oml.losses.surrogate_precision import SurrogatePrecision
from oml.losses.triplet import TripletLoss, TripletLossPlain, TripletLossWithMiner, get_tri_ids_in_plain

__all__ = [
    "ArcFaceLoss",
    "ArcFaceLossWithMLP",
    "PMLCriterion",
    "SurrogatePrecision",
    "TripletLoss",
    "TripletLossPlain",
    "TripletLossWithMiner",
    "get_tri_ids_in_plain",
]
