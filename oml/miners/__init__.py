"""Miners: choose the triplets (or pairs) of a batch that a loss is computed on."""

from oml.miners.cross_batch import TripletMinerWithMemory
from oml.miners.inbatch_all_tri import AllTripletsMiner, get_available_triplets, get_available_triplets_naive
from oml.miners.inbatch_hard_cluster import HardClusterMiner
from oml.miners.inbatch_hard_tri import HardTripletsMiner
from oml.miners.inbatch_nhard_tri import NHardTripletsMiner
from oml.miners.miner_with_bank import MinerWithBank
from oml.miners.pairs import PairsMiner
from oml.miners.pml import PMLMiner

__all__ = [
    "AllTripletsMiner",
    "get_available_triplets",
    "get_available_triplets_naive",
    "HardTripletsMiner",
    "NHardTripletsMiner",
    "HardClusterMiner",
    "TripletMinerWithMemory",
    "MinerWithBank",
    "PairsMiner",
    "PMLMiner",
]
