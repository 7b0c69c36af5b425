"""One optimizer step as a pipeline of small pieces (step), with its synchronisation strategy
(sync), the optional gradient-noise measurement (measure) and the finiteness check (finite); a
run's beginning (run) and a policy's start-up calibration (calibrate)."""
from batchtrain.training.calibrate import Calibration, calibrate_policy
from batchtrain.training.finite import check_action, nonfinite_outcome, warn_stopped
from batchtrain.training.run import begin_run, fit_info, loaded, physical_cap
from batchtrain.training.step import micro_batches

__all__ = ["Calibration", "begin_run", "calibrate_policy", "check_action", "fit_info", "loaded", "micro_batches",
           "nonfinite_outcome", "physical_cap", "warn_stopped"]
