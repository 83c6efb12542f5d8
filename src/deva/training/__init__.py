"""deva.training"""
