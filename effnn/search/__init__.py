"""Search a trained supernet: evolutionary multi-objective search, Pareto archive, accuracy evaluation with
BN recalibration, an accuracy predictor, accelerator co-search and distributed evaluation."""

from effnn.search.candidate import Candidate
from effnn.search.costs import COST_METRICS, SubnetCosts, best_accelerator
from effnn.search.distributed import Ranks, map_over_ranks
from effnn.search.evaluator import SubnetAccuracy, fixed_batches, recalibrate_subnet, top1_accuracy
from effnn.search.evolution import EvolutionarySearch, SearchObserver, SearchResult, SearchSettings
from effnn.search.hardware import Accelerator, AreaModel, HardwareSpace
from effnn.search.pareto import Objective, ParetoArchive, dominates, nondominated_sort
from effnn.search.predictor import AccuracyPredictor
from effnn.search.supernet_checkpoint import SupernetCheckpoint, load_supernet_checkpoint

__all__ = ["COST_METRICS", "Accelerator", "AccuracyPredictor", "AreaModel", "Candidate", "EvolutionarySearch",
           "HardwareSpace", "Objective", "ParetoArchive", "Ranks", "SearchObserver", "SearchResult",
           "SearchSettings", "SubnetAccuracy", "SubnetCosts", "SupernetCheckpoint", "best_accelerator",
           "dominates", "fixed_batches", "load_supernet_checkpoint", "map_over_ranks", "nondominated_sort",
           "recalibrate_subnet", "top1_accuracy"]
