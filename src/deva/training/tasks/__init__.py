"""Validation tasks of the Predictor: VOS (J&F), panoptic (VPQ / STQ), open world (OWTA)."""
