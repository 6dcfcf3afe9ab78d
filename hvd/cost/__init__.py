"""Verification cost: the curve (`curve`) and its online correction (`calibrator`)."""
