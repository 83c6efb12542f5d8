"""deva.modeling"""
