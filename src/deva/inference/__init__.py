"""deva.inference"""
