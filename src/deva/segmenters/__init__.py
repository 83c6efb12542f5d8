"""deva.segmenters"""
